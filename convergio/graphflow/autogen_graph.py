"""Import an AutoGen ``GraphFlow`` and replay its execution rules deterministically.

Two parts, both pure (no I/O, clocks or randomness; only pydantic and the standard
library), so that Temporal workflow code can use them:

* :func:`load_graphflow_config` reads the JSON of ``GraphFlow.dump_component()`` into our
  own mirror models (:class:`GraphSpec`, :class:`NodeSpec`, :class:`EdgeSpec`,
  :class:`TerminationSpec`) plus one :class:`~convergio.contracts.AgentProfile` per
  participant, and rejects what a durable run cannot reproduce with a
  :class:`GraphFlowImportError` naming the offending field.
* :class:`GraphExecution` is a port of AutoGen 0.7.5's ``GraphFlowManager`` (and of the
  parts of ``BaseGroupChatManager`` and ``ChatAgentContainer`` it relies on): the ready
  queue, activation groups and conditions, remaining counters, string edge conditions,
  loop re-entry resets, termination, ``max_turns`` and what each agent's model context
  contains on each of its turns.

What AutoGen does, and therefore what this module does:

* A turn ("batch") is every speaker in the ready queue, drained in queue order. AutoGen
  asks them all at once and they run concurrently; each reply is appended to the thread
  (and propagated along the speaker's edges) when it *arrives*, so AutoGen's order is
  completion order. When the parallel turns take equally long (the offline client, or
  equal model latencies) that is the order they were asked in, which is the order used
  here. When they don't (real latencies; even the offline client with streaming, whose
  longer answers yield more often) AutoGen's order follows whichever answers first and
  is not reproducible, not even by AutoGen.
* A node can be selected twice for one batch (e.g. two activation groups completing in
  the same batch). AutoGen then runs it twice, one turn after the other (its container
  handles requests in sequence), and the second turn sees only its own first reply as
  new. Here: round *k* holds the speakers selected at least *k* times, in first-selection
  order; rounds run one after the other and the thread is filled round by round, which
  is AutoGen's arrival order when turns take equally long and more than no time. (With
  zero-latency models AutoGen's internal message hops decide instead; in our runs that
  was plain selection order.)
* Each participant keeps its own model context: the task and every other agent's reply
  as user messages, its own replies as assistant messages. Replies produced by the other
  speakers of the same batch reach it only after its own turn, so its context can list
  them after its own reply — not always in thread order. :meth:`GraphExecution.begin_turn`
  returns exactly that context.
* Edge conditions are plain substring checks on the text of the speaker's reply;
  ``DiGraphNode.activation`` is carried but (as in AutoGen) unused: only the edges'
  ``activation_condition`` counts.
* The run ends when the ready queue is empty after a batch ("Digraph execution is
  complete", checked first), when the termination condition fires (it sees only the
  task at the start, then only the *last* reply of each batch, exactly like AutoGen), or
  when ``max_turns`` batches have run.
* Several start nodes without ``default_start_node``: AutoGen takes them from a ``set``,
  whose order changes between Python processes; here they are taken in node order.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from convergio.contracts import MAX_TASK_CHARS, AgentProfile, TranscriptMessage
from convergio.costs.budget import BudgetLimits
from convergio.security.policy import SecurityPolicy

DIGRAPH_STOP_MESSAGE = "Digraph execution is complete"
TASK_SOURCE = "user"

GRAPHFLOW_PROVIDERS = frozenset(
    {
        "autogen_agentchat.teams.GraphFlow",
        "autogen_agentchat.teams._group_chat._graph._digraph_group_chat.GraphFlow",
    }
)
ASSISTANT_PROVIDERS = frozenset(
    {"autogen_agentchat.agents.AssistantAgent", "autogen_agentchat.agents._assistant_agent.AssistantAgent"}
)
_EMPTY_WORKBENCHES = frozenset(
    {
        "autogen_core.tools.StaticWorkbench",
        "autogen_core.tools.StaticStreamWorkbench",
        "autogen_core.tools._static_workbench.StaticWorkbench",
        "autogen_core.tools._static_workbench.StaticStreamWorkbench",
    }
)
_UNBOUNDED_CONTEXTS = frozenset(
    {
        "autogen_core.model_context.UnboundedChatCompletionContext",
        "autogen_core.model_context._unbounded_chat_completion_context.UnboundedChatCompletionContext",
    }
)
_TERMINATIONS = {
    "autogen_agentchat.conditions.MaxMessageTermination": "max_message",
    "autogen_agentchat.conditions.TextMentionTermination": "text_mention",
    "autogen_agentchat.conditions.SourceMatchTermination": "source_match",
    "autogen_agentchat.conditions.StopMessageTermination": "stop_message",
    "autogen_agentchat.base.OrTerminationCondition": "or",
    "autogen_agentchat.base.AndTerminationCondition": "and",
}
_MODEL_PROVIDERS = {
    "convergio.agents.offline.OfflineChatCompletionClient": "offline",
    "autogen_ext.models.openai.OpenAIChatCompletionClient": "openai",
    "autogen_ext.models.openai.AzureOpenAIChatCompletionClient": "azure",
    "autogen_ext.models.anthropic.AnthropicChatCompletionClient": "anthropic",
    "autogen_ext.models.ollama.OllamaChatCompletionClient": "ollama",
}
_AGENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ROLE_MAX_CHARS = 200


class GraphFlowImportError(ValueError):
    """A GraphFlow config that cannot be run durably; ``field`` is where the problem is."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --- the graph, mirrored -----------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EdgeSpec(_Spec):
    """AutoGen's ``DiGraphEdge`` without callables: ``condition`` is a substring or None."""

    target: str
    condition: str | None = None
    activation_group: str = ""
    activation_condition: Literal["all", "any"] = "all"

    @model_validator(mode="after")
    def _default_group(self) -> EdgeSpec:
        if not self.activation_group:  # as DiGraphEdge does: the group defaults to the target
            self.activation_group = self.target
        return self

    def check_condition(self, text: str) -> bool:
        """``DiGraphEdge.check_condition`` for a string condition: ``condition in message text``."""
        return self.condition is None or self.condition in text


