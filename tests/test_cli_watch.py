"""`convergio watch` and `convergio request-changes` as a user runs them, against a live API and worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from tests.graphflow_helpers import STRATEGIC_INPUTS
from tests.live_api import ADMIN_KEY, bearer, live_api


def cli_env(settings: Settings, data_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVERGIO_")}
    env.update(
        CONVERGIO_DATA_DIR=str(data_dir),
        CONVERGIO_TEMPORAL_ADDRESS=str(settings.temporal_address),
        CONVERGIO_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        CONVERGIO_API_KEY=ADMIN_KEY,
        COLUMNS="200",
    )
    return env


async def convergio(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """A short command through Typer's runner, in a thread (it runs its own event loop), so that
    this test's loop keeps serving the API meanwhile; `watch` itself runs as a real process."""
    from typer.testing import CliRunner

    from convergio.cli import app

    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


async def start_watch(workflow_id: str, api_url: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``convergio watch`` in a child process, its output piped for the test to read."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "convergio", "watch", workflow_id, "--api-url", api_url,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def poll(
    http: httpx.AsyncClient, workflow_id: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for _ in range(600):
        view = (await http.get(f"/workflows/{workflow_id}")).json()
        if until(view):
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"{workflow_id}: condition never met; last view {view}")


def gate_open(changes_left: int) -> Callable[[dict[str, Any]], bool]:
    def check(view: dict[str, Any]) -> bool:
        gates = (view.get("progress") or {}).get("pending_approvals") or []
        return any(
            g["gate_id"] == "executive_approval" and g["change_requests_left"] == changes_left for g in gates
        )

    return check


async def watch_a_parked_run(
    http: httpx.AsyncClient, api_url: str, env: dict[str, str]
) -> tuple[str, asyncio.subprocess.Process, str]:
    """Start a Strategic Analysis run, wait until it waits at its gate, and watch it through
    ``api_url``: the run's id, the watcher, and the first line the watcher wrote."""
    body = {"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
    started = await http.post("/workflows", json=body)
    workflow_id = started.json()["workflow_id"]
    await poll(http, workflow_id, gate_open(changes_left=2))
    watcher = await start_watch(workflow_id, api_url, env)
    assert watcher.stderr is not None
    first = await asyncio.wait_for(watcher.stderr.readline(), timeout=60)
    return workflow_id, watcher, first.decode()


async def test_watch_follows_a_run_through_a_change_request_to_the_end(
    dev_client: Client, settings: Settings, resources: WorkerResources, tmp_path: Path
) -> None:
    env = cli_env(settings, tmp_path)
    async with (
        live_api(dev_client, settings, resources) as base,
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_KEY)) as http,
    ):
        started = await http.post(
            "/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
        )
        workflow_id = started.json()["workflow_id"]
        watcher = await start_watch(workflow_id, base, env)
        await poll(http, workflow_id, gate_open(changes_left=2))

        code, _, err = await convergio(
            "request-changes", workflow_id, "executive_approval", "--role", "executive", env=env
        )
        assert code == 1 and "needs --comment" in err
        code, out, err = await convergio(
            "request-changes",
            workflow_id,
            "executive_approval",
            "--role",
            "executive",
            "--approver",
            "ada",
            "--comment",
            "Add a cost table.",
            env=env,
        )
        assert code == 0, err
        assert f"request changes sent for {workflow_id} / executive_approval" in out

        # The reviewed step is reworked and the gate opens again, with one change request fewer.
        await poll(http, workflow_id, gate_open(changes_left=1))
        code, _, err = await convergio(
            "approve", workflow_id, "executive_approval", "--role", "executive", "--approver", "ada", env=env
        )
        assert code == 0, err

        out_bytes, err_bytes = await asyncio.wait_for(watcher.communicate(), timeout=120)
        out, err = out_bytes.decode(), err_bytes.decode()
        assert watcher.returncode == 0, err
        view = (await http.get(f"/workflows/{workflow_id}")).json()

    assert view["status"] == "completed"
    outcomes = [entry["outcome"] for entry in view["result"]["audit"] if entry["kind"] == "decision"]
    assert outcomes[0] == "changes requested" and outcomes[-1] == "approved", outcomes
    # The final view: the run, every step with its state, tokens and cost, and the last events.
    assert f"{workflow_id} · strategic-analysis · completed" in out
    for step in view["result"]["steps"]:
        assert step["title"] in out
    assert "turn_finished" in out and "final_recommendation" in out
    assert f"${view['result']['cost_usd']:.6f}" in out
    assert "(ended)" in out


