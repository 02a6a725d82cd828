"""The GraphFlow template format: a business process as data, validated by Pydantic.

A template is pinned into the workflow input at start, so these models are also the
workflow's contract. Cross-field checks (unknown steps, cycles, unreachable steps,
placeholders, expressions) live in ``validation.py``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from convergio.agents.definition import MissionPhase
from convergio.security.policy import SecurityPolicy

# An exponent is read too: runs pinned before durations were written as exact seconds hold
# forms like "1.0368e+06s" (12 days).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SECONDS = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)
STEP_ID = r"^[a-z][a-z0-9_]{0,63}$"
# Far beyond any real timeout or SLA, far below what timedelta and the workflow's
# ``now + sla`` arithmetic can hold (an overflow there would fail runs, not the load). Whether a
# duration must be positive is checked in validation.py, when a template loads: these models
# also decode the templates pinned in runs already started, which must keep decoding.
MAX_DURATION_DAYS = 3650
_MAX_SECONDS = MAX_DURATION_DAYS * 86400
_TOO_LONG = f"a duration is at most {MAX_DURATION_DAYS}d (10 years)"


def _parse_duration(value: Any) -> Any:
    """Accept '30s', '5m', '2h', '1d' (and numbers of seconds) besides ISO 8601.

    Out-of-range numbers become a ValueError here: timedelta's own OverflowError would
    escape Pydantic and lose the field path.
    """
    if isinstance(value, bool):  # YAML's yes/no/true/false: Pydantic would read 1s or 0s
        raise ValueError(
            f"a duration must be a number of seconds or a text like '30s', got {str(value).lower()}"
        )
    if isinstance(value, (int, float)):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    elif isinstance(value, str) and _SECONDS.match(value):  # "30": a number of seconds, quoted
        seconds = float(value)
    elif isinstance(value, str):
        try:  # ISO 8601 ("PT5M") and Pydantic's other forms ("00:05:00")
            return _TIMEDELTA.validate_python(value)
        except ValidationError:  # its message spoke of a "day identifier"
            raise ValueError(
                f"{value!r} is not a duration: write a number of seconds, a text like '30s', '5m', "
                "'2h' or '1d', or ISO 8601 like 'PT5M'"
            ) from None
    else:
        return value
    if isinstance(seconds, float) and math.isnan(seconds):
        raise ValueError("a duration must be a number of seconds or a text like '30s', got nan")
    if abs(seconds) > _MAX_SECONDS:  # also inf, and ints beyond float range
        raise ValueError(_TOO_LONG)
    return timedelta(seconds=seconds)


def _in_range(value: timedelta) -> timedelta:
    if abs(value) > timedelta(days=MAX_DURATION_DAYS):  # ISO 8601 strings skip _parse_duration
        raise ValueError(_TOO_LONG)
    return value


def format_duration(value: timedelta) -> str:
    """Exact seconds without an exponent, so the JSON form parses back (``:g`` gave '1.0368e+06s')."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    whole, fraction = divmod(abs(micros), 1_000_000)
    text = f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")
    return f"{'-' if micros < 0 else ''}{text}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(_parse_duration),
    AfterValidator(_in_range),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


class TemplateModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "list": (list,),
    "object": (dict,),
}


class InputSpec(TemplateModel):
    type: Literal["string", "number", "integer", "boolean", "list", "object"] = "string"
    description: str = ""
    required: bool = False
    default: Any = None

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (as parsed from JSON or YAML) is of this input's type."""
        if isinstance(value, bool) and self.type in ("number", "integer"):
            return False
        return isinstance(value, _PYTHON_TYPES[self.type])

    @model_validator(mode="after")
    def _required_has_no_default(self) -> InputSpec:
        if self.required and self.default is not None:
            raise ValueError("a required input cannot have a default")
        return self


class RetrySpec(TemplateModel):
    """How Temporal retries the step's activities."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    initial_interval: Duration = timedelta(seconds=1)
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval: Duration = timedelta(minutes=1)


class ReviewerCheck(TemplateModel):
    agent: str = "reviewer"
    threshold: float = Field(default=7.0, ge=0, le=10)


class QualitySpec(TemplateModel):
    """Checks a step's output must pass; a failing check revises the step (bounded)."""

    required_sections: list[str] = Field(default_factory=list)
    min_length: int = Field(default=0, ge=0, description="Minimum number of words.")
    reviewer: ReviewerCheck | None = None
    max_revisions: int = Field(default=1, ge=0, le=5)


