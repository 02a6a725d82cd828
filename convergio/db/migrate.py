"""Plain SQL migrations applied in file-name order and recorded in ``schema_migrations``."""

from __future__ import annotations

from importlib import resources

import psycopg

# One advisory lock id for "migrating": many workers starting at once apply each file once.
_MIGRATION_LOCK_ID = 7_240_001


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every shipped migration, in order."""
    folder = resources.files("convergio.db") / "migrations"
    files = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")), key=lambda e: e.name
    )
    return [(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")) for entry in files]


async def apply_migrations(database_url: str) -> list[str]:
    """Apply the migrations the database has not seen yet; returns the versions applied."""
    applied: list[str] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            for version, statements in migration_files():
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(statements)  # type: ignore[arg-type] - trusted, shipped SQL
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (version,)
                    )
                applied.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_ID,))
    return applied
