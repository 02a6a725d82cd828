"""The HTTP API against the real servers: start, follow, approve, and rejected input."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio.client import Client

from convergio.api.app import create_app
from convergio.api.approvals import ApprovalRequest
from convergio.graphflow.run_models import same_round
from convergio.api.workflows import STREAM_ID_PATTERN
from convergio.settings import Settings
from convergio.stack.process import free_port
from convergio.workers.worker import WorkerResources, build_worker
from tests.graphflow_helpers import STRATEGIC_INPUTS


ADMIN_KEY = "cvg_test-admin-key-0000000000000000"
# name -> (key, role, tenant, approves_as)
KEYS: dict[str, tuple[str, str, str, list[str]]] = {
    "admin": (ADMIN_KEY, "admin", "default", []),
    "acme-viewer": ("cvg_acme-viewer-key-000000000000000", "viewer", "acme", []),
    "acme-operator": ("cvg_acme-operator-key-0000000000000", "operator", "acme", []),
    "acme-approver": ("cvg_acme-approver-key-0000000000000", "approver", "acme", ["executive"]),
    "acme-clerk": ("cvg_acme-clerk-key-00000000000000000", "approver", "acme", ["finance"]),
    "globex-operator": ("cvg_globex-operator-key-00000000000", "operator", "globex", []),
    "globex-approver": ("cvg_globex-approver-key-00000000000", "approver", "globex", ["executive"]),
}
JWT_SECRET = "test-jwt-secret-that-is-long-enough-0123456789"


def auth_settings(settings: Settings, **update: object) -> Settings:
    """The session's settings plus the test keys (stored as digests, as in production) and a JWT secret."""
    import hashlib

    from pydantic import SecretStr

    from convergio.settings import ApiKeyEntry

    entries = [
        ApiKeyEntry(name=name, role=role, tenant=tenant, approves_as=approves,  # type: ignore[arg-type]
                    sha256=hashlib.sha256(key.encode()).hexdigest())
        for name, (key, role, tenant, approves) in KEYS.items()
    ]
    return settings.model_copy(update={"api_keys": entries, "jwt_secret": SecretStr(JWT_SECRET), **update})


def headers(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


@pytest_asyncio.fixture
async def api(dev_client: Client, settings: Settings, resources: WorkerResources) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(auth_settings(settings))
    async with app.router.lifespan_context(app), build_worker(dev_client, settings, resources):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://convergio.test", headers=headers("admin")
        ) as client:
            yield client


async def _poll(api: httpx.AsyncClient, workflow_id: str, until) -> dict:  # noqa: ANN001
    for _ in range(300):
        view = (await api.get(f"/workflows/{workflow_id}")).json()
        if until(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id}: condition never met; last view {view}")


