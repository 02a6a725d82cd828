"""``AutoGenGraphFlowWorkflow``: an imported AutoGen ``GraphFlow`` run as a durable workflow.

The graph's rules live in :class:`~convergio.graphflow.autogen_graph.GraphExecution`, a
deterministic port of AutoGen's ``GraphFlowManager``; this workflow only runs the model
turns it asks for, one ``run_agent_turn`` activity each. The speakers of one turn run
concurrently, as in AutoGen; their replies join the thread in the order they were
selected. A worker crash resumes at the next model call: completed calls are in the
history (and the activity's ledger), so none is paid for twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from convergio.failures import root_cause
    from pydantic import ValidationError

    from convergio.activities.agent_turn import AgentTurnActivities
    from convergio.contracts import AgentTurnInput, AgentTurnOutput, AgentTurnRequest, TurnBudget
    from convergio.graphflow.autogen_graph import (
        AutoGenGraphFlowInput,
        AutoGenGraphFlowResult,
        GraphExecution,
        GraphFlowImportError,
        TurnPlan,
        activity_turn,
    )

__all__ = ["AutoGenGraphFlowInput", "AutoGenGraphFlowResult", "AutoGenGraphFlowWorkflow"]

TURN_TIMEOUT = timedelta(minutes=10)
TURN_RETRY = RetryPolicy(
    maximum_attempts=3,
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["ModelConfigError"],
)


@workflow.defn(name="AutoGenGraphFlow")
class AutoGenGraphFlowWorkflow:
    def __init__(self) -> None:
        self._execution: GraphExecution | None = None
        self._turn_counter = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._cost_usd = 0.0  # what the run's finished turns cost (a floor for its budget counter)

    @workflow.run
    async def run(self, run: AutoGenGraphFlowInput) -> AutoGenGraphFlowResult:
        try:
            execution = GraphExecution(
                run.graph, list(run.participants), max_turns=run.max_turns, termination=run.termination
            )
        except GraphFlowImportError as exc:
            raise ApplicationError(str(exc), type="GraphFlowImportError", non_retryable=True) from None
        self._execution = execution
        execution.start(run.task)
        while (rounds := execution.next_batch()) is not None:
            for speakers in rounds:  # one round unless a node was selected twice
                plans = [execution.begin_turn(agent) for agent in speakers]
                outputs = await asyncio.gather(*(self._turn(run, plan) for plan in plans))
                for plan, output in zip(plans, outputs):
                    execution.end_turn(plan.agent, output.content)
            execution.end_batch()
        return self._result()

    async def _turn(self, run: AutoGenGraphFlowInput, plan: TurnPlan) -> AgentTurnOutput:
        self._turn_counter += 1
        profile = run.participants[plan.agent]
        planned = activity_turn(plan)
        try:
            request = AgentTurnRequest(
                task=planned.task,
                agent=profile,
                model=run.model or run.participant_models.get(plan.agent),
                tenant=run.tenant,
            )
        except ValidationError as exc:  # e.g. a blank task in a hand-built input
            raise ApplicationError(
                f"{plan.agent} cannot be asked to answer the last message: {exc.errors()[0]['msg']}",
                type="UnsupportedMessage",
                non_retryable=True,
            ) from None
        try:
            output = await workflow.execute_activity_method(
                AgentTurnActivities.run_agent_turn,
                AgentTurnInput(
                    workflow_id=workflow.info().workflow_id,
                    step_id=plan.agent,
                    turn=self._turn_counter,
                    request=request,
                    context=planned.context,
                    answers_last_message=planned.answers_last_message,
                    budget=self._budget(run),
                    security=run.security,
                    run_cost_usd=round(self._cost_usd, 8),
                ),
                summary=f"{profile.role} · turn {self._turn_counter}"[:200],
                start_to_close_timeout=TURN_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=60),
                retry_policy=TURN_RETRY,
            )
        except ActivityError as exc:
            raise ApplicationError(
                f"{plan.agent}: {root_cause(exc)}", type="AgentTurnFailed", non_retryable=True
            ) from None
        self._prompt_tokens += output.prompt_tokens
        self._completion_tokens += output.completion_tokens
        self._cost_usd += output.cost_usd
        if output.budget_refused:
            raise ApplicationError(
                f"{plan.agent}: {output.budget_refused}", type="BudgetRefused", non_retryable=True
            )
        held = output.security_hold
        if held is None and output.output_action in ("approval", "block"):
            held = output.output_action
        if held:
            raise ApplicationError(
                f"{plan.agent}: security: {held} ({output.finding_reasons()}); "
                "AutoGen graph runs have no approval gates",
                type="SecurityBlocked", non_retryable=True,
            )
        return output

    @staticmethod
    def _budget(run: AutoGenGraphFlowInput) -> TurnBudget | None:
        if run.budget is None:
            return None
        day = workflow.now().date().isoformat()
        return TurnBudget(limits=run.budget, day=day, template=f"autogen:{run.name}")

    def _result(self) -> AutoGenGraphFlowResult:
        execution = self._execution
        assert execution is not None
        return AutoGenGraphFlowResult(
            messages=list(execution.thread),
            speakers=execution.speakers,
            stop_reason=execution.stop_reason or "running",
            prompt_tokens=self._prompt_tokens,
            completion_tokens=self._completion_tokens,
        )

    @workflow.query
    def progress(self) -> AutoGenGraphFlowResult:
        """The thread so far; ``stop_reason`` is "running" until the run ends."""
        if self._execution is None:
            return AutoGenGraphFlowResult(messages=[], speakers=[], stop_reason="running")
        return self._result()
