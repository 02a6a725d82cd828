"""Runs: start, list (Temporal visibility), read, cancel, and follow their live events."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Literal

import psycopg
import redis.asyncio as aioredis
from fastapi import (
    APIRouter,
    Body,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from convergio.api import template_store
from convergio.api.auth import Operator, Principal, StreamViewer, Viewer, authenticate
from convergio.api.deps import CatalogDep, DbDep, RegistryDep, SettingsDep, TemporalDep
from convergio.api.model_choice import refuse_unlisted_model
from convergio.api.problems import problem_responses
from convergio.api.rate_limit import enforce_rate_limit
from convergio.events import AgentEvent, stream_key
from convergio.graphflow.loader import InputError
from convergio.graphflow.runs import (
    RunView,
    TemplateRunRequest,
    TemplateRunStarted,
    build_run_input,
    read_template_run,
    start_template_run,
    with_performance_records,
)
from convergio.workflows.graphflow import COST_KEY, PENDING_GATES_KEY, TEMPLATE_KEY, TENANT_KEY

router = APIRouter(tags=["workflows"])
logger = logging.getLogger(__name__)

WORKFLOW_TYPE = "GraphFlow"
# A Redis stream id: two unsigned 64-bit numbers. 19 digits always fit (20 may not, and Redis
# then refuses the XREAD after the response started: an empty stream with neither `end` nor `error`).
STREAM_ID_PATTERN = r"^\d{1,19}-\d{1,19}$"
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
WorkflowIdPath = Annotated[
    str,
    Path(
        max_length=255,
        description="The run's workflow id.",
        examples=["strategic-analysis-5f1c0e9a7b2d4c3e8f10"],
    ),
]

RunState = Literal[
    "running", "completed", "failed", "canceled", "terminated", "timed_out", "continued_as_new"
]
_EXECUTION_STATUS: dict[str, str] = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "canceled": "Canceled",
    "terminated": "Terminated",
    "timed_out": "TimedOut",
    "continued_as_new": "ContinuedAsNew",
}

STARTED_EXAMPLE = {
    "workflow_id": "strategic-analysis-5f1c0e9a7b2d4c3e8f10",
    "run_id": "0193a7c2-6c1e-7d4b-9a55-2f8e1b3c4d5e",
    "template": "strategic-analysis",
    "version": 1,
    "temporal_ui_url": "http://127.0.0.1:8233/namespaces/default/workflows/strategic-analysis-5f1c0e9a7b2d4c3e8f10",
}


class WorkflowSummary(BaseModel):
    """One run in a listing, from its search attributes (no query to the run itself)."""

    workflow_id: str = Field(examples=[STARTED_EXAMPLE["workflow_id"]])
    run_id: str | None = None
    template: str | None = Field(default=None, examples=["strategic-analysis"])
    tenant: str | None = Field(default=None, examples=["acme"])
    status: RunState = Field(examples=["running"])
    pending_gates: list[str] = Field(default_factory=list, examples=[["executive_approval"]])
    cost_usd: float | None = Field(
        default=None, examples=[0.0123],
        description="Dollars spent; while running, refreshed at approval gates and at most every 10 s.",
    )
    started_at: datetime | None = None
    closed_at: datetime | None = None
    temporal_ui_url: str


class WorkflowPage(BaseModel):
    """A page of runs, running ones first (newest first), then closed ones by close time (latest
    first): Temporal visibility's order, which SQL visibility cannot change (no ORDER BY); pass
    ``next_page_token`` back as ``page_token`` for more."""

    items: list[WorkflowSummary]
    next_page_token: str | None = Field(default=None, description="Unset: this was the last page.")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [
                        {
                            "workflow_id": STARTED_EXAMPLE["workflow_id"],
                            "run_id": STARTED_EXAMPLE["run_id"],
                            "template": "strategic-analysis",
                            "tenant": "acme",
                            "status": "running",
                            "pending_gates": ["executive_approval"],
                            "cost_usd": 0.0123,
                            "started_at": "2026-11-24T09:30:00Z",
                            "closed_at": None,
                            "temporal_ui_url": STARTED_EXAMPLE["temporal_ui_url"],
                        }
                    ],
                    "next_page_token": None,
                }
            ]
        }
    }


class CancelAccepted(BaseModel):
    workflow_id: str = Field(examples=[STARTED_EXAMPLE["workflow_id"]])
    status: Literal["cancel_requested"] = "cancel_requested"


def _not_found(workflow_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no workflow {workflow_id!r}")


async def visible_run(
    temporal: Client, principal: Principal, workflow_id: str
) -> WorkflowExecutionDescription:
    """The run's description if the caller's tenant may see it; 404 otherwise (existence is not leaked)."""
    try:
        description = await temporal.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise _not_found(workflow_id) from exc
        raise
    tenant = description.typed_search_attributes.get(TENANT_KEY)
    if description.workflow_type != WORKFLOW_TYPE or not principal.sees(tenant):
        raise _not_found(workflow_id)
    return description


def _run_tenant(principal: Principal, requested: str | None) -> str:
    if requested is None or requested == principal.tenant:
        return principal.tenant
    if not principal.is_admin:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"you may start runs for tenant '{principal.tenant}' only, not '{requested}'",
        )
    return requested


@router.post(
    "/workflows",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TemplateRunStarted,
    summary="Start a template run",
    description="Starts a run of a shipped or custom template for the caller's tenant. With an "
    "`Idempotency-Key` the workflow id is derived from the tenant and key, so a retried request "
    "returns the run the first request started instead of starting another. Needs role `operator`.",
    responses={
        202: {"content": {"application/json": {"example": STARTED_EXAMPLE}}},
        **problem_responses(401, 403, 413, 422, 429, 503),
    },
)
async def start_workflow(
    principal: Operator,
    request: Annotated[
        TemplateRunRequest,
        Body(
            openapi_examples={
                "strategic-analysis": {
                    "summary": "Strategic analysis with its required inputs",
                    "value": {
                        "template": "strategic-analysis",
                        "inputs": {
                            "company": "Acme Analytics",
                            "question": "Should we enter the German market?",
                        },
                    },
                },
                "pinned-version": {
                    "summary": "A pinned template version",
                    "value": {
                        "template": "market-entry",
                        "version": 1,
                        "inputs": {"company": "Acme", "market": "Japan"},
                    },
                },
            }
        ),
    ],
    settings: SettingsDep,
    temporal: TemporalDep,
    catalog: CatalogDep,
    registry: RegistryDep,
    db: DbDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200, description="Same key (per tenant) → same run.", examples=["memo-2026-11-24-42"]
        ),
    ] = None,
) -> TemplateRunStarted:
    tenant = _run_tenant(principal, request.tenant)
    refuse_unlisted_model(settings, request.model, ["body", "model"])
    shipped = True
    try:
        try:
            template = registry.get(request.template, request.version)
        except KeyError as shipped_error:
            shipped = False
            try:
                template = await template_store.get(db, tenant, request.template, request.version)
            except KeyError as custom_error:
                raise (custom_error if custom_error.args[0] != request.template else shipped_error) from None
            # Stored before the operator narrowed CONVERGIO_RUN_MODELS, perhaps.
            refuse_unlisted_model(
                settings, template.budget.downgrade_model, ["body", "template", "budget", "downgrade_model"]
            )
        # A tenant's own template may tighten its budget, never loosen what the operator set.
        run = build_run_input(
            template, request.inputs, catalog, tenant=tenant, model=request.model, settings=settings,
            budget_may_loosen=shipped,
        )
    except KeyError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc.args[0])) from exc
    except (InputError, template_store.UnreadableTemplate) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    try:
        async with db.connection(timeout=5) as conn:
            run = await with_performance_records(run, conn)
    except (psycopg.Error, PoolTimeout) as exc:  # the run still starts, on the agents' profiles
        logger.warning("agents' performance records not read (%s); starting on their profiles",
                       type(exc).__name__)
    return await start_template_run(temporal, settings, run, idempotency_key=idempotency_key)


@router.get(
    "/workflows",
    response_model=WorkflowPage,
    summary="List runs (Temporal visibility)",
    description="Runs of the caller's tenant, running ones first (newest first), then closed ones by "
    "close time (latest first), filtered by template, status, pending "
    "approval or gate. `tenant` is for admins (others may only name their own). Needs role `viewer`.",
    responses={**problem_responses(400, 401, 403, 422, 429, 503)},
)
async def list_workflows(
    request: Request,
    principal: Viewer,
    settings: SettingsDep,
    temporal: TemporalDep,
    template: Annotated[
        str | None, Query(pattern=r"^[a-z][a-z0-9-]{0,63}$", examples=["strategic-analysis"])
    ] = None,
    status_: Annotated[RunState | None, Query(alias="status", examples=["running"])] = None,
    pending_approval: Annotated[
        bool | None,
        Query(
            description="true: only runs waiting at a gate; false: only runs that are not.", examples=[True]
        ),
    ] = None,
    gate: Annotated[
        str | None,
        Query(
            pattern=r"^[a-z][a-z0-9_]{0,127}$",
            description="Only runs waiting at this gate.",
            examples=["executive_approval"],
        ),
    ] = None,
    tenant: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", examples=["acme"])] = None,
    page_size: Annotated[int, Query(ge=1, le=200, examples=[50])] = 50,
    page_token: Annotated[
        str | None,
        Query(max_length=4096, description="`next_page_token` of the previous page.", examples=["Q2dBUUFB"]),
    ] = None,
) -> WorkflowPage:
    if tenant is not None and tenant != principal.tenant and not principal.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"you may list tenant '{principal.tenant}' only")
    scope = tenant if tenant is not None else (None if principal.is_admin else principal.tenant)
    # Every value below matched a pattern without quotes, so it cannot break out of its literal.
    clauses = [f"WorkflowType = '{WORKFLOW_TYPE}'"]
    if scope is not None:
        clauses.append(f"ConvergioTenant = '{scope}'")
    if template is not None:
        clauses.append(f"ConvergioTemplate = '{template}'")
    if status_ is not None:
        clauses.append(f"ExecutionStatus = '{_EXECUTION_STATUS[status_]}'")
    if gate is not None:  # a closed run waits for nobody, whatever its attributes say
        clauses.append(f"ExecutionStatus = 'Running' AND ConvergioPendingGates = '{gate}'")
    if pending_approval is True:
        clauses.append("ExecutionStatus = 'Running' AND ConvergioPendingGates IS NOT NULL")
    elif pending_approval is False:
        clauses.append("(ExecutionStatus != 'Running' OR ConvergioPendingGates IS NULL)")
    query = " AND ".join(clauses)
    signer = PageTokens(request.app.state.page_token_key)
    token = signer.open(page_token, query) if page_token else None
    iterator = temporal.list_workflows(query, page_size=page_size, next_page_token=token)
    await iterator.fetch_next_page()
    items = []
    for execution in iterator.current_page or []:
        attributes = execution.typed_search_attributes
        state = execution.status or WorkflowExecutionStatus.RUNNING
        running = state == WorkflowExecutionStatus.RUNNING
        items.append(
            WorkflowSummary(
                workflow_id=execution.id,
                run_id=execution.run_id,
                template=attributes.get(TEMPLATE_KEY),
                tenant=attributes.get(TENANT_KEY),
                status=state.name.lower(),  # type: ignore[arg-type]
                pending_gates=list(attributes.get(PENDING_GATES_KEY) or []) if running else [],
                cost_usd=attributes.get(COST_KEY),
                started_at=execution.start_time,
                closed_at=execution.close_time,
                temporal_ui_url=settings.workflow_ui_url(execution.id),
            )
        )
    next_token = iterator.next_page_token
    return WorkflowPage(items=items, next_page_token=signer.seal(next_token, query) if next_token else None)


class PageTokens:
    """Temporal's page tokens, signed: a forged or edited token is refused here (400) instead of
    reaching the visibility store, and a token only continues the query that produced it."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, token: bytes, query: str) -> bytes:
        return hmac.new(self._key, query.encode() + b"\x00" + token, hashlib.sha256).digest()[:16]

    def seal(self, token: bytes, query: str) -> str:
        return base64.urlsafe_b64encode(self._mac(token, query) + token).decode().rstrip("=")

    def open(self, sealed: str, query: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        mac, token = raw[:16], raw[16:]
        if not token or not hmac.compare_digest(mac, self._mac(token, query)):
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                "page_token is not a next_page_token of this listing (same filters); "
                "start from the first page",
            )
        return token


