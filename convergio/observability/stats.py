"""``GET /stats`` and ``convergio stats``: P50/P95/P99, each from the source that actually has it.

* ``workflow_duration_seconds``: Temporal visibility, start to close of the most recent closed
  runs on this task queue (all workers; exact).
* ``turn_cost_usd`` and ``tokens_per_turn``: the Postgres cost ledger (all workers; exact).
* ``agent_response_seconds``: ``agent_turns.response_ms``, written by every worker with the turn
  (all workers; exact). Prometheus has the same as ``convergio_agent_response_seconds``.
"""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
import logging
from collections import Counter
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from temporalio.client import Client

from convergio.observability.metrics import Metrics, percentiles
from convergio.settings import Settings

logger = logging.getLogger(__name__)


class Percentiles(BaseModel):
    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    source: str = Field(description="Where the samples come from.")

    @classmethod
    def of(cls, samples: list[float], source: str) -> Percentiles:
        return cls(count=len(samples), source=source, **percentiles(samples))


class StatsReport(BaseModel):
    workflow_duration_seconds: Percentiles
    agent_response_seconds: Percentiles
    turn_cost_usd: Percentiles
    tokens_per_turn: Percentiles


async def _workflow_durations(temporal: Client, settings: Settings, limit: int) -> list[float]:
    query = f"TaskQueue = '{settings.temporal_task_queue}' AND ExecutionStatus != 'Running'"
    durations: list[float] = []
    async for execution in temporal.list_workflows(query, limit=limit):
        if execution.close_time is not None and execution.start_time is not None:
            durations.append((execution.close_time - execution.start_time).total_seconds())
    return durations


async def _ledger(db: AsyncConnectionPool, days: int) -> tuple[list[float], list[float], list[float]]:
    """Cost and tokens per turn (cost ledger) and response seconds per turn (agent_turns)."""
    async with db.connection() as conn:
        cursor = await conn.execute(
            "SELECT cost_usd::float, (prompt_tokens + completion_tokens)::float FROM cost_ledger"
            " WHERE created_at >= now() - make_interval(days => %s)",
            (days,),
        )
        rows = await cursor.fetchall()
        cursor = await conn.execute(
            "SELECT response_ms / 1000.0 FROM agent_turns"
            " WHERE response_ms IS NOT NULL AND created_at >= now() - make_interval(days => %s)",
            (days,),
        )
        responses = [r[0] for r in await cursor.fetchall()]
    return [r[0] for r in rows], [r[1] for r in rows], responses


async def collect_stats(
    temporal: Client, settings: Settings, db: AsyncConnectionPool, *, days: int = 7, limit: int = 1000
) -> StatsReport:
    durations, (costs, tokens, responses) = await asyncio.gather(
        _workflow_durations(temporal, settings, limit), _ledger(db, days)
    )
    return StatsReport(
        workflow_duration_seconds=Percentiles.of(
            durations, f"temporal visibility: last {limit} closed runs on task queue {settings.temporal_task_queue}"
        ),
        agent_response_seconds=Percentiles.of(responses, f"agent turns of every worker, last {days} days"),
        turn_cost_usd=Percentiles.of(costs, f"cost ledger, last {days} days"),
        tokens_per_turn=Percentiles.of(tokens, f"cost ledger, last {days} days"),
    )


async def refresh_gauges(metrics: Metrics, temporal: Client, settings: Settings, timeout: float = 3.0) -> None:
    """Pending approvals by tenant, from the runs' ``ConvergioPendingGates`` search attribute."""

    async def count() -> dict[str, int]:
        by_tenant: Counter[str] = Counter()
        query = f"TaskQueue = '{settings.temporal_task_queue}' AND ExecutionStatus = 'Running'"
        async for execution in temporal.list_workflows(query, limit=5000):
            attributes: dict[str, Any] = execution.search_attributes or {}
            gates = attributes.get("ConvergioPendingGates") or []
            tenant = (attributes.get("ConvergioTenant") or ["unknown"])[0]
            by_tenant[tenant] += len(gates)
        return dict(by_tenant)

    try:
        metrics.set_pending_approvals(await asyncio.wait_for(count(), timeout))
    except Exception as exc:  # noqa: BLE001 - a scrape reports what it has
        logger.warning("pending approvals not refreshed: %s", exc)
    try:
        metrics.set_backlog(await asyncio.wait_for(task_queue_backlog(temporal, settings), timeout))
    except Exception as exc:  # noqa: BLE001 - a scrape reports what it has
        logger.warning("task-queue backlog not refreshed: %s", exc)


async def task_queue_backlog(temporal: Client, settings: Settings) -> dict[str, int]:
    """Temporal's estimate of tasks waiting for a worker, for workflow and activity tasks."""
    backlog: dict[str, int] = {}
    for kind, queue_type in (("workflow", TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
                             ("activity", TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)):
        response = await temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=temporal.namespace,
                task_queue=TaskQueue(name=settings.temporal_task_queue),
                task_queue_type=queue_type,
                report_stats=True,
            )
        )
        backlog[kind] = int(response.stats.approximate_backlog_count)
    return backlog