class FailureSpec(TemplateModel):
    """What happens when a step fails after its retries (or its quality check keeps failing)."""

    action: Literal["retry", "fallback", "skip", "escalate", "fail"] = "fail"
    agent: str | None = Field(default=None, description="Fallback agent, for action 'fallback'.")
    max_attempts: int = Field(default=1, ge=1, le=5, description="Extra whole-step attempts, for 'retry'.")

    @model_validator(mode="after")
    def _fallback_needs_agent(self) -> FailureSpec:
        if self.action == "fallback" and not self.agent:
            raise ValueError("action 'fallback' needs an 'agent'")
        return self


class LoopSpec(TemplateModel):
    """After this step, run again from ``back_to`` while ``while_`` holds: a bounded loop."""

    back_to: str
    while_: str = Field(alias="while")
    max_iterations: int = Field(ge=1, le=20)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EscalationSpec(TemplateModel):
    """One link of the chain that runs when an SLA is breached, in order.

    ``after`` is how long to wait after the previous link (the first waits for the SLA).
    """

    action: Literal["notify", "reassign", "auto_decide", "fail"]
    after: Duration = timedelta(0)
    to: list[str] = Field(default_factory=list, description="reassign: the roles that may decide now.")
    decision: Literal["approve", "deny"] | None = Field(default=None, description="auto_decide: the decision.")

    @model_validator(mode="after")
    def _action_fields(self) -> EscalationSpec:
        if self.action == "reassign" and not self.to:
            raise ValueError("'reassign' needs 'to' (roles)")
        if self.action == "auto_decide" and self.decision is None:
            raise ValueError("'auto_decide' needs 'decision' (approve or deny)")
        return self


DEFAULT_ESCALATION = (EscalationSpec(action="notify"),)


class SuccessMetric(TemplateModel):
    """A named target; with ``check`` the run measures it when it ends (see success_metrics.py)."""

    name: str
    description: str = ""
    target: str | None = Field(default=None, description="The target in words, as the report shows it.")
    check: str | None = Field(
        default=None,
        description="Expression over inputs, steps and run (status, cost_usd, duration_s, prompt_tokens, "
        "completion_tokens); true when the target is met. Unset: a person judges.",
    )


class KnowledgeSpec(TemplateModel):
    """Retrieval before the step's agent turns: the tenant's knowledge base and this run's memories.

    ``knowledge: true`` takes every default; the sources found are numbered for the agent
    to cite and listed under the step in the report.
    """

    query: str | None = Field(
        default=None, max_length=2_000, description="What to look for ('{inputs.x}' fills in). Unset: the instruction."
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Unset: CONVERGIO_RAG_TOP_K.")
    filters: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Only chunks whose metadata contains these key/values."
    )
    memories: bool = Field(default=True, description="Also retrieve outputs of earlier steps of the run.")
    max_tokens: int | None = Field(default=None, ge=50, le=50_000, description="Unset: CONVERGIO_RAG_CONTEXT_TOKENS.")


