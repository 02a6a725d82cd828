"""Custom templates over the API: validated, versioned per tenant, stored in Postgres, runnable."""

from __future__ import annotations

import uuid

import httpx
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client

from convergio.settings import Settings
from tests.test_api import _poll, api, headers  # noqa: F401 - `api` is a fixture


def vendor_review(name: str, version: int = 1, instruction: str = "Assess {inputs.vendor}.") -> dict:
    return {
        "name": name,
        "version": version,
        "description": "Review a vendor, then sign off.",
        "inputs": {"vendor": {"type": "string", "required": True}},
        "steps": [
            {"id": "review", "kind": "agent", "agent": "strategic", "instruction": instruction},
            {"id": "sign_off", "kind": "approval", "depends_on": ["review"], "approvers": ["approver"]},
        ],
    }


def now_refused(name: str) -> dict:
    """A template the API stored before three load-time rules: quality on a gate, a loop that
    never repeats, and a literal tool argument of the wrong type (this tool step never runs)."""
    body = vendor_review(name)
    body["steps"][0]["loop"] = {"back_to": "review", "while": "true", "max_iterations": 1}
    body["steps"][1]["quality"] = {"min_length": 10}
    body["steps"].append({
        "id": "numbers", "kind": "tool", "tool": "break_even", "depends_on": ["sign_off"],
        "when": "inputs.vendor == 'never'",
        "arguments": {"fixed_costs": 1, "price_per_unit": "ten", "variable_cost_per_unit": 1},
    })
    return body


async def test_register_version_list_and_run_a_custom_template(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    name = f"vendor-review-{uuid.uuid4().hex[:8]}"
    acme, globex = headers("acme-operator"), headers("globex-operator")

    created = await api.post("/templates", json=vendor_review(name), headers=acme)
    assert created.status_code == 201, created.text
    assert created.json() == {"name": name, "version": 1, "tenant": "acme", "status": "created"}
    again = await api.post("/templates", json=vendor_review(name), headers=acme)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    changed = await api.post(
        "/templates", json=vendor_review(name, instruction="Other {inputs.vendor}."), headers=acme
    )
    assert changed.status_code == 409 and "bump the version" in changed.json()["detail"]
    v2 = await api.post(
        "/templates", json=vendor_review(name, 2, "Assess {inputs.vendor} twice."), headers=acme
    )
    assert v2.status_code == 201
    viewer = await api.post("/templates", json=vendor_review(name, 3), headers=headers("acme-viewer"))
    assert viewer.status_code == 403

    listed = {(t["name"], t["version"]): t for t in (await api.get("/templates", headers=acme)).json()}
    assert listed[(name, 1)]["source"] == "custom" and listed[(name, 2)]["tenant"] == "acme"
    assert ("strategic-analysis", 1) in listed
    other = {t["name"] for t in (await api.get("/templates", headers=globex)).json()}
    assert name not in other  # another tenant's template is invisible...
    refused = await api.post(
        "/workflows", json={"template": name, "inputs": {"vendor": "Initech"}}, headers=globex
    )
    assert refused.status_code == 422 and "unknown template" in refused.json()["detail"]  # ...and cannot run

    started = await api.post(
        "/workflows", json={"template": name, "inputs": {"vendor": "Initech"}}, headers=acme
    )
    assert started.status_code == 202, started.text
    assert started.json()["version"] == 2  # the latest
    workflow_id = started.json()["workflow_id"]
    await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    decided = await api.post(
        f"/workflows/{workflow_id}/approvals/sign_off",
        json={"decision": "approve", "role": "approver"},
        headers=headers("acme-approver"),
    )
    assert decided.status_code == 202, decided.text
    done = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    assert done["status"] == "completed" and done["template"] == name
    assert done["result"]["version"] == 2 and done["result"]["steps"][0]["status"] == "completed"
    pinned = await api.post(
        "/workflows", json={"template": name, "version": 1, "inputs": {"vendor": "X"}}, headers=acme
    )
    assert pinned.json()["version"] == 1
    await api.post(f"/workflows/{pinned.json()['workflow_id']}/cancel", headers=acme)

    async with db_pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT tenant, version, created_by FROM custom_templates WHERE name = %s ORDER BY version",
                (name,),
            )
        ).fetchall()
    assert rows == [("acme", 1, "acme-operator"), ("acme", 2, "acme-operator")]


