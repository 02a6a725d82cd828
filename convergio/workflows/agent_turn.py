"""The walking skeleton: one workflow, one activity, one AutoGen agent turn.

The template engine replaces it; it proves the path API → Temporal → worker →
AutoGen → model → Postgres/Redis → result end to end.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

with workflow.unsafe.imports_passed_through():
    from convergio.activities.agent_turn import AgentTurnActivities
    from convergio.contracts import (
        AgentTurnInput,
        AgentTurnRequest,
        AgentTurnResult,
        WorkflowStatus,
    )

TEMPLATE_NAME = "agent-turn"
STEP_ID = "answer"

TEMPLATE_KEY = SearchAttributeKey.for_keyword("ConvergioTemplate")
STATUS_KEY = SearchAttributeKey.for_keyword("ConvergioStatus")
TENANT_KEY = SearchAttributeKey.for_keyword("ConvergioTenant")


def initial_search_attributes(request: AgentTurnRequest) -> TypedSearchAttributes:
    """Set by the starter so the run is filterable from its first moment."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TEMPLATE_KEY, TEMPLATE_NAME),
            SearchAttributePair(STATUS_KEY, "running"),
            SearchAttributePair(TENANT_KEY, request.tenant),
        ]
    )


@workflow.defn(name="AgentTurn")
class AgentTurnWorkflow:
    def __init__(self) -> None:
        self._status: WorkflowStatus | None = None

    @workflow.run
    async def run(self, request: AgentTurnRequest) -> AgentTurnResult:
        started_at = workflow.now()
        self._status = WorkflowStatus(state="running", step=STEP_ID, started_at=started_at)
        workflow.set_current_details(f"{request.agent.role} is answering")
        output = await workflow.execute_activity_method(
            AgentTurnActivities.run_agent_turn,
            AgentTurnInput(
                workflow_id=workflow.info().workflow_id, step_id=STEP_ID, turn=1, request=request
            ),
            summary=f"{request.agent.role} · {STEP_ID}",
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["ModelConfigError"]),
        )
        # Search attributes are for finding runs; a server that lacks them (the time-skipping
        # test server) still runs the workflow, started without them.
        if workflow.info().typed_search_attributes.get(STATUS_KEY) is not None:
            workflow.upsert_search_attributes([STATUS_KEY.value_set("completed")])
        self._status = WorkflowStatus(state="completed", step=None, started_at=started_at)
        workflow.set_current_details(f"Completed by {output.agent} on {output.model}")
        return AgentTurnResult(
            workflow_id=workflow.info().workflow_id,
            task=request.task,
            agent=output.agent,
            role=request.agent.role,
            model=output.model,
            content=output.content,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            finish_reason=output.finish_reason,
            started_at=started_at,
            finished_at=workflow.now(),
        )

    @workflow.query
    def status(self) -> WorkflowStatus | None:
        return self._status
