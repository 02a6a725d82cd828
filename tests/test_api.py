"""The HTTP API against the real servers: start, read, health, and rejected input."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest_asyncio
from temporalio.client import Client

from convergio.api.app import create_app
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker


@pytest_asyncio.fixture
async def api(dev_client: Client, settings: Settings, resources: WorkerResources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app), build_worker(dev_client, settings, resources):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://convergio.test") as client:
            yield client


async def _wait_done(api: httpx.AsyncClient, workflow_id: str) -> dict:
    for _ in range(150):
        state = (await api.get(f"/workflows/{workflow_id}")).json()
        if state["status"] != "running":
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id} still running")


async def test_start_and_read_a_run(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.post(
        "/workflows",
        json={"task": "Size the market. Cover: Segments, Competitors.", "agent": {"name": "strategist", "role": "Strategist"}},
    )
    assert response.status_code == 202
    started = response.json()
    assert started["temporal_ui_url"] == settings.workflow_ui_url(started["workflow_id"])
    state = await _wait_done(api, started["workflow_id"])
    assert state["status"] == "completed"
    assert state["workflow_type"] == "AgentTurn"
    assert state["result"]["agent"] == "strategist"
    assert "## Segments" in state["result"]["content"]


async def test_idempotency_key_returns_the_same_run(api: httpx.AsyncClient) -> None:
    body = {"task": "Draft the memo."}
    first = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-42"})
    second = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-42"})
    other = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-43"})
    assert first.json()["workflow_id"] == second.json()["workflow_id"] != other.json()["workflow_id"]


async def test_rejected_input_names_the_field(api: httpx.AsyncClient) -> None:
    cases = [
        ({"task": "   "}, "task"),
        ({}, "task"),
        ({"task": "ok", "agent": {"name": "not valid!"}}, "name"),
        ({"task": "ok", "tenant": "Acme Corp"}, "tenant"),
        ({"task": "ok", "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        response = await api.post("/workflows", json=body)
        assert response.status_code == 422, body
        assert field in str(response.json()["detail"][0]["loc"]), response.json()


async def test_unknown_workflow_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/workflows/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


async def test_health_checks_every_server(api: httpx.AsyncClient) -> None:
    report = (await api.get("/healthz")).json()
    assert report["status"] == "ok"
    assert report["checks"] == {"temporal": "ok", "postgres": "ok", "redis": "ok"}


async def test_health_reports_a_dead_dependency(dev_client: Client, settings: Settings) -> None:
    from convergio.stack.process import free_port

    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["detail"]["checks"]
    assert checks["temporal"] == "ok" and checks["postgres"] == "ok"
    assert checks["redis"].startswith("error")