async def test_watch_stops_cleanly_on_ctrl_c_and_names_an_unknown_run(
    dev_client: Client, settings: Settings, resources: WorkerResources, tmp_path: Path
) -> None:
    env = cli_env(settings, tmp_path)
    async with (
        live_api(dev_client, settings, resources) as base,
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_KEY)) as http,
    ):
        code, _, err = await convergio("watch", "no-such-run", "--api-url", base, env=env)
        assert code == 1 and "no-such-run" in err and "404" in err

        workflow_id, watcher, first = await watch_a_parked_run(http, base, env)
        # Once the watcher says it follows the stream, interrupt it.
        assert first.startswith(f"watching {workflow_id} at {base}"), first
        await asyncio.sleep(0.5)
        assert watcher.returncode is None, "watch ended although the run is still waiting"
        watcher.send_signal(signal.SIGINT)
        out_bytes, err_bytes = await asyncio.wait_for(watcher.communicate(), timeout=30)
        err = err_bytes.decode()
        # What it showed when stopped: the run waiting at its gate, and how to decide it.
        assert "waiting_approval" in out_bytes.decode() and "convergio approve" in out_bytes.decode()
        assert watcher.returncode == 130, err
        assert f"stopped watching; {workflow_id} goes on" in err
        assert "Traceback" not in err
        # Watching never touched the run.
        view = (await http.get(f"/workflows/{workflow_id}")).json()
        assert view["status"] == "running" and view["progress"]["pending_approvals"]
        denied = await http.post(
            f"/workflows/{workflow_id}/approvals/executive_approval",
            json={"decision": "deny", "role": "executive", "comment": "test over"},
        )
        assert denied.status_code == 202, denied.text


async def test_run_keeps_following_while_no_worker_answers_and_exits_by_outcome(
    dev_client: Client, settings: Settings, resources: WorkerResources, tmp_path: Path
) -> None:
    """`convergio run` took a status query nobody answered (worker restarting) for the run's end,
    printed it and exited 0 while the run went on. It must wait for Temporal to close the run and
    exit by the outcome; a decision on a run closed meanwhile is one error line, no traceback."""
    queue = "convergio-cli-run"
    env = {
        **cli_env(settings, tmp_path),
        "CONVERGIO_TEMPORAL_TASK_QUEUE": queue,
        "CONVERGIO_DATABASE_URL": str(settings.database_url),
    }
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(STRATEGIC_INPUTS))
    queue_settings = settings.model_copy(update={"temporal_task_queue": queue})
    async with build_worker(dev_client, queue_settings, resources):
        runner = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "convergio", "run", "strategic-analysis", "--inputs-file", str(inputs),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert runner.stdout is not None
        shown: list[str] = []
        while not any("waiting for approval" in line for line in shown):
            line = (await asyncio.wait_for(runner.stdout.readline(), timeout=120)).decode()
            assert line, f"`convergio run` ended early: {shown}"
            shown.append(line)
        workflow_id = next(line.split()[1] for line in shown if line.startswith("started "))
    # No worker now: each status query times out (5 s). That is no end of the run.
    await asyncio.sleep(12)
    assert runner.returncode is None, "`convergio run` stopped although the run is still waiting"

    await dev_client.get_workflow_handle(workflow_id).terminate("test over")
    out_bytes, err_bytes = await asyncio.wait_for(runner.communicate(), timeout=60)
    out, err = "".join(shown) + out_bytes.decode(), err_bytes.decode()
    assert runner.returncode == 1, (out, err)
    assert "terminated" in out and "still following the run" in err and "Traceback" not in err

    async with build_worker(dev_client, queue_settings, resources):  # answers the query of the closed run
        code, _, err = await convergio(
            "approve", workflow_id, "executive_approval", "--role", "executive", env=env
        )
    assert code == 1 and err.startswith(f"error: {workflow_id}: "), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


