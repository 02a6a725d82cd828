"""Verdicts in Postgres (table ``security_verdicts``, migration 0003)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from convergio.security.guardian import Verdict, redact_cached

SAMPLE_CHARS = 500


def sample_of(text: str, verdict: Verdict | None = None) -> str:
    """The first 500 characters of the redacted text (never a raw secret)."""
    redacted = verdict.redacted if verdict is not None and verdict.redacted is not None else redact_cached(text)
    return redacted[:SAMPLE_CHARS]


VERDICT_COLUMNS: LiteralString = (
    "(workflow_id, step_id, surface, tenant, decision, action, score, categories, reasons, sample)"
)
VERDICT_VALUES: LiteralString = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"  # one row of VerdictRecord.params()
# Any number of verdicts as one parameter, a JSON array of ``VerdictRecord.row()``: one statement
# text for every count, short enough for psycopg to cache and prepare.
VERDICT_ROWS_SQL: LiteralString = (
    "INSERT INTO security_verdicts " + VERDICT_COLUMNS + " SELECT " + VERDICT_COLUMNS.strip("()")
    + " FROM jsonb_populate_recordset(NULL::security_verdicts, %s::jsonb)"
)
_INSERT: LiteralString = "INSERT INTO security_verdicts " + VERDICT_COLUMNS + " VALUES " + VERDICT_VALUES + " RETURNING id"
_INSERT_NO_ID: LiteralString = "INSERT INTO security_verdicts " + VERDICT_COLUMNS + " VALUES " + VERDICT_VALUES


@dataclass(frozen=True)
class VerdictRecord:
    """One verdict to log, with where it was given."""

    workflow_id: str
    step_id: str | None
    surface: str
    tenant: str
    verdict: Verdict
    text: str
    action: str | None = None

    def params(self) -> tuple[Any, ...]:
        """The values of one ``VERDICT_VALUES`` row."""
        row = self.row()
        return tuple(Jsonb(value) if column == "reasons" else value for column, value in row.items())

    def row(self) -> dict[str, Any]:
        """Column → value, in ``VERDICT_COLUMNS`` order (JSON-ready, for ``VERDICT_ROWS_SQL``)."""
        verdict = self.verdict
        return {
            "workflow_id": self.workflow_id, "step_id": self.step_id, "surface": self.surface, "tenant": self.tenant,
            "decision": verdict.decision, "action": self.action, "score": verdict.score,
            "categories": list(verdict.categories), "reasons": verdict.reasons, "sample": sample_of(self.text, verdict),
        }


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
        ids = await record_verdicts_on(conn, [VerdictRecord(workflow_id, step_id, surface, tenant, verdict, text, action)])
        return ids[0]


async def record_verdicts_on(
    conn: AsyncConnection[Any], records: list[VerdictRecord], *, returning: bool = True
) -> list[int]:
    """Insert verdicts on a connection the caller holds (inside its transaction); their ids,
    or with ``returning=False`` nothing (one pipelined batch, no waiting for ids)."""
    if not records:
        return []
    if not returning:
        async with conn.cursor() as cursor:
            await cursor.executemany(_INSERT_NO_ID, [record.params() for record in records])
        return []
    ids: list[int] = []
    for record in records:
        cursor = await conn.execute(_INSERT, record.params())
        row = await cursor.fetchone()
        assert row is not None
        ids.append(int(row[0]))
    return ids


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
