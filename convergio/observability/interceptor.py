"""Worker interceptor: errors by kind and workflow (conversation) durations, recorded outside
workflow code. The workflow half runs in the sandbox and only calls an extern function, on
the real run only (never while replaying), so recording cannot affect determinism."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError, CancelledError, FailureError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from convergio.observability.logging import log_context
from convergio.observability.metrics import get_metrics

_EXTERN = "__convergio_record_workflow"


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return type(exc).__name__


def _record_workflow(workflow_type: str, seconds: float, status: str, kind: str | None) -> None:
    # Called from inside the sandbox: anything imported from here would go through the
    # sandbox's import checks, so metrics are set up before the first workflow runs.
    with workflow.unsafe.sandbox_unrestricted(), workflow.unsafe.imports_passed_through():
        metrics = get_metrics()
        metrics.record_workflow(workflow_type, seconds, status)
        if kind is not None:
            metrics.record_error(f"workflow:{kind}")


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        get_metrics()  # set up now, outside the sandbox
        input.unsafe_extern_functions[_EXTERN] = _record_workflow
        return _WorkflowInbound


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with log_context(workflow_id=info.workflow_id, activity=info.activity_type):
            try:
                return await super().execute_activity(input)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                get_metrics().record_error(f"activity:{error_kind(exc)}")
                raise


class _WorkflowInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        try:
            result = await super().execute_workflow(input)
        except FailureError as exc:  # fails the run (other exceptions only fail the task and retry)
            if not isinstance(exc, CancelledError):
                self._record("failed", error_kind(exc))
            raise
        self._record("completed", None)
        return result

    @staticmethod
    def _record(status: str, kind: str | None) -> None:
        if workflow.unsafe.is_replaying():
            return
        info = workflow.info()
        seconds = max((workflow.now() - info.workflow_start_time).total_seconds(), 0.0)
        workflow.extern_functions()[_EXTERN](info.workflow_type, seconds, status, kind)
