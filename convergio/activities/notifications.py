"""Tell the world an SLA was breached: an event on the run's stream and ``convergio_sla_breaches_total``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from temporalio import activity

from convergio.events import AgentEvent, EventPublisher
from convergio.observability.metrics import get_metrics


class EscalationNotice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str | None
    reason: str
    pending_gates: list[str]


class NotificationActivities:
    def __init__(self, events: EventPublisher) -> None:
        self._events = events

    @activity.defn(name="notify_escalation")
    async def notify_escalation(self, notice: EscalationNotice) -> None:
        get_metrics().record_sla_breach(notice.reason)
        await self._events.publish(
            AgentEvent(
                type="sla_breach",
                workflow_id=notice.workflow_id,
                step_id=notice.step_id or "",
                agent="sla-escalation",
                data={"reason": notice.reason, "pending_gates": notice.pending_gates},
            )
        )

