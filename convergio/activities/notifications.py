"""What the workflow itself tells the run's event stream: gates opened and decided, SLA warnings and
breaches (breaches also count in ``convergio_sla_breaches_total``), and an answer held for a person
once they let it through. Workflow code does no I/O, so these are activities."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from convergio.events import AgentEvent, EventPublisher
from convergio.observability.metrics import get_metrics


class EscalationNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str | None
    reason: str
    pending_gates: list[str]


class RunEvent(BaseModel):
    """An event the workflow announces (the agents' own events come from their turns)."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str
    type: Literal["approval_requested", "approval_decided", "sla_warning", "text_chunk"]
    agent: str = Field(default="workflow", description="Who speaks: the workflow, or the agent whose "
                       "answer a person let through (``text_chunk``).")
    data: dict[str, Any] = Field(default_factory=dict)


class NotificationActivities:
    def __init__(self, events: EventPublisher) -> None:
        self._events = events

    @activity.defn(name="notify_escalation")
    async def notify_escalation(self, notice: EscalationNotice) -> None:
        get_metrics().record_sla_breach("step" if notice.step_id else "run")
        await self._events.publish(
            AgentEvent(
                type="sla_breach",
                workflow_id=notice.workflow_id,
                step_id=notice.step_id or "",
                agent="sla-escalation",
                data={"reason": notice.reason, "pending_gates": notice.pending_gates},
            )
        )

    @activity.defn(name="publish_run_event")
    async def publish_run_event(self, event: RunEvent) -> None:
        await self._events.publish(
            AgentEvent(type=event.type, workflow_id=event.workflow_id, step_id=event.step_id,
                       agent=event.agent, data=event.data)
        )