class NodeSpec(_Spec):
    """AutoGen's ``DiGraphNode``. ``activation`` is kept for fidelity; AutoGen's manager ignores it."""

    name: str
    edges: list[EdgeSpec] = Field(default_factory=list)
    activation: Literal["all", "any"] = "all"


class GraphSpec(_Spec):
    """AutoGen's ``DiGraph``: nodes by name (in declaration order) and an optional start node."""

    nodes: dict[str, NodeSpec]
    default_start_node: str | None = None

    def parents(self) -> dict[str, list[str]]:
        parents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for edge in node.edges:
                parents[edge.target].append(node.name)
        return parents

    def start_nodes(self) -> list[str]:
        """``DiGraph.get_start_nodes``, in node order instead of AutoGen's ``set`` order."""
        if self.default_start_node:
            return [self.default_start_node]
        return [name for name, parents in self.parents().items() if not parents]

    def leaf_nodes(self) -> list[str]:
        return [name for name, node in self.nodes.items() if not node.edges]

    def remaining_map(self) -> dict[str, dict[str, int]]:
        """Per target and activation group: how many edges point there (``get_remaining_map``)."""
        remaining: dict[str, dict[str, int]] = {}
        for node in self.nodes.values():
            for edge in node.edges:
                groups = remaining.setdefault(edge.target, {})
                groups[edge.activation_group] = groups.get(edge.activation_group, 0) + 1
        return remaining

    def has_cycles(self) -> bool:
        """``DiGraph.has_cycles_with_exit``: True if there is a cycle; a cycle none of whose
        nodes has a conditional edge (anywhere) is an error."""
        visited: set[str] = set()
        on_stack: set[str] = set()
        path: list[str] = []

        def visit(name: str) -> bool:
            visited.add(name)
            on_stack.add(name)
            path.append(name)
            cycle = False
            for edge in self.nodes[name].edges:
                if edge.target not in visited:
                    cycle = visit(edge.target) or cycle
                elif edge.target in on_stack:
                    members = path[path.index(edge.target) :]
                    if all(e.condition is None for member in members for e in self.nodes[member].edges):
                        loop = " -> ".join([*members, members[0]])
                        raise GraphFlowImportError(
                            f"graph.nodes.{members[0]}.edges",
                            f"cycle {loop} has no conditional edge to leave it (AutoGen rejects it too)",
                        )
                    cycle = True
            on_stack.discard(name)
            path.pop()
            return cycle

        found = False
        for name in self.nodes:
            if name not in visited and visit(name):
                found = True
        return found


# --- termination conditions, mirrored ----------------------------------------------------


TerminationKind = Literal["max_message", "text_mention", "source_match", "stop_message", "or", "and"]


