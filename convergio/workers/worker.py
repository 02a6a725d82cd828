"""The Convergio worker: workflows plus activities with their Postgres and Redis connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.worker import Worker

from convergio.activities.agent_turn import AgentTurnActivities
from convergio.activities.notifications import NotificationActivities
from convergio.activities.quality import QualityActivities
from convergio.activities.tool_step import ToolStepActivities
from convergio.costs.budget import RedisBudget
from convergio.costs.metering import TurnMeter
from convergio.costs.pricing import default_price_table
from convergio.db.pool import connection_pool
from convergio.events import EventPublisher
from convergio.observability.interceptor import MetricsInterceptor
from convergio.settings import Settings
from convergio.security.activity import SecurityActivities
from convergio.security.classifier import build_classifier
from convergio.rag.activity import KnowledgeActivities
from convergio.temporal_client import connect_temporal
from convergio.workers.sandbox import workflow_runner
from convergio.workflows.autogen_graphflow import AutoGenGraphFlowWorkflow
from convergio.workflows.graphflow import GraphFlowWorkflow

WORKFLOWS = [GraphFlowWorkflow, AutoGenGraphFlowWorkflow]


@dataclass
class WorkerResources:
    """Connections the activities share; opened once per worker process."""

    pool: AsyncConnectionPool
    redis: aioredis.Redis
    event_retention: timedelta = timedelta(days=30)  # CONVERGIO_EVENT_RETENTION_DAYS

    @property
    def events(self) -> EventPublisher:
        return EventPublisher(self.redis, self.event_retention)

    def meter(self, settings: Settings) -> TurnMeter:
        return TurnMeter(RedisBudget(self.redis), default_price_table(settings.price_table))


@asynccontextmanager
async def open_resources(
    database_url: str, redis_url: str, *, event_retention: timedelta = timedelta(days=30)
) -> AsyncIterator[WorkerResources]:
    pool = connection_pool(database_url, max_size=10)
    await pool.open(wait=True, timeout=30)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        yield WorkerResources(pool=pool, redis=redis, event_retention=event_retention)
    finally:
        await redis.aclose()
        await pool.close()


def worker_activities(settings: Settings, resources: WorkerResources) -> list[Callable[..., Any]]:
    """Every activity the workflows call, bound to the worker's shared connections."""
    turns = AgentTurnActivities(settings, resources.pool, resources.events, resources.meter(settings))
    notifications = NotificationActivities(resources.events)
    quality = QualityActivities(resources.pool)
    security = SecurityActivities(resources.pool, build_classifier(settings))
    return [
        turns.run_agent_turn,
        ToolStepActivities(resources.events).run_tool_step,
        notifications.notify_escalation,
        notifications.publish_run_event,
        quality.record_quality,
        security.screen_text,
        *KnowledgeActivities(settings, resources.pool, resources.redis).activities(),
    ]


def build_worker(
    client: Client,
    settings: Settings,
    resources: WorkerResources,
    *,
    max_cached_workflows: int = 1000,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
) -> Worker:
    """``max_cached_workflows=0`` turns off sticky execution (every task goes to the shared queue);
    ``extra_*``: more workflows and activities on the same worker (benchmarks, tests)."""
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=[*worker_activities(settings, resources), *extra_activities],
        max_cached_workflows=max_cached_workflows,
        workflow_runner=workflow_runner(extra_workflows),
        # Tracing comes with the client (connect_temporal); metrics are the worker's own.
        interceptors=[MetricsInterceptor()],
    )


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or forever); used by ``convergio worker``."""
    from convergio.observability.metrics import ensure_metrics
    from convergio.observability.tracing import ensure_tracing

    ensure_tracing(settings)
    metrics = ensure_metrics(settings)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, registry=metrics.registry)
    from convergio.observability.temporal_metrics import TemporalMetricsBridge

    stop = stop or asyncio.Event()
    client = await connect_temporal(settings, sdk_metrics=True)
    sdk_metrics = asyncio.create_task(TemporalMetricsBridge.for_metrics(metrics).run(stop))
    try:
        urls = (settings.effective_database_url, settings.effective_redis_url)
        async with open_resources(*urls, event_retention=settings.event_retention) as resources:
            worker = build_worker(client, settings, resources)
            async with worker:
                await stop.wait()
    finally:
        stop.set()
        await sdk_metrics
