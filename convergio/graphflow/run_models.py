"""The GraphFlow workflow's contract: its input, signals, queries and result."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from convergio.agents.definition import AgentDefinition
from convergio.costs.budget import BudgetLimits
from convergio.contracts import SecurityFinding, ToolCallRequest, ToolCallResult, TranscriptMessage
from convergio.graphflow.template import Template
from convergio.rag.models import SourceRef

StepStatus = Literal["pending", "running", "waiting_approval", "completed", "skipped", "denied", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "skipped", "denied", "failed"})


class RunModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GraphFlowInput(RunModel):
    """Everything a run needs, pinned at start: a running workflow never changes under its feet."""

    template: Template
    inputs: dict[str, Any]
    agents: dict[str, AgentDefinition]
    tenant: str = "default"
    model: str | None = Field(default=None, description="Model for every agent without its own override.")
    budget: BudgetLimits = Field(default_factory=BudgetLimits, description="Resolved limits of this run.")


class TurnRecord(RunModel):
    turn: int
    step_id: str
    agent: str
    model: str
    content: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    purpose: Literal["answer", "review", "chat"] = "answer"
    tool_calls: list[ToolCallRequest] = Field(default_factory=list, description="Tools the model asked for.")
    tool_results: list[ToolCallResult] = Field(default_factory=list, description="What those tools returned.")


class StepState(RunModel):
    id: str
    kind: str
    title: str
    status: StepStatus = "pending"
    agents: list[str] = Field(default_factory=list, description="Who produced the output, in order.")
    output: str | None = None
    data: dict[str, Any] | None = None
    score: float | None = None
    iterations: int = 0
    revisions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    quality_notes: list[str] = Field(default_factory=list)
    error: str | None = None
    transcript: list[TranscriptMessage] = Field(default_factory=list)
    sources: list[SourceRef] = Field(default_factory=list, description="Knowledge the agents were given to cite.")

    def as_context(self) -> dict[str, Any]:
        """What expressions and placeholders see as ``steps.<id>``."""
        return {
            "output": self.output,
            "status": self.status,
            "score": self.score,
            "data": self.data,
            "agent": self.agents[-1] if self.agents else None,
            "iterations": self.iterations,
        }


# The fields a template may read as ``steps.<id>.<field>`` (checked when a template is loaded).
STEP_CONTEXT_FIELDS: frozenset[str] = frozenset(StepState(id="x", kind="agent", title="x").as_context())

class ApprovalDecision(RunModel):
    """Payload of the ``approve``, ``deny`` and ``request_changes`` signals."""

    # Gate ids: a step id (64 at most), <step>__escalation, security_input_<input>, security_<turn>.
    gate_id: str = Field(min_length=1, max_length=128, examples=["executive_approval"])
    approver: str = Field(min_length=1, max_length=200, examples=["ada@example.com"])
    role: str = Field(min_length=1, max_length=100, examples=["executive"])
    comment: str = Field(default="", max_length=10_000)
    edits: str | None = Field(
        default=None, max_length=200_000, description="approve: a corrected version of the output under review."
    )
    reviewed_at: AwareDatetime | None = Field(
        default=None,
        description="The gate's `requested_at` as the decider saw it. A decision for an earlier round of "
        "the gate (it reopened after a change request) is recorded and ignored: what was reviewed is "
        "not what waits.",
    )


def same_round(reviewed_at: datetime, requested_at: datetime) -> bool:
    """Whether ``reviewed_at`` names the gate's current round. Clients often keep only
    milliseconds (JavaScript's ``Date``); a gate never reopens within one."""
    return abs(reviewed_at - requested_at) < timedelta(milliseconds=1)


class RecordedDecision(ApprovalDecision):
    outcome: Literal["approve", "deny", "request_changes"]


GateKind = Literal["review", "security", "budget", "escalation"]


class PendingApproval(RunModel):
    gate_id: str
    step_id: str
    title: str
    approvers: list[str]
    under_review: str
    requested_at: datetime
    deadline: datetime | None = None
    prompt_tokens_so_far: int = 0
    completion_tokens_so_far: int = 0
    cost_usd_so_far: float = 0.0
    change_requests_left: int = 0
    kind: GateKind = Field(
        default="review",
        description="review: a person reviews outputs (approve, maybe with edits; deny; request changes); "
        "security, budget, escalation: approve or deny.",
    )


class AuditEntry(RunModel):
    at: datetime
    kind: Literal["decision", "ignored_decision", "escalation", "failure_handling"]
    gate_id: str | None = None
    actor: str | None = None
    role: str | None = None
    outcome: str
    comment: str = ""


class RunStatus(RunModel):
    """The ``status`` query: enough to draw the run's progress."""

    template: str
    version: int
    state: Literal["running", "completed", "failed", "canceled"]
    steps: list[StepState]
    pending_approvals: list[PendingApproval]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    started_at: datetime
    audit: list[AuditEntry] = Field(default_factory=list, description="Decisions and escalations so far.")


class StepReport(RunModel):
    id: str
    title: str
    kind: str
    status: StepStatus
    agents: list[str]
    output: str | None
    data: dict[str, Any] | None
    score: float | None
    iterations: int
    revisions: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    started_at: datetime | None
    duration_s: float | None
    quality_notes: list[str]
    error: str | None
    sources: list[SourceRef] = Field(default_factory=list, description="Numbered sources retrieved for the step.")


class MetricResult(RunModel):
    """A success metric measured on the finished run."""

    name: str
    step_id: str | None = Field(default=None, description="The step the metric belongs to; unset: the run's own.")
    description: str = ""
    target: str | None = None
    check: str | None = None
    met: bool | None = Field(description="Unset when the metric has no check or its check could not be measured.")
    note: str = ""


class GraphFlowResult(RunModel):
    workflow_id: str
    template: str
    version: int
    status: Literal["completed", "failed"]
    inputs: dict[str, Any]
    steps: list[StepReport]
    turns: list[TurnRecord]
    audit: list[AuditEntry]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float = 0.0
    security: list[SecurityFinding] = Field(default_factory=list)
    success_metrics: list[MetricResult] = Field(default_factory=list, description="The template's targets, measured.")
    started_at: datetime
    finished_at: datetime
    markdown: str
