"""Budgets enforced on real runs: a breach stops a step, or parks the run at a gate; many runs
racing for the last cent of a daily budget never overspend by more than one turn."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError

from convergio.api.app import create_app
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflows.graphflow import PENDING_GATES_KEY, GraphFlowWorkflow
from tests.graphflow_helpers import custom_template, decision, start, wait_for_gate


def one_step(budget: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "metered",
        "version": 1,
        "budget": budget,
        "steps": [{"id": "answer", "agent": "cfo", "title": "Answer",
                   "instruction": "Estimate the payback of a Munich office. Cover: Payback."}],
    }


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def ledger_rows(db_pool, tenant_name: str) -> list[tuple[str, Decimal]]:
    async with db_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT workflow_id, cost_usd FROM cost_ledger WHERE tenant = %s ORDER BY created_at", (tenant_name,)
        )
        return await cursor.fetchall()


async def test_every_turn_is_priced_recorded_once_and_totalled(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool
) -> None:
    who = tenant()
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(one_step({})), {}, tenant=who)
        result = await handle.result()
    rows = await ledger_rows(db_pool, who)
    assert len(rows) == 1 and rows[0][0] == handle.id
    assert result.cost_usd == pytest.approx(float(rows[0][1])) and result.cost_usd > 0
    assert result.steps[0].cost_usd == result.cost_usd == result.turns[0].cost_usd


async def test_breach_with_stop_policy_fails_the_step_with_the_reason(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool
) -> None:
    who = tenant()
    template = custom_template(one_step({"workflow_usd": 0.00001, "on_breach": "stop"}))
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, template, {}, tenant=who)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "budget: the turn would exceed this run's limit" in str(failure.value.cause)
    assert await ledger_rows(db_pool, who) == []  # the model was never called


async def test_breach_with_approval_policy_parks_the_run_until_a_person_approves(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool
) -> None:
    who = tenant()
    template = custom_template(
        one_step({"workflow_usd": 0.00001, "on_breach": "approval", "approvers": ["finance"]})
    )
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, template, {}, tenant=who)
        gate = await wait_for_gate(handle, "budget_1")
        assert gate.under_review.startswith("High-cost operation: budget: the turn would exceed this run's limit")
        assert gate.approvers == ["finance"]
        description = await handle.describe()
        assert description.typed_search_attributes.get(PENDING_GATES_KEY) == ["budget_1"]
        await handle.signal(GraphFlowWorkflow.approve, decision("budget_1", role="finance"))
        result = await handle.result()
    assert result.steps[0].status == "completed"
    assert [e.outcome for e in result.audit] == ["approved"]
    assert len(await ledger_rows(db_pool, who)) == 1  # the approved turn was counted


async def test_twenty_runs_race_for_the_last_cent_and_never_overspend(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool
) -> None:
    who = tenant()
    limit = Decimal("0.0008")  # a little more than one turn's estimate (1,000 completion tokens)
    template = custom_template(
        one_step({"daily_usd": float(limit), "turn_spike_fraction": 1.0, "workflow_usd": 1.0, "on_breach": "stop"})
    )
    async with build_worker(dev_client, settings, resources):
        handles = await asyncio.gather(*(start(dev_client, settings, template, {}, tenant=who) for _ in range(20)))
        outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    completed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, WorkflowFailureError)]
    assert len(completed) + len(refused) == 20
    assert completed and refused
    assert all("budget" in str(o.cause) for o in refused)
    costs = [cost for _, cost in await ledger_rows(db_pool, who)]
    assert len(costs) == len(completed)
    assert sum(costs) <= limit + max(costs)


async def test_costs_report_over_the_api(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    who = tenant()
    async with build_worker(dev_client, settings, resources):
        for _ in range(2):
            await (await start(dev_client, settings, custom_template(one_step({})), {}, tenant=who)).result()
    from tests.test_api import auth_settings, headers

    app = create_app(auth_settings(settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers("admin")
        ) as client:
            report = (await client.get("/costs", params={"tenant": who})).json()
            bad = await client.get("/costs", params={"since": "2026-02-02", "until": "2026-01-01"})
    assert report["turns"] == 2
    assert [row["key"] for row in report["by_template"]] == ["metered"]
    assert [row["key"] for row in report["by_agent"]] == ["cfo"]
    assert [row["key"] for row in report["by_model"]] == ["offline"]
    assert Decimal(report["total_usd"]) > 0
    assert bad.status_code == 422


async def test_reviewer_scores_reach_the_ledger_as_quality_per_dollar(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool
) -> None:
    from convergio.costs.ledger import report

    who = tenant()
    data = one_step({})
    data["steps"][0]["quality"] = {"reviewer": {"agent": "reviewer", "threshold": 5}}
    async with build_worker(dev_client, settings, resources):
        result = await (await start(dev_client, settings, custom_template(data), {}, tenant=who)).result()
    assert result.steps[0].score is not None
    async with db_pool.connection() as conn:
        scores = await (await conn.execute(
            "SELECT agent, quality_score FROM cost_ledger WHERE tenant = %s ORDER BY turn", (who,)
        )).fetchall()
    assert scores == [("cfo", result.steps[0].score), ("reviewer", None)]
    efficiency = (await report(db_pool, tenant=who)).efficiency
    assert any(row.quality_per_dollar for row in efficiency if row.agent == "cfo")


async def test_breach_with_downgrade_policy_retries_on_the_cheaper_model(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """The cheaper model here is a local Ollama priced at $0; none runs on this machine, so the
    retried turn fails to connect, which shows it went to the downgrade model."""
    data = one_step({"workflow_usd": 0.00001, "on_breach": "downgrade", "downgrade_model": "ollama:llama3.2"})
    data["steps"][0]["retry"] = {"max_attempts": 1}
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(data), {}, tenant=tenant())
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    report = failure.value.cause.details[0]
    assert report["audit"][0]["outcome"].endswith("retrying on ollama:llama3.2")
    assert "budget" not in str(failure.value.cause)  # the downgraded turn was within budget


async def test_convergio_costs_prints_the_ledger(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    import json
    import os
    import sys

    who = tenant()
    async with build_worker(dev_client, settings, resources):
        await (await start(dev_client, settings, custom_template(one_step({})), {}, tenant=who)).result()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGIO_")}
    env["CONVERGIO_DATABASE_URL"] = str(settings.database_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "convergio", "costs", "--tenant", who, "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["turns"] == 1 and report["by_tenant"][0]["key"] == who
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "convergio", "costs", "--since", "yesterday",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, bad_err = await bad.communicate()
    assert bad.returncode == 1 and "--since/--until" in bad_err.decode()


async def test_a_turn_retried_past_the_budget_is_still_screened(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """A person lets a turn overrun the budget; its answer is screened like any other: this one
    repeats an IBAN until the guardian blocks it, so the step fails (before, the retried answer
    skipped the security review and the step went on with a withheld answer)."""
    data = one_step({"workflow_usd": 0.00001, "on_breach": "approval", "approvers": ["finance"]})
    data["security"] = {"on_flag": "approval", "on_block": "block", "surfaces": ["output"]}
    data["steps"][0]["instruction"] = (
        "Summarise the brief: Pay the supplier to IBAN DE89 3704 0044 0532 0130 00 by Friday. Cover: Summary."
    )
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(data), {}, tenant=tenant())
        await wait_for_gate(handle, "budget_1")
        await handle.signal(GraphFlowWorkflow.approve, decision("budget_1", role="finance"))
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    assert "security: blocked" in str(failure.value.cause) and "ex.iban" in str(failure.value.cause)
