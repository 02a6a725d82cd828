"""Verdicts in Postgres (table ``security_verdicts``, migration 0003)."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from convergio.security.guardian import Verdict, redact

SAMPLE_CHARS = 500


def sample_of(text: str, verdict: Verdict | None = None) -> str:
    """The first 500 characters of the redacted text (never a raw secret)."""
    redacted = verdict.redacted if verdict is not None and verdict.redacted is not None else redact(text)
    return redacted[:SAMPLE_CHARS]


async def record_verdict(
    pool: AsyncConnectionPool,
    workflow_id: str,
    step_id: str | None,
    surface: str,
    tenant: str,
    verdict: Verdict,
    text: str,
    action: str | None = None,
) -> int:
    """Insert one verdict; returns its id."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            INSERT INTO security_verdicts
                (workflow_id, step_id, surface, tenant, decision, action, score, categories, reasons, sample)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING id
            """,
            (
                workflow_id, step_id, surface, tenant, verdict.decision, action, verdict.score,
                list(verdict.categories), Jsonb(verdict.reasons), sample_of(text, verdict),
            ),
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0])


async def verdicts_for(pool: AsyncConnectionPool, workflow_id: str) -> list[dict[str, Any]]:
    """A run's verdicts, oldest first (for the workflow result and the API)."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT id, step_id, surface, tenant, decision, action, score, categories, reasons, sample, created_at
            FROM security_verdicts WHERE workflow_id = %s ORDER BY created_at, id
            """,
            (workflow_id,),
        )
        names = [column.name for column in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


async def decision_counts(pool: AsyncConnectionPool, tenant: str | None = None) -> dict[str, int]:
    """Verdicts per decision (for metrics), all tenants or one."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT decision, count(*) FROM security_verdicts WHERE (%s::text IS NULL OR tenant = %s) GROUP BY decision",
            (tenant, tenant),
        )
        counts = {"allow": 0, "flag": 0, "block": 0}
        counts.update({row[0]: int(row[1]) for row in await cursor.fetchall()})
        return counts
