"""The Convergio HTTP API. Typed routes; Pydantic models are the contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from datetime import date
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import psycopg
import redis.asyncio as aioredis
from fastapi import (
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from convergio import __version__
from convergio.agents.catalog import AgentCatalog, default_catalog
from convergio.agents.definition import AgentDefinition
from convergio.costs.ledger import CostReport
from convergio.events import AgentEvent, stream_key
from convergio.costs.ledger import report as cost_report
from convergio.graphflow.loader import InputError, TemplateRegistry, default_registry
from convergio.graphflow.run_models import ApprovalDecision
from convergio.graphflow.runs import (
    RunView,
    TemplateRunRequest,
    TemplateRunStarted,
    build_run_input,
    decide,
    read_template_run,
    start_template_run,
)
from convergio.graphflow.template import InputSpec
from convergio.observability import tracing
from convergio.observability.metrics import PROMETHEUS_CONTENT_TYPE, Metrics, ensure_metrics
from convergio.observability.stats import StatsReport, collect_stats, refresh_gauges
from convergio.settings import Settings, get_settings
from convergio.temporal_client import connect_temporal
from convergio.workflows.graphflow import GraphFlowWorkflow


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = getattr(app.state, "settings", None) or get_settings()
    app.state.settings = settings
    provider = getattr(app.state, "tracer_provider", None) or tracing.ensure_tracing(settings)
    if getattr(app.state, "metrics", None) is None:
        app.state.metrics = ensure_metrics(settings)
    app.state.temporal = await connect_temporal(settings, tracer_provider=provider)
    app.state.redis = aioredis.Redis.from_url(settings.effective_redis_url)
    app.state.db = AsyncConnectionPool(settings.effective_database_url, min_size=1, max_size=5, open=False)
    await app.state.db.open(wait=False)
    try:
        yield
    finally:
        await app.state.db.close()
        await app.state.redis.aclose()


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_temporal(request: Request) -> Client:
    return request.app.state.temporal


def get_db(request: Request) -> AsyncConnectionPool:
    return request.app.state.db


def get_catalog() -> AgentCatalog:
    return default_catalog()


def get_registry() -> TemplateRegistry:
    return default_registry()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
CatalogDep = Annotated[AgentCatalog, Depends(get_catalog)]
DbDep = Annotated[AsyncConnectionPool, Depends(get_db)]
RegistryDep = Annotated[TemplateRegistry, Depends(get_registry)]


class HealthReport(BaseModel):
    status: str
    version: str
    checks: dict[str, str]


class StepSummary(BaseModel):
    id: str
    title: str
    kind: str
    depends_on: list[str]
    agents: list[str]


class TemplateSummary(BaseModel):
    name: str
    version: int
    description: str
    inputs: dict[str, InputSpec]
    steps: list[StepSummary]


class ApprovalRequest(BaseModel):
    """A person's decision on a gate."""

    decision: Literal["approve", "deny"]
    approver: str = Field(min_length=1, max_length=200, examples=["ada@example.com"])
    role: str = Field(min_length=1, max_length=100, examples=["executive"])
    comment: str = Field(default="", max_length=10_000)


class DecisionAccepted(BaseModel):
    workflow_id: str
    gate_id: str
    decision: str


def _temporal_unavailable(exc: RPCError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"Temporal: {exc.message}")


