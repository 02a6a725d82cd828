"""Agents, costs, statistics, metrics and health.

``/healthz`` and ``/metrics`` need no credentials: load balancers and Prometheus scrape
them, and they reveal no tenant data (health: ok or the failing dependency; metrics:
aggregates).
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import date
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from convergio import __version__
from convergio.agents.definition import AgentDefinition
from convergio.api.auth import Admin, Viewer
from convergio.api.deps import CatalogDep, DbDep, SettingsDep, TemporalDep
from convergio.api.problems import PROBLEM_JSON, ProblemError, problem_responses
from convergio.costs.ledger import CostReport, check_report_range
from convergio.costs.ledger import report as cost_report
from convergio.observability.metrics import PROMETHEUS_CONTENT_TYPE, Metrics
from convergio.observability.stats import StatsReport, collect_stats, refresh_gauges

router = APIRouter(tags=["system"])


class HealthReport(BaseModel):
    status: str = Field(examples=["ok"])
    version: str = Field(examples=[__version__])
    checks: dict[str, str] = Field(examples=[{"temporal": "ok", "postgres": "ok", "redis": "ok"}])


@router.get(
    "/agents",
    response_model=list[AgentDefinition],
    summary="The agents templates can use",
    description="Needs role `viewer`.",
    responses={
        200: {
            "content": {"application/json": {"example": [{"name": "cfo", "role": "Chief Financial Officer"}]}}
        },
        **problem_responses(401, 429, 503),
    },
)
async def list_agents(principal: Viewer, catalog: CatalogDep) -> list[AgentDefinition]:
    return catalog.all()


@router.get(
    "/costs",
    response_model=CostReport,
    summary="Model spend: totals, trend, efficiency, advice",
    description="Your tenant's spend (admins: any tenant, or all when `tenant` is unset). "
    "Needs role `viewer`.",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "tenant": "acme",
                        "since": "2026-11-01",
                        "until": "2026-11-24",
                        "total_usd": "1.234500",
                        "turns": 42,
                    }
                }
            }
        },
        **problem_responses(401, 403, 422, 429, 503),
    },
)
async def costs(
    principal: Viewer,
    db: DbDep,
    tenant: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", examples=["acme"])] = None,
    since: Annotated[
        date | None, Query(description="First UTC day included.", examples=["2026-11-01"])
    ] = None,
    until: Annotated[
        date | None, Query(description="Last UTC day included.", examples=["2026-11-24"])
    ] = None,
) -> CostReport:
    if tenant is not None and tenant != principal.tenant and not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may read tenant '{principal.tenant}' only")
    try:
        check_report_range(since, until)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    scope = tenant if tenant is not None else (None if principal.is_admin else principal.tenant)
    return await cost_report(db, tenant=scope, since=since, until=until)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process (no credentials needed)",
    response_class=Response,
    responses={
        200: {
            "content": {
                PROMETHEUS_CONTENT_TYPE: {
                    "schema": {"type": "string"},
                    "example": "# TYPE convergio_workflows_started_total counter\n"
                    "convergio_workflows_started_total 3\n",
                }
            }
        }
    },
)
async def prometheus_metrics(request: Request, settings: SettingsDep, temporal: TemporalDep) -> Response:
    metrics: Metrics = request.app.state.metrics
    await refresh_gauges(metrics, temporal, settings)
    return Response(metrics.prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)


@router.get(
    "/stats",
    response_model=StatsReport,
    summary="P50/P95/P99 of durations and costs",
    description="Across every tenant, so it needs role `admin`.",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "workflow_duration_seconds": {
                            "count": 12,
                            "p50": 41.0,
                            "p95": 88.5,
                            "p99": 97.1,
                            "source": "temporal",
                        },
                    }
                }
            }
        },
        **problem_responses(401, 403, 422, 429, 503),
    },
)
async def stats(
    principal: Admin,
    settings: SettingsDep,
    temporal: TemporalDep,
    db: DbDep,
    days: Annotated[int, Query(ge=1, le=365, description="Cost ledger window, in days.", examples=[7])] = 7,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Most recent closed runs used.", examples=[1000])
    ] = 1000,
) -> StatsReport:
    return await collect_stats(temporal, settings, db, days=days, limit=limit)


@router.get(
    "/healthz",
    response_model=HealthReport,
    summary="Checks Temporal, PostgreSQL and Redis (no credentials needed)",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "status": "ok",
                        "version": __version__,
                        "checks": {"temporal": "ok", "postgres": "ok", "redis": "ok"},
                    }
                }
            }
        },
        503: {
            "description": "A dependency failed; `checks` says which",
            "content": {
                PROBLEM_JSON: {
                    "example": {
                        "type": "urn:convergio:problem:service-unavailable",
                        "title": "Service Unavailable",
                        "status": 503,
                        "detail": "degraded: redis",
                        "instance": "/healthz",
                        "checks": {"temporal": "ok", "postgres": "ok", "redis": "error: connection refused"},
                    }
                }
            },
        },
    },
)
async def healthz(request: Request, settings: SettingsDep, temporal: TemporalDep) -> HealthReport:
    checks = {
        "temporal": await _check(temporal.service_client.check_health()),
        "postgres": await _check(_ping_postgres(settings.effective_database_url)),
        "redis": await _check(request.app.state.redis.ping()),
    }
    failing = [name for name, value in checks.items() if value != "ok"]
    if failing:
        raise ProblemError(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"degraded: {', '.join(failing)}", checks=checks
        )
    return HealthReport(status="ok", version=__version__, checks=checks)


async def _ping_postgres(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        await conn.execute("SELECT 1")


async def _check(probe: Awaitable[Any]) -> str:
    try:
        await probe
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        return f"error: {type(exc).__name__}"
    return "ok"
