"""Traces: one TracerProvider per process, exporter chosen by ``CONVERGIO_OTEL_EXPORTER``.

Nothing here relies on the global OTel provider being settable more than once: every setup
function returns the provider, :func:`tracer_provider` answers the one this process set up
last (tests install their own with an in-memory exporter), and the code that creates spans
asks for its tracer through :func:`tracer` at the moment it creates the span.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from convergio.settings import Settings

_provider: TracerProvider | None = None


def resource(settings: Settings) -> Resource:
    """``service.name`` from the settings, unless the standard ``OTEL_SERVICE_NAME`` names it."""
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = settings.service_name
    return Resource.create(attributes)


def _settings_exporter(settings: Settings) -> SpanExporter | None:
    if settings.otel_exporter == "console":
        return ConsoleSpanExporter()
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otel_endpoint) if settings.otel_endpoint else OTLPSpanExporter()
    return None


def setup_tracing(
    settings: Settings, exporter: SpanExporter | None = None, *, set_global: bool = True
) -> TracerProvider:
    """A TracerProvider exporting to ``exporter`` (tests) or to the one the settings name.

    With ``otel_exporter=none`` and no exporter spans are still created (logs carry their trace
    ids) but go nowhere. The provider becomes this process's :func:`tracer_provider`; with
    ``set_global`` it is also offered as the OTel global (which only the first call can set).
    """
    global _provider
    provider = TracerProvider(resource=resource(settings))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        configured = _settings_exporter(settings)
        if configured is not None:
            provider.add_span_processor(BatchSpanProcessor(configured))
    _provider = provider
    if set_global and not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def ensure_tracing(settings: Settings) -> TracerProvider:
    """The provider already set up in this process, or a new one from the settings."""
    return _provider if _provider is not None else setup_tracing(settings)


def tracer_provider() -> trace.TracerProvider:
    return _provider if _provider is not None else trace.get_tracer_provider()


def tracer(name: str = "convergio") -> trace.Tracer:
    return tracer_provider().get_tracer(name)


def reset_tracing() -> None:
    """Forget the provider set up last (tests)."""
    global _provider
    _provider = None


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A child span of the current one; ``None`` attribute values are left out."""
    with tracer().start_as_current_span(name) as current:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(key, value)
        yield current


def temporal_tracing_interceptor(provider: trace.TracerProvider | None = None) -> Any:
    """Temporal's OTel interceptor on our provider. Given to the *client*: Temporal applies a
    client interceptor that is also a worker interceptor to every worker built from that client,
    so API -> StartWorkflow -> RunWorkflow -> RunActivity -> agent.turn is one trace."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor((provider or tracer_provider()).get_tracer("temporalio"))
