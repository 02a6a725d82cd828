"""Authentication, roles, tenants and rate limits, against the real servers.

Bypass attempts (no key, bad key, expired or forged JWT, wrong role), cross-tenant access
(read, list, approve, cancel) and limits each get a clear problem response, and nothing
is started or decided.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest_asyncio

from convergio.api.app import create_app
from convergio.api.auth import Principal
from convergio.settings import Settings
from tests.graphflow_helpers import STRATEGIC_INPUTS
from tests.test_api import JWT_SECRET, _poll, api, auth_settings, headers  # noqa: F401 - `api` is a fixture

BODY = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
PROBLEM = "application/problem+json"


def token(secret: str = JWT_SECRET, **claims: object) -> str:
    payload = {"sub": "erin@acme.test", "role": "operator", "tenant": "acme", "exp": int(time.time()) + 300}
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


async def _count(api: httpx.AsyncClient, tenant: str) -> int:
    page = (
        await api.get("/workflows", params={"tenant": tenant, "page_size": 200}, headers=headers("admin"))
    ).json()
    return len(page["items"])


async def test_requests_without_valid_credentials_are_refused(api: httpx.AsyncClient) -> None:
    before = await _count(api, "acme")
    expired = token(exp=int(time.time()) - 10)
    forged = token(secret="another-secret-of-the-same-length-0123456789")
    unsigned = jwt.encode(
        {"sub": "x", "role": "admin", "tenant": "acme", "exp": int(time.time()) + 60},
        key=None,
        algorithm="none",
    )
    no_role = jwt.encode(
        {"sub": "x", "tenant": "acme", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"
    )
    cases = {
        "no credentials": ({"Authorization": ""}, "authentication required"),
        "unknown key": ({"Authorization": "Bearer cvg_not-a-key-at-all-000000000000"}, "unknown API key"),
        "unknown X-API-Key": (
            {"X-API-Key": "cvg_not-a-key-at-all-000000000000", "Authorization": ""},
            "unknown API key",
        ),
        "expired JWT": ({"Authorization": f"Bearer {expired}"}, "token expired"),
        "forged JWT": ({"Authorization": f"Bearer {forged}"}, "invalid token"),
        "alg none": ({"Authorization": f"Bearer {unsigned}"}, "invalid token"),
        "claims missing": ({"Authorization": f"Bearer {no_role}"}, "invalid token"),
    }
    for name, (sent, message) in cases.items():
        for method, path in [
            ("POST", "/workflows"),
            ("GET", "/workflows"),
            ("GET", "/templates"),
            ("GET", "/costs"),
        ]:
            response = await api.request(method, path, json=BODY if method == "POST" else None, headers=sent)
            assert response.status_code == 401, (name, path, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert message in response.json()["detail"], (name, response.json())
    assert await _count(api, "acme") == before  # nothing was started
    # Health and metrics stay open.
    assert (await api.get("/healthz", headers={"Authorization": ""})).status_code == 200
    assert (await api.get("/metrics", headers={"Authorization": ""})).status_code == 200


async def test_a_valid_jwt_authenticates_with_its_role_and_tenant(api: httpx.AsyncClient) -> None:
    viewer = {"Authorization": f"Bearer {token(role='viewer')}"}
    assert (await api.get("/workflows", headers=viewer)).status_code == 200
    refused = await api.post("/workflows", json=BODY, headers=viewer)
    assert refused.status_code == 403 and "operator" in refused.json()["detail"]
    operator = {"Authorization": f"Bearer {token()}", "Idempotency-Key": "jwt-run"}
    started = await api.post("/workflows", json=BODY, headers=operator)
    assert started.status_code == 202, started.text
    listed = (await api.get("/workflows", params={"tenant": "acme"})).json()["items"]
    assert any(
        item["workflow_id"] == started.json()["workflow_id"] and item["tenant"] == "acme" for item in listed
    )
    await api.post(f"/workflows/{started.json()['workflow_id']}/cancel")


async def test_roles_gate_each_action(api: httpx.AsyncClient) -> None:
    started = await api.post("/workflows", json=BODY, headers=headers("acme-operator"))
    assert started.status_code == 202
    workflow_id = started.json()["workflow_id"]
    view = await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    assert view["progress"]["pending_approvals"][0]["gate_id"] == "executive_approval"
    decide = f"/workflows/{workflow_id}/approvals/executive_approval"
    approve = {"decision": "approve", "role": "executive", "comment": "Go"}

    assert (await api.get(f"/workflows/{workflow_id}", headers=headers("acme-viewer"))).status_code == 200
    for who, needed in [("acme-viewer", "approver"), ("acme-operator", "approver")]:
        response = await api.post(decide, json=approve, headers=headers(who))
        assert response.status_code == 403 and needed in response.json()["detail"], response.text
    viewer_cancel = await api.post(f"/workflows/{workflow_id}/cancel", headers=headers("acme-viewer"))
    assert viewer_cancel.status_code == 403
    # An approver whose key holds another gate role cannot claim 'executive'.
    clerk = await api.post(decide, json=approve, headers=headers("acme-clerk"))
    assert clerk.status_code == 403 and "finance" in clerk.json()["detail"]
    # Nor may a non-admin record someone else as the approver.
    impersonate = await api.post(
        decide, json={**approve, "approver": "the-ceo"}, headers=headers("acme-approver")
    )
    assert impersonate.status_code == 403
    view = (await api.get(f"/workflows/{workflow_id}")).json()
    assert view["status"] == "running" and view["progress"]["pending_approvals"]  # nothing was decided

    decided = await api.post(decide, json=approve, headers=headers("acme-approver"))
    assert decided.status_code == 202 and decided.json()["approver"] == "acme-approver"
    done = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    assert done["status"] == "completed"
    assert (done["result"]["audit"][0]["actor"], done["result"]["audit"][0]["role"]) == (
        "acme-approver",
        "executive",
    )


async def test_a_tenant_cannot_see_list_decide_or_cancel_another_tenants_run(api: httpx.AsyncClient) -> None:
    acme = await api.post(
        "/workflows", json=BODY, headers={**headers("acme-operator"), "Idempotency-Key": "k-1"}
    )
    globex = await api.post(
        "/workflows", json=BODY, headers={**headers("globex-operator"), "Idempotency-Key": "k-1"}
    )
    acme_id, globex_id = acme.json()["workflow_id"], globex.json()["workflow_id"]
    assert acme_id != globex_id  # the same idempotency key in two tenants never shares a run
    await _poll(api, acme_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])

    intruder = headers("globex-approver")
    for method, path, body in [
        ("GET", f"/workflows/{acme_id}", None),
        ("GET", f"/workflows/{acme_id}/events", None),
        (
            "POST",
            f"/workflows/{acme_id}/approvals/executive_approval",
            {"decision": "approve", "role": "executive"},
        ),
        ("POST", f"/workflows/{acme_id}/cancel", None),
    ]:
        response = await api.request(method, path, json=body, headers=intruder)
        assert response.status_code == 404, (path, response.text)
        assert response.headers["content-type"] == PROBLEM
    listed = (await api.get("/workflows", params={"page_size": 200}, headers=intruder)).json()["items"]
    ids = {item["workflow_id"] for item in listed}
    assert globex_id in ids and acme_id not in ids
    assert {item["tenant"] for item in listed} == {"globex"}
    other = await api.get("/workflows", params={"tenant": "acme"}, headers=intruder)
    assert other.status_code == 403
    costs = await api.get("/costs", params={"tenant": "acme"}, headers=intruder)
    assert costs.status_code == 403
    assert (await api.get("/costs", headers=intruder)).json()["tenant"] == "globex"
    start_elsewhere = await api.post(
        "/workflows", json={**BODY, "tenant": "acme"}, headers=headers("globex-operator")
    )
    assert start_elsewhere.status_code == 403

    view = (await api.get(f"/workflows/{acme_id}", headers=headers("acme-viewer"))).json()
    assert view["status"] == "running" and view["progress"]["pending_approvals"]  # untouched

    # The listing filters through visibility: pending approval, gate, template, status.
    for params in [
        {"pending_approval": "true"},
        {"gate": "executive_approval"},
        {"template": "strategic-analysis", "status": "running"},
    ]:
        page = (await api.get("/workflows", params=params, headers=headers("acme-viewer"))).json()
        assert acme_id in {i["workflow_id"] for i in page["items"]}, params
        assert all(i["tenant"] == "acme" for i in page["items"])
    waiting = next(i for i in page["items"] if i["workflow_id"] == acme_id)
    assert waiting["pending_gates"] == ["executive_approval"] and waiting["status"] == "running"
    other_template = (
        await api.get("/workflows", params={"template": "market-entry"}, headers=headers("acme-viewer"))
    ).json()["items"]
    assert acme_id not in {i["workflow_id"] for i in other_template}

    # Cancel: the owner's operator may; then it is over and a second cancel conflicts.
    for workflow_id, who in [(acme_id, "acme-operator"), (globex_id, "globex-operator")]:
        cancelled = await api.post(f"/workflows/{workflow_id}/cancel", headers=headers(who))
        assert cancelled.status_code == 202, cancelled.text
    done = await _poll(api, acme_id, lambda v: v["status"] != "running")
    assert done["status"] == "canceled"
    again = await api.post(f"/workflows/{acme_id}/cancel", headers=headers("acme-operator"))
    assert again.status_code == 409 and "canceled" in again.json()["detail"]
    page = (await api.get("/workflows", params={"status": "canceled"}, headers=headers("acme-viewer"))).json()
    assert acme_id in {i["workflow_id"] for i in page["items"]}


async def test_listing_pages_with_a_token(api: httpx.AsyncClient) -> None:
    for n in range(3):
        await api.post("/workflows", json=BODY, headers={**headers("admin"), "Idempotency-Key": f"page-{n}"})
    first = (await api.get("/workflows", params={"page_size": 2})).json()
    assert len(first["items"]) == 2 and first["next_page_token"]
    second = (
        await api.get("/workflows", params={"page_size": 2, "page_token": first["next_page_token"]})
    ).json()
    assert second["items"] and not {i["workflow_id"] for i in second["items"]} & {
        i["workflow_id"] for i in first["items"]
    }
    token = first["next_page_token"]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for params in [
        {"page_token": "!!!not-base64"},
        {"page_token": "Q2dBUUFB"},
        {"page_token": tampered},
        {"page_token": token, "template": "market-entry"},
    ]:  # a token continues only its own listing
        bad = await api.get("/workflows", params={"page_size": 2, **params})
        assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM, (params, bad.text)
        assert "page_token" in bad.json()["detail"]


async def test_knowledge_belongs_to_the_callers_tenant(api: httpx.AsyncClient, db_pool) -> None:  # noqa: ANN001
    import uuid

    source = f"acme-secret-{uuid.uuid4().hex[:8]}.md"
    doc = {"source": source, "text": "# Pricing\nAcme's floor price for Initech is 41,000 euros."}
    refused = await api.post("/knowledge", json=doc, headers=headers("acme-viewer"))
    assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
    added = await api.post("/knowledge", json=doc, headers=headers("acme-operator"))
    assert added.status_code == 201, added.text
    async with db_pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT DISTINCT tenant FROM knowledge_documents WHERE source = %s", (source,))
        ).fetchall()
    assert rows == [("acme",)]  # the key's tenant, not a parameter
    mine = (await api.get("/knowledge", headers=headers("acme-viewer"))).json()
    assert source in {d["source"] for d in mine}
    theirs = (await api.get("/knowledge", params={"limit": 1000}, headers=headers("globex-approver"))).json()
    assert source not in {d["source"] for d in theirs}
    found = (
        await api.get(
            "/knowledge/search", params={"q": "Initech floor price"}, headers=headers("globex-approver")
        )
    ).json()
    assert source not in {h["source"] for h in found["hits"]}
    for params in [{"tenant": "acme"}, {"tenant": "acme", "q": "price"}]:
        path = "/knowledge/search" if "q" in params else "/knowledge"
        assert (await api.get(path, params=params, headers=headers("globex-approver"))).status_code == 403


@pytest_asyncio.fixture
async def limited(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(auth_settings(settings, rate_limit_requests=3, rate_limit_window_s=60))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            yield client


async def test_rate_limit_per_key_answers_429_with_retry_after(limited: httpx.AsyncClient) -> None:
    import uuid

    # A subject of its own, so counts of other tests in this window do not interfere.
    caller = {"Authorization": f"Bearer {token(role='viewer', sub=f'rate-{uuid.uuid4().hex}')}"}
    other = {"Authorization": f"Bearer {token(role='viewer', sub=f'rate-{uuid.uuid4().hex}')}"}
    statuses = [(await limited.get("/templates", headers=caller)).status_code for _ in range(4)]
    assert statuses[:3] == [200, 200, 200] and statuses[3] == 429
    response = await limited.get("/agents", headers=caller)
    assert response.status_code == 429 and response.headers["content-type"] == PROBLEM
    assert 1 <= int(response.headers["retry-after"]) <= 61
    assert response.json()["type"] == "urn:convergio:problem:rate-limited"
    # Another key has its own budget.
    assert (await limited.get("/templates", headers=other)).status_code == 200


def test_keys_create_prints_a_key_and_an_entry_holding_only_its_digest(tmp_path) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys

    from pydantic import TypeAdapter

    from convergio.api.auth import KeyStore, authenticate
    from convergio.settings import ApiKeyEntry

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVERGIO_")}
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "convergio",
            "keys",
            "create",
            "--name",
            "ada",
            "--role",
            "approver",
            "--tenant",
            "acme",
            "--approves-as",
            "executive",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key, entry_json = made.stdout.split()
    assert key.startswith("cvg_") and key not in entry_json
    entries = TypeAdapter(list[ApiKeyEntry]).validate_json(f"[{entry_json}]")
    settings = Settings(_env_file=None, data_dir=tmp_path, api_keys=entries)  # type: ignore[call-arg]
    principal = authenticate(settings, KeyStore.from_settings(settings), key)
    assert (principal.name, principal.role, principal.tenant, principal.approves_as) == (
        "ada",
        "approver",
        "acme",
        ["executive"],
    )
    bad = subprocess.run(
        [sys.executable, "-m", "convergio", "keys", "create", "--name", "x", "--role", "boss"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert bad.returncode == 1 and "--role" in bad.stderr


async def test_event_streams_need_credentials_too(api: httpx.AsyncClient, settings: Settings) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    started = await api.post(
        "/workflows", json=BODY, headers={**headers("acme-operator"), "Idempotency-Key": "ws"}
    )
    workflow_id = started.json()["workflow_id"]
    await api.post(f"/workflows/{workflow_id}/cancel", headers=headers("acme-operator"))
    await _poll(api, workflow_id, lambda v: v["status"] != "running")
    acme_token = headers("acme-viewer")["Authorization"].removeprefix("Bearer ")
    globex_token = headers("globex-approver")["Authorization"].removeprefix("Bearer ")

    # SSE: EventSource cannot send headers, so ?access_token= works; it obeys the same tenant rule.
    anonymous = await api.get(f"/workflows/{workflow_id}/events", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    other = await api.get(
        f"/workflows/{workflow_id}/events",
        params={"access_token": globex_token},
        headers={"Authorization": ""},
    )
    assert other.status_code == 404
    own = await api.get(
        f"/workflows/{workflow_id}/events", params={"access_token": acme_token}, headers={"Authorization": ""}
    )
    assert own.status_code == 200 and "event: end" in own.text

    def websocket_close_codes() -> list[int | None]:
        codes: list[int | None] = []
        with TestClient(create_app(auth_settings(settings))) as client:
            for query in [
                "",
                f"?access_token={globex_token}",
                "?access_token=cvg_wrong-key-00000000000000000",
            ]:
                try:
                    with client.websocket_connect(f"/ws/workflows/{workflow_id}{query}") as ws:
                        ws.receive_json()
                    codes.append(None)
                except WebSocketDisconnect as exc:
                    codes.append(exc.code)
            with client.websocket_connect(f"/ws/workflows/{workflow_id}?access_token={acme_token}") as ws:
                while ws.receive_json()["event"] != "end":
                    pass
        return codes

    assert await asyncio.to_thread(websocket_close_codes) == [1008, 1008, 1008]

def _principal(role: str, approves_as: list[str] | None = None) -> Principal:
    return Principal(name="ada", role=role, tenant="acme",  # type: ignore[arg-type]
                     approves_as=approves_as or [],
                     method="api_key", limit_key="k")


def test_an_approver_decides_an_escalation_gate_whose_default_role_is_operator() -> None:
    """A step with `on_failure: escalate` and no `approvers` opens a gate for role `operator`
    (convergio/workflows/graphflow.py). The route needs API role `approver`, and an approver key
    held only `approver` and its `approves_as`: nobody but an admin could decide such a gate
    through the API (403 both ways)."""
    approver = _principal("approver", ["executive"])
    assert "operator" in approver.gate_roles()
    assert {"approver", "executive"} <= approver.gate_roles()


def test_gate_roles_never_reach_above_the_callers_role() -> None:
    assert "approver" not in _principal("operator").gate_roles()
    assert "admin" not in _principal("approver").gate_roles()
    assert _principal("viewer").gate_roles() == {"viewer"}
