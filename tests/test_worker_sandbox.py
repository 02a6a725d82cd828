"""Convergio's sandbox runner hands the SDK the same serialization contexts as temporalio's own.

``ConvergioSandboxRunner`` reads each payload's serialization context straight from the
sandboxed workflow instance instead of through the SDK's per-call ``exec``. A payload codec that
notes the context of every call is run under both runners on the dev server: the contexts must
be the same, including the activity contexts that only the workflow instance can tell.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from convergio.workers.sandbox import ConvergioSandboxRunner, workflow_runner


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


@workflow.defn
class ContextProbeWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        timeout = timedelta(seconds=10)
        first = await workflow.execute_activity(shout, text, start_to_close_timeout=timeout)
        return await workflow.execute_activity(shout, first + "!", start_to_close_timeout=timeout)


class ContextRecordingCodec(PayloadCodec, WithSerializationContext):
    """Passes payloads through unchanged and notes which context each call came with."""

    def __init__(self, seen: list[tuple[str, str]], context: SerializationContext | None = None) -> None:
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> ContextRecordingCodec:
        return ContextRecordingCodec(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.append(("encode", repr(self.context)))
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.append(("decode", repr(self.context)))
        return list(payloads)


async def contexts_seen(client: Client, runner: WorkflowRunner, workflow_id: str) -> Counter[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    converter = dataclasses.replace(DataConverter.default, payload_codec=ContextRecordingCodec(seen))
    recording = Client(**{**client.config(), "data_converter": converter})
    queue = f"sandbox-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        recording, task_queue=queue, workflows=[ContextProbeWorkflow], activities=[shout],
        workflow_runner=runner,
    )
    async with worker:
        result = await recording.execute_workflow(
            ContextProbeWorkflow.run, "hi", id=workflow_id, task_queue=queue
        )
    assert result == "HI!"
    # The task queue name is part of an activity's context; it differs between the two runs.
    return Counter((kind, context.replace(queue, "<queue>")) for kind, context in seen)


async def test_contexts_equal_the_sdk_sandbox(dev_client: Client) -> None:
    workflow_id = f"context-probe-{uuid.uuid4().hex[:8]}"
    restrictions = SandboxRestrictions.default.with_passthrough_modules(__name__)
    sdk_runner = SandboxedWorkflowRunner(restrictions=restrictions)
    expected = await contexts_seen(dev_client, sdk_runner, workflow_id)
    got = await contexts_seen(dev_client, ConvergioSandboxRunner(restrictions=restrictions), workflow_id)
    assert got == expected
    activity_contexts = [ctx for _, ctx in got if ctx.startswith(ActivitySerializationContext.__name__)]
    assert any("activity_type='shout'" in ctx for ctx in activity_contexts), got


def test_worker_runner_is_convergios() -> None:
    assert isinstance(workflow_runner(), ConvergioSandboxRunner)
