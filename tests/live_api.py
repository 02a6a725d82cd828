"""The API served by a real uvicorn on a free port, with a worker, for clients outside the process
(a browser, the CLI in a subprocess)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from pydantic import SecretStr
from temporalio.client import Client

from convergio.api.app import create_app
from convergio.settings import ApiKeyEntry, Settings
from convergio.stack.process import free_port
from convergio.workers.worker import WorkerResources, build_worker

# Keys of the live API: an operator-admin who starts runs, and a person who approves as executive.
ADMIN_KEY = "cvg_live-admin-key-00000000000000000"
APPROVER_KEY = "cvg_live-approver-key-0000000000000"
APPROVER_NAME = "ada@example.com"


def with_keys(settings: Settings) -> Settings:
    keys = [
        ApiKeyEntry(name="ops", role="admin", key=SecretStr(ADMIN_KEY)),
        ApiKeyEntry(
            name=APPROVER_NAME, role="approver", approves_as=["executive"], key=SecretStr(APPROVER_KEY)
        ),
    ]
    return settings.model_copy(update={"api_keys": keys})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def live_api(client: Client, settings: Settings, resources: WorkerResources) -> AsyncIterator[str]:
    """Yields the base URL of an API that accepts ``ADMIN_KEY`` and ``APPROVER_KEY``; the server and
    the worker stop when the block ends."""
    app = create_app(with_keys(settings))
    port = free_port()
    # Keep-alive longer than any pause in a test: with uvicorn's 5 s, a client's request sent
    # just as the server closed the idle connection failed with httpx.ReadError (seen once, in
    # test_inbox_e2e, whose browser part takes about 5 s between two requests).
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_keep_alive=120
        )
    )
    async with build_worker(client, settings, resources):
        task = asyncio.create_task(server.serve())
        try:
            for _ in range(200):
                if server.started or task.done():
                    break
                await asyncio.sleep(0.05)
            if task.done():
                task.result()  # raises why it stopped
            assert server.started, "uvicorn did not start within 10 s"
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, timeout=30)