class TerminationSpec(_Spec):
    """The serializable AutoGen termination conditions: Max/TextMention/SourceMatch/StopMessage,
    combined with ``|`` (``or``) and ``&`` (``and``)."""

    kind: TerminationKind
    max_messages: int | None = None
    include_agent_event: bool = False
    text: str | None = None
    sources: list[str] = Field(default_factory=list)
    conditions: list[TerminationSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> TerminationSpec:
        if self.kind == "max_message" and self.max_messages is None:
            raise ValueError("max_message needs max_messages")
        if self.kind == "text_mention" and self.text is None:
            raise ValueError("text_mention needs text")
        if self.kind in ("or", "and") and not self.conditions:
            raise ValueError(f"{self.kind} needs conditions")
        return self


@dataclass
class _Stop:
    content: str
    source: str


class _Termination:
    """Runtime state of a :class:`TerminationSpec`, with AutoGen's exact semantics
    (including the stop message texts, which become the run's ``stop_reason``)."""

    def __init__(self, spec: TerminationSpec) -> None:
        self.spec = spec
        self.count = 0
        self.fired = False
        self.children = [_Termination(child) for child in spec.conditions]
        self.collected: list[_Stop] = []

    @property
    def terminated(self) -> bool:
        kind = self.spec.kind
        if kind == "max_message":
            return self.count >= (self.spec.max_messages or 0)
        if kind == "or":
            return any(child.terminated for child in self.children)
        if kind == "and":
            return all(child.terminated for child in self.children)
        return self.fired

    def __call__(self, delta: Sequence[TranscriptMessage]) -> _Stop | None:
        spec = self.spec
        if spec.kind == "max_message":
            self.count += len(delta)  # every message we produce is a chat message
            if self.count >= (spec.max_messages or 0):
                return _Stop(
                    f"Maximum number of messages {spec.max_messages} reached, current message count: {self.count}",
                    "MaxMessageTermination",
                )
            return None
        if spec.kind == "text_mention":
            for message in delta:
                if spec.text is not None and spec.text in message.content:
                    self.fired = True
                    return _Stop(f"Text '{spec.text}' mentioned", "TextMentionTermination")
            return None
        if spec.kind == "source_match":
            for message in delta:
                if message.source in spec.sources:
                    self.fired = True
                    return _Stop(f"'{message.source}' answered", "SourceMatchTermination")
            return None
        if spec.kind == "stop_message":
            return None  # agents here only ever produce text messages
        if spec.kind == "or":
            stops = [stop for stop in (child(delta) for child in self.children) if stop is not None]
            if stops:
                return _Stop(", ".join(s.content for s in stops), ", ".join(s.source for s in stops))
            return None
        # and
        results = [child(delta) for child in self.children if not child.terminated]
        self.collected.extend(stop for stop in results if stop is not None)
        if any(stop is None for stop in results):
            return None
        return _Stop(
            ", ".join(s.content for s in self.collected), ", ".join(s.source for s in self.collected)
        )

    def reset(self) -> None:
        self.count, self.fired = 0, False
        self.collected.clear()
        for child in self.children:
            child.reset()


# --- what a durable run takes and returns --------------------------------------------------


class AutoGenGraphFlowInput(_Spec):
    """Input of ``AutoGenGraphFlowWorkflow``; :meth:`ImportedGraphFlow.run_input` builds it."""

    graph: GraphSpec
    participants: dict[str, AgentProfile]
    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS)
    max_turns: int | None = Field(default=None, gt=0)
    termination: TerminationSpec | None = None
    model: str | None = Field(default=None, description="Overrides every participant's model.")
    participant_models: dict[str, str] = Field(
        default_factory=dict, description="Model per participant (CONVERGIO_MODEL syntax) when no override."
    )
    tenant: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    name: str = "GraphFlow"
    budget: BudgetLimits | None = Field(
        default=None, description="The tenant's limits, resolved at start (unset: turns are not metered)."
    )
    security: SecurityPolicy | None = Field(
        default=None,
        description="How turns are screened (unset: not screened). These runs have no approval gates: "
        "a turn the policy would hold for a person, or blocks, fails the run.",
    )

    @field_validator("task")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @model_validator(mode="after")
    def _names_match(self) -> AutoGenGraphFlowInput:
        for key, profile in self.participants.items():
            if key != profile.name:
                raise ValueError(
                    f"participants[{key!r}] is named {profile.name!r}; keys must be the agent names"
                )
        if TASK_SOURCE in self.participants:
            raise ValueError("no participant may be named 'user': it is the source of the task")
        return self