@router.get(
    "/workflows/{workflow_id}",
    response_model=RunView,
    summary="A run's progress or its report",
    description="Live status (steps, pending approvals, cost so far) while running; the report when done. "
    "Runs of other tenants answer 404. Needs role `viewer`.",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "workflow_id": STARTED_EXAMPLE["workflow_id"],
                        "status": "running",
                        "workflow_type": "GraphFlow",
                        "template": "strategic-analysis",
                        "temporal_ui_url": STARTED_EXAMPLE["temporal_ui_url"],
                        "progress": None,
                        "result": None,
                        "error": None,
                    }
                }
            }
        },
        **problem_responses(401, 403, 404, 429, 503),
    },
)
async def get_workflow(
    workflow_id: WorkflowIdPath, principal: Viewer, settings: SettingsDep, temporal: TemporalDep
) -> RunView:
    await visible_run(temporal, principal, workflow_id)
    return await read_template_run(temporal, settings, workflow_id)


@router.post(
    "/workflows/{workflow_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelAccepted,
    summary="Cancel a running run",
    description="Asks Temporal to cancel the run; it ends as `canceled`. 409 when the run is no longer "
    "running. Needs role `operator`.",
    responses={
        202: {
            "content": {
                "application/json": {
                    "example": {"workflow_id": STARTED_EXAMPLE["workflow_id"], "status": "cancel_requested"}
                }
            }
        },
        **problem_responses(401, 403, 404, 409, 429, 503),
    },
)
async def cancel_workflow(
    workflow_id: WorkflowIdPath, principal: Operator, temporal: TemporalDep
) -> CancelAccepted:
    description = await visible_run(temporal, principal, workflow_id)
    if description.status not in (None, WorkflowExecutionStatus.RUNNING):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{workflow_id!r} is not running (it is {description.status.name.lower()})",
        )
    await temporal.get_workflow_handle(workflow_id).cancel()
    return CancelAccepted(workflow_id=workflow_id)


