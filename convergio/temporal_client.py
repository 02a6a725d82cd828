"""One way to connect to Temporal: with the Pydantic data converter every payload needs, and
OpenTelemetry tracing (the interceptor also applies to every worker built from the client)."""

from __future__ import annotations

from opentelemetry.trace import TracerProvider
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from convergio.observability.temporal_metrics import buffered_runtime
from convergio.observability.tracing import temporal_tracing_interceptor
from convergio.settings import Settings


class TemporalUnreachable(RuntimeError):
    """No Temporal answered at ``address`` (the SDK raises a bare ``RuntimeError``): typed, so a
    command can say so in one line without taking every ``RuntimeError`` for it."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(reason)
        self.address = address


def temporal_runtime() -> Runtime:
    """The process's Temporal runtime: its SDK metrics go to a buffer that
    :class:`~convergio.observability.temporal_metrics.TemporalMetricsBridge` drains into our
    OpenTelemetry metrics (so ``/metrics`` and OTLP both carry them)."""
    return buffered_runtime()[0]


async def connect_temporal(
    settings: Settings,
    address: str | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    sdk_metrics: bool = False,
) -> Client:
    """``tracer_provider``: where the Temporal spans go (default: the process's, see
    :func:`convergio.observability.tracing.tracer_provider`). ``sdk_metrics``: record the SDK's
    runtime metrics for a process that drains them (the worker and the API run a
    :class:`~convergio.observability.temporal_metrics.TemporalMetricsBridge`); short-lived
    clients (CLI, demo) leave them off, as nothing would read the buffer. Raises
    :class:`TemporalUnreachable` when the connection fails."""
    target = address or settings.effective_temporal_address
    try:
        return await Client.connect(
            target,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            interceptors=[temporal_tracing_interceptor(tracer_provider)],
            runtime=temporal_runtime() if sdk_metrics else None,
        )
    except RuntimeError as exc:  # "Failed client connect: ..." (refused, unknown host, TLS, not Temporal)
        raise TemporalUnreachable(target, str(exc)) from exc