class AutoGenGraphFlowResult(_Spec):
    """The whole thread (the task from ``user`` first), who spoke in order, and why it ended."""

    messages: list[TranscriptMessage]
    speakers: list[str]
    stop_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ImportedGraphFlow(_Spec):
    """A GraphFlow component config, checked and translated."""

    name: str | None = None
    description: str | None = None
    participants: dict[str, AgentProfile]
    participant_models: dict[str, str] = Field(default_factory=dict)
    unknown_model_clients: dict[str, str] = Field(
        default_factory=dict, description="Field path -> provider of model clients we cannot call."
    )
    graph: GraphSpec
    max_turns: int | None = None
    termination: TerminationSpec | None = None

    def run_input(
        self, task: str, *, model: str | None = None, tenant: str = "default"
    ) -> AutoGenGraphFlowInput:
        """The workflow's input; without ``model``, every participant's client must be one we
        know (a scripted or unknown client would otherwise quietly run on the worker's model)."""
        if model is None and self.unknown_model_clients:
            path, provider = next(iter(self.unknown_model_clients.items()))
            raise GraphFlowImportError(
                path, f"no Convergio model for {provider!r}; pass model=... to run every participant on one"
            )
        return AutoGenGraphFlowInput(
            graph=self.graph,
            participants=self.participants,
            task=task,
            max_turns=self.max_turns,
            termination=self.termination,
            model=model,
            participant_models=self.participant_models,
            tenant=tenant,
            name=self.name or "GraphFlow",
        )


# --- loading a dumped config ---------------------------------------------------------------


def load_graphflow_config(config: Mapping[str, Any] | BaseModel) -> ImportedGraphFlow:
    """Read ``GraphFlow.dump_component()`` (as a model or its ``model_dump()``).

    Raises :class:`GraphFlowImportError` (a ``ValueError``) naming the field for: another
    component than GraphFlow; participants that are not plain ``AssistantAgent``s (tools,
    handoffs, memory, structured output, a bounded model context, no system message);
    graph nodes, edge targets or start nodes that do not exist; a node mixing conditional
    and unconditional edges (``dump_component`` drops callable conditions, so this is how a
    lost callable shows); every other ``DiGraph.graph_validate`` rule; a cyclic graph with
    neither ``max_turns`` nor a termination condition; unsupported termination conditions.
    """
    if isinstance(config, BaseModel):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise GraphFlowImportError("config", "expected the dict of GraphFlow.dump_component().model_dump()")
    provider = config.get("provider")
    if provider not in GRAPHFLOW_PROVIDERS:
        raise GraphFlowImportError(
            "provider", f"expected autogen_agentchat.teams.GraphFlow, got {provider!r}"
        )
    body = config.get("config")
    if not isinstance(body, Mapping):
        raise GraphFlowImportError("config", "missing the GraphFlow configuration object")

    raw_participants = body.get("participants")
    if not isinstance(raw_participants, list) or not raw_participants:
        raise GraphFlowImportError("config.participants", "expected a non-empty list of agent components")
    participants: dict[str, AgentProfile] = {}
    models: dict[str, str] = {}
    unknown: dict[str, str] = {}
    for index, raw in enumerate(raw_participants):
        here = f"config.participants[{index}]"
        profile, model = _participant(raw, here)
        if profile.name in participants:
            raise GraphFlowImportError(
                f"config.participants[{index}].config.name", f"duplicate name {profile.name!r}"
            )
        participants[profile.name] = profile
        if model:
            models[profile.name] = model
        else:
            client = (raw.get("config") or {}).get("model_client") if isinstance(raw, Mapping) else None
            provider = client.get("provider") if isinstance(client, Mapping) else None
            unknown[f"{here}.config.model_client.provider"] = str(provider)

    max_turns = body.get("max_turns")
    if max_turns is not None and (
        not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns <= 0
    ):
        raise GraphFlowImportError("config.max_turns", f"must be a positive integer, got {max_turns!r}")
    termination = None
    if body.get("termination_condition") is not None:
        termination = _termination(body["termination_condition"], "config.termination_condition")

    graph = _graph(body.get("graph"), "config.graph")
    validate_graphflow(graph, participants, max_turns=max_turns, termination=termination, prefix="config.")
    return ImportedGraphFlow(
        name=body.get("name"),
        description=body.get("description"),
        participants=participants,
        participant_models=models,
        unknown_model_clients=unknown,
        graph=graph,
        max_turns=max_turns,
        termination=termination,
    )


def validate_graphflow(
    graph: GraphSpec,
    participants: Iterable[str],
    *,
    max_turns: int | None,
    termination: TerminationSpec | None,
    prefix: str = "",
) -> bool:
    """Our checks plus AutoGen's ``DiGraph.graph_validate`` and ``GraphFlowManager`` rules.
    Returns whether the graph has cycles. Field names are prefixed with ``prefix``."""
    try:
        return _validate(graph, set(participants), max_turns=max_turns, termination=termination)
    except GraphFlowImportError as exc:
        raise GraphFlowImportError(prefix + exc.field, exc.problem) from None


