"""Conformance: an AutoGen ``GraphFlow`` run durably says exactly what AutoGen says in memory.

Each graph is built with AutoGen's own ``DiGraphBuilder`` and ``AssistantAgent``s on the
deterministic offline model, run in memory with ``flow.run``, dumped with
``dump_component()`` and run again as the ``AutoGenGraphFlow`` workflow on the dev
server. Speakers, every message (byte for byte) and the stop reason must be equal.

The offline model answers from its whole prompt (role, last user message, everything
else as material), so a durable turn that showed an agent a different context — other
messages, another order, its own replies as user messages — would write other text.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from autogen_agentchat.agents import AssistantAgent, UserProxyAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination, TimeoutTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import DiGraphBuilder, GraphFlow
from autogen_core.models import CreateResult, LLMMessage, RequestUsage, SystemMessage
from temporalio.client import Client, WorkflowFailureError

from convergio.activities.agent_turn import _task_messages
from convergio.agents.offline import OfflineChatCompletionClient
from convergio.contracts import AgentTurnInput, AgentTurnRequest
from convergio.graphflow.autogen_graph import (
    AutoGenGraphFlowInput,
    AutoGenGraphFlowResult,
    GraphExecution,
    GraphFlowImportError,
    activity_turn,
    load_graphflow_config,
)
from convergio.graphflow.autogen_runs import start_autogen_graphflow
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflows.autogen_graphflow import AutoGenGraphFlowWorkflow
from tests.graphflow_helpers import replayer

MARKET_TASK = (
    "Assess entering the German market. Revenue grew 40% last year. "
    "Hiring costs 1.5 million euros. Cover: Revenue, Costs, Recommendation."
)


def _agent(name: str, role: str | None = None, *, latency_ms: int = 0) -> AssistantAgent:
    return AssistantAgent(
        name,
        model_client=OfflineChatCompletionClient(latency_ms=latency_ms),
        system_message=f"You are the {role or name + ' analyst'}.",
    )


def _graph(
    agents: list[AssistantAgent], edges: list[tuple[str, str, dict[str, Any]]], entry: str | None = None
):
    by_name = {agent.name: agent for agent in agents}
    builder = DiGraphBuilder()
    for agent in agents:
        builder.add_node(agent)
    for source, target, options in edges:
        builder.add_edge(by_name[source], by_name[target], **options)
    if entry:
        builder.set_entry_point(by_name[entry])
    return builder.build()


async def _conformance(
    dev_client: Client, settings: Settings, resources: WorkerResources, flow: GraphFlow, task: str
) -> AutoGenGraphFlowResult:
    """Run ``flow`` in memory and durably; assert equality; return the durable result."""
    config = flow.dump_component().model_dump(mode="json")
    expected = await flow.run(task=task)
    expected_messages = [(m.source, m.content) for m in expected.messages if isinstance(m, TextMessage)]
    assert len(expected_messages) == len(expected.messages), "AutoGen produced non-text messages"

    async with build_worker(dev_client, settings, resources):
        workflow_id = await start_autogen_graphflow(dev_client, settings, config, task)
        handle = dev_client.get_workflow_handle(workflow_id, result_type=AutoGenGraphFlowResult)
        result = await handle.result()
    replay = await replayer().replay_workflow(
        await handle.fetch_history()
    )
    assert replay.replay_failure is None  # deterministic: the history replays on this code

    assert [m.source for m in result.messages] == [source for source, _ in expected_messages]
    assert [(m.source, m.content) for m in result.messages] == expected_messages
    assert result.speakers == [source for source, _ in expected_messages[1:]]
    assert result.stop_reason == expected.stop_reason
    assert result.prompt_tokens > 0
    return result


# --- the four shapes ---------------------------------------------------------------------


async def test_sequential(dev_client: Client, settings: Settings, resources: WorkerResources) -> None:
    agents = [_agent("A", "market analyst"), _agent("B", "CFO"), _agent("C", "chief of staff")]
    flow = GraphFlow(agents, graph=_graph(agents, [("A", "B", {}), ("B", "C", {})]))
    result = await _conformance(dev_client, settings, resources, flow, MARKET_TASK)
    assert result.speakers == ["A", "B", "C"]
    assert result.stop_reason == "Digraph execution is complete"


@pytest.mark.parametrize("join", ["all", "any"])
async def test_fan_out_fan_in(
    dev_client: Client, settings: Settings, resources: WorkerResources, join: str
) -> None:
    agents = [
        _agent("A", "strategist"),
        _agent("B", "CFO"),
        _agent("C", "COO"),
        _agent("D", "chief of staff"),
    ]
    edges = [
        ("A", "B", {}),
        ("A", "C", {}),
        ("B", "D", {"activation_condition": join}),
        ("C", "D", {"activation_condition": join}),
    ]
    flow = GraphFlow(agents, graph=_graph(agents, edges))
    result = await _conformance(dev_client, settings, resources, flow, MARKET_TASK)
    # B and C were asked together; their replies join the thread in the order they were
    # selected (edge order), and D runs once, after both, with both in its context.
    assert result.speakers == ["A", "B", "C", "D"]
    assert result.messages[2].content != result.messages[3].content  # role lines differ: order is observable


@pytest.mark.parametrize(
    ("task", "branch"),
    [
        ("Decide on the German launch. The board says APPROVED for the launch. Cover: Decision.", "launch"),
        ("Decide on the German launch. The board has not decided yet. Cover: Decision.", "hold"),
    ],
)
async def test_conditional(
    dev_client: Client, settings: Settings, resources: WorkerResources, task: str, branch: str
) -> None:
    agents = [
        _agent("gate", "launch gatekeeper"),
        _agent("launch", "launch manager"),
        _agent("hold", "risk officer"),
    ]
    edges = [("gate", "launch", {"condition": "APPROVED"}), ("gate", "hold", {"condition": "not decided"})]
    flow = GraphFlow(agents, graph=_graph(agents, edges))
    result = await _conformance(dev_client, settings, resources, flow, task)
    assert result.speakers == ["gate", branch]


async def test_loop_leaves_when_its_exit_condition_appears(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """writer -> reviewer -> writer until the writer's draft carries the task's 'Cover:' line.

    The offline writer first restates the task (no "Cover:" sentence); on its second turn
    the reviewer's copy gives it that sentence, the back edge's condition no longer holds
    and the exit edge's does.
    """
    task = (
        "Draft the launch memo for Germany. Demand grows 8% a year. "
        "The draft needs a REVISE pass before sign-off. Cover: Draft, Risks."
    )
    agents = [
        _agent("writer", "memo writer"),
        _agent("reviewer", "memo reviewer"),
        _agent("publisher", "publisher"),
    ]
    edges = [
        ("writer", "reviewer", {"condition": "Germany.\n\n## Risks"}),
        ("writer", "publisher", {"condition": "- Cover: Draft, Risks."}),
        ("reviewer", "writer", {}),
    ]
    flow = GraphFlow(agents, graph=_graph(agents, edges, entry="writer"), max_turns=10)
    result = await _conformance(dev_client, settings, resources, flow, task)
    assert result.speakers == ["writer", "reviewer", "writer", "publisher"]
    assert result.stop_reason == "Digraph execution is complete"


async def test_loop_bounded_by_max_turns(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    task = (
        "Draft the launch memo for Germany. Demand grows 8% a year. "
        "The draft needs a REVISE pass before sign-off. Cover: Draft, Risks."
    )
    agents = [
        _agent("writer", "memo writer"),
        _agent("reviewer", "memo reviewer"),
        _agent("publisher", "publisher"),
    ]
    edges = [
        ("writer", "reviewer", {}),
        ("reviewer", "writer", {"condition": "REVISE"}),
        ("reviewer", "publisher", {"condition": "SIGNED OFF"}),
    ]
    flow = GraphFlow(agents, graph=_graph(agents, edges, entry="writer"), max_turns=5)
    result = await _conformance(dev_client, settings, resources, flow, task)
    assert result.speakers == ["writer", "reviewer", "writer", "reviewer", "writer"]
    assert result.stop_reason == "Maximum number of turns 5 reached."


async def test_loop_through_a_fan_out_with_termination_conditions(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """A -> (B, C) -> D -> A: parallel speakers inside a loop, stopped by a message count.

    On the second round B and C have each seen their own first reply *before* the other's
    (it reached them after their turn), which only a per-agent model context reproduces.
    """
    agents = [_agent(n) for n in ("A", "B", "C", "D", "E")]
    edges = [
        ("A", "B", {}),
        ("A", "C", {}),
        ("B", "D", {}),
        ("C", "D", {}),
        ("D", "A", {"condition": "Revenue"}),
        ("D", "E", {"condition": "NOT IN ANY ANSWER"}),
    ]
    termination = MaxMessageTermination(9) | TextMentionTermination("NOT IN ANY ANSWER")
    flow = GraphFlow(agents, graph=_graph(agents, edges, entry="A"), termination_condition=termination)
    result = await _conformance(dev_client, settings, resources, flow, MARKET_TASK)
    # Only the last reply of each batch counts towards MaxMessageTermination (AutoGen's rule):
    # task 1 + A + C + D + A + C + D = 7 after six batches, 9 after the eighth.
    assert result.speakers == ["A", "B", "C", "D", "A", "B", "C", "D", "A", "B", "C"]
    assert result.stop_reason.startswith("Maximum number of messages 9 reached, current message count: 9")


async def test_node_selected_twice_by_two_activation_groups(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """A reaches B through two activation groups, so one batch selects B, B, C.

    AutoGen then runs B twice, one turn after the other (the second sees only its own first
    reply as new), while C runs beside B's first turn. Its models here take 20 ms each, as
    any real model does, so the replies arrive as B, C, B. (With zero-latency models the
    interleaving follows AutoGen's internal message passing instead.)
    """
    agents = [_agent(n, latency_ms=20) for n in ("A", "B", "C", "D")]
    edges = [
        ("A", "B", {"activation_group": "x"}),
        ("A", "B", {"activation_group": "y"}),
        ("A", "C", {}),
        ("B", "D", {"activation_condition": "any"}),
        ("C", "D", {"activation_condition": "any"}),
    ]
    flow = GraphFlow(agents, graph=_graph(agents, edges))
    result = await _conformance(dev_client, settings, resources, flow, MARKET_TASK)
    assert result.speakers[:4] == ["A", "B", "C", "B"]


async def test_self_loop_sees_its_own_replies_as_its_own(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """A answers itself: nothing new reaches it, so its model is called with its own last
    reply (an assistant message) at the end of the context and no new instruction."""
    agents = [_agent("A", "strategist"), _agent("B", "CFO")]
    edges = [("A", "A", {"condition": "Revenue"}), ("A", "B", {"condition": "NOT IN ANY ANSWER"})]
    flow = GraphFlow(
        agents, graph=_graph(agents, edges, entry="A"), termination_condition=MaxMessageTermination(4)
    )
    result = await _conformance(dev_client, settings, resources, flow, MARKET_TASK)
    assert result.speakers == ["A", "A", "A"]
    assert result.messages[1].content != result.messages[2].content


# --- what each model sees ----------------------------------------------------------------


class _RecordingClient(OfflineChatCompletionClient):
    """The offline model, recording each call's messages; ``reply`` answers instead when set."""

    def __init__(
        self, name: str, calls: list[tuple[str, list[tuple[str, str | None, str]]]], reply: str | None = None
    ) -> None:
        super().__init__()
        self._name, self._calls, self._reply = name, calls, reply

    async def create(self, messages, **kwargs):  # type: ignore[no-untyped-def,override]
        self._calls.append((self._name, _prompt(messages)))
        if self._reply is not None:
            usage = RequestUsage(prompt_tokens=1, completion_tokens=1)
            return CreateResult(finish_reason="stop", content=self._reply, usage=usage, cached=False)
        return await super().create(messages, **kwargs)


def _prompt(messages: list[LLMMessage]) -> list[tuple[str, str | None, str]]:
    return [
        (type(m).__name__, getattr(m, "source", None), str(m.content))
        for m in messages
        if not isinstance(m, SystemMessage)
    ]


async def test_every_turn_gets_exactly_the_model_context_autogen_gives() -> None:
    """Replay AutoGen's replies through GraphExecution and the activity's message builder:
    every model call must receive the same messages, roles and sources, in the same order."""
    calls: list[tuple[str, list[tuple[str, str | None, str]]]] = []
    agents = [
        AssistantAgent(n, model_client=_RecordingClient(n, calls), system_message=f"You are the {n} analyst.")
        for n in ("A", "B", "C", "D", "E")
    ]
    edges = [
        ("A", "B", {}),
        ("A", "C", {}),
        ("B", "D", {}),
        ("C", "D", {}),
        ("D", "A", {"condition": "Revenue"}),
        ("D", "E", {"condition": "NOT IN ANY ANSWER"}),
    ]
    flow = GraphFlow(agents, graph=_graph(agents, edges, entry="A"), max_turns=7)
    imported = load_graphflow_config(flow.dump_component().model_dump(mode="json"))
    expected = await flow.run(task=MARKET_TASK)
    replies = iter(m for m in expected.messages[1:] if isinstance(m, TextMessage))

    execution, ours, _ = _replay_through_activity_turns(imported, replies)
    assert ours == calls
    assert execution.stop_reason == expected.stop_reason
    # C's second call lists its own first reply before B's, unlike the thread.
    second_c = [prompt for agent, prompt in calls if agent == "C"][1]
    assert [source for _, source, _ in second_c][:4] == ["user", "A", "C", "B"]
    assert [kind for kind, source, _ in second_c if source == "C"] == ["AssistantMessage"]


async def test_a_blank_or_very_long_reply_is_answered_as_autogen_passes_it_on() -> None:
    """AutoGen passes any reply on; a reply that cannot be a task (blank, or over 50,000
    characters) failed the durable run. Now the next agent answers it as it stands, with the
    same model context AutoGen gives."""
    calls: list[tuple[str, list[tuple[str, str | None, str]]]] = []
    long_reply = "Revenue grew 40% last year. " * 2_000  # 56,000 characters
    replies = {"A": "", "B": long_reply}
    agents = [
        AssistantAgent(n, model_client=_RecordingClient(n, calls, reply=replies.get(n)),
                       system_message=f"You are the {n} analyst.")
        for n in ("A", "B", "C")
    ]
    flow = GraphFlow(agents, graph=_graph(agents, [("A", "B", {}), ("B", "C", {})]))
    imported = load_graphflow_config(flow.dump_component().model_dump(mode="json"))
    expected = await flow.run(task=MARKET_TASK)
    assert [m.content for m in expected.messages[1:3]] == ["", long_reply]

    _, ours, turns = _replay_through_activity_turns(imported, iter(expected.messages[1:]))
    assert ours == calls
    assert [turn.answers_last_message for turn in turns] == [False, True, True]


def _replay_through_activity_turns(
    imported: Any, replies: Any
) -> tuple[GraphExecution, list[tuple[str, list[tuple[str, str | None, str]]]], list[AgentTurnInput]]:
    """Run the imported graph with AutoGen's replies, as the workflow does: every turn through
    ``activity_turn`` into a valid activity input, then the activity's message builder. Keeps
    what each model call would have been sent."""
    execution = GraphExecution(imported.graph, list(imported.participants), max_turns=imported.max_turns)
    ours: list[tuple[str, list[tuple[str, str | None, str]]]] = []
    turns: list[AgentTurnInput] = []
    execution.start(MARKET_TASK)
    while (rounds := execution.next_batch()) is not None:
        for speakers in rounds:
            for agent in speakers:
                planned = activity_turn(execution.begin_turn(agent))
                turn = AgentTurnInput(
                    workflow_id="w",
                    step_id=agent,
                    turn=1,
                    request=AgentTurnRequest(task=planned.task, agent=imported.participants[agent]),
                    context=planned.context,
                    answers_last_message=planned.answers_last_message,
                )
                turns.append(turn)
                ours.append((agent, _prompt([m.to_model_message() for m in _task_messages(turn)])))
                reply = next(replies)
                assert reply.source == agent
                execution.end_turn(agent, reply.content)
        execution.end_batch()
    return execution, ours, turns


# --- rejected imports --------------------------------------------------------------------


def _simple_flow(**kwargs: Any) -> GraphFlow:
    agents = [_agent("A"), _agent("B"), _agent("C")]
    return GraphFlow(agents, graph=_graph(agents, [("A", "B", {}), ("B", "C", {})]), **kwargs)


def _dump(flow: GraphFlow) -> dict[str, Any]:
    return flow.dump_component().model_dump(mode="json")


def _rejected(config: dict[str, Any]) -> GraphFlowImportError:
    with pytest.raises(GraphFlowImportError) as error:
        load_graphflow_config(config)
    assert isinstance(error.value, ValueError)
    return error.value


def test_a_plain_config_imports() -> None:
    imported = load_graphflow_config(_dump(_simple_flow(max_turns=3)))
    assert list(imported.participants) == ["A", "B", "C"]
    assert imported.participants["A"].system_message == "You are the A analyst."
    assert imported.participant_models == {"A": "offline", "B": "offline", "C": "offline"}
    assert imported.graph.start_nodes() == ["A"] and imported.max_turns == 3


def test_callable_condition_is_rejected_naming_the_edge() -> None:
    agents = [_agent("A"), _agent("B"), _agent("C")]
    graph = _graph(
        agents,
        [
            ("A", "B", {"condition": "yes"}),
            ("A", "C", {"condition": lambda m: "yes" not in m.to_model_text()}),
        ],
    )
    error = _rejected(_dump(GraphFlow(agents, graph=graph)))
    assert error.field == "config.graph.nodes.A.edges[1].condition"
    assert "callable" in str(error)

    config = _dump(_simple_flow())
    config["config"]["graph"]["nodes"]["A"]["edges"][0]["condition"] = {"callable": "<lambda>"}
    assert _rejected(config).field == "config.graph.nodes.A.edges[0].condition"


def test_unsupported_participants_are_rejected() -> None:
    proxy = UserProxyAgent("human")
    agents = [_agent("A"), proxy]
    flow = GraphFlow(agents, graph=_graph(agents, [("A", "human", {})]))
    assert _rejected(_dump(flow)).field == "config.participants[1].provider"

    config = _dump(_simple_flow())  # the offline client cannot call tools, so add one to the dump
    bench = config["config"]["participants"][1]["config"]["workbench"][0]
    bench["config"]["tools"] = [{"provider": "autogen_core.tools.FunctionTool", "config": {"name": "lookup"}}]
    assert _rejected(config).field == "config.participants[1].config.workbench[0]"
    config["config"]["participants"][1]["config"]["handoffs"] = ["A"]
    assert _rejected(config).field == "config.participants[1].config.handoffs"

    config = _dump(_simple_flow())
    config["config"]["participants"][2]["config"]["system_message"] = None
    assert _rejected(config).field == "config.participants[2].config.system_message"

    config = _dump(_simple_flow())
    config["config"]["participants"][0]["config"]["name"] = "user"
    assert _rejected(config).field == "config.participants[0].config.name"


def test_unknown_nodes_and_missing_start_are_rejected() -> None:
    config = _dump(_simple_flow())
    config["config"]["graph"]["nodes"]["B"]["edges"][0]["target"] = "Z"
    error = _rejected(config)
    assert error.field == "config.graph.nodes.B.edges[0].target" and "'Z'" in str(error)

    config = _dump(_simple_flow())
    config["config"]["graph"]["nodes"]["X"] = {"name": "X", "edges": [], "activation": "all"}
    assert _rejected(config).field == "config.graph.nodes.X"

    config = _dump(_simple_flow())
    config["config"]["graph"]["default_start_node"] = "nobody"
    assert _rejected(config).field == "config.graph.default_start_node"

    config = _dump(_simple_flow(max_turns=4))
    config["config"]["graph"]["nodes"]["C"]["edges"] = [{"target": "A", "condition": "again"}]
    error = _rejected(config)  # every node now has a parent and no start node is set
    assert error.field == "config.graph.default_start_node" and "no start node" in str(error)


def test_cycles_need_an_exit_and_a_bound() -> None:
    base = _dump(_simple_flow())
    base["config"]["graph"]["default_start_node"] = "A"

    config = copy.deepcopy(base)
    config["config"]["graph"]["nodes"]["B"]["edges"].append({"target": "A"})
    config["config"]["max_turns"] = 5
    error = _rejected(config)
    assert error.field == "config.graph.nodes.A.edges" and "A -> B -> A" in str(error)

    config = copy.deepcopy(base)
    config["config"]["graph"]["nodes"]["B"]["edges"] = [
        {"target": "C", "condition": "done"},
        {"target": "A", "condition": "again"},
    ]
    error = _rejected(config)
    assert error.field == "config.max_turns"
    config["config"]["max_turns"] = 5
    assert load_graphflow_config(config).graph.has_cycles()


def test_other_graph_rules_mirror_autogen() -> None:
    config = _dump(_simple_flow())
    config["config"]["graph"]["nodes"]["A"]["edges"].append(
        {"target": "C", "activation_group": "C", "activation_condition": "any"}
    )
    error = _rejected(config)  # B -> C says "all" for group C, A -> C says "any"
    assert error.field == "config.graph.nodes.B.edges[0].activation_condition"

    config = _dump(_simple_flow())
    config["config"]["graph"]["nodes"]["C"]["name"] = "D"
    assert _rejected(config).field == "config.graph.nodes.C.name"

    config = _dump(_simple_flow())
    config["provider"] = "autogen_agentchat.teams.RoundRobinGroupChat"
    assert _rejected(config).field == "provider"


def test_termination_conditions() -> None:
    both = MaxMessageTermination(3) & TextMentionTermination("DONE")
    imported = load_graphflow_config(_dump(_simple_flow(termination_condition=both)))
    assert imported.termination is not None and imported.termination.kind == "and"
    assert [c.kind for c in imported.termination.conditions] == ["max_message", "text_mention"]

    error = _rejected(_dump(_simple_flow(termination_condition=TimeoutTermination(30))))
    assert error.field == "config.termination_condition.provider" and "TimeoutTermination" in str(error)


async def test_workflow_rejects_an_invalid_hand_built_input(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    imported = load_graphflow_config(_dump(_simple_flow()))
    graph = imported.graph.model_copy(deep=True)
    graph.nodes["C"].edges = [graph.nodes["A"].edges[0].model_copy(update={"target": "A"})]
    run = AutoGenGraphFlowInput(graph=graph, participants=imported.participants, task=MARKET_TASK)
    async with build_worker(dev_client, settings, resources):
        handle = await dev_client.start_workflow(
            AutoGenGraphFlowWorkflow.run,
            run,
            id=f"autogen-invalid-{uuid.uuid4().hex}",
            task_queue=settings.temporal_task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "default_start_node" in str(failure.value.cause)


@pytest.mark.parametrize(
    ("tenant_limits", "task", "refusal"),
    [
        ({"workflow_usd": 0.00001}, MARKET_TASK, "budget: the turn would exceed this run's limit"),
        ({}, f"{MARKET_TASK} Deploy with the key AKIAIOSFODNN7EXAMPLE.", "security: block"),
    ],
    ids=["over_budget", "blocked_by_the_guardian"],
)
async def test_imported_graph_runs_are_metered_and_screened(
    dev_client: Client, settings: Settings, resources: WorkerResources,
    tenant_limits: dict[str, float], task: str, refusal: str,
) -> None:
    """An imported GraphFlow spends the tenant's budget and is screened like a template's run
    (before, neither applied): a turn over budget, or one the guardian blocks, fails the run."""
    tenant = f"t{uuid.uuid4().hex[:8]}"
    limited = settings.model_copy(update={"budget_tenant_limits": {tenant: tenant_limits}})
    async with build_worker(dev_client, settings, resources):
        config = _dump(_simple_flow())
        workflow_id = await start_autogen_graphflow(dev_client, limited, config, task, tenant=tenant)
        with pytest.raises(WorkflowFailureError) as failure:
            await dev_client.get_workflow_handle(workflow_id).result()
    assert refusal in str(failure.value.cause)


def test_a_scripted_or_unknown_model_client_needs_an_explicit_model() -> None:
    """AutoGen's scripted client has no durable equivalent: the run must say which model to use
    (before, it quietly ran on the worker's model and answered differently)."""
    from autogen_ext.models.replay import ReplayChatCompletionClient

    scripted = [AssistantAgent(n, model_client=ReplayChatCompletionClient(["yes"]), system_message="Hi.")
                for n in ("A", "B")]
    imported = load_graphflow_config(_dump(GraphFlow(scripted, graph=_graph(scripted, [("A", "B", {})]))))
    with pytest.raises(GraphFlowImportError) as error:
        imported.run_input(MARKET_TASK)
    assert "config.participants[0].config.model_client.provider" in str(error.value)
    assert "ReplayChatCompletionClient" in str(error.value) and "model=" in str(error.value)
    assert imported.run_input(MARKET_TASK, model="offline").model == "offline"