@router.get(
    "/workflows/{workflow_id}/events",
    summary="The run's live events (Server-Sent Events); resumes after Last-Event-ID",
    description="Events of the run's Redis stream as they come, then `end`. Browsers' EventSource "
    "cannot send headers, so `access_token` may carry the key or JWT instead. Needs role `viewer`.",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'id: 1732440600000-0\nevent: turn_started\ndata: {"type": "turn_started"}\n\n',
                }
            }
        },
        **problem_responses(401, 403, 404, 429, 503),
    },
)
async def workflow_events(
    workflow_id: WorkflowIdPath,
    request: Request,
    principal: StreamViewer,
    temporal: TemporalDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID", max_length=40, pattern=STREAM_ID_PATTERN, examples=["1732440600000-0"]
        ),
    ] = None,
) -> EventSourceResponse:
    redis: aioredis.Redis = request.app.state.redis
    await visible_run(temporal, principal, workflow_id)

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            async for item in follow_events(redis, temporal, workflow_id, last_event_id or "0-0"):
                if await request.is_disconnected():
                    return
                yield item
        except RPCError as exc:
            # The response has started: no status code can say it any more. Like the WebSocket,
            # say why in an `error` event and close; a client reconnects with Last-Event-ID.
            logger.warning("event stream of %s stopped: Temporal answered %s", workflow_id, exc.message)
            yield {"event": "error", "data": json.dumps({"detail": exc.message})}

    # A client that cannot keep up is dropped after send_timeout; the worker never waits on it.
    return EventSourceResponse(events(), ping=15, send_timeout=10)