async def test_start_follow_approve_and_read_the_report(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.post("/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS})
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["temporal_ui_url"] == settings.workflow_ui_url(started["workflow_id"])
    workflow_id = started["workflow_id"]

    view = await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    gate = view["progress"]["pending_approvals"][0]
    assert gate["gate_id"] == "executive_approval" and "Strategic synthesis" in gate["under_review"]

    wrong_role = await api.post(
        f"/workflows/{workflow_id}/approvals/executive_approval",
        json={"decision": "approve", "approver": "bob", "role": "intern"},
    )
    assert wrong_role.status_code == 403 and "intern" in wrong_role.json()["detail"]
    unknown_gate = await api.post(
        f"/workflows/{workflow_id}/approvals/nope", json={"decision": "approve", "approver": "a", "role": "executive"}
    )
    assert unknown_gate.status_code == 409 and "executive_approval" in unknown_gate.json()["detail"]
    decided = await api.post(
        f"/workflows/{workflow_id}/approvals/executive_approval",
        json={"decision": "approve", "approver": "ada", "role": "executive", "comment": "Go"},
    )
    assert decided.status_code == 202

    view = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    assert view["status"] == "completed" and view["template"] == "strategic-analysis"
    report = view["result"]
    assert [s["status"] for s in report["steps"]] == ["completed"] * 7
    assert "# Strategic Analysis" in report["markdown"]
    assert report["audit"][0]["actor"] == "ada"


async def test_idempotency_key_returns_the_same_run(api: httpx.AsyncClient) -> None:
    body = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    first = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-42"})
    second = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-42"})
    other = await api.post("/workflows", json=body, headers={"Idempotency-Key": "memo-43"})
    assert first.json()["workflow_id"] == second.json()["workflow_id"] != other.json()["workflow_id"]


async def test_rejected_input_says_what_is_wrong(api: httpx.AsyncClient) -> None:
    cases = [
        ({"template": "strategic-analysis", "inputs": {"company": "Acme"}}, "inputs.question: required"),
        ({"template": "strategic-analysis", "inputs": {**STRATEGIC_INPUTS, "discount_rate": "ten"}},
         "inputs.discount_rate: expected number"),
        ({"template": "strategic-analysis", "inputs": {**STRATEGIC_INPUTS, "colour": "red"}}, "inputs.colour"),
        ({"template": "world-domination", "inputs": {}}, "unknown template 'world-domination'"),
        ({"template": "strategic-analysis", "version": 9, "inputs": STRATEGIC_INPUTS}, "no version 9"),
    ]
    for body, message in cases:
        response = await api.post("/workflows", json=body)
        assert response.status_code == 422, body
        assert message in str(response.json()["detail"]), response.json()
    for body, field in [({}, "template"), ({"template": "x", "surprise": 1}, "surprise"),
                        ({"template": "strategic-analysis", "tenant": "Acme Corp"}, "tenant")]:
        response = await api.post("/workflows", json=body)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert field in str(response.json()["errors"][0]["loc"])
        assert field in response.json()["detail"]


async def test_templates_and_agents_are_listed(api: httpx.AsyncClient) -> None:
    listed = (await api.get("/templates")).json()
    templates = {t["name"]: t for t in listed if t["source"] != "custom"}  # other tests register some
    assert set(templates) == {"strategic-analysis", "product-launch", "market-entry"}
    assert templates["strategic-analysis"]["inputs"]["question"]["required"] is True
    agents = {a["name"] for a in (await api.get("/agents")).json()}
    assert {"chief_of_staff", "cfo", "strategic", "performance"} <= agents


async def test_unknown_workflow_is_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/workflows/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]
    problem = response.json()
    assert problem["type"] == "urn:convergio:problem:not-found" and problem["status"] == 404
    assert problem["title"] == "Not Found" and problem["instance"] == "/workflows/does-not-exist"


async def test_health_checks_every_server(api: httpx.AsyncClient) -> None:
    report = (await api.get("/healthz")).json()
    assert report["status"] == "ok"
    assert report["checks"] == {"temporal": "ok", "postgres": "ok", "redis": "ok"}


async def test_health_reports_a_dead_dependency(settings: Settings) -> None:
    broken = auth_settings(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "degraded: redis"
    checks = response.json()["checks"]
    assert checks["temporal"] == "ok" and checks["postgres"] == "ok"
    assert checks["redis"].startswith("error")


def _parse_sse(body: str) -> list[dict[str, str]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.lstrip(" ")
        if fields:
            events.append(fields)
    return events


async def test_live_events_stream_and_resume_after_last_event_id(api: httpx.AsyncClient) -> None:
    import json

    body = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    workflow_id = (await api.post("/workflows", json=body)).json()["workflow_id"]
    await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    await api.post(
        f"/workflows/{workflow_id}/approvals/executive_approval",
        json={"decision": "approve", "approver": "ada", "role": "executive"},
    )
    done = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    turns = len(done["result"]["turns"])

    response = await api.get(f"/workflows/{workflow_id}/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _parse_sse(response.text)
    assert events[-1]["event"] == "end"
    kinds = [e["event"] for e in events[:-1]]
    assert kinds.count("turn_started") == kinds.count("turn_finished") == turns
    assert "text_chunk" in kinds
    assert kinds.count("cost_update") == turns
    assert {"tool_call", "tool_result", "approval_requested", "approval_decided"} <= set(kinds)
    first = json.loads(events[0]["data"])
    assert first["workflow_id"] == workflow_id and events[0]["event"] in ("turn_started", "tool_call")

    resumed = _parse_sse((await api.get(
        f"/workflows/{workflow_id}/events", headers={"Last-Event-ID": events[2]["id"]}
    )).text)
    assert [e.get("id") for e in resumed[:-1]] == [e["id"] for e in events[3:-1]]

    missing = await api.get("/workflows/nope/events")
    assert missing.status_code == 404


async def test_live_events_over_websocket(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    from starlette.testclient import TestClient

    body = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    workflow_id = (await api.post("/workflows", json=body)).json()["workflow_id"]
    await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    await api.post(
        f"/workflows/{workflow_id}/approvals/executive_approval",
        json={"decision": "approve", "approver": "ada", "role": "executive"},
    )
    done = await _poll(api, workflow_id, lambda v: v["status"] != "running")

    def read_all() -> list[dict]:
        with TestClient(create_app(auth_settings(settings))) as client, client.websocket_connect(
            f"/ws/workflows/{workflow_id}", headers=headers("admin")
        ) as ws:
            received = []
            while True:
                message = ws.receive_json()
                received.append(message)
                if message["event"] == "end":
                    return received

    received = await asyncio.to_thread(read_all)
    kinds = [m["event"] for m in received]
    assert kinds[-1] == "end"
    assert kinds.count("turn_finished") == len(done["result"]["turns"])

    def error_for(last_event_id: str) -> dict:
        with TestClient(create_app(auth_settings(settings))) as client, client.websocket_connect(
            f"/ws/workflows/{workflow_id}?last_event_id={last_event_id}", headers=headers("admin")
        ) as ws:
            message = ws.receive_json()
        assert message["event"] == "error", message
        return json.loads(message["data"])  # as on the SSE route (it was a bare string here)

    # 20 digits passed the check and Redis refused the read: the socket dropped without a close frame.
    for bad in ("nope", "99999999999999999999-0"):
        assert "last_event_id must look like" in (await asyncio.to_thread(error_for, bad))["detail"]


async def test_a_security_gate_takes_approve_or_deny_only(api: httpx.AsyncClient) -> None:
    """A flagged input waits at a security gate: a person lets it through or stops the run;
    a change request or edits have nothing to apply to there, so the API says so (before, a
    change request was accepted and counted as a denial, and edits were dropped)."""
    flagged = {**STRATEGIC_INPUTS, "question": "Should we pay IBAN DE89 3704 0044 0532 0130 00 today?"}
    started = await api.post("/workflows", json={"template": "strategic-analysis", "inputs": flagged})
    assert started.status_code == 202, started.text
    workflow_id = started.json()["workflow_id"]
    view = await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    gate = view["progress"]["pending_approvals"][0]
    assert (gate["gate_id"], gate["kind"]) == ("security_input_question", "security")
    assert gate["change_requests_left"] == 0
    decide = f"/workflows/{workflow_id}/approvals/security_input_question"
    changes = await api.post(decide, json={"decision": "request_changes", "role": "security", "comment": "x"})
    assert changes.status_code == 409 and "a security gate takes no changes" in changes.json()["detail"]
    edits = await api.post(decide, json={"decision": "approve", "role": "security", "edits": "clean text"})
    assert edits.status_code == 422 and "is a security gate" in edits.json()["detail"]
    denied = await api.post(decide, json={"decision": "deny", "role": "security"})
    assert denied.status_code == 202, denied.text
    view = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    assert view["status"] == "failed" and "not approved" in (view["error"] or "")


async def test_a_cancelled_run_waits_for_nobody(api: httpx.AsyncClient, dev_client: Client) -> None:
    """Cancelled at its gate: the run's attributes say canceled with no pending gate, the gate
    filter no longer lists it, and a late decision gets 409 (before: ConvergioStatus stayed
    "running", ?gate= still listed it, and the decision got 404)."""
    from convergio.workflows.graphflow import PENDING_GATES_KEY, STATUS_KEY

    run = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    workflow_id = (await api.post("/workflows", json=run)).json()["workflow_id"]
    await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    assert (await api.post(f"/workflows/{workflow_id}/cancel")).status_code == 202
    await _poll(api, workflow_id, lambda v: v["status"] == "canceled")
    attributes = (await dev_client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
    assert attributes.get(STATUS_KEY) == "canceled" and not attributes.get(PENDING_GATES_KEY)
    listed = (await api.get("/workflows", params={"gate": "executive_approval", "page_size": 200})).json()
    assert workflow_id not in [item["workflow_id"] for item in listed["items"]]
    decide = f"/workflows/{workflow_id}/approvals/executive_approval"
    late = await api.post(decide, json={"decision": "approve", "role": "executive"})
    assert late.status_code == 409 and "the run is canceled" in late.json()["detail"]


async def test_a_decision_on_what_a_gate_no_longer_holds_is_refused(api: httpx.AsyncClient) -> None:
    """``reviewed_at`` names the round of the gate the person reviewed: once the gate reopened
    (someone requested changes), a decision made on the old content gets 409."""
    run = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    workflow_id = (await api.post("/workflows", json=run)).json()["workflow_id"]
    view = await _poll(api, workflow_id, lambda v: v["progress"] and v["progress"]["pending_approvals"])
    gate = view["progress"]["pending_approvals"][0]
    decide = f"/workflows/{workflow_id}/approvals/{gate['gate_id']}"
    stale = {"decision": "approve", "role": "executive", "reviewed_at": "2020-01-01T00:00:00Z"}
    refused = await api.post(decide, json=stale)
    assert refused.status_code == 409 and "review what it holds now" in refused.json()["detail"]
    current = {"decision": "approve", "role": "executive", "reviewed_at": gate["requested_at"]}
    assert (await api.post(decide, json=current)).status_code == 202
    view = await _poll(api, workflow_id, lambda v: v["status"] != "running")
    assert view["status"] == "completed"


async def test_the_event_stream_says_why_when_temporal_fails_mid_stream(
    dev_client: Client, settings: Settings, resources: WorkerResources, redis_client
) -> None:
    """The run-state check after the response started raised out of the SSE route: the stream was
    cut with a server traceback. Now it says why in an `error` event, as the WebSocket does."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
    from temporalio.service import RPCError, RPCStatusCode

    from convergio.events import EventFactory, EventPublisher
    from convergio.watch import read_sse
    from tests.graphflow_helpers import custom_template, start
    from tests.live_api import ADMIN_KEY as LIVE_KEY
    from tests.live_api import bearer, live_api
    from tests.test_approvals import gated_template

    idle = settings.model_copy(update={"temporal_task_queue": "convergio-nobody-polls"})
    handle = await start(dev_client, idle, custom_template(gated_template()), {}, search_attributes=False)
    event = EventFactory(handle.id, "draft", "strategic")
    publisher = EventPublisher(redis_client)
    pumping = True

    async def pump() -> None:  # events keep coming: the route checks the run only once they stop
        while pumping:
            await publisher.publish(event("text_chunk", text="."))
            await asyncio.sleep(0.2)

    async with live_api(dev_client, settings, resources) as base, httpx.AsyncClient(
        base_url=base, headers=bearer(LIVE_KEY), timeout=httpx.Timeout(10, read=30)
    ) as http:
        pumper = asyncio.create_task(pump())
        async with http.stream("GET", f"/workflows/{handle.id}/events") as response:
            assert response.status_code == 200
            execution = WorkflowExecution(workflow_id=handle.id)
            await dev_client.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(namespace=dev_client.namespace, workflow_execution=execution)
            )
            for _ in range(100):  # deleted: describing the run now fails
                try:
                    await handle.describe()
                except RPCError as exc:
                    assert exc.status == RPCStatusCode.NOT_FOUND
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the run was never deleted")
            pumping = False
            await pumper
            messages = [m async for m in read_sse(response.aiter_lines())]
    kinds = [m.event for m in messages]
    assert kinds[-1] == "error" and set(kinds[:-1]) <= {"text_chunk"}, kinds
    assert "not found" in json.loads(messages[-1].data)["detail"].lower()


def _node() -> str:
    """Playwright (a test dependency) ships the node it drives browsers with."""
    import playwright

    return str(Path(playwright.__file__).parent / "driver" / "node")


NODE = _node()
INBOX_JS = Path(__file__).resolve().parents[1] / "convergio" / "api" / "static" / "inbox" / "inbox.js"
# Runs the inbox's own readEvents on a stream cut into the given chunks; prints the events it shows.
READ_EVENTS_IN_NODE = """
const vm = require("vm"), fs = require("fs");
const [path, chunksJson] = process.argv.slice(1);
const shown = [];
const context = vm.createContext({
  document: { addEventListener() {}, getElementById() { return null; } },
  window: {}, localStorage: { getItem() { return null; } }, shown,
  ReadableStream, TextDecoderStream, TextEncoder, AbortController, console,
});
vm.runInContext(fs.readFileSync(path, "utf8"), context);
vm.runInContext("showEvent = (event) => shown.push(event); scheduleRefresh = () => {};", context);
(async () => {
  const encoder = new TextEncoder();
  const chunks = JSON.parse(chunksJson);
  const body = new ReadableStream({
    start(controller) {
      for (const text of chunks) controller.enqueue(encoder.encode(text));
      controller.close();
    },
  });
  await context.readEvents(body, new AbortController().signal);
  console.log(JSON.stringify(shown));
})();
"""


def test_the_inbox_reads_events_whose_line_ends_are_split_across_chunks() -> None:
    """The route's events end their lines with \\r\\n (sse-starlette). A network chunk ending
    between the \\r and the \\n made the inbox read two line ends, a blank line, so one event
    became two broken ones."""
    from sse_starlette.sse import ServerSentEvent

    wire = "".join(
        ServerSentEvent(data=json.dumps({"n": n}), event=kind, id=f"17-{n}").encode().decode()
        for n, kind in enumerate(["turn_started", "text_chunk", "turn_finished"])
    )
    expected = [{"event": kind, "data": json.dumps({"n": n}), "id": f"17-{n}"}
                for n, kind in enumerate(["turn_started", "text_chunk", "turn_finished"])]

    def shown(chunks: list[str]) -> list[dict[str, str]]:
        out = subprocess.run([NODE, "-e", READ_EVENTS_IN_NODE, str(INBOX_JS), json.dumps(chunks)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        return json.loads(out)

    assert shown([wire]) == expected
    cuts = [i + 1 for i, char in enumerate(wire) if char == "\r"]  # every \r\n, split in the middle
    assert len(cuts) == 12
    for cut in cuts:
        assert shown([wire[:cut], wire[cut:]]) == expected, cut

REQUESTED_AT = datetime(2026, 11, 25, 14, 55, 28, 984518, tzinfo=UTC)


def _reviewed(value: str) -> datetime:
    body = ApprovalRequest.model_validate({"decision": "approve", "role": "executive", "reviewed_at": value})
    assert body.reviewed_at is not None
    return body.reviewed_at


def test_requested_at_in_milliseconds_names_the_same_round() -> None:
    """JavaScript's Date keeps milliseconds: `new Date(gate.requested_at).toISOString()` sent back
    got 409 'reopened ... after a change request' for a gate that never reopened."""
    assert same_round(_reviewed("2026-11-25T14:55:28.984Z"), REQUESTED_AT)
    assert same_round(_reviewed("2026-11-25T14:55:28.984518Z"), REQUESTED_AT)
    assert same_round(_reviewed("2026-11-25T15:55:28.984518+01:00"), REQUESTED_AT)


def test_an_earlier_round_is_not_the_same() -> None:
    assert not same_round(_reviewed("2026-11-25T14:54:06.724068Z"), REQUESTED_AT)
    assert not same_round(_reviewed("2026-11-25T14:55:28.982Z"), REQUESTED_AT)


def test_a_time_without_a_zone_is_refused_as_invalid_input() -> None:
    """A naive time never equalled the aware requested_at: the same instant without its `Z`
    got a 409 claiming a change request. Now it is a 422 naming the field."""
    with pytest.raises(ValidationError, match="timezone"):
        _reviewed("2026-11-25T14:55:28.984518")

U64 = 2**64 - 1


def test_every_accepted_id_is_one_redis_can_read_after() -> None:
    """`99999999999999999999-0` matched the old pattern (20 digits); Redis refused the XREAD with
    'Invalid stream ID' after the SSE response had started (an empty 200 stream, no `end`, no
    `error`) and the WebSocket was dropped without a close frame."""
    assert re.fullmatch(STREAM_ID_PATTERN, "1732440600000-0")
    assert re.fullmatch(STREAM_ID_PATTERN, f"{'9' * 19}-{'9' * 19}")
    assert int("9" * 19) <= U64
    assert not re.fullmatch(STREAM_ID_PATTERN, "99999999999999999999-0")
    assert not re.fullmatch(STREAM_ID_PATTERN, "garbage")


def test_the_sse_route_declares_the_same_pattern() -> None:
    operation = create_app().openapi()["paths"]["/workflows/{workflow_id}/events"]["get"]
    header = next(p for p in operation["parameters"] if p["name"] == "Last-Event-ID")
    schema = header["schema"]
    patterns = [schema.get("pattern")] + [s.get("pattern") for s in schema.get("anyOf", [])]
    assert STREAM_ID_PATTERN in patterns
