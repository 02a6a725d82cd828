"""Run a registered tool (a plain Python function) as its own activity."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from convergio.events import EventFactory, EventPublisher


class ToolStepInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str
    tool: str
    arguments: dict[str, Any]


class ToolStepOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool: str
    data: dict[str, Any]
    summary: str


class ToolStepActivities:
    """Tool steps, announced on the run's event stream (``tool_call``, then ``tool_result``)."""

    def __init__(self, events: EventPublisher) -> None:
        self._events = events

    @activity.defn(name="run_tool_step")
    async def run_tool_step(self, step: ToolStepInput) -> ToolStepOutput:
        from convergio.tools.registry import ToolInputError, UnknownToolError, run_tool

        event = EventFactory(step.workflow_id, step.step_id, f"tool:{step.tool}")
        await self._events.publish(event("tool_call", tool=step.tool, arguments=step.arguments))
        try:
            data = await run_tool(step.tool, step.arguments)
        except (ToolInputError, UnknownToolError) as exc:
            await self._events.publish(event("error", tool=step.tool, error=str(exc)))
            # Bad arguments stay bad on retry: fail the step at once, with the reason.
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc
        summary = str(data.get("summary") or ", ".join(f"{key}={value}" for key, value in data.items()))
        await self._events.publish(event("tool_result", tool=step.tool, summary=summary))
        return ToolStepOutput(tool=step.tool, data=data, summary=summary)