@router.websocket("/ws/workflows/{workflow_id}")
async def workflow_events_ws(websocket: WebSocket, workflow_id: str) -> None:
    """The same events over a WebSocket; ``?last_event_id=`` resumes. Authenticate with a header or
    ``?access_token=`` (browsers cannot set WebSocket headers)."""
    state = websocket.app.state
    temporal: Client = state.temporal
    redis: aioredis.Redis = state.redis
    token = _token_from(
        websocket.headers.get("authorization"),
        websocket.headers.get("x-api-key"),
        websocket.query_params.get("access_token"),
    )
    try:
        if not token:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "authentication required")
        principal = authenticate(state.settings, state.keys, token)
        await enforce_rate_limit(redis, state.settings, principal.limit_key)
        await visible_run(temporal, principal, workflow_id)
    except HTTPException as exc:
        await websocket.close(code=1008, reason=str(exc.detail)[:120])
        return
    await websocket.accept()
    after = websocket.query_params.get("last_event_id") or "0-0"
    if not re.fullmatch(STREAM_ID_PATTERN, after):
        detail = "last_event_id must look like 1732440600000-0"
        await websocket.send_json({"event": "error", "data": json.dumps({"detail": detail})})
        await websocket.close()
        return
    try:
        async for item in follow_events(redis, temporal, workflow_id, after):
            await asyncio.wait_for(websocket.send_json(item), timeout=10)
    except (WebSocketDisconnect, TimeoutError):
        return
    except RPCError as exc:
        # The SSE route's `error` event: data is JSON with `detail`, like every event's data.
        await websocket.send_json({"event": "error", "data": json.dumps({"detail": exc.message})})
    await websocket.close()