def _knowledge_shorthand(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


StepKind = Literal["agent", "team", "tool", "approval"]


class StepSpec(TemplateModel):
    id: str = Field(pattern=STEP_ID)
    kind: StepKind = "agent"
    title: str | None = None
    agent: str | None = Field(default=None, description="The agent of an 'agent' step.")
    participants: list[str] = Field(default_factory=list, description="The agents of a 'team' step.")
    tool: str | None = Field(default=None, description="The tool of a 'tool' step.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Tool arguments; '{inputs.x}' fills in.")
    instruction: str = ""
    phase: MissionPhase | None = None
    complexity: int = Field(default=3, ge=1, le=5)
    urgency: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="Team steps: how urgent the chat is, 0-1; favours fast-response agents (selector weight 0.05).",
    )
    depends_on: list[str] = Field(default_factory=list)
    join: Literal["all", "any"] = Field(
        default="all", description="Run when all dependencies completed, or when any did."
    )
    when: str | None = Field(default=None, description="Condition over inputs and earlier outputs.")
    max_turns: int = Field(default=6, ge=1, le=50, description="Team steps: the most turns of the chat.")
    completion_marker: str = Field(default="TERMINATE", min_length=1)
    approvers: list[str] = Field(default_factory=list, description="Roles allowed to decide an approval.")
    requires_approval: bool = False
    retry: RetrySpec = RetrySpec()
    timeout: Duration = timedelta(minutes=5)
    heartbeat_timeout: Duration = Field(
        default=timedelta(seconds=30), description="A turn whose worker went silent this long is retried elsewhere."
    )
    sla: Duration | None = None
    escalation: list[EscalationSpec] = Field(
        default_factory=lambda: list(DEFAULT_ESCALATION), description="What runs, in order, when the SLA is breached."
    )
    max_change_requests: int = Field(default=2, ge=0, le=10, description="Gates: how often a step may be sent back.")
    on_denied: list[str] = Field(default_factory=list, description="Gates: steps that run only when this gate is denied.")
    quality: QualitySpec | None = None
    success_metrics: list[SuccessMetric] = Field(default_factory=list)
    on_failure: FailureSpec = FailureSpec()
    loop: LoopSpec | None = None
    knowledge: Annotated[KnowledgeSpec | None, BeforeValidator(_knowledge_shorthand)] = Field(
        default=None, description="Agent and team steps: retrieve sources (and memories) before answering."
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> StepSpec:
        if self.kind == "agent" and not self.agent:
            raise ValueError("an 'agent' step needs 'agent'")
        if self.kind == "team" and len(self.participants) < 2:
            raise ValueError("a 'team' step needs at least two 'participants'")
        if self.kind == "tool" and not self.tool:
            raise ValueError("a 'tool' step needs 'tool'")
        if self.kind in ("agent", "team") and not self.instruction.strip():
            raise ValueError(f"an '{self.kind}' step needs an 'instruction'")
        if self.kind == "approval" and not self.approvers:
            raise ValueError("an 'approval' step needs 'approvers' (roles allowed to decide)")
        if self.knowledge is not None and self.kind not in ("agent", "team"):
            raise ValueError(f"'knowledge' needs an 'agent' or 'team' step, not '{self.kind}'")
        return self

    @property
    def label(self) -> str:
        return self.title or self.id.replace("_", " ").capitalize()

    @property
    def agents(self) -> list[str]:
        names = [self.agent] if self.agent else []
        names += self.participants
        if self.quality and self.quality.reviewer:
            names.append(self.quality.reviewer.agent)
        if self.on_failure.agent:
            names.append(self.on_failure.agent)
        return names


class BudgetSpec(TemplateModel):
    """The template's own budget limits (tighter or looser than the tenant's) and breach policy."""

    daily_usd: float | None = Field(default=None, gt=0)
    workflow_usd: float | None = Field(default=None, gt=0)
    turn_spike_fraction: float | None = Field(default=None, gt=0, le=1)
    on_breach: Literal["stop", "downgrade", "approval"] = Field(
        default="stop",
        description="stop the step with the reason, retry the turn on downgrade_model, or ask a person.",
    )
    downgrade_model: str | None = None
    approvers: list[str] = Field(default_factory=lambda: ["finance"])

    @model_validator(mode="after")
    def _downgrade_needs_model(self) -> BudgetSpec:
        if self.on_breach == "downgrade" and not self.downgrade_model:
            raise ValueError("on_breach 'downgrade' needs 'downgrade_model'")
        return self


class SecuritySpec(SecurityPolicy):
    """The template's screening policy, and who decides when it raises a gate."""

    approvers: list[str] = Field(default_factory=lambda: ["security"])

    def policy(self) -> SecurityPolicy:
        return SecurityPolicy.model_validate(self.model_dump(exclude={"approvers"}))


class WorkflowSla(TemplateModel):
    total: Duration | None = None
    escalation: list[EscalationSpec] = Field(default_factory=lambda: list(DEFAULT_ESCALATION))


class Template(TemplateModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,63}$")
    version: int = Field(ge=1)
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    sla: WorkflowSla = WorkflowSla()
    budget: BudgetSpec = BudgetSpec()
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    success_metrics: list[SuccessMetric] = Field(default_factory=list)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"