def _validate(
    graph: GraphSpec, participants: set[str], *, max_turns: int | None, termination: TerminationSpec | None
) -> bool:
    if not graph.nodes:
        raise GraphFlowImportError("graph.nodes", "the graph has no nodes")
    for key, node in graph.nodes.items():
        if node.name != key:
            raise GraphFlowImportError(
                f"graph.nodes.{key}.name", f"is {node.name!r}, must equal its key {key!r}"
            )
        if key not in participants:
            raise GraphFlowImportError(f"graph.nodes.{key}", f"no participant is named {key!r}")
        for index, edge in enumerate(node.edges):
            if edge.target not in graph.nodes:
                raise GraphFlowImportError(
                    f"graph.nodes.{key}.edges[{index}].target", f"unknown node {edge.target!r}"
                )
    if graph.default_start_node is not None and graph.default_start_node not in graph.nodes:
        raise GraphFlowImportError("graph.default_start_node", f"unknown node {graph.default_start_node!r}")
    if not graph.start_nodes():
        raise GraphFlowImportError(
            "graph.default_start_node",
            "the graph has no start node (every node has a parent and none is set)",
        )
    if not graph.leaf_nodes():
        raise GraphFlowImportError(
            "graph.nodes", "the graph must have at least one leaf node (no outgoing edges)"
        )
    for key, node in graph.nodes.items():
        conditional = [edge.condition is not None for edge in node.edges]
        if any(conditional) and not all(conditional):
            index = conditional.index(False)
            raise GraphFlowImportError(
                f"graph.nodes.{key}.edges[{index}].condition",
                "node mixes conditional and unconditional edges; callable conditions are not serialized "
                "by dump_component(), so this edge's condition was probably a callable: use a string",
            )
    conditions: dict[tuple[str, str], tuple[str, str]] = {}
    for key, node in graph.nodes.items():
        for index, edge in enumerate(node.edges):
            seen = conditions.setdefault(
                (edge.target, edge.activation_group), (edge.activation_condition, key)
            )
            if seen[0] != edge.activation_condition:
                raise GraphFlowImportError(
                    f"graph.nodes.{key}.edges[{index}].activation_condition",
                    f"conflicting activation conditions for target {edge.target!r} group {edge.activation_group!r}: "
                    f"{seen[0]!r} (from node {seen[1]!r}) and {edge.activation_condition!r}",
                )
    cyclic = graph.has_cycles()
    if cyclic and termination is None and max_turns is None:
        raise GraphFlowImportError(
            "max_turns", "a cyclic graph needs max_turns or a termination condition (AutoGen requires it too)"
        )
    return cyclic


def _participant(raw: Any, where: str) -> tuple[AgentProfile, str | None]:
    if not isinstance(raw, Mapping):
        raise GraphFlowImportError(where, "expected an agent component")
    provider = raw.get("provider")
    if provider not in ASSISTANT_PROVIDERS:
        raise GraphFlowImportError(
            f"{where}.provider",
            f"unsupported participant type {provider!r}: only AssistantAgent can run durably",
        )
    agent = raw.get("config")
    if not isinstance(agent, Mapping):
        raise GraphFlowImportError(f"{where}.config", "missing the agent configuration")
    here = f"{where}.config"
    name = agent.get("name")
    if not isinstance(name, str) or not _AGENT_NAME.match(name):
        raise GraphFlowImportError(
            f"{here}.name", f"must be a Python identifier of at most 64 characters, got {name!r}"
        )
    if name == TASK_SOURCE:
        raise GraphFlowImportError(
            f"{here}.name", "'user' is the source of the task message; rename the agent"
        )
    system_message = agent.get("system_message")
    if not isinstance(system_message, str) or not system_message.strip():
        raise GraphFlowImportError(f"{here}.system_message", "a non-empty system message is required")
    for key in ("tools", "handoffs", "memory"):
        if agent.get(key):
            raise GraphFlowImportError(f"{here}.{key}", f"{key} are not supported in durable GraphFlow runs")
    for index, bench in enumerate(agent.get("workbench") or []):
        tools = (bench.get("config") or {}).get("tools") if isinstance(bench, Mapping) else None
        if not isinstance(bench, Mapping) or bench.get("provider") not in _EMPTY_WORKBENCHES or tools:
            raise GraphFlowImportError(
                f"{here}.workbench[{index}]",
                "tools and workbenches are not supported in durable GraphFlow runs",
            )
    context = agent.get("model_context")
    if context is not None:
        initial = (
            (context.get("config") or {}).get("initial_messages") if isinstance(context, Mapping) else None
        )
        if not isinstance(context, Mapping) or context.get("provider") not in _UNBOUNDED_CONTEXTS or initial:
            raise GraphFlowImportError(
                f"{here}.model_context", "only an empty UnboundedChatCompletionContext can be reproduced"
            )
    if agent.get("structured_message_factory"):
        raise GraphFlowImportError(f"{here}.structured_message_factory", "structured output is not supported")
    description = agent.get("description")
    role = description.strip() if isinstance(description, str) and description.strip() else name
    try:
        profile = AgentProfile(name=name, role=role[:ROLE_MAX_CHARS], system_message=system_message)
    except ValidationError as exc:
        raise _field_error(here, exc) from None
    return profile, _model_setting(agent.get("model_client"))


