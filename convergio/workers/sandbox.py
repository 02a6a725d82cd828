"""The workflow sandbox Convergio's worker runs workflows in.

Two changes to temporalio's ``SandboxedWorkflowRunner``, neither loosening its checks:

* Convergio's own modules (and the extra workflows' modules) are passed through: imported once
  per process instead of once per workflow run. They do nothing at import time, and re-importing
  them was the largest CPU cost of a worker starting many runs (bench/engine.py measures it).
* The serialization context of each payload is read straight from the sandboxed workflow
  instance. The SDK asks for it once per payload and per codec pass (six passes per workflow
  task); its sandbox answered by compiling and executing a small code string under the
  sandbox's import hooks each time, which made encoding and decoding a GraphFlow workflow task
  ~2.5 ms slower than without the sandbox. The answer is the same object: the instance method
  only reads the workflow's own pending commands and imports nothing.
  ``tests/test_worker_sandbox.py`` compares both answers on a live instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
from temporalio.worker.workflow_sandbox._runner import _Instance

# The name temporalio's sandbox gives the in-sandbox side of a workflow instance.
_IN_SANDBOX = "__temporal_in_sandbox"


class _DirectContextInstance(_Instance):
    """A sandboxed workflow instance that hands out serialization contexts without ``exec``."""

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        return self._in_sandbox().get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self._in_sandbox().get_external_store_context(command_info)

    def _in_sandbox(self) -> Any:
        return self.globals_and_locals[_IN_SANDBOX]


@dataclass(frozen=True)
class ConvergioSandboxRunner(SandboxedWorkflowRunner):
    """``SandboxedWorkflowRunner`` whose instances answer serialization-context calls directly."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _DirectContextInstance(det, self.runner_class, self.restrictions)


def workflow_runner(extra_workflows: Sequence[type] = ()) -> ConvergioSandboxRunner:
    """The sandbox with ``convergio`` (and the extra workflows' modules) passed through, and
    OpenTelemetry, which the workflow interceptor's replay-safe metrics reach lazily."""
    modules = {"convergio", "opentelemetry", *(w.__module__ for w in extra_workflows)}
    return ConvergioSandboxRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))