async def test_invalid_custom_templates_are_rejected_with_field_errors(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    name = f"broken-{uuid.uuid4().hex[:8]}"
    cases = [
        (
            {
                **vendor_review(name),
                "steps": [{"id": "a", "kind": "agent", "agent": "nobody", "instruction": "x"}],
            },
            "nobody",
        ),
        (
            {
                **vendor_review(name),
                "steps": [
                    {"id": "a", "kind": "agent", "agent": "cfo", "instruction": "x", "depends_on": ["ghost"]}
                ],
            },
            "ghost",
        ),
        ({**vendor_review(name), "version": 0}, "version"),
        ({"name": name, "version": 1}, "steps"),
        (now_refused(name), "steps[1].quality: 'quality' applies to agent and team steps only"),
        (now_refused(name), "steps[0].loop.max_iterations: 1 means the loop never repeats"),
        (now_refused(name), "steps[2].arguments.price_per_unit: wrong type for 'break_even'"),
    ]
    for body, named in cases:
        response = await api.post("/templates", json=body, headers=headers("acme-operator"))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert named in problem["detail"] and problem["errors"], problem
    shipped = await api.post(
        "/templates", json=vendor_review("strategic-analysis", 9), headers=headers("acme-operator")
    )
    assert shipped.status_code == 409 and "shipped" in shipped.json()["detail"]
    async with db_pool.connection() as conn:
        count = await (
            await conn.execute(
                "SELECT count(*) FROM custom_templates WHERE name IN (%s, 'strategic-analysis')", (name,)
            )
        ).fetchone()
    assert count == (0,)


async def test_a_custom_templates_budget_cannot_lift_the_operators_limits(
    api: httpx.AsyncClient, settings: Settings, dev_client: Client
) -> None:
    """A tenant's operator registers a template with a huge budget: its runs keep the daily limit
    the operator set (CONVERGIO_BUDGET_DAILY_USD here)."""
    from decimal import Decimal

    from convergio.graphflow.run_models import GraphFlowInput

    name = f"greedy-{uuid.uuid4().hex[:8]}"
    body = {**vendor_review(name), "budget": {"daily_usd": 100000, "workflow_usd": 100000}}
    acme = headers("acme-operator")
    assert (await api.post("/templates", json=body, headers=acme)).status_code == 201
    run_request = {"template": name, "inputs": {"vendor": "Initech"}}
    started = await api.post("/workflows", json=run_request, headers=acme)
    handle = dev_client.get_workflow_handle(started.json()["workflow_id"])
    try:
        first = [event async for event in handle.fetch_history_events()][0]
        payload = first.workflow_execution_started_event_attributes.input.payloads[0]
        run = GraphFlowInput.model_validate_json(payload.data)
        assert run.budget.daily_usd == Decimal(str(settings.budget_daily_usd))
        assert run.budget.workflow_usd == Decimal(str(settings.budget_workflow_usd))
    finally:
        await handle.terminate("test done")


async def test_a_template_stored_before_the_new_rules_still_lists_and_runs(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    """The rules run where a template is submitted, not where the store reads it back (with the
    model alone) or a run decodes its pinned copy: such a template is listed and runs as before,
    and only a new submission of it is refused."""
    from convergio.api import template_store
    from convergio.graphflow.template import Template

    name = f"stored-{uuid.uuid4().hex[:8]}"
    acme = headers("acme-operator")
    await template_store.register(db_pool, "acme", Template.model_validate(now_refused(name)), "before")

    listed = await api.get("/templates", headers=acme)
    assert listed.status_code == 200 and name in {t["name"] for t in listed.json()}
    run = {"template": name, "inputs": {"vendor": "Initech"}}
    started = await api.post("/workflows", json=run, headers=acme)
    assert started.status_code == 202, started.text
    workflow_id = started.json()["workflow_id"]
    try:
        view = await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
        assert view["status"] == "running"
    finally:
        await api.post(f"/workflows/{workflow_id}/cancel", headers=acme)
    again = await api.post("/templates", json=now_refused(name), headers=acme)
    assert again.status_code == 422 and "steps[0].loop.max_iterations" in again.json()["detail"], again.text


async def test_a_stored_template_that_no_longer_validates_hides_nothing_else(
    api: httpx.AsyncClient, db_pool: AsyncConnectionPool
) -> None:
    """A row a later model rule refuses (here a step kind that no longer exists) is left out of the
    listing, which answered 500 for every template of every tenant, and starting it says why."""
    from psycopg.types.json import Jsonb

    name = f"outdated-{uuid.uuid4().hex[:8]}"
    acme = headers("acme-operator")
    body = vendor_review(name)
    body["steps"][0]["kind"] = "oracle"
    async with db_pool.connection() as conn:
        await conn.execute(
            "INSERT INTO custom_templates (tenant, name, version, body, digest, created_by)"
            " VALUES ('acme', %s, 1, %s, 'x', 'an older release')", (name, Jsonb(body)),
        )
    fine = f"fine-{uuid.uuid4().hex[:8]}"
    assert (await api.post("/templates", json=vendor_review(fine), headers=acme)).status_code == 201

    listed = await api.get("/templates", headers=acme)
    assert listed.status_code == 200, listed.text
    names = {t["name"] for t in listed.json()}
    assert fine in names and "strategic-analysis" in names and name not in names
    run = {"template": name, "inputs": {"vendor": "Initech"}}
    started = await api.post("/workflows", json=run, headers=acme)
    assert started.status_code == 422, started.text
    detail = started.json()["detail"]
    assert f"stored template '{name}' v1 of tenant 'acme' no longer validates" in detail
    assert "steps.0" in detail and "register a corrected version" in detail