def _model_setting(client: Any) -> str | None:
    """The ``CONVERGIO_MODEL`` value for a dumped model client, when we know its provider.
    Credentials and tuning in the dump are ignored: the worker's settings supply them."""
    if not isinstance(client, Mapping):
        return None
    kind = _MODEL_PROVIDERS.get(str(client.get("provider")))
    config = client.get("config") if isinstance(client.get("config"), Mapping) else {}
    if kind == "offline":
        return "offline"
    if kind == "azure":
        deployment = config.get("azure_deployment") or config.get("model")
        return f"azure:{deployment}" if deployment else None
    model = config.get("model")
    if not kind or not model:
        return None
    if kind == "openai" and config.get("base_url"):
        return f"openai-compatible:{config['base_url']}#{model}"
    return f"{kind}:{model}"


def _graph(raw: Any, where: str) -> GraphSpec:
    if not isinstance(raw, Mapping):
        raise GraphFlowImportError(where, "missing the DiGraph")
    nodes = raw.get("nodes")
    if not isinstance(nodes, Mapping):
        raise GraphFlowImportError(f"{where}.nodes", "expected an object of nodes by name")
    for key, node in nodes.items():
        if not isinstance(node, Mapping):
            raise GraphFlowImportError(f"{where}.nodes.{key}", "expected a DiGraphNode object")
        edges = node.get("edges") or []
        if not isinstance(edges, list):
            raise GraphFlowImportError(f"{where}.nodes.{key}.edges", "expected a list")
        for index, edge in enumerate(edges):
            here = f"{where}.nodes.{key}.edges[{index}]"
            if not isinstance(edge, Mapping):
                raise GraphFlowImportError(here, "expected a DiGraphEdge object")
            if edge.get("condition_function") is not None:
                raise GraphFlowImportError(
                    f"{here}.condition_function", "callable conditions cannot be imported"
                )
            condition = edge.get("condition")
            if condition is not None and not isinstance(condition, str):
                raise GraphFlowImportError(
                    f"{here}.condition",
                    "only string conditions (substring checks) can be imported, not callables",
                )
    cleaned = {
        key: {**node, "edges": [_without_callable(edge) for edge in node.get("edges") or []]}
        for key, node in nodes.items()
    }
    try:
        return GraphSpec.model_validate(
            {"nodes": cleaned, "default_start_node": raw.get("default_start_node")}
        )
    except ValidationError as exc:
        raise _field_error(where, exc) from None


def _without_callable(edge: Mapping[str, Any]) -> dict[str, Any]:
    """An edge without ``condition_function`` (always null here: non-null ones are rejected)."""
    return {key: value for key, value in edge.items() if key != "condition_function"}


def _termination(raw: Any, where: str) -> TerminationSpec:
    if not isinstance(raw, Mapping):
        raise GraphFlowImportError(where, "expected a termination condition component")
    provider = raw.get("provider")
    kind = _TERMINATIONS.get(str(provider))
    if kind is None:
        raise GraphFlowImportError(
            f"{where}.provider",
            f"unsupported termination condition {provider!r}; supported: "
            + ", ".join(sorted(p.rsplit(".", 1)[1] for p in _TERMINATIONS)),
        )
    config = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
    try:
        if kind == "max_message":
            return TerminationSpec(
                kind=kind,
                max_messages=config.get("max_messages"),
                include_agent_event=bool(config.get("include_agent_event", False)),
            )
        if kind == "text_mention":
            return TerminationSpec(kind=kind, text=config.get("text"))
        if kind == "source_match":
            return TerminationSpec(kind=kind, sources=list(config.get("sources") or []))
        if kind == "stop_message":
            return TerminationSpec(kind=kind)
        children = config.get("conditions") or []
        return TerminationSpec(
            kind=kind,
            conditions=[
                _termination(child, f"{where}.config.conditions[{i}]") for i, child in enumerate(children)
            ],
        )
    except ValidationError as exc:
        raise _field_error(f"{where}.config", exc) from None


