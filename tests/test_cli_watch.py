"""`convergio watch` and `convergio request-changes` as a user runs them, against a live API and worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from convergio.settings import Settings
from convergio.workers.worker import WorkerResources
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

        started = await http.post(
            "/workflows", json={"template": "strategic-analysis", "inputs": STRATEGIC_INPUTS}
        )
        workflow_id = started.json()["workflow_id"]
        await poll(http, workflow_id, gate_open(changes_left=2))
        watcher = await start_watch(workflow_id, base, env)
        # Once the watcher says it follows the stream, interrupt it.
        assert watcher.stderr is not None
        first = await asyncio.wait_for(watcher.stderr.readline(), timeout=60)
        assert first.decode().startswith(f"watching {workflow_id} at {base}"), first
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
