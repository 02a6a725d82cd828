"""The Temporal SDK's own runtime metrics (task latencies, slots, polls, requests) in our metrics.

The SDK's Rust core records them into a :class:`~temporalio.runtime.MetricBuffer`; a small task
drains the buffer into OpenTelemetry instruments on the process's MeterProvider. So they come
out wherever Convergio's own metrics go (``/metrics`` for Prometheus and, with
``CONVERGIO_OTEL_EXPORTER=otlp``, over OTLP) instead of needing a second exporter and port.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from opentelemetry.metrics import Meter
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_GAUGE,
    BufferedMetricUpdate,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
)

from convergio.observability.metrics import SECONDS_BUCKETS, Metrics

logger = logging.getLogger(__name__)

# Updates kept between drains; the core drops (and logs) what does not fit, so drain often.
BUFFER_SIZE = 50_000
DRAIN_INTERVAL_S = 1.0


@lru_cache
def buffered_runtime() -> tuple[Runtime, MetricBuffer]:
    """One Temporal runtime per process whose metrics land in a buffer (durations in seconds)."""
    buffer = MetricBuffer(BUFFER_SIZE, duration_format=MetricBufferDurationFormat.SECONDS)
    return Runtime(telemetry=TelemetryConfig(metrics=buffer)), buffer


@dataclass
class TemporalMetricsBridge:
    """Copies buffered SDK metric updates onto OpenTelemetry instruments of the same name."""

    buffer: MetricBuffer
    meter: Meter
    _instruments: dict[tuple[str, int], Any] = field(default_factory=dict)

    @classmethod
    def for_metrics(cls, metrics: Metrics) -> TemporalMetricsBridge:
        return cls(buffered_runtime()[1], metrics.provider.get_meter("temporalio"))

    def drain(self) -> int:
        """Apply every update waiting in the buffer; returns how many there were."""
        updates = self.buffer.retrieve_updates()
        for update in updates:
            self._apply(update)
        return len(updates)

    def _apply(self, update: BufferedMetricUpdate) -> None:
        key = (update.metric.name, update.metric.kind)
        instrument = self._instruments.get(key)
        if instrument is None:
            instrument = self._instruments[key] = self._create(update)
        attributes = {str(key): value for key, value in update.attributes.items()}
        kind = update.metric.kind
        if kind == BUFFERED_METRIC_KIND_COUNTER:
            instrument.add(update.value, attributes)
        elif kind == BUFFERED_METRIC_KIND_GAUGE:
            instrument.set(update.value, attributes)
        else:
            instrument.record(update.value, attributes)

    def _create(self, update: BufferedMetricUpdate) -> Any:
        metric = update.metric
        # Prometheus appends _total to counters; the core already names its counters without it.
        name = metric.name if metric.name.startswith("temporal_") else f"temporal_{metric.name}"
        description = metric.description or ""
        if metric.kind == BUFFERED_METRIC_KIND_COUNTER:
            return self.meter.create_counter(name, description=description)
        if metric.kind == BUFFERED_METRIC_KIND_GAUGE:
            return self.meter.create_gauge(name, description=description)
        if metric.unit == "s":
            return self.meter.create_histogram(
                f"{name}_seconds" if not name.endswith("_seconds") else name, unit="s",
                description=description, explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
            )
        return self.meter.create_histogram(name, unit=metric.unit or "", description=description)

    async def run(self, stop: asyncio.Event | None = None, interval: float = DRAIN_INTERVAL_S) -> None:
        """Drain every ``interval`` seconds until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                self.drain()
            except Exception:  # noqa: BLE001 - metrics must never take the worker down
                logger.exception("Temporal SDK metrics not forwarded")
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
        self.drain()