def _field_error(where: str, exc: ValidationError) -> GraphFlowImportError:
    """The first pydantic error as an import error whose field is its full location."""
    error = exc.errors()[0]
    location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.get("loc", ()))
    return GraphFlowImportError(f"{where}{location}", str(error.get("msg")))


# --- running the graph ---------------------------------------------------------------------


@dataclass(frozen=True)
class TurnPlan:
    """One model call: who speaks and everything its model context holds, in order
    (its own earlier replies have its own name as source)."""

    agent: str
    context: list[TranscriptMessage]


@dataclass
class _Batch:
    speakers: list[str]
    rounds: list[list[str]]
    replies: list[TranscriptMessage] = field(default_factory=list)


class GraphExecution:
    """``GraphFlowManager`` as a deterministic state machine; the caller runs the model turns.

    Usage (the workflow does exactly this)::

        execution = GraphExecution(graph, participants, max_turns=..., termination=...)
        execution.start(task)
        while (rounds := execution.next_batch()) is not None:
            for round in rounds:                    # usually one round
                plans = [execution.begin_turn(agent) for agent in round]
                ... run the plans concurrently ...
                for plan, reply in zip(plans, replies):
                    execution.end_turn(plan.agent, reply)
            execution.end_batch()
        execution.thread, execution.speakers, execution.stop_reason
    """

    def __init__(
        self,
        graph: GraphSpec,
        participants: Sequence[str],
        *,
        max_turns: int | None = None,
        termination: TerminationSpec | None = None,
    ) -> None:
        validate_graphflow(graph, participants, max_turns=max_turns, termination=termination)
        if max_turns is not None and max_turns <= 0:
            raise GraphFlowImportError("max_turns", "must be greater than 0")
        self._graph = graph
        self._participants = list(participants)
        self._max_turns = max_turns
        self._termination = _Termination(termination) if termination is not None else None
        self._edges = {name: node.edges for name, node in graph.nodes.items()}
        self._origin_remaining = graph.remaining_map()
        self._remaining = {target: dict(groups) for target, groups in self._origin_remaining.items()}
        self._activation: dict[str, dict[str, str]] = {}
        self._enqueued_any: dict[str, dict[str, bool]] = {}
        for node in graph.nodes.values():
            for edge in node.edges:
                self._activation.setdefault(edge.target, {}).setdefault(
                    edge.activation_group, edge.activation_condition
                )
                self._enqueued_any.setdefault(edge.target, {}).setdefault(edge.activation_group, False)
        self._triggered: dict[str, list[str]] = {}
        self._ready: deque[str] = deque(graph.start_nodes())
        self._current_turn = 0
        # What each participant's model context holds, and what it has not received yet.
        self._views: dict[str, list[TranscriptMessage]] = {name: [] for name in self._participants}
        self._buffers: dict[str, list[TranscriptMessage]] = {name: [] for name in self._participants}
        self._batch: _Batch | None = None
        self._started = False
        self.thread: list[TranscriptMessage] = []
        self.stop_reason: str | None = None

    # -- state ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    @property
    def speakers(self) -> list[str]:
        """Who spoke, in thread order (one entry per reply)."""
        return [message.source for message in self.thread[1:]]

    @property
    def ready(self) -> list[str]:
        return list(self._ready)

    # -- the protocol ----------------------------------------------------------------------
    def start(self, task: str) -> None:
        """The task message: buffered by every participant, checked against termination."""
        if self._started:
            raise RuntimeError("the execution has already started")
        self._started = True
        message = TranscriptMessage(source=TASK_SOURCE, content=task)
        self._publish(message)
        self._apply_termination([message], increment_turn_count=False)

    def next_batch(self) -> list[list[str]] | None:
        """Drain the ready queue (``select_speaker``) and return the speakers as rounds:
        round *k* holds the speakers selected at least *k* times, in the order they were
        first selected (each speaker's turns run one after the other, as AutoGen queues
        them, and the chains run side by side). None once the run is over."""
        if not self._started:
            raise RuntimeError("call start() first")
        if self._batch is not None:
            raise RuntimeError("the previous batch has not ended")
        if self.finished:
            return None
        speakers: list[str] = []
        while self._ready:
            speaker = self._ready.popleft()
            speakers.append(speaker)
            self._reset_triggered_activation_groups(speaker)
        counts: dict[str, int] = {}
        for speaker in speakers:  # dict order = order of first selection
            counts[speaker] = counts.get(speaker, 0) + 1
        rounds = [[s for s, n in counts.items() if n > k] for k in range(max(counts.values(), default=0))]
        self._batch = _Batch(speakers=speakers, rounds=rounds)
        return [list(r) for r in rounds]

    def begin_turn(self, agent: str) -> TurnPlan:
        """The agent receives what was buffered for it; returns its whole model context."""
        if self._batch is None or agent not in self._batch.speakers:
            raise RuntimeError(f"{agent} is not a speaker of the current batch")
        view = self._views[agent]
        view.extend(self._buffers[agent])
        self._buffers[agent] = []
        return TurnPlan(agent=agent, context=list(view))

    def end_turn(self, agent: str, content: str) -> None:
        """The agent's reply: into its own context now, to everyone else when the batch ends."""
        if self._batch is None:
            raise RuntimeError("no batch is running")
        reply = TranscriptMessage(source=agent, content=content)
        self._views[agent].append(reply)
        self._batch.replies.append(reply)

    def end_batch(self) -> None:
        """Append the replies in arrival order (``update_message_thread`` for each), then
        apply termination with the last reply as the delta, counting one turn."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("no batch is running")
        if len(batch.replies) != len(batch.speakers):
            raise RuntimeError(f"{len(batch.speakers)} speakers but {len(batch.replies)} replies")
        self._batch = None
        for reply in batch.replies:
            self._publish(reply)
        self._apply_termination([batch.replies[-1]], increment_turn_count=True)

    # -- AutoGen's logic -------------------------------------------------------------------
    def _publish(self, message: TranscriptMessage) -> None:
        for name in self._participants:
            if name != message.source:
                self._buffers[name].append(message)
        self.thread.append(message)
        self._update_message_thread(message)

    def _update_message_thread(self, message: TranscriptMessage) -> None:
        source = message.source
        if source not in self._graph.nodes:
            return
        for edge in self._edges[source]:
            if not edge.check_condition(message.content):
                continue
            target, group = edge.target, edge.activation_group
            if self._activation[target][group] == "all":
                self._remaining[target][group] -= 1
                if self._remaining[target][group] == 0:
                    self._ready.append(target)
                    self._save_triggered(target, group)
            elif not self._enqueued_any[target][group]:
                self._ready.append(target)
                self._enqueued_any[target][group] = True
                self._save_triggered(target, group)

    def _save_triggered(self, target: str, group: str) -> None:
        groups = self._triggered.setdefault(target, [])
        if group not in groups:
            groups.append(group)

    def _reset_triggered_activation_groups(self, speaker: str) -> None:
        for group in self._triggered.get(speaker, []):
            if self._activation[speaker][group] == "any":
                self._enqueued_any[speaker][group] = False
            elif speaker in self._remaining and group in self._remaining[speaker]:
                self._remaining[speaker][group] = self._origin_remaining[speaker][group]
        self._triggered[speaker] = []

    def _apply_termination(self, delta: list[TranscriptMessage], *, increment_turn_count: bool) -> None:
        if not self._ready:
            self._stop(DIGRAPH_STOP_MESSAGE)
            return
        if self._termination is not None:
            stop = self._termination(delta)
            if stop is not None:
                self._stop(stop.content)
                return
        if increment_turn_count:
            self._current_turn += 1
        if self._max_turns is not None and self._current_turn >= self._max_turns:
            self._stop(f"Maximum number of turns {self._max_turns} reached.")

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        if self._termination is not None:
            self._termination.reset()


@dataclass(frozen=True)
class ActivityTurn:
    """What the agent-turn activity is given for one :class:`TurnPlan`."""

    context: list[TranscriptMessage]
    task: str
    answers_last_message: bool = False


# Names a turn that answers the newest message as it stands; never shown to the model.
ANSWER_THE_LAST_MESSAGE = "Answer the last message."


def activity_turn(plan: TurnPlan) -> ActivityTurn:
    """Split a model context into the agent-turn activity's context and task.

    The activity appends ``task`` as a message from ``user`` unless the context already
    ends with it from someone else (see ``convergio.activities.agent_turn._task_messages``).
    So a context ending with the user's task passes that last message as the task, and
    one ending with an agent's message (another agent's, or its own after a self-loop)
    passes everything as context and repeats the last text as the task. A reply that cannot
    be a task (blank, or longer than a task may be: AutoGen passes it on as it is) is
    answered as it stands (``answers_last_message``). Either way the model sees exactly
    ``plan.context``.
    """
    last = plan.context[-1]
    if last.source == TASK_SOURCE:
        return ActivityTurn(plan.context[:-1], last.content)
    if not last.content.strip() or len(last.content) > MAX_TASK_CHARS:
        return ActivityTurn(list(plan.context), ANSWER_THE_LAST_MESSAGE, answers_last_message=True)
    return ActivityTurn(list(plan.context), last.content)