def create_app(
    settings: Settings | None = None,
    *,
    tracer_provider: Any = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """``tracer_provider`` and ``metrics``: where this app's spans and metrics go (tests pass
    their own; default: the process's, set up from the settings on start-up)."""
    app = FastAPI(
        title="Convergio",
        version=__version__,
        summary="Business processes as durable multi-agent workflows.",
        lifespan=lifespan,
    )
    if settings is not None:
        app.state.settings = settings
    app.state.tracer_provider = tracer_provider
    app.state.metrics = metrics
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Without an explicit provider the global one is used (lazily: set up in the lifespan).
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, excluded_urls="/metrics,/healthz")

    @app.post(
        "/workflows",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=TemplateRunStarted,
        summary="Start a template run",
        responses={422: {"description": "Unknown template or invalid inputs"}, 503: {"description": "Temporal is unreachable"}},
    )
    async def start_workflow(
        request: TemplateRunRequest,
        settings: SettingsDep,
        temporal: TemporalDep,
        catalog: CatalogDep,
        registry: RegistryDep,
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> TemplateRunStarted:
        try:
            template = registry.get(request.template, request.version)
            run = build_run_input(
                template, request.inputs, catalog, tenant=request.tenant, model=request.model, settings=settings
            )
        except KeyError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc.args[0])) from exc
        except InputError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
        try:
            return await start_template_run(temporal, settings, run, idempotency_key=idempotency_key)
        except RPCError as exc:
            raise _temporal_unavailable(exc) from exc

    @app.get("/workflows/{workflow_id}", response_model=RunView, summary="A run's progress or its report")
    async def get_workflow(workflow_id: str, settings: SettingsDep, temporal: TemporalDep) -> RunView:
        try:
            return await read_template_run(temporal, settings, workflow_id)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow {workflow_id!r}") from exc
            raise _temporal_unavailable(exc) from exc

    @app.post(
        "/workflows/{workflow_id}/approvals/{gate_id}",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=DecisionAccepted,
        summary="Approve or deny a pending gate",
        responses={404: {"description": "No such workflow"}, 409: {"description": "The gate is not pending"}},
    )
    async def decide_gate(
        workflow_id: str, gate_id: str, body: ApprovalRequest, temporal: TemporalDep
    ) -> DecisionAccepted:
        handle = temporal.get_workflow_handle_for(GraphFlowWorkflow.run, workflow_id)
        try:
            pending = await handle.query(GraphFlowWorkflow.pending_approvals)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow {workflow_id!r}") from exc
            raise _temporal_unavailable(exc) from exc
        gate = next((g for g in pending if g.gate_id == gate_id), None)
        if gate is None:
            open_gates = ", ".join(g.gate_id for g in pending) or "none"
            raise HTTPException(status.HTTP_409_CONFLICT, f"gate {gate_id!r} is not pending (pending: {open_gates})")
        if body.role not in gate.approvers:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {body.role!r} may not decide {gate_id!r}; allowed: {gate.approvers}"
            )
        decision = ApprovalDecision(gate_id=gate_id, approver=body.approver, role=body.role, comment=body.comment)
        await decide(temporal, workflow_id, body.decision, decision)
        return DecisionAccepted(workflow_id=workflow_id, gate_id=gate_id, decision=body.decision)

    @app.get(
        "/workflows/{workflow_id}/events",
        summary="The run's live events (Server-Sent Events); resumes after Last-Event-ID",
        response_class=EventSourceResponse,
    )
    async def workflow_events(
        workflow_id: str,
        request: Request,
        temporal: TemporalDep,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    ) -> EventSourceResponse:
        redis: aioredis.Redis = request.app.state.redis
        try:
            await temporal.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow {workflow_id!r}") from exc
            raise _temporal_unavailable(exc) from exc

        async def events() -> AsyncIterator[dict[str, str]]:
            async for item in _follow_events(redis, temporal, workflow_id, last_event_id or "0-0"):
                if await request.is_disconnected():
                    return
                yield item

        # A client that cannot keep up is dropped after send_timeout; the worker never waits on it.
        return EventSourceResponse(events(), ping=15, send_timeout=10)

    @app.websocket("/ws/workflows/{workflow_id}")
    async def workflow_events_ws(websocket: WebSocket, workflow_id: str) -> None:
        """The same events over a WebSocket; ``?last_event_id=`` resumes."""
        await websocket.accept()
        temporal: Client = websocket.app.state.temporal
        redis: aioredis.Redis = websocket.app.state.redis
        after = websocket.query_params.get("last_event_id") or "0-0"
        try:
            async for item in _follow_events(redis, temporal, workflow_id, after):
                await asyncio.wait_for(websocket.send_json(item), timeout=10)
        except (WebSocketDisconnect, TimeoutError):
            return
        except RPCError as exc:
            await websocket.send_json({"event": "error", "data": exc.message})
        await websocket.close()

    @app.get("/templates", response_model=list[TemplateSummary], summary="Templates that can be started")
    async def list_templates(registry: RegistryDep) -> list[TemplateSummary]:
        return [
            TemplateSummary(
                name=t.name,
                version=t.version,
                description=t.description,
                inputs=t.inputs,
                steps=[
                    StepSummary(id=s.id, title=s.label, kind=s.kind, depends_on=s.depends_on, agents=s.agents)
                    for s in t.steps
                ],
            )
            for t in registry.all()
        ]

    @app.get("/agents", response_model=list[AgentDefinition], summary="The agents templates can use")
    async def list_agents(catalog: CatalogDep) -> list[AgentDefinition]:
        return catalog.all()

    @app.get("/costs", response_model=CostReport, summary="Model spend: totals, trend, efficiency, advice")
    async def costs(
        db: DbDep,
        tenant: Annotated[str | None, Query(max_length=63, examples=["default"])] = None,
        since: Annotated[date | None, Query(description="First UTC day included.")] = None,
        until: Annotated[date | None, Query(description="Last UTC day included.")] = None,
    ) -> CostReport:
        if since and until and since > until:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since must not be after until")
        return await cost_report(db, tenant=tenant, since=since, until=until)

    @app.get("/metrics", summary="Prometheus metrics of this process", response_class=Response)
    async def prometheus_metrics(request: Request, settings: SettingsDep, temporal: TemporalDep) -> Response:
        metrics: Metrics = request.app.state.metrics
        await refresh_gauges(metrics, temporal, settings)
        return Response(metrics.prometheus_text(), media_type=PROMETHEUS_CONTENT_TYPE)

    @app.get("/stats", response_model=StatsReport, summary="P50/P95/P99 of durations and costs")
    async def stats(
        request: Request,
        settings: SettingsDep,
        temporal: TemporalDep,
        db: DbDep,
        days: Annotated[int, Query(ge=1, le=365, description="Cost ledger window, in days.")] = 7,
        limit: Annotated[int, Query(ge=1, le=10_000, description="Most recent closed runs used.")] = 1000,
    ) -> StatsReport:
        return await collect_stats(request.app.state.metrics, temporal, settings, db, days=days, limit=limit)

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


EVENT_POLL_MS = 1000


async def _follow_events(
    redis: aioredis.Redis, temporal: Client, workflow_id: str, after: str
) -> AsyncIterator[dict[str, str]]:
    """The run's events after ``after``, as they come, then ``end`` once the run is over."""
    while True:
        batch = await redis.xread({stream_key(workflow_id): after}, count=200, block=EVENT_POLL_MS)
        for _, entries in batch:
            for entry_id, fields in entries:
                after = entry_id.decode()
                event = AgentEvent.model_validate_json(fields[b"event"])
                yield {"id": after, "event": event.type, "data": event.model_dump_json()}
        if not batch and not await _is_running(temporal, workflow_id):
            yield {"event": "end", "data": "{}"}
            return


async def _is_running(temporal: Client, workflow_id: str) -> bool:
    description = await temporal.get_workflow_handle(workflow_id).describe()
    return description.status in (None, WorkflowExecutionStatus.RUNNING)


async def _ping_postgres(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(url, connect_timeout=3) as conn:
        await conn.execute("SELECT 1")


async def _check(probe: Awaitable[Any]) -> str:
    try:
        await probe
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        return f"error: {exc}"
    return "ok"


app = create_app()
