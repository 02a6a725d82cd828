"""The Convergio HTTP API. Typed routes; Pydantic models are the contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import psycopg
import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from convergio import __version__
from convergio.contracts import AgentTurnRequest
from convergio.settings import Settings, get_settings
from convergio.temporal_client import connect_temporal
from convergio.workflow_runs import RunStarted, RunState, read_run, start_agent_turn


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings if hasattr(app.state, "settings") else get_settings()
    app.state.settings = settings
    app.state.temporal = await connect_temporal(settings)
    app.state.redis = aioredis.Redis.from_url(settings.effective_redis_url)
    try:
        yield
    finally:
        await app.state.redis.aclose()


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


class HealthReport(BaseModel):
    status: str
    version: str
    checks: dict[str, str]


def create_app(settings: Settings | None = None) -> FastAPI:
    app = FastAPI(
        title="Convergio",
        version=__version__,
        summary="Business processes as durable multi-agent workflows.",
        lifespan=lifespan,
    )
    if settings is not None:
        app.state.settings = settings

    @app.post(
        "/workflows",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=RunStarted,
        summary="Start a workflow run",
        responses={503: {"description": "Temporal is unreachable"}},
    )
    async def start_workflow(
        request: AgentTurnRequest,
        settings: SettingsDep,
        temporal: TemporalDep,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> RunStarted:
        try:
            return await start_agent_turn(temporal, settings, request, idempotency_key)
        except RPCError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal: {exc.message}") from exc

    @app.get("/workflows/{workflow_id}", response_model=RunState, summary="A run's status and result")
    async def get_workflow(workflow_id: str, settings: SettingsDep, temporal: TemporalDep) -> RunState:
        try:
            return await read_run(temporal, settings, workflow_id)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow {workflow_id!r}") from exc
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal: {exc.message}") from exc

    @app.get("/healthz", response_model=HealthReport, summary="Checks Temporal, PostgreSQL and Redis")
    async def healthz(request: Request, settings: SettingsDep, temporal: TemporalDep) -> HealthReport:
        checks = {
            "temporal": await _check(temporal.service_client.check_health()),
            "postgres": await _check(_ping_postgres(settings.effective_database_url)),
            "redis": await _check(request.app.state.redis.ping()),
        }
        healthy = all(value == "ok" for value in checks.values())
        report = HealthReport(status="ok" if healthy else "degraded", version=__version__, checks=checks)
        if not healthy:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, report.model_dump())
        return report

    return app


async def _ping_postgres(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        await conn.execute("SELECT 1")


async def _check(awaitable) -> str:  # noqa: ANN001 - any awaitable probe
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        return f"error: {exc}"
    return "ok"


app = create_app()
