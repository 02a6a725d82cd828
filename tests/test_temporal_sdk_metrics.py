"""The Temporal SDK's own runtime metrics reach Convergio's /metrics through the buffer bridge."""

from __future__ import annotations

import uuid
from datetime import timedelta

from prometheus_client import CollectorRegistry
from temporalio import activity, workflow
from temporalio.worker import Worker

from convergio.observability.metrics import setup_metrics
from convergio.observability.temporal_metrics import TemporalMetricsBridge
from convergio.settings import Settings
from convergio.temporal_client import connect_temporal


@activity.defn
async def echo(text: str) -> str:
    return text


@workflow.defn(sandboxed=False)
class EchoWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return await workflow.execute_activity(echo, text, start_to_close_timeout=timedelta(seconds=10))


def _samples(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` of the exposition lines of one sample name."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            found[labels] = float(value)
    return found


async def test_sdk_metrics_of_a_run_appear_in_metrics(settings: Settings) -> None:
    metrics = setup_metrics(registry=CollectorRegistry())
    bridge = TemporalMetricsBridge.for_metrics(metrics)
    bridge.drain()  # whatever other tests' clients left behind
    client = await connect_temporal(settings, sdk_metrics=True)
    queue = f"sdk-metrics-{uuid.uuid4().hex[:8]}"
    async with Worker(client, task_queue=queue, workflows=[EchoWorkflow], activities=[echo]):
        result = await client.execute_workflow(EchoWorkflow.run, "hi", id=f"wf-{queue}", task_queue=queue)
    assert result == "hi"

    assert bridge.drain() > 0
    text = metrics.prometheus_text().decode()
    completed = _samples(text, "temporal_workflow_completed_total")
    assert any(f'task_queue="{queue}"' in labels and value >= 1 for labels, value in completed.items()), completed
    latency = _samples(text, "temporal_activity_execution_latency_seconds_count")
    assert any(f'activity_type="echo"' in labels and value >= 1 for labels, value in latency.items()), latency
    assert _samples(text, "temporal_request_total"), "client requests are counted"
    # A histogram in seconds: the run's activity took far less than a minute.
    buckets = _samples(text, "temporal_activity_execution_latency_seconds_bucket")
    assert any('le="60"' in labels and f'task_queue="{queue}"' in labels and value >= 1 for labels, value in buckets.items())
