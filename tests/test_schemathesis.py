"""Property-based API testing: schemathesis generates requests from the OpenAPI document and
sends them to a real uvicorn (in front of the session's real servers); no answer may be a 5xx,
and every answer must use a documented content type.

Bounded: a few examples per operation, one worker, a fixed seed, a time limit.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import pytest_asyncio
import uvicorn
from temporalio.client import Client

from convergio.api.app import create_app
from convergio.settings import Settings
from convergio.stack.process import free_port
from convergio.workers.worker import WorkerResources, build_worker
from tests.test_api import auth_settings, headers

CHECKS = "not_a_server_error,content_type_conformance"


@pytest_asyncio.fixture
async def live_url(dev_client: Client, settings: Settings, resources: WorkerResources) -> AsyncIterator[str]:
    # A queue of its own, with a worker: runs started here answer queries, and no other test's
    # worker sees them.
    own = auth_settings(settings, temporal_task_queue="convergio-schemathesis", rate_limit_requests=100_000)
    app = create_app(own)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    async with build_worker(dev_client, own, resources):
        async for url in _serve(server, port):
            yield url


async def _serve(server: uvicorn.Server, port: int) -> AsyncIterator[str]:
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(200):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def _schemathesis(url: str, *args: str, report: Path) -> tuple[int, str]:
    log = report.with_suffix(".log")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "6",
        "--seed",
        "20261124",
        "--workers",
        "1",
        "--phases",
        "examples,fuzzing",
        "--max-failures",
        "20",
        "--request-timeout",
        "20",
        "--suppress-health-check",
        "all",
        "--no-shrink",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        *args,
        stdout=log.open("wb"),
        stderr=asyncio.subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("CONVERGIO_")}, "NO_COLOR": "1"},
    )
    try:
        await asyncio.wait_for(process.wait(), timeout=240)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"schemathesis did not finish in time:\n{log.read_text()[-6000:]}") from None
    return process.returncode or 0, log.read_text(errors="replace")


async def test_no_generated_request_gets_a_server_error(live_url: str, tmp_path: Path) -> None:
    auth = headers("admin")["Authorization"]
    code, output = await _schemathesis(
        live_url,
        "--header",
        f"Authorization: {auth}",
        report=tmp_path / "schemathesis.xml",
    )
    assert code == 0, output[-6000:]
    suite = ElementTree.parse(tmp_path / "schemathesis.xml").getroot()
    operations = sum(len(ops) for ops in create_app().openapi()["paths"].values())
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (str(operations), "0", "0")
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert generated and int(generated.group(1)) == int(generated.group(2)) >= 5 * operations, output[-3000:]


async def test_unauthenticated_generated_requests_are_refused_cleanly(live_url: str, tmp_path: Path) -> None:
    code, output = await _schemathesis(live_url, report=tmp_path / "anonymous.xml")
    assert code == 0, output[-6000:]
    assert ElementTree.parse(tmp_path / "anonymous.xml").getroot().get("failures") == "0"