class FlakyProxy:
    """A TCP proxy in front of the live API that can have an outage: it then drops the connections
    it carries and answers every new request 503, like an API restarting behind a load balancer."""

    def __init__(self, target: str) -> None:
        self._host, port = target.removeprefix("http://").split(":")
        self._port = int(port)
        self._open: set[asyncio.StreamWriter] = set()
        self.down = False
        self.refused = 0

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        self.outage(False)
        for writer in list(self._open):
            writer.close()

    def outage(self, down: bool) -> None:
        self.down = down
        if down:
            for writer in list(self._open):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            with contextlib.suppress(Exception):
                await reader.readuntil(b"\r\n\r\n")
                body = b'{"detail": "restarting"}'
                writer.write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
            self.refused += 1
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        self._open.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.difference_update((writer, up_writer))


async def test_watch_rides_out_a_brief_api_outage(
    dev_client: Client, settings: Settings, resources: WorkerResources, tmp_path: Path
) -> None:
    """A 503 (or a dropped connection) while refreshing the view ended `watch` with exit 1 although
    the run went on; now the last view stays, the watch retries and follows the run to its end."""
    env = cli_env(settings, tmp_path)
    async with (
        live_api(dev_client, settings, resources) as base,
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_KEY)) as http,
    ):
        proxy = FlakyProxy(base)
        async with proxy as proxied:
            workflow_id, watcher, first = await watch_a_parked_run(http, proxied, env)
            assert first.startswith(f"watching {workflow_id}"), first

            proxy.outage(True)  # the view's refresh (every second) and the stream's reconnects get 503
            await asyncio.sleep(4)
            assert proxy.refused >= 2, proxy.refused
            assert watcher.returncode is None, "watch gave up during a brief outage"
            proxy.outage(False)

            approved = await http.post(
                f"/workflows/{workflow_id}/approvals/executive_approval",
                json={"decision": "approve", "role": "executive", "comment": "after the outage"},
            )
            assert approved.status_code == 202, approved.text
            out_bytes, err_bytes = await asyncio.wait_for(watcher.communicate(), timeout=120)
    out, err = out_bytes.decode(), err_bytes.decode()
    assert watcher.returncode == 0, (out, err)
    assert f"{workflow_id} · strategic-analysis · completed" in out and "(ended)" in out


async def _line_with(stream: asyncio.StreamReader, text: str, seen: list[str]) -> str:
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout=120)).decode()
        assert line, f"the stream ended before {text!r}: {seen}"
        seen.append(line)
        if text in line:
            return line


