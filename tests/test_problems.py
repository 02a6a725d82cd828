"""Every error is RFC 9457 problem+json; oversized payloads get 413 and store nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
import psycopg
import redis.exceptions
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from convergio.api.app import create_app
from convergio.settings import Settings
from tests.graphflow_helpers import STRATEGIC_INPUTS
from tests.test_api import auth_settings, headers

PROBLEM = "application/problem+json"
LIMIT = 4096


@pytest_asyncio.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a small body limit, plus two routes that fail the way real code can."""
    app = create_app(auth_settings(settings, api_max_body_bytes=LIMIT))

    @app.get("/test-only/boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail at /srv/convergio")

    @app.get("/test-only/temporal-down", include_in_schema=False)
    async def temporal_down() -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")

    @app.get("/test-only/postgres-down/{how}", include_in_schema=False)
    async def postgres_down(how: str) -> None:
        if how == "pool":
            raise PoolTimeout("couldn't get a connection after 30.00 sec")
        raise psycopg.OperationalError('connection to server at "10.1.2.3", port 5432 failed')

    @app.get("/test-only/redis-down", include_in_schema=False)
    async def redis_down() -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 10.1.2.3:6379")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers("admin")
        ) as client:
            yield client


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:convergio:problem:{slug}" and body["status"] == status
    assert body["title"] and body["instance"] == response.request.url.path
    return body


async def _runs(api: httpx.AsyncClient, tenant: str) -> int:
    return len((await api.get("/workflows", params={"tenant": tenant, "page_size": 200})).json()["items"])


async def test_routing_and_validation_errors_are_problems(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/no-such-route"), 404, "not-found")
    assert_problem(await api.delete("/workflows"), 405, "method-not-allowed")
    broken = await api.post("/workflows", content=b"{not json", headers={"Content-Type": "application/json"})
    body = assert_problem(broken, 422, "validation-error")
    assert body["errors"] and body["errors"][0]["loc"][0] == "body"
    missing = assert_problem(await api.post("/workflows", json={}), 422, "validation-error")
    assert missing["errors"] == [{"loc": ["body", "template"], "msg": "Field required", "type": "missing"}]
    assert "body.template: Field required" in missing["detail"]
    assert_problem(await api.get("/workflows", params={"page_size": 0}), 422, "validation-error")
    ancient = assert_problem(await api.get("/costs", params={"since": "0343-07-09"}), 422, "validation-error")
    assert "since must be between" in ancient["detail"]


async def test_a_wrong_method_names_every_method_of_the_path_in_allow(api: httpx.AsyncClient) -> None:
    """`DELETE /workflows` answered `Allow: POST`: Starlette names only the first route of the path,
    and a client reading Allow would never try the `GET /workflows` listing."""
    wrong = await api.delete("/workflows")
    assert_problem(wrong, 405, "method-not-allowed")
    assert wrong.headers["allow"] == "GET, POST"
    one_route = await api.post("/healthz")
    assert_problem(one_route, 405, "method-not-allowed")
    assert one_route.headers["allow"] == "GET"


async def test_text_postgres_cannot_store_is_422_and_nothing_is_stored(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    template = {
        "name": "nul-in-text",
        "version": 1,
        "description": "a\u0000b",
        "steps": [{"id": "a", "agent": "cfo", "instruction": "x"}],
    }
    body = assert_problem(await api.post("/templates", json=template), 422, "validation-error")
    assert "NUL" in body["detail"]
    async with db_pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT count(*) FROM custom_templates WHERE name = 'nul-in-text'")
        ).fetchone()
    assert rows == (0,)


async def test_unexpected_errors_leak_nothing(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.get("/test-only/boom"), 500, "internal-error")
    assert "secret" not in str(body) and "/srv" not in str(body) and "RuntimeError" not in str(body)
    down = assert_problem(await api.get("/test-only/temporal-down"), 503, "service-unavailable")
    assert down["detail"] == "Temporal: connection refused"
    for route in ("postgres-down/pool", "postgres-down/server", "redis-down"):
        down = assert_problem(await api.get(f"/test-only/{route}"), 503, "service-unavailable")
        assert "unreachable" in down["detail"] and "10.1.2.3" not in str(down)


async def test_oversized_payloads_get_413_and_nothing_is_started(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    before = await _runs(api, "acme")
    huge = {
        "template": "strategic-analysis",
        "inputs": {**STRATEGIC_INPUTS, "brief": "x" * (LIMIT * 2)},
        "tenant": "acme",
    }
    body = assert_problem(await api.post("/workflows", json=huge), 413, "payload-too-large")
    assert body["max_bytes"] == LIMIT and str(LIMIT) in body["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        yield b'{"template": "strategic-analysis", "tenant": "acme", "inputs": {"brief": "'
        for _ in range(10):
            yield b"y" * 1024
        yield b'"}}'

    streamed = await api.post("/workflows", content=chunks(), headers={"Content-Type": "application/json"})
    assert assert_problem(streamed, 413, "payload-too-large")["max_bytes"] == LIMIT
    template = {
        "name": "too-big",
        "version": 1,
        "description": "z" * (LIMIT * 2),
        "steps": [{"id": "a", "agent": "cfo", "instruction": "x"}],
    }
    assert_problem(await api.post("/templates", json=template), 413, "payload-too-large")
    assert await _runs(api, "acme") == before
    async with db_pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT count(*) FROM custom_templates WHERE name = 'too-big'")
        ).fetchone()
    assert rows == (0,)


async def test_a_run_may_only_ask_for_a_listed_model(
    api: httpx.AsyncClient, settings: Settings, dev_client: Client
) -> None:
    """A model setting says where prompts and the server's API key go: callers pick only among
    CONVERGIO_MODEL and CONVERGIO_RUN_MODELS, for a run and for a stored template's downgrade."""
    before = await _runs(api, "default")
    for model in ("openai-compatible:https://attacker.example/v1#x", "local:/etc/passwd", "openai:gpt-4o"):
        run = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS, "model": model}
        body = assert_problem(await api.post("/workflows", json=run), 422, "validation-error")
        assert body["errors"][0]["loc"] == ["body", "model"] and "CONVERGIO_RUN_MODELS" in body["detail"]
    assert await _runs(api, "default") == before
    template = {
        "name": f"downgrading-{uuid.uuid4().hex[:8]}", "version": 1,
        "budget": {"on_breach": "downgrade", "downgrade_model": "openai-compatible:http://10.0.0.1/v1#x"},
        "steps": [{"id": "a", "agent": "cfo", "instruction": "Assess."}],
    }
    body = assert_problem(await api.post("/templates", json=template), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "budget", "downgrade_model"]
    listed = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS, "model": settings.model}
    started = await api.post("/workflows", json=listed)
    assert started.status_code == 202, started.text
    await dev_client.get_workflow_handle(started.json()["workflow_id"]).terminate("test done")


async def test_oversized_fields_within_the_body_limit_are_422(api: httpx.AsyncClient) -> None:
    before = await _runs(api, "default")
    long_model = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS, "model": "m" * 300}
    body = assert_problem(await api.post("/workflows", json=long_model), 422, "validation-error")
    assert body["errors"][0]["loc"] == ["body", "model"]
    long_key = await api.post(
        "/workflows",
        json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS},
        headers={"Idempotency-Key": "k" * 201},
    )
    assert_problem(long_key, 422, "validation-error")
    assert await _runs(api, "default") == before
