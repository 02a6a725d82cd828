"""The Convergio HTTP API: one router per concept; Pydantic models are the contract.

Every route but ``/healthz`` and ``/metrics`` needs credentials (see ``auth.py``); every
error is ``application/problem+json`` (see ``problems.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI
from convergio.db.pool import connection_pool

from convergio import __version__
from convergio.api import approvals, inbox, knowledge, system, templates, workflows
from convergio.api.auth import KeyStore, caller_tenant, current_principal
from convergio.api.openapi import install_openapi
from convergio.api.problems import ProblemMiddleware, install_problem_handlers
from convergio.observability import tracing
from convergio.observability.metrics import Metrics, ensure_metrics
from convergio.observability.temporal_metrics import TemporalMetricsBridge
from convergio.settings import Settings, get_settings
from convergio.temporal_client import connect_temporal

# Re-exported for callers that used the single-module API.
ApprovalRequest = approvals.ApprovalRequest
TemplateSummary = templates.TemplateSummary
HealthReport = system.HealthReport


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = getattr(app.state, "settings", None) or get_settings()
    app.state.settings = settings
    app.state.keys = KeyStore.from_settings(settings)
    # Signs listing page tokens; with a JWT secret every replica signs alike, else per process.
    secret = (
        settings.jwt_secret.get_secret_value().encode() if settings.jwt_secret else secrets.token_bytes(32)
    )
    app.state.page_token_key = hashlib.sha256(b"convergio page tokens\x00" + secret).digest()
    provider = getattr(app.state, "tracer_provider", None) or tracing.ensure_tracing(settings)
    if getattr(app.state, "metrics", None) is None:
        app.state.metrics = ensure_metrics(settings)
    app.state.temporal = await connect_temporal(settings, tracer_provider=provider, sdk_metrics=True)
    app.state.redis = aioredis.Redis.from_url(settings.effective_redis_url)
    app.state.db = connection_pool(settings.effective_database_url, max_size=5)
    await app.state.db.open(wait=False)
    stop_sdk_metrics = asyncio.Event()
    sdk_metrics = asyncio.create_task(TemporalMetricsBridge.for_metrics(app.state.metrics).run(stop_sdk_metrics))
    try:
        yield
    finally:
        stop_sdk_metrics.set()
        await sdk_metrics
        await app.state.db.close()
        await app.state.redis.aclose()


OPENAPI_DESCRIPTION = """
Start business processes (templates) as durable multi-agent workflows, follow them live,
decide their approval gates.

**Authentication**: `Authorization: Bearer <API key or JWT>` (or `X-API-Key: <key>`) on every
route except `/healthz` and `/metrics`. Roles: viewer < operator < approver < admin; each caller
sees only its tenant's runs, templates and costs.

**Errors** are RFC 9457 `application/problem+json` (`type`, `title`, `status`, `detail`,
`instance`; `errors` for invalid fields). **Rate limits** per key answer 429 with `Retry-After`.
"""


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
        description=OPENAPI_DESCRIPTION,
        lifespan=lifespan,
    )
    if settings is not None:
        app.state.settings = settings
    app.state.tracer_provider = tracer_provider
    app.state.metrics = metrics
    install_problem_handlers(app)
    app.add_middleware(ProblemMiddleware)
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Without an explicit provider the global one is used (lazily: set up in the lifespan).
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, excluded_urls="/metrics,/healthz"
    )

    app.include_router(workflows.router)
    app.include_router(approvals.router)
    app.include_router(templates.router)
    app.include_router(system.router)
    app.include_router(inbox.router)
    app.include_router(knowledge.router, dependencies=[Depends(current_principal)])
    app.dependency_overrides[knowledge.tenant_of] = caller_tenant  # the tenant comes from the credentials
    install_openapi(app)
    return app


app = create_app()
