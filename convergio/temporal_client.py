"""One way to connect to Temporal: with the Pydantic data converter every payload needs, and
OpenTelemetry tracing (the interceptor also applies to every worker built from the client)."""

from __future__ import annotations

import os
from functools import lru_cache

from opentelemetry.trace import TracerProvider
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import OpenTelemetryConfig, Runtime, TelemetryConfig

from convergio.observability.tracing import temporal_tracing_interceptor
from convergio.settings import Settings


@lru_cache
def _otlp_runtime(url: str) -> Runtime:
    """The Temporal SDK's own metrics (task latencies, slots, polls) pushed over OTLP."""
    return Runtime(
        telemetry=TelemetryConfig(metrics=OpenTelemetryConfig(url=url, durations_as_seconds=True))
    )


def temporal_runtime(settings: Settings) -> Runtime | None:
    if settings.otel_exporter != "otlp":
        return None
    url = settings.otel_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4317"
    return _otlp_runtime(url)


async def connect_temporal(
    settings: Settings, address: str | None = None, *, tracer_provider: TracerProvider | None = None
) -> Client:
    """``tracer_provider``: where the Temporal spans go (default: the process's, see
    :func:`convergio.observability.tracing.tracer_provider`)."""
    return await Client.connect(
        address or settings.effective_temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[temporal_tracing_interceptor(tracer_provider)],
        runtime=temporal_runtime(settings),
    )