async def test_run_json_prints_only_json_and_announces_a_reopened_gate(
    dev_client: Client, settings: Settings, resources: WorkerResources, tmp_path: Path
) -> None:
    """`run --json | jq` failed: the progress went to stdout before the report, and `--no-wait --json`
    was wrapped by Rich at 80 columns when piped. And after `request-changes` the gate opened again
    with no word from `run`, which waited silently for a second decision."""
    queue = "convergio-cli-json"
    env = {**cli_env(settings, tmp_path), "CONVERGIO_TEMPORAL_TASK_QUEUE": queue,
           "CONVERGIO_DATABASE_URL": str(settings.database_url)}
    del env["COLUMNS"]  # piped: Rich falls back to 80 columns
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps(STRATEGIC_INPUTS))
    run = [sys.executable, "-m", "convergio", "run", "strategic-analysis", "--inputs-file", str(inputs),
           "--json"]
    queue_settings = settings.model_copy(update={"temporal_task_queue": queue})
    async with build_worker(dev_client, queue_settings, resources):
        detached = await asyncio.create_subprocess_exec(
            *run, "--no-wait", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(detached.communicate(), timeout=120)
        started = json.loads(out)
        assert started["temporal_ui_url"].endswith(started["workflow_id"])
        await dev_client.get_workflow_handle(started["workflow_id"]).terminate("test over")

        runner = await asyncio.create_subprocess_exec(
            *run, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        assert runner.stderr is not None
        progress: list[str] = []
        workflow_id = (await _line_with(runner.stderr, "started ", progress)).split()[1]
        await _line_with(runner.stderr, "waiting for approval", progress)
        gate = (workflow_id, "executive_approval", "--role", "executive")
        code, _, err = await convergio("request-changes", *gate,
                                       "--comment", "Add a cost table", env=env)
        assert code == 0, err
        await _line_with(runner.stderr, "waiting for approval", progress)  # the gate opened again
        code, _, err = await convergio("approve", *gate, env=env)
        assert code == 0, err
        out, _ = await asyncio.wait_for(runner.communicate(), timeout=120)
    assert runner.returncode == 0, progress
    report = json.loads(out)
    assert report["workflow_id"] == workflow_id and report["status"] == "completed"


async def test_a_decision_while_no_worker_runs_is_sent_with_a_warning(
    dev_client: Client, settings: Settings, tmp_path: Path
) -> None:
    """docs/approvals.md: a decision sent while no worker runs is applied when one comes back. The
    CLI first asked the run for its gates, which only a worker answers, and gave up with an error."""
    from temporalio.api.enums.v1 import EventType

    from convergio.agents.catalog import default_catalog
    from convergio.graphflow.loader import default_registry
    from convergio.graphflow.runs import build_run_input, start_template_run

    idle = settings.model_copy(update={"temporal_task_queue": "convergio-cli-no-worker"})
    template = default_registry().get("strategic-analysis")
    run = build_run_input(template, STRATEGIC_INPUTS, default_catalog(), tenant="default", model=None)
    workflow_id = (await start_template_run(dev_client, idle, run)).workflow_id
    env = {**cli_env(idle, tmp_path), "CONVERGIO_TEMPORAL_TASK_QUEUE": idle.temporal_task_queue}
    try:
        gate = (workflow_id, "executive_approval", "--role", "executive")
        code, out, err = await convergio("approve", *gate, env=env)
        assert code == 0, err
        assert "no worker answered" in err and f"approve sent for {workflow_id}" in out
        signals = [event async for event in dev_client.get_workflow_handle(workflow_id).fetch_history_events()
                   if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        assert [s.workflow_execution_signaled_event_attributes.signal_name for s in signals] == ["approve"]
    finally:
        await dev_client.get_workflow_handle(workflow_id).terminate("test over")


def test_no_poller_seen_is_no_worker_not_a_failed_run() -> None:
    """About a minute after the last worker stopped polling, Temporal answers a query at once with
    FAILED_PRECONDITION; `run` took it for an error and exited 1 while the run went on."""
    from temporalio.service import RPCError, RPCStatusCode

    from convergio.graphflow.runs import no_worker_answered

    gone = "no poller seen for task queue recently, worker may be down"
    assert no_worker_answered(RPCError(gone, RPCStatusCode.FAILED_PRECONDITION, b""))
    assert no_worker_answered(RPCError("Timeout expired", RPCStatusCode.CANCELLED, b""))
    assert not no_worker_answered(RPCError("workflow is closed", RPCStatusCode.FAILED_PRECONDITION, b""))
    assert not no_worker_answered(RPCError("not found", RPCStatusCode.NOT_FOUND, b""))
