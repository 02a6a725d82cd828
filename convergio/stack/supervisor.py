"""``convergio up``: the embedded servers plus a worker and the API, supervised until stopped."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass

import httpx
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from convergio.api.auth import ensure_local_admin_key
from convergio.search_attributes import register_search_attributes
from convergio.settings import Settings
from convergio.stack.embedded import EmbeddedStack, ProgressCallback, StackEndpoints
from convergio.stack.process import ManagedProcess, StackError, ensure_port_free, tail
from convergio.temporal_client import connect_temporal

MAX_RESTARTS = 3


@dataclass
class RunningStack:
    endpoints: StackEndpoints
    api_url: str
    api_key: str


def child_environment(endpoints: StackEndpoints) -> dict[str, str]:
    """Children talk to the servers we started; they never start servers of their own."""
    env = {
        "CONVERGIO_TEMPORAL_ADDRESS": endpoints.temporal_address,
        "CONVERGIO_DATABASE_URL": endpoints.database_url,
        "CONVERGIO_REDIS_URL": endpoints.redis_url,
        "PYTHONUNBUFFERED": "1",
    }
    if endpoints.temporal_ui_url:
        env["CONVERGIO_TEMPORAL_UI_URL"] = endpoints.temporal_ui_url
    return env


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = EmbeddedStack(settings)
        self.children: list[ManagedProcess] = []
        self._restarts: dict[str, int] = {}

    async def start(self, progress: ProgressCallback) -> RunningStack:
        s = self.settings
        ensure_port_free("API", s.api_host, s.api_port, "CONVERGIO_API_PORT")
        endpoints = await self.stack.start(progress)
        try:
            if not s.embedded_temporal:
                progress("search attributes on the external Temporal")
                client = await connect_temporal(s, endpoints.temporal_address)
                try:
                    await register_search_attributes(client, s.temporal_namespace)
                except RPCError as exc:
                    progress(f"could not register search attributes ({exc.message}); see README")
            logs = s.resolved_data_dir / "logs"
            env = child_environment(endpoints)
            env["CONVERGIO_DATA_DIR"] = str(s.resolved_data_dir)  # the API finds the local admin key there
            api_key = ensure_local_admin_key(s)
            progress("worker")
            worker = ManagedProcess(
                "worker", [sys.executable, "-m", "convergio", "worker"], logs / "worker.log", env=env
            )
            worker.start()
            self.children.append(worker)
            temporal = await connect_temporal(s, s.effective_temporal_address)
            await worker.wait_ready(
                lambda: worker_polls(temporal, s, worker.pid), 60, "polling its task queue"
            )

            progress("API")
            api_url = f"http://{s.api_host}:{s.api_port}"
            api = ManagedProcess(
                "API",
                [sys.executable, "-m", "convergio", "api", "--host", s.api_host, "--port", str(s.api_port)],
                logs / "api.log",
                env=env,
            )
            api.start()
            self.children.append(api)
            await api.wait_ready(lambda: _http_ok(f"{api_url}/healthz"), 60, "answering /healthz")
        except BaseException:
            self.stop()
            raise
        return RunningStack(endpoints=endpoints, api_url=api_url, api_key=api_key)

    async def supervise(self, stop: asyncio.Event, notify: ProgressCallback) -> None:
        """Until ``stop``: restart a crashed worker or API (a few times); a crashed server ends it."""
        while not stop.is_set():
            for part in self.stack.parts():
                if not part.process.is_running():
                    raise StackError(
                        f"{part.process.name} stopped unexpectedly (exit code {part.process.exit_code()}). "
                        f"Last lines of {part.process.log_path}:\n{tail(part.process.log_path)}"
                    )
            for child in self.children:
                if not child.is_running():
                    count = self._restarts.get(child.name, 0) + 1
                    if count > MAX_RESTARTS:
                        raise StackError(
                            f"{child.name} keeps crashing (exit code {child.exit_code()}). "
                            f"Last lines of {child.log_path}:\n{tail(child.log_path)}"
                        )
                    self._restarts[child.name] = count
                    notify(f"{child.name} exited with code {child.exit_code()}; restarting ({count}/{MAX_RESTARTS})")
                    child.start()
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                pass

    def stop(self) -> None:
        """Children first (they hold connections), then the servers."""
        while self.children:
            self.children.pop().stop()
        self.stack.stop()


async def worker_polls(client: Client, settings: Settings, pid: int | None) -> bool:
    """Whether the worker process ``pid`` polls the task queue. Any poller was not enough: a worker
    of another stack, or a developer's, on the same queue made a new worker that had not started
    (or would never start) look ready. A worker's poller identity is Temporal's default, "pid@host"."""
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=settings.temporal_namespace, task_queue=TaskQueue(name=settings.temporal_task_queue)
        )
    )
    return pid is not None and any(poller.identity.startswith(f"{pid}@") for poller in response.pollers)


async def _http_ok(url: str) -> bool:
    async with httpx.AsyncClient(timeout=3) as client:
        response = await client.get(url)
        return response.status_code == 200


def install_stop_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
