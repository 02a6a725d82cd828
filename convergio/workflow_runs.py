"""Starting and reading workflow runs: shared by the API and the CLI so both behave alike."""

from __future__ import annotations

import hashlib
import uuid

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from convergio.contracts import AgentTurnRequest, AgentTurnResult
from convergio.settings import Settings
from convergio.workflows.agent_turn import AgentTurnWorkflow, initial_search_attributes


class RunStarted(BaseModel):
    workflow_id: str
    run_id: str | None
    temporal_ui_url: str


class RunState(BaseModel):
    workflow_id: str
    status: str
    workflow_type: str
    result: AgentTurnResult | None = None
    error: str | None = None
    temporal_ui_url: str


def workflow_id_for(idempotency_key: str | None) -> str:
    """A fresh id, or one derived from the caller's key so a retried request never starts twice."""
    if idempotency_key:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
        return f"agent-turn-{digest}"
    return f"agent-turn-{uuid.uuid4().hex[:24]}"


async def start_agent_turn(
    client: Client,
    settings: Settings,
    request: AgentTurnRequest,
    idempotency_key: str | None = None,
    *,
    search_attributes: bool = True,
) -> RunStarted:
    """Start (or, for a known idempotency key, find) a run.

    ``search_attributes=False`` is for servers where Convergio's attributes are not
    registered, such as the time-skipping test server.
    """
    workflow_id = workflow_id_for(idempotency_key)
    try:
        handle = await client.start_workflow(
            AgentTurnWorkflow.run,
            request,
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=initial_search_attributes(request) if search_attributes else None,
            static_summary=f"{request.agent.role} · {_shorten(request.task, 80)}",
            static_details=f"**Task**\n\n{request.task}\n\n**Agent**: {request.agent.role} (`{request.agent.name}`)",
            # A retried request with the same key attaches to the run it already started,
            # whether that run is still going or has finished.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        run_id = handle.first_execution_run_id or handle.result_run_id
    except WorkflowAlreadyStartedError as exc:
        run_id = exc.run_id
    return RunStarted(
        workflow_id=workflow_id, run_id=run_id, temporal_ui_url=settings.workflow_ui_url(workflow_id)
    )


async def read_run(client: Client, settings: Settings, workflow_id: str) -> RunState:
    handle: WorkflowHandle = client.get_workflow_handle(workflow_id, result_type=AgentTurnResult)
    description = await handle.describe()
    status = description.status or WorkflowExecutionStatus.RUNNING
    state = RunState(
        workflow_id=workflow_id,
        status=status.name.lower(),
        workflow_type=description.workflow_type,
        temporal_ui_url=settings.workflow_ui_url(workflow_id),
    )
    if status == WorkflowExecutionStatus.COMPLETED:
        state.result = await handle.result()
    elif status != WorkflowExecutionStatus.RUNNING:
        try:
            await handle.result()
        except Exception as exc:  # noqa: BLE001 - we report whatever ended the run
            state.error = _root_cause(exc)
    return state



def _root_cause(exc: BaseException) -> str:
    """Temporal wraps failures (workflow → activity → application); the innermost says why."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc)


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