def _token_from(authorization: str | None, api_key: str | None, query_token: str | None) -> str | None:
    if api_key:
        return api_key
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return query_token


EVENT_POLL_MS = 1000
HEARTBEAT_S = 15.0


async def follow_events(
    redis: aioredis.Redis, temporal: Client, workflow_id: WorkflowIdPath, after: str,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncIterator[dict[str, str]]:
    """The run's events after ``after``, as they come, then ``end`` once the run is over; a
    ``heartbeat`` (no id, so resuming is unaffected) after ``heartbeat_s`` without any event."""
    key = stream_key(workflow_id)
    quiet_since = time.monotonic()
    while True:
        items = _stream_items(await redis.xread({key: after}, count=200, block=EVENT_POLL_MS))
        for item in items:
            yield item
        if items:
            after, quiet_since = items[-1]["id"], time.monotonic()
            continue
        if not await _is_running(temporal, workflow_id):
            # The last events may have landed after the blocking read gave up and before the run
            # was seen closed: read once more, without blocking, so none is left out before `end`.
            while items := _stream_items(await redis.xread({key: after}, count=200)):
                for item in items:
                    yield item
                after = items[-1]["id"]
            yield {"event": "end", "data": "{}"}
            return
        if time.monotonic() - quiet_since >= heartbeat_s:
            yield {"event": "heartbeat", "data": json.dumps({"at": datetime.now(UTC).isoformat(), "running": True})}
            quiet_since = time.monotonic()


def _stream_items(batch: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]) -> list[dict[str, str]]:
    """XREAD's answer as SSE items, each with its stream id (what Last-Event-ID resumes after)."""
    items = []
    for _, entries in batch or []:
        for entry_id, fields in entries:
            event = AgentEvent.model_validate_json(fields[b"event"])
            items.append({"id": entry_id.decode(), "event": event.type, "data": event.model_dump_json()})
    return items


async def _is_running(temporal: Client, workflow_id: str) -> bool:
    description = await temporal.get_workflow_handle(workflow_id).describe()
    return description.status in (None, WorkflowExecutionStatus.RUNNING)
