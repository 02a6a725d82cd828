"""The command line as a user runs it: `convergio up`, `demo`, and its errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from convergio.cli import app
from convergio.stack.process import free_port
from tests.graphflow_helpers import STRATEGIC_INPUTS as INPUTS


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVERGIO_")}
    env.update(
        CONVERGIO_DATA_DIR=str(data_dir),
        CONVERGIO_TEMPORAL_PORT=str(free_port()),
        CONVERGIO_TEMPORAL_UI_PORT=str(free_port()),
        CONVERGIO_POSTGRES_PORT=str(free_port()),
        CONVERGIO_REDIS_PORT=str(free_port()),
        CONVERGIO_API_PORT=str(free_port()),
        COLUMNS="200",
    )
    env.update(extra)
    return env


def convergio(*args: str, env: dict[str, str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convergio", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def wait_for(url: str, timeout: float, process: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"convergio up exited early with {process.returncode}:\n{process.stdout.read() if process.stdout else ''}"
        )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def local_key(data_dir: Path) -> dict[str, str]:
    """`convergio up` creates the local admin key in the data directory; clients send it."""
    key = (data_dir / "api-key").read_text().strip()
    assert key.startswith("cvg_")
    return {"Authorization": f"Bearer {key}"}


def signal_through_web_ui(ui: str, workflow_id: str, name: str, payload: dict) -> None:
    """What the Web UI's "Send a Signal" form sends: the UI server's API, with its CSRF cookie."""
    import base64

    with httpx.Client(base_url=ui, timeout=10) as browser:
        browser.get("/api/v1/settings").raise_for_status()
        token = browser.cookies["_csrf"]
        body = {
            "workflowExecution": {"workflowId": workflow_id},
            "signalName": name,
            "input": {"payloads": [{
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(json.dumps(payload).encode()).decode(),
            }]},
        }
        response = browser.post(
            f"/api/v1/namespaces/default/workflows/{workflow_id}/signal/{name}",
            json=body, headers={"X-CSRF-TOKEN": token},
        )
        assert response.status_code == 200, response.text


def test_up_serves_api_and_web_ui_runs_a_workflow_and_leaves_no_process(tmp_path: Path, data_home: Path) -> None:
    env = cli_env(data_home / "data")
    api = f"http://127.0.0.1:{env['CONVERGIO_API_PORT']}"
    ui = f"http://127.0.0.1:{env['CONVERGIO_TEMPORAL_UI_PORT']}"
    up = subprocess.Popen(
        [sys.executable, "-m", "convergio", "up"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = wait_for(f"{api}/healthz", 120, up).json()
        assert health["checks"] == {"temporal": "ok", "postgres": "ok", "redis": "ok"}
        auth = local_key(data_home / "data")
        assert httpx.get(f"{api}/workflows").status_code == 401  # auth is on by default
        assert "swagger" in wait_for(f"{api}/docs", 10, up).text.lower()
        assert wait_for(ui, 30, up).status_code == 200
        children = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(child.cmdline()) for child in children)
        for part in ("temporal", "postgres", "redis-server", "convergio worker", "convergio api"):
            assert part in names

        started = httpx.post(
            f"{api}/workflows", json={"template": "strategic-analysis", "inputs": INPUTS}, headers=auth
        ).json()
        workflow_id = started["workflow_id"]
        for _ in range(150):
            view = httpx.get(f"{api}/workflows/{workflow_id}", headers=auth).json()
            if view["progress"] and view["progress"]["pending_approvals"]:
                break
            time.sleep(0.2)
        # A person approves through the CLI.
        approved = convergio(
            "approve", workflow_id, "executive_approval", "--role", "executive", "--approver", "ada",
            env=env, cwd=tmp_path, timeout=60,
        )
        assert approved.returncode == 0, approved.stderr
        for _ in range(150):
            view = httpx.get(f"{api}/workflows/{workflow_id}", headers=auth).json()
            if view["status"] != "running":
                break
            time.sleep(0.2)
        assert view["status"] == "completed"
        assert view["result"]["audit"][0]["actor"] == "ada"
        status = convergio("status", workflow_id, env=env, cwd=tmp_path, timeout=60)
        assert "Final recommendation" in status.stdout and "completed" in status.stdout
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=90)
    assert up.returncode == 0, output
    assert "Convergio is up" in output and "/docs" in output
    assert auth["Authorization"].removeprefix("Bearer ") in output  # `up` prints the local admin key
    assert [child.pid for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE] == []
    # Data is kept for the next start.
    assert (data_home / "data" / "temporal" / "temporal.sqlite").exists()
    assert (data_home / "data" / "postgres" / "pgdata" / "PG_VERSION").exists()


def test_up_stops_cleanly_on_sigterm_and_keeps_runs_across_restarts(tmp_path: Path, data_home: Path) -> None:
    env = cli_env(data_home / "data")
    api = f"http://127.0.0.1:{env['CONVERGIO_API_PORT']}"
    workflow_id = ""
    for attempt in range(2):
        up = subprocess.Popen(
            [sys.executable, "-m", "convergio", "up"],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            wait_for(f"{api}/healthz", 120, up)
            children = psutil.Process(up.pid).children(recursive=True)
            auth = local_key(data_home / "data")  # the same key on every start
            if attempt == 0:
                first_key = auth
                body = {"template": "strategic-analysis", "inputs": INPUTS}
                workflow_id = httpx.post(f"{api}/workflows", json=body, headers=auth).json()["workflow_id"]
                for _ in range(150):
                    view = httpx.get(f"{api}/workflows/{workflow_id}", headers=auth).json()
                    if view["progress"] and view["progress"]["pending_approvals"]:
                        break
                    time.sleep(0.2)
            else:
                # The run parked at its gate before the restart is still there, still waiting.
                assert auth == first_key
                view = httpx.get(f"{api}/workflows/{workflow_id}", headers=auth).json()
                assert view["status"] == "running"
                assert [g["gate_id"] for g in view["progress"]["pending_approvals"]] == ["executive_approval"]
                # A person approves in the Temporal Web UI ("Send a Signal").
                ui = f"http://127.0.0.1:{env['CONVERGIO_TEMPORAL_UI_PORT']}"
                payload = {"gate_id": "executive_approval", "approver": "grace", "role": "ceo", "comment": "web"}
                signal_through_web_ui(ui, workflow_id, "approve", payload)
                for _ in range(150):
                    view = httpx.get(f"{api}/workflows/{workflow_id}", headers=auth).json()
                    if view["status"] != "running":
                        break
                    time.sleep(0.2)
                assert view["status"] == "completed"
                assert (view["result"]["audit"][0]["actor"], view["result"]["audit"][0]["comment"]) == ("grace", "web")
        finally:
            up.send_signal(signal.SIGTERM)
            output, _ = up.communicate(timeout=90)
        assert up.returncode == 0, output
        assert [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def test_up_fails_clearly_when_a_port_is_taken(tmp_path: Path, data_home: Path) -> None:
    env = cli_env(data_home / "data")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["CONVERGIO_REDIS_PORT"])))
        blocker.listen()
        result = convergio("up", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert f"port {env['CONVERGIO_REDIS_PORT']}" in result.stderr
    assert "CONVERGIO_REDIS_PORT" in result.stderr
    # What had started before Redis was stopped again.
    leftovers = [
        p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(data_home) in " ".join(p.info["cmdline"])
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"CONVERGIO_API_PORT": "not-a-port"}, "CONVERGIO_API_PORT"),
        ({"CONVERGIO_MODEL": "gpt-5"}, "CONVERGIO_MODEL"),
        ({"CONVERGIO_MODEL": "anthropic:claude-3-5-haiku-20241022"}, "CONVERGIO_ANTHROPIC_API_KEY"),
    ],
)
def test_bad_settings_give_a_one_line_error(tmp_path: Path, data_home: Path, extra: dict[str, str], named: str) -> None:
    result = convergio("up", env=cli_env(data_home / "data", **extra), cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert not (data_home / "data").exists()  # nothing was started


def test_demo_runs_the_main_job_to_completion(tmp_path: Path, data_home: Path) -> None:
    env = cli_env(data_home / "data")
    result = convergio("demo", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["template"] == "strategic-analysis" and payload["status"] == "completed"
    assert [step["status"] for step in payload["steps"]] == ["completed"] * 7
    # Agents cite the numbered sources retrieved from the sample knowledge base; the report lists them.
    assert "[source: S1]" in payload["markdown"] and "market-report-2026.md (score" in payload["markdown"]
    assert payload["temporal_ui_url"].endswith(f"/workflows/{payload['workflow_id']}")
    assert "approved by convergio-demo as executive" in result.stderr
    key = (data_home / "data" / "api-key").read_text().strip()
    assert f"API key (admin, local): {key}" in result.stderr  # the key `up` will accept later
    leftovers = [
        p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and str(data_home) in " ".join(p.info["cmdline"])
    ]
    assert leftovers == []


def test_demo_stopped_with_sigterm_leaves_no_server_behind(tmp_path: Path, data_home: Path) -> None:
    """`kill` on the demo ended Python at once: Temporal, PostgreSQL and Redis went on running and
    the next `up` found its ports taken. Now SIGTERM stops the demo as Ctrl-C does."""
    env = cli_env(data_home / "data")
    demo = subprocess.Popen(
        [sys.executable, "-m", "convergio", "demo"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert demo.stderr is not None
        for line in demo.stderr:  # the servers are up once the knowledge base is being loaded
            if "starting knowledge base" in line:
                break
        else:
            raise AssertionError("the demo ended before its servers were up")
        servers = psutil.Process(demo.pid).children(recursive=True)
        assert servers
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        demo.kill()
    assert demo.returncode == 143, err
    assert "stopped; the embedded servers were stopped too" in err and "Traceback" not in err
    assert [p.pid for p in servers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_up_uses_external_servers_when_configured(tmp_path: Path, data_home: Path, settings) -> None:
    """With every URL set, `up` starts only the worker and the API."""
    env = cli_env(
        data_home / "data",
        CONVERGIO_TEMPORAL_ADDRESS=settings.temporal_address,
        CONVERGIO_DATABASE_URL=settings.database_url,
        CONVERGIO_REDIS_URL=settings.redis_url,
        CONVERGIO_TEMPORAL_TASK_QUEUE="convergio-external-up",
    )
    api = f"http://127.0.0.1:{env['CONVERGIO_API_PORT']}"
    up = subprocess.Popen(
        [sys.executable, "-m", "convergio", "up"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert wait_for(f"{api}/healthz", 120, up).json()["status"] == "ok"
        commands = [" ".join(child.cmdline()) for child in psutil.Process(up.pid).children(recursive=True)]
        body = {"template": "strategic-analysis", "inputs": INPUTS}
        auth = local_key(data_home / "data")
        started = httpx.post(f"{api}/workflows", json=body, headers=auth).json()
        status = ""
        for _ in range(150):
            view = httpx.get(f"{api}/workflows/{started['workflow_id']}", headers=auth).json()
            status = view["status"]
            if view["progress"] and view["progress"]["pending_approvals"]:
                status = "waiting_approval"
                break
            time.sleep(0.2)
    finally:
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert status == "waiting_approval"
    assert len(commands) == 2 and all("convergio" in command for command in commands)
    assert not (data_home / "data" / "postgres").exists()


def test_the_command_keeps_its_exit_status_and_output(tmp_path: Path) -> None:
    """``convergio.cli.main`` ends the process itself (no interpreter teardown): the status and
    the output a command produced must survive that."""
    env = cli_env(tmp_path / "data", CONVERGIO_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    ok = convergio("templates", env=env, cwd=tmp_path, timeout=60)
    assert ok.returncode == 0 and "strategic-analysis" in ok.stdout
    unreachable = convergio("status", "no-such-run", env=env, cwd=tmp_path, timeout=60)
    assert unreachable.returncode == 1 and "cannot reach Temporal" in unreachable.stderr
    unknown = convergio("no-such-command", env=env, cwd=tmp_path, timeout=60)
    assert unknown.returncode == 2 and "No such command" in unknown.stderr


def test_database_errors_never_show_the_password(tmp_path: Path) -> None:
    """`costs` and `ingest` printed CONVERGIO_DATABASE_URL whole, password included, when the
    database could not be reached; `up` printed a traceback. No server is left running."""
    secret = "s3cret-Pa55word"
    port = free_port()
    env = cli_env(
        tmp_path / "data",
        CONVERGIO_DATABASE_URL=f"postgresql://convergio:{secret}@127.0.0.1:{port}/convergio",
        CONVERGIO_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    note = tmp_path / "note.md"
    note.write_text("# Note\n\nSomething worth knowing.\n")
    costs = convergio("costs", env=env, cwd=tmp_path, timeout=120)
    ingest = convergio("ingest", str(note), env=env, cwd=tmp_path, timeout=300)
    up = convergio("up", env=env, cwd=tmp_path, timeout=300)  # a traceback from the migrations, before
    for result, says in [(costs, "cannot read the cost ledger at"), (ingest, "cannot reach the database at"),
                         (up, "cannot migrate the database at")]:
        assert result.returncode == 1, result.stderr
        assert says in result.stderr and f"convergio:***@127.0.0.1:{port}" in result.stderr, result.stderr
        assert secret not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


def test_brackets_in_an_error_are_shown_as_given() -> None:
    runner = CliRunner()
    keys = runner.invoke(app, ["keys", "create", "--name", "ada", "--tenant", "ACME"])
    assert keys.exit_code == 1 and "[a-z0-9][a-z0-9_-]{0,62}" in keys.stderr, keys.stderr
    template = runner.invoke(app, ["run", "strategic[x]"])
    assert template.exit_code == 1 and "'strategic[x]'" in template.stderr, template.stderr


def test_a_closing_tag_in_an_error_is_no_crash() -> None:
    result = CliRunner().invoke(app, ["run", "strategic-analysis", "--input", "[/tmp/brief.md]"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.stderr
    assert "--input '[/tmp/brief.md]': expected key=value" in result.stderr, result.stderr


class _HtmlPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        body = b"<!doctype html><title>Temporal</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _HtmlPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_stats_from_a_server_that_is_not_the_api_is_one_error_line(html_server: str) -> None:
    result = CliRunner().invoke(app, ["stats", "--api-url", html_server], env={"CONVERGIO_API_KEY": "x" * 20})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "not an answer of the Convergio API" in result.stderr, result.stderr
    assert "--api-url" in result.stderr


def test_db_upgrade_of_an_unreachable_database_is_one_error_line() -> None:
    secret = "s3cret-Pa55word"
    port = free_port()
    url = f"postgresql://convergio:{secret}@127.0.0.1:{port}/convergio"
    result = CliRunner().invoke(app, ["db", "upgrade"], env={"CONVERGIO_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "cannot migrate the database at" in result.stderr, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr
    assert secret not in result.stderr


def test_text_inputs_are_taken_as_written() -> None:
    """`--input company=1893` was read as JSON: "inputs.company: expected string, got int"."""
    from convergio.cli import parse_inputs, string_inputs

    texts = string_inputs("strategic-analysis")
    assert {"company", "question"} <= texts and "discount_rate" not in texts
    given = parse_inputs(["company=1893", "question=true", "discount_rate=0.08", "annual_cash_flows=[1, 2]"],
                         None, texts)
    assert given == {"company": "1893", "question": "true",
                     "discount_rate": 0.08, "annual_cash_flows": [1, 2]}
    assert string_inputs("no-such-template") == set()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "strategic-analysis", "--model", "gpt4"], "--model='gpt4': unknown provider 'gpt4'"),
        (["demo", "--model", "gpt4"], "--model='gpt4': unknown provider 'gpt4'"),
        (["demo", "--model", "anthropic:claude-x"],
         "CONVERGIO_ANTHROPIC_API_KEY is not set; --model=anthropic:claude-x needs it"),
    ],
)
def test_a_bad_model_flag_is_named_as_the_flag(tmp_path: Path, args: list[str], says: str) -> None:
    """`--model gpt4` was reported as `CONVERGIO_MODEL='gpt4'`, a setting the user never made."""
    result = CliRunner().invoke(app, args, env={"CONVERGIO_DATA_DIR": str(tmp_path / "data")})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert says in result.stderr, result.stderr
    assert "CONVERGIO_MODEL" not in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was started


def test_ingest_says_a_path_does_not_exist_and_ingests_the_others(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """`convergio ingest /nonexistent` said "unsupported file type '(none)'" for a path with
    nothing at it. Now it says so, as for any file that cannot go in: the others still do, exit 1."""
    good = tmp_path / "notes.md"
    good.write_text(f"# Notes\nThe Lisbon office opens in {uuid.uuid4().hex[:6]}.\n")
    missing = tmp_path / "nonexistent"
    env = {"CONVERGIO_DATABASE_URL": postgres_url, "CONVERGIO_REDIS_URL": redis_url}
    tenant = f"t{uuid.uuid4().hex[:12]}"
    result = CliRunner().invoke(app, ["ingest", str(missing), str(good), "--tenant", tenant], env=env)
    assert result.exit_code == 1, result.output
    assert f"{missing}: no such file or folder" in result.stderr, result.stderr
    assert "unsupported file type" not in result.stderr
    assert "added" in result.stderr and "1 of 2 files could not be ingested" in result.stderr
    assert "1 chunks added from 1 files" in result.stdout
    # Nothing to read at all: said before (and without) reaching any database.
    unreachable = {"CONVERGIO_DATABASE_URL": f"postgresql://convergio@127.0.0.1:{free_port()}/convergio"}
    alone = CliRunner().invoke(app, ["ingest", str(missing)], env=unreachable)
    assert alone.exit_code == 1, alone.output
    assert f"{missing}: no such file or folder" in alone.stderr, alone.stderr
    assert "1 of 1 files could not be ingested" in alone.stderr
    assert "database" not in alone.stderr and "unsupported" not in alone.stderr


@pytest.mark.parametrize("command", ["worker", "api"])
def test_a_server_without_temporal_says_so_in_one_line(tmp_path: Path, command: str) -> None:
    """`convergio worker` and `convergio api` with no Temporal at CONVERGIO_TEMPORAL_ADDRESS ended
    in the SDK's traceback (the API's through uvicorn's start-up) instead of naming the address."""
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(
        tmp_path / "data",
        CONVERGIO_TEMPORAL_ADDRESS=address,
        CONVERGIO_DATABASE_URL=f"postgresql://convergio@127.0.0.1:{free_port()}/convergio",
        CONVERGIO_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    result = convergio(command, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: cannot reach Temporal at {address} ("), result.stderr
    assert "CONVERGIO_TEMPORAL_ADDRESS" in errors[0]


def test_a_worker_without_its_database_says_so_in_one_line(
    tmp_path: Path, settings  # noqa: ANN001
) -> None:
    """Temporal answers, PostgreSQL does not: the worker's pool gave up after 30 s with a traceback."""
    secret = "s3cret-Pa55word"
    port = free_port()
    env = cli_env(
        tmp_path / "data",
        CONVERGIO_TEMPORAL_ADDRESS=str(settings.temporal_address),
        CONVERGIO_DATABASE_URL=f"postgresql://convergio:{secret}@127.0.0.1:{port}/convergio",
        CONVERGIO_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    result = convergio("worker", env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and secret not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"cannot reach the database at postgresql://convergio:***@127.0.0.1:{port}" in errors[0]
