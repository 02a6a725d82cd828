"""Agents' performance from their record of reviewer scores, pinned into a run at start."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from convergio.agents.catalog import default_catalog
from convergio.agents.performance import FULL_RECORD, HISTORY_SHARE, Record, blended
from convergio.costs import ledger
from convergio.costs.pricing import TurnCost
from convergio.graphflow.loader import default_registry
from convergio.graphflow.run_models import GraphFlowInput
from convergio.graphflow.runs import build_run_input, with_performance_records
from convergio.settings import Settings
from tests.graphflow_helpers import STRATEGIC_INPUTS
from tests.test_api import api  # noqa: F401 - fixture


async def scored(pool: AsyncConnectionPool, tenant: str, agent: str, score: float, count: int,
                 *, days_ago: float = 1) -> None:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    for turn in range(1, count + 1):
        await ledger.record(pool, TurnCost(
            workflow_id=f"wf-{uuid.uuid4()}", step_id="s", turn=turn, tenant=tenant, template="t",
            agent=agent, model="offline", prompt_tokens=1, completion_tokens=1, cost_usd=0,
            quality_score=score, at=at,
        ))


def test_the_record_takes_over_up_to_its_share() -> None:
    assert blended(0.8, None) == 0.8
    assert blended(0.8, Record(average_score=2.0, scored_answers=FULL_RECORD)) == round(
        (1 - HISTORY_SHARE) * 0.8 + HISTORY_SHARE * 0.2, 4
    )
    half = blended(0.8, Record(average_score=2.0, scored_answers=FULL_RECORD // 2))
    assert blended(0.8, Record(2.0, FULL_RECORD)) < half < 0.8
    assert blended(0.8, Record(2.0, FULL_RECORD * 5)) == blended(0.8, Record(2.0, FULL_RECORD))


async def test_a_run_pins_each_agents_blend_of_profile_and_record(db_pool: AsyncConnectionPool) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await scored(db_pool, tenant, "cfo", 2.0, FULL_RECORD)
    await scored(db_pool, tenant, "strategic", 2.0, 5, days_ago=45)  # too old to count
    await scored(db_pool, "someone-else", "chief_of_staff", 2.0, FULL_RECORD)  # another tenant's
    template = default_registry().get("strategic-analysis")
    run = build_run_input(template, STRATEGIC_INPUTS, default_catalog(), tenant=tenant, model=None)
    async with db_pool.connection() as conn:
        pinned = await with_performance_records(run, conn)
    profile = default_catalog().get("cfo").performance
    assert pinned.agents["cfo"].performance == blended(profile, Record(2.0, FULL_RECORD)) < profile
    for name in ("strategic", "chief_of_staff", "market_analyst"):
        assert pinned.agents[name] == run.agents[name]


async def test_the_api_starts_runs_with_the_records(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool, dev_client: Client  # noqa: F811
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    await scored(db_pool, tenant, "risk_officer", 10.0, FULL_RECORD)
    response = await api.post(
        "/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS, "tenant": tenant}
    )
    assert response.status_code == 202, response.text
    handle = dev_client.get_workflow_handle(response.json()["workflow_id"])
    started = [event async for event in handle.fetch_history_events()][0]
    payload = started.workflow_execution_started_event_attributes.input.payloads[0]
    run = GraphFlowInput.model_validate_json(payload.data)
    profile = default_catalog().get("risk_officer").performance
    assert run.agents["risk_officer"].performance > profile
    await handle.terminate("test done")


async def test_the_cli_starts_on_the_profiles_when_the_database_is_down(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from convergio.cli import _with_performance_records
    from convergio.stack.process import free_port

    down = settings.model_copy(update={"database_url": f"postgresql://x@127.0.0.1:{free_port()}/none"})
    template = default_registry().get("strategic-analysis")
    run = build_run_input(template, STRATEGIC_INPUTS, default_catalog(), tenant="default", model=None)
    assert await _with_performance_records(down, run) == run
    assert "performance records not read" in capsys.readouterr().err


async def test_the_api_starts_on_the_profiles_when_the_records_query_fails(
    dev_client: Client, settings: Settings, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A database without the ledger (the query fails for real): the run still starts, with the
    agents' profile values, and the failure is logged."""
    import psycopg
    from psycopg import sql

    from convergio.api.app import create_app
    from tests.test_api import auth_settings, headers

    empty = f"empty_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(empty)))
    app = create_app(auth_settings(settings, database_url=postgres_url.rsplit("/", 1)[0] + f"/{empty}"))
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://convergio.test", headers=headers("admin")
        ) as client:
            response = await client.post(
                "/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
            )
    finally:
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(empty)))
    assert response.status_code == 202, response.text
    handle = dev_client.get_workflow_handle(response.json()["workflow_id"])
    try:
        assert "performance records not read (UndefinedTable)" in caplog.text
        started = [event async for event in handle.fetch_history_events()][0]
        payload = started.workflow_execution_started_event_attributes.input.payloads[0]
        run = GraphFlowInput.model_validate_json(payload.data)
        catalog = default_catalog()
        assert all(agent.performance == catalog.get(name).performance for name, agent in run.agents.items())
    finally:
        await handle.terminate("test done")
