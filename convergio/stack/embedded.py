"""Start the parts of the stack the settings leave unset, and stop them again.

Used by ``convergio up``, ``convergio demo`` and the test fixtures alike, so what the
tests run against is exactly what a user starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from convergio.db.migrate import apply_migrations
from convergio.settings import Settings
from convergio.stack.postgres_server import EmbeddedPostgres
from convergio.stack.redis_server import EmbeddedRedis
from convergio.stack.temporal_server import TemporalDevServer

ProgressCallback = Callable[[str], None]


@dataclass
class StackEndpoints:
    """Where each part of the running stack answers."""

    temporal_address: str
    database_url: str
    redis_url: str
    temporal_ui_url: str | None


@dataclass
class EmbeddedStack:
    """The embedded servers for one data directory; external parts are left alone."""

    settings: Settings
    temporal_ui: bool = True
    _started: list[TemporalDevServer | EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)

    async def start(self, progress: ProgressCallback = lambda _: None) -> StackEndpoints:
        """Start every embedded part; on any failure, stop what already started and re-raise."""
        s = self.settings
        data_dir = s.resolved_data_dir
        try:
            temporal_address = s.effective_temporal_address
            ui_url: str | None = s.temporal_ui_url
            if s.embedded_temporal:
                progress("Temporal dev server")
                temporal = TemporalDevServer(
                    data_dir / "temporal",
                    port=s.temporal_port,
                    ui_port=s.temporal_ui_port if self.temporal_ui else None,
                    namespace=s.temporal_namespace,
                )
                await temporal.start()
                self._started.append(temporal)
                temporal_address = temporal.address
                ui_url = s.effective_temporal_ui_url if self.temporal_ui else None

            database_url = s.effective_database_url
            if s.embedded_postgres:
                progress("PostgreSQL + pgvector")
                postgres = EmbeddedPostgres(data_dir / "postgres", port=s.postgres_port)
                await postgres.start()
                self._started.append(postgres)
                database_url = postgres.url()
            progress("database migrations")
            await apply_migrations(database_url)

            redis_url = s.effective_redis_url
            if s.embedded_redis:
                progress("Redis")
                redis = EmbeddedRedis(data_dir / "redis", port=s.redis_port)
                await redis.start()
                self._started.append(redis)
                redis_url = redis.url
        except BaseException:
            self.stop()
            raise
        return StackEndpoints(temporal_address, database_url, redis_url, ui_url)

    def stop(self) -> None:
        """Stop in reverse start order; data stays for the next start."""
        while self._started:
            self._started.pop().stop()

    def parts(self) -> list[TemporalDevServer | EmbeddedPostgres | EmbeddedRedis]:
        return list(self._started)

    def processes(self) -> list[tuple[str, int | None]]:
        return [(part.process.name, part.process.pid) for part in self._started if part.process]
