"""Metrics through the OpenTelemetry SDK: a Prometheus reader (served at ``/metrics``) and, with
``CONVERGIO_OTEL_EXPORTER=otlp``, an OTLP reader too.

Recorded where the events happen, never in workflow code: agent turns in the activity, cost and
tokens in the cost hook (:func:`convergio.costs.pricing.subscribe`), SLA breaches in
``notify_escalation``, errors and workflow durations in the worker interceptor
(:mod:`convergio.observability.interceptor`, replay-safe). Like tracing, the set-up returns its
objects and :func:`get_metrics` answers the last one set up, so tests can install their own.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from convergio.costs import pricing
from convergio.settings import Settings

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 86400)
SCREEN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
USD_BUCKETS = (0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
SlaScope = Literal["step", "run"]

# Prometheus names of everything exported (counters get ``_total``; histograms ``_bucket/_sum/_count``).
METRIC_NAMES = (
    "convergio_workflow_duration_seconds",
    "convergio_agent_response_seconds",
    "convergio_turn_cost_usd",
    "convergio_tokens_total",
    "convergio_errors_total",
    "convergio_sla_breaches_total",
    "convergio_pending_approvals",
    "convergio_budget_remaining_usd",
    "convergio_task_queue_backlog",
)
# Exported once the guardian screened something (the classifier counter once it was asked).
SECURITY_METRIC_NAMES = (
    "convergio_security_verdicts_total",
    "convergio_security_screen_seconds",
    "convergio_security_classifier_calls_total",
)


def percentiles(samples: Sequence[float], quantiles: Iterable[float] = (0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """Nearest-rank percentiles (``p50``, ``p95``, ``p99``); ``None`` without samples."""
    ordered = sorted(samples)
    result: dict[str, float | None] = {}
    for q in quantiles:
        key = f"p{round(q * 100)}"
        result[key] = ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None
    return result


@dataclass
class _Gauges:
    """Last known values of the observable gauges, set by whoever learns them."""

    pending_approvals: dict[str, int] = field(default_factory=dict)  # by tenant
    budget_remaining: dict[str, float] = field(default_factory=dict)  # by tenant
    backlog: dict[str, int] = field(default_factory=dict)  # by task type (workflow, activity)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Metrics:
    """The instruments, on one MeterProvider, plus a bounded reservoir per histogram for /stats."""

    RESERVOIR = 5000

    def __init__(self, provider: MeterProvider, registry: CollectorRegistry) -> None:
        self.provider = provider
        self.registry = registry
        meter = provider.get_meter("convergio")
        self.workflow_duration = meter.create_histogram(
            "convergio_workflow_duration_seconds", unit="s",
            description="Wall time of a conversation (workflow run), start to close.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.agent_response = meter.create_histogram(
            "convergio_agent_response_seconds", unit="s",
            description="Time of one agent turn (model call included).",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.turn_cost = meter.create_histogram(
            "convergio_turn_cost_usd", description="Dollars per agent turn.",
            explicit_bucket_boundaries_advisory=USD_BUCKETS,
        )
        self.tokens = meter.create_counter("convergio_tokens", description="Model tokens by kind and model.")
        self.errors = meter.create_counter("convergio_errors", description="Failures by kind.")
        self.sla_breaches = meter.create_counter(
            "convergio_sla_breaches", description="SLA escalations, by scope (step or run)."
        )
        self.security_verdicts = meter.create_counter(
            "convergio_security_verdicts",
            description="Security guardian verdicts by surface, category (the worst one; none when clean), "
            "decision and policy action.",
        )
        self.security_screen = meter.create_histogram(
            "convergio_security_screen_seconds", unit="s",
            description="Time to screen one text (rules, and the classifier when it was asked).",
            explicit_bucket_boundaries_advisory=SCREEN_BUCKETS,
        )
        self.security_classifier_calls = meter.create_counter(
            "convergio_security_classifier_calls",
            description="Texts the guardian's classifier was asked about (the rules were unsure), by surface.",
        )
        self._gauges = _Gauges()
        meter.create_observable_gauge(
            "convergio_pending_approvals", callbacks=[self._observe_pending],
            description="Approval gates waiting for a person, by tenant.",
        )
        meter.create_observable_gauge(
            "convergio_budget_remaining_usd", callbacks=[self._observe_budget],
            description="Dollars left of the tenant's daily budget.",
        )
        meter.create_observable_gauge(
            "convergio_task_queue_backlog", callbacks=[self._observe_backlog],
            description="Tasks waiting on the worker task queue, by task type (Temporal's estimate).",
        )
        self._samples: dict[str, deque[float]] = {}
        self._samples_lock = threading.Lock()

    # ------------------------------------------------------------------ recording

    def _keep(self, name: str, value: float) -> None:
        with self._samples_lock:
            samples = self._samples.get(name)
            if samples is None:
                samples = self._samples[name] = deque(maxlen=self.RESERVOIR)  # the oldest fall out
            samples.append(value)

    def record_agent_turn(self, agent: str, model: str, seconds: float) -> None:
        self.agent_response.record(seconds, {"agent": agent, "model": model})
        self._keep("agent_response_seconds", seconds)

    def record_turn_cost(self, turn: pricing.TurnCost) -> None:
        """The cost hook (subscribed by :func:`setup_metrics`)."""
        cost = float(turn.cost_usd)
        self.turn_cost.record(cost, {"model": turn.model, "tenant": turn.tenant})
        self._keep("turn_cost_usd", cost)
        self.tokens.add(turn.prompt_tokens, {"kind": "prompt", "model": turn.model})
        self.tokens.add(turn.completion_tokens, {"kind": "completion", "model": turn.model})

    def record_workflow(self, workflow_type: str, seconds: float, status: str) -> None:
        self.workflow_duration.record(seconds, {"workflow_type": workflow_type, "status": status})
        self._keep("workflow_duration_seconds", seconds)

    def record_verdict(
        self, surface: str, decision: str, categories: Sequence[str], action: str, seconds: float,
        *, classifier: bool = False,
    ) -> None:
        """One security verdict (recorded by :func:`convergio.security.activity.screen_input`)."""
        category = categories[0] if categories else "none"
        self.security_verdicts.add(
            1, {"surface": surface, "category": category, "decision": decision, "action": action}
        )
        self.security_screen.record(seconds, {"surface": surface})
        self._keep("security_screen_seconds", seconds)
        if classifier:
            self.security_classifier_calls.add(1, {"surface": surface})

    def record_error(self, kind: str) -> None:
        self.errors.add(1, {"kind": kind})

    def record_sla_breach(self, scope: SlaScope) -> None:
        """One SLA escalation, labelled by scope only: its reason quotes tenant-written step
        labels, and a label per distinct text would grow the series without bound."""
        self.sla_breaches.add(1, {"scope": scope})

    def set_pending_approvals(self, by_tenant: dict[str, int]) -> None:
        with self._gauges.lock:
            # A tenant seen before and now without pending gates reads 0, not "no data".
            self._gauges.pending_approvals = {**dict.fromkeys(self._gauges.pending_approvals, 0), **by_tenant}

    def set_budget_remaining(self, tenant: str, dollars: float) -> None:
        with self._gauges.lock:
            self._gauges.budget_remaining[tenant] = dollars

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._gauges.lock:
            values = dict(self._gauges.pending_approvals)
        return [Observation(count, {"tenant": tenant}) for tenant, count in values.items()]

    def set_backlog(self, by_type: dict[str, int]) -> None:
        with self._gauges.lock:
            self._gauges.backlog = dict(by_type)

    def _observe_backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._gauges.lock:
            values = dict(self._gauges.backlog)
        return [Observation(count, {"task_type": kind}) for kind, count in values.items()]

    def _observe_budget(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._gauges.lock:
            values = dict(self._gauges.budget_remaining)
        return [Observation(dollars, {"tenant": tenant}) for tenant, dollars in values.items()]

    # ------------------------------------------------------------------ reading

    def samples(self, name: str) -> list[float]:
        with self._samples_lock:
            return list(self._samples.get(name, ()))

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()


_metrics: Metrics | None = None
_unsubscribe: Callable[[], None] | None = None


def setup_metrics(
    settings: Settings | None = None,
    *,
    registry: CollectorRegistry | None = None,
    extra_readers: Sequence[MetricReader] = (),
) -> Metrics:
    """A MeterProvider with a Prometheus reader on ``registry`` (a fresh one by default, never the
    prometheus_client global) and, for ``otel_exporter=otlp``, an OTLP reader. Becomes this
    process's :func:`get_metrics` and the listener of the per-turn cost hook."""
    global _metrics, _unsubscribe
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    registry = registry or CollectorRegistry()
    readers: list[MetricReader] = [PrometheusMetricReader(registry=registry), *extra_readers]
    resource = None
    if settings is not None:
        from convergio.observability.tracing import resource as make_resource

        resource = make_resource(settings)
        if settings.otel_exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = (
                OTLPMetricExporter(endpoint=settings.otel_endpoint) if settings.otel_endpoint else OTLPMetricExporter()
            )
            readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=15_000))
    provider = MeterProvider(metric_readers=readers, **({"resource": resource} if resource else {}))
    metrics = Metrics(provider, registry)
    if _unsubscribe is not None:
        _unsubscribe()
    _unsubscribe = pricing.subscribe(metrics.record_turn_cost)
    _metrics = metrics
    return metrics


def get_metrics() -> Metrics:
    """The metrics set up last in this process (set up with defaults on first use)."""
    return _metrics if _metrics is not None else setup_metrics()


def ensure_metrics(settings: Settings) -> Metrics:
    return _metrics if _metrics is not None else setup_metrics(settings)
