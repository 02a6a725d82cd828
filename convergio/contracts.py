"""Payloads that cross a boundary (API, workflow input/output, activities), as Pydantic models.

Temporal carries them with ``pydantic_data_converter``; the API uses the same models,
so what a client sends is exactly what the workflow receives.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from convergio.costs.budget import BudgetLimits
from convergio.security.policy import SecurityPolicy

_AGENT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentProfile(Contract):
    """Who answers: a name (a Python identifier, as AutoGen requires) and a system message."""

    name: str = Field(default="chief_of_staff", examples=["cfo"])
    role: str = Field(default="Chief of Staff", max_length=200, examples=["Chief Financial Officer"])
    system_message: str = Field(
        default=(
            "You are the Chief of Staff. You coordinate strategy, finance and operations "
            "and answer with a clear, structured recommendation."
        ),
        min_length=1,
        max_length=20_000,
    )

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _AGENT_NAME.match(value):
            raise ValueError("must be a Python identifier of at most 64 characters, e.g. 'cfo'")
        return value


MAX_TASK_CHARS = 50_000


class AgentTurnRequest(Contract):
    """One agent, one task: what a single model turn needs."""

    task: str = Field(
        min_length=1, max_length=MAX_TASK_CHARS, examples=["Assess entering the German market."]
    )
    agent: AgentProfile = Field(default_factory=AgentProfile)
    model: str | None = Field(
        default=None,
        description="Model override in CONVERGIO_MODEL syntax; unset uses the worker's setting.",
        examples=["offline"],
    )
    tenant: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")

    @field_validator("task")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class TranscriptMessage(Contract):
    """One message of a conversation the workflow keeps (the durable transcript)."""

    source: str
    content: str


class TurnBudget(Contract):
    """The limits a turn must fit in; ``day`` comes from the workflow's clock (deterministic)."""

    limits: BudgetLimits
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    template: str
    approved_overrun: bool = Field(default=False, description="A person approved going over the limit.")


class SecurityFinding(Contract):
    """A screening verdict that was not a plain allow: what was found, where, and what was done."""

    surface: str
    step_id: str | None
    decision: str
    action: str
    score: float
    categories: list[str]
    reasons: list[str]


PromptPart = Literal["instruction", "context"]


class ToolCallRequest(Contract):
    """A registered tool an agent's model asked to run; the workflow runs it as an activity."""

    id: str = Field(min_length=1, max_length=200)
    name: str
    arguments: str = Field(description="The arguments as the model wrote them: a JSON object.")

    def shown(self) -> str:
        """How screening and a reviewing person see the call: ``name({...})``."""
        return f"{self.name}({self.arguments})"


class ToolCallResult(Contract):
    """What a requested tool returned (or why it could not run), for the agent's next model call."""

    call_id: str
    name: str
    content: str
    is_error: bool = False


class ToolRound(Contract):
    """The calls one model call asked for and their results, in the order asked."""

    calls: list[ToolCallRequest]
    results: list[ToolCallResult]


class AgentTurnInput(Contract):
    """What the activity needs to run (or find already run) one turn.

    ``turn`` is unique within the workflow, so (workflow, step, turn) names one model call.
    ``context`` is what the agent sees before the task: earlier messages, outputs, sources.
    """

    workflow_id: str
    step_id: str
    turn: int = Field(ge=1)
    request: AgentTurnRequest
    context: list[TranscriptMessage] = Field(default_factory=list)
    budget: TurnBudget | None = Field(default=None, description="Unset: the turn is not metered (tests only).")
    security: SecurityPolicy | None = Field(default=None, description="Unset: the turn is not screened.")
    security_approved: bool = Field(
        default=False,
        description="A person let a held prompt through (not screened again; redacted as before).",
    )
    run_cost_usd: float = Field(default=0.0, ge=0, description="What the run spent before this turn.")
    handoff_from: str | None = Field(default=None, description="The agent that spoke before, in a group chat.")
    tools: list[str] = Field(default_factory=list, description="Registered tools the agent may ask to run.")
    tool_rounds: list[ToolRound] = Field(
        default_factory=list,
        description="Tools this turn's earlier model calls asked for, with their results.",
    )
    prompt_redactions: list[PromptPart] = Field(
        default_factory=list,
        description="After tool rounds or an approved hold: what the answer's first model call redacted "
        "(or would have), to redact again.",
    )
    answers_last_message: bool = Field(
        default=False,
        description="A group-chat turn whose newest message cannot be a task (blank, or longer than a "
        "task may be): the agent answers the context as it stands, and request.task only names the turn.",
    )

    @model_validator(mode="after")
    def _has_a_last_message(self) -> Self:
        if self.answers_last_message and not self.context:
            raise ValueError("answers_last_message needs a context to answer")
        return self


class AgentTurnOutput(Contract):
    agent: str
    model: str
    content: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    finish_reason: str
    cost_usd: float = Field(default=0.0, ge=0)
    budget_refused: str | None = Field(
        default=None, description="Why the budget refused the turn; the model was not called."
    )
    security_hold: str | None = Field(
        default=None, description="approval or block: screening stopped the turn before the model call."
    )
    output_action: str = Field(default="allow", description="What screening did to the answer.")
    findings: list[SecurityFinding] = Field(default_factory=list)
    replayed_from_ledger: bool = Field(
        default=False,
        description="True when a retried activity found the turn already recorded and did not call the model again.",
    )
    tool_calls: list[ToolCallRequest] = Field(
        default_factory=list,
        description="The model asked for these tools instead of answering (content is empty).",
    )
    prompt_redactions: list[PromptPart] = Field(
        default_factory=list, description="What screening redacted in the prompt before the model saw it."
    )

    def finding_reasons(self) -> str:
        """What screening found in the turn, for a failure message or a person's review."""
        return "; ".join(r for f in self.findings for r in f.reasons[:2]) or "flagged"
