"""The cost ledger in Postgres: every turn's cost recorded once, and the reports built on it.

A row's key is (workflow id, step id, turn), the same as the turn's budget reservation, so an
activity retried after a crash finds its row already there and counts nothing twice.

Days are UTC days of ``created_at`` (the turn's :attr:`~convergio.costs.pricing.TurnCost.at`).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, LiteralString

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, PlainSerializer

from convergio.costs.pricing import USD_QUANTUM, TurnCost

QUALITY_TOLERANCE = 0.5  # points of quality_score a cheaper model may lose and still be recommended


# Dollars in JSON as plain decimals: str() of a quantized Decimal switches to exponent notation
# below a millionth ("0E-8" for nothing spent).
Usd = Annotated[Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json")]


# The report has a row per day of its range: a range reaches back ten years at most.
MAX_REPORT_DAYS = 3660


def check_report_range(since: date | None, until: date | None) -> None:
    """A ValueError saying why, for a range the report should not be asked for (one from year 1 to
    9999 would be three million rows, a minute of a CPU)."""
    if since and until and since > until:
        raise ValueError("since must not be after until")
    today = date.today()
    earliest, latest = today - timedelta(days=MAX_REPORT_DAYS), today + timedelta(days=366)
    for name, day in (("since", since), ("until", until)):
        if day is not None and not earliest <= day <= latest:
            raise ValueError(f"{name} must be between {earliest} and {latest}")


def _usd(value: Decimal | int | None) -> Decimal:
    return Decimal(value or 0).quantize(USD_QUANTUM)


# --------------------------------------------------------------------------- writing


INSERT_SQL: LiteralString = """
    INSERT INTO cost_ledger (
        workflow_id, step_id, turn, tenant, template, agent, model,
        prompt_tokens, completion_tokens, cost_usd, quality_score, created_at
    )
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (workflow_id, step_id, turn) DO NOTHING
"""


async def record(pool: AsyncConnectionPool, turn_cost: TurnCost) -> bool:
    """Insert the turn's cost; ``False`` when that (workflow, step, turn) was recorded before."""
    async with pool.connection() as conn:
        return await record_on(conn, turn_cost)


async def record_on(conn: AsyncConnection[Any], turn_cost: TurnCost) -> bool:
    """:func:`record` on a connection the caller holds, inside the caller's transaction."""
    return (await insert_on(conn, turn_cost)).rowcount == 1


async def insert_on(conn: AsyncConnection[Any], turn_cost: TurnCost) -> AsyncCursor[Any]:
    """Run the insert on the caller's connection; the cursor's ``rowcount`` is 1 when the row was new."""
    return await conn.execute(INSERT_SQL, insert_params(turn_cost))


def insert_params(turn_cost: TurnCost) -> tuple[Any, ...]:
    """The parameters of :data:`INSERT_SQL` (the agent turn embeds that statement in its single
    write of turn record, verdicts and cost)."""
    return (
        turn_cost.workflow_id, turn_cost.step_id, turn_cost.turn, turn_cost.tenant,
        turn_cost.template, turn_cost.agent, turn_cost.model,
        turn_cost.prompt_tokens, turn_cost.completion_tokens, turn_cost.cost_usd,
        turn_cost.quality_score, turn_cost.at,
    )


async def set_quality(
    pool: AsyncConnectionPool, workflow_id: str, step_id: str, turns: list[int], score: float
) -> int:
    """Attach a judged quality score to recorded turns; how many of them were found."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "UPDATE cost_ledger SET quality_score = %s"
            " WHERE workflow_id = %s AND step_id = %s AND turn = ANY(%s)",
            (score, workflow_id, step_id, turns),
        )
        return cursor.rowcount


# --------------------------------------------------------------------------- the report


class CostTotal(BaseModel):
    key: str = Field(description="The day (YYYY-MM-DD), tenant, template, agent or model.")
    cost_usd: Usd
    turns: int
    prompt_tokens: int
    completion_tokens: int


class TrendPoint(BaseModel):
    day: date
    cost_usd: Usd
    turns: int
    cumulative_usd: Usd


class Efficiency(BaseModel):
    """Quality per dollar of one agent on one model."""

    agent: str
    model: str
    turns: int
    cost_usd: Usd
    avg_cost_per_turn: Usd
    scored_turns: int
    avg_quality: float | None = Field(description="Average quality_score; None without scored turns.")
    quality_per_dollar: float | None = Field(
        description="avg_quality / average cost of a scored turn; None without quality data or cost."
    )


class Recommendation(BaseModel):
    """A cheaper model that held quality on the same template step and agent."""

    template: str
    step_id: str
    agent: str
    current_model: str
    recommended_model: str
    current_avg_quality: float
    recommended_avg_quality: float
    current_cost_per_turn: Usd
    recommended_cost_per_turn: Usd
    saving_per_turn_usd: Usd
    saving_fraction: float = Field(description="saving_per_turn_usd / current_cost_per_turn.")
    current_turns: int
    recommended_turns: int


class CostReport(BaseModel):
    tenant: str | None
    since: date | None
    until: date | None
    total_usd: Usd
    turns: int
    prompt_tokens: int
    completion_tokens: int
    by_day: list[CostTotal]
    by_tenant: list[CostTotal]
    by_template: list[CostTotal]
    by_agent: list[CostTotal]
    by_model: list[CostTotal]
    trend: list[TrendPoint] = Field(description="Every day of the range, days without turns at 0.")
    efficiency: list[Efficiency]
    recommendations: list[Recommendation]


# The rows a report covers; every query below starts from it.
_SCOPED: LiteralString = """
    scoped AS (
        SELECT *, (created_at AT TIME ZONE 'UTC')::date AS day
        FROM cost_ledger
        WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text)
          AND (%(since)s::date IS NULL OR created_at >= (%(since)s::date::timestamp AT TIME ZONE 'UTC'))
          AND (%(until)s::date IS NULL OR created_at < ((%(until)s::date + 1)::timestamp AT TIME ZONE 'UTC'))
    )
"""

_TOTALS: LiteralString = """
    WITH {scoped}
    SELECT {column}::text AS key,
           sum(cost_usd) AS cost_usd,
           count(*) AS turns,
           sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens
    FROM scoped
    GROUP BY {column}
    ORDER BY {order}
"""

_TREND: LiteralString = """
    WITH {scoped},
    bounds AS (
        SELECT coalesce(%(since)s::date, min(day)) AS first_day,
               coalesce(%(until)s::date, max(day)) AS last_day
        FROM scoped
    ),
    days AS (
        SELECT generate_series(first_day, last_day, interval '1 day')::date AS day
        FROM bounds
        WHERE first_day IS NOT NULL AND last_day IS NOT NULL
    )
    SELECT days.day,
           coalesce(sum(scoped.cost_usd), 0) AS cost_usd,
           count(scoped.workflow_id) AS turns
    FROM days
    LEFT JOIN scoped ON scoped.day = days.day
    GROUP BY days.day
    ORDER BY days.day
"""

_EFFICIENCY: LiteralString = """
    WITH {scoped}
    SELECT agent,
           model,
           count(*) AS turns,
           sum(cost_usd) AS cost_usd,
           count(quality_score) AS scored_turns,
           avg(quality_score) AS avg_quality,
           sum(cost_usd) FILTER (WHERE quality_score IS NOT NULL) AS scored_cost_usd
    FROM scoped
    GROUP BY agent, model
    ORDER BY agent, model
"""

# Per template step, agent and model: what a turn costs on average (all turns) and how good it
# was on average (scored turns only).
_MODEL_CHOICES: LiteralString = """
    WITH {scoped}
    SELECT template,
           step_id,
           agent,
           model,
           count(*) AS turns,
           sum(cost_usd) AS cost_usd,
           count(quality_score) AS scored_turns,
           avg(quality_score) AS avg_quality
    FROM scoped
    GROUP BY template, step_id, agent, model
    HAVING count(quality_score) > 0
    ORDER BY template, step_id, agent, model
"""

_TOTAL_COLUMNS = {
    "day": ("day", "key"),
    "tenant": ("tenant", "cost_usd DESC, key"),
    "template": ("template", "cost_usd DESC, key"),
    "agent": ("agent", "cost_usd DESC, key"),
    "model": ("model", "cost_usd DESC, key"),
}


def _query(template: LiteralString, **parts: LiteralString) -> sql.SQL:
    return sql.SQL(template.format(scoped=_SCOPED, **parts))


async def report(
    pool: AsyncConnectionPool,
    *,
    tenant: str | None = None,
    since: date | None = None,
    until: date | None = None,
    quality_tolerance: float = QUALITY_TOLERANCE,
) -> CostReport:
    """Spend between ``since`` and ``until`` (UTC days, both included; ``None``: open) of one
    tenant (``None``: all)."""
    params: dict[str, Any] = {"tenant": tenant, "since": since, "until": until}
    async with pool.connection() as conn:
        totals: dict[str, list[CostTotal]] = {}
        for name, (column, order) in _TOTAL_COLUMNS.items():
            query = _query(_TOTALS, column=column, order=order)  # type: ignore[arg-type]
            cursor = await conn.execute(query, params)
            totals[name] = [
                CostTotal(
                    key=key, cost_usd=_usd(cost), turns=turns,
                    prompt_tokens=int(prompt), completion_tokens=int(completion),
                )
                for key, cost, turns, prompt, completion in await cursor.fetchall()
            ]
        cursor = await conn.execute(_query(_TREND), params)
        trend_rows = await cursor.fetchall()
        cursor = await conn.execute(_query(_EFFICIENCY), params)
        efficiency_rows = await cursor.fetchall()
        cursor = await conn.execute(_query(_MODEL_CHOICES), params)
        choice_rows = await cursor.fetchall()

    trend: list[TrendPoint] = []
    cumulative = Decimal(0)
    for day, cost, turns in trend_rows:
        cumulative += cost
        trend.append(TrendPoint(day=day, cost_usd=_usd(cost), turns=turns, cumulative_usd=_usd(cumulative)))

    efficiency = []
    for agent, model, turns, cost, scored, avg_quality, scored_cost in efficiency_rows:
        per_dollar = None
        if scored and avg_quality is not None and scored_cost:
            per_dollar = float(avg_quality) / float(Decimal(scored_cost) / scored)
        efficiency.append(
            Efficiency(
                agent=agent, model=model, turns=turns, cost_usd=_usd(cost),
                avg_cost_per_turn=_usd(Decimal(cost) / turns), scored_turns=scored,
                avg_quality=None if avg_quality is None else float(avg_quality),
                quality_per_dollar=per_dollar,
            )
        )

    by_day = totals["day"]
    return CostReport(
        tenant=tenant,
        since=since,
        until=until,
        total_usd=_usd(sum((t.cost_usd for t in by_day), Decimal(0))),
        turns=sum(t.turns for t in by_day),
        prompt_tokens=sum(t.prompt_tokens for t in by_day),
        completion_tokens=sum(t.completion_tokens for t in by_day),
        by_day=by_day,
        by_tenant=totals["tenant"],
        by_template=totals["template"],
        by_agent=totals["agent"],
        by_model=totals["model"],
        trend=trend,
        efficiency=efficiency,
        recommendations=recommend(choice_rows, quality_tolerance),
    )


def recommend(
    rows: list[tuple[Any, ...]], quality_tolerance: float = QUALITY_TOLERANCE
) -> list[Recommendation]:
    """For each template step and agent, every model that has a cheaper one whose average
    quality is at most ``quality_tolerance`` points lower gets the cheapest such one.

    ``rows``: (template, step_id, agent, model, turns, cost_usd, scored_turns, avg_quality)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for template, step_id, agent, model, turns, cost, scored, avg_quality in rows:
        groups[(template, step_id, agent)].append({
            "model": model,
            "turns": turns,
            "cost_per_turn": Decimal(cost) / turns,
            "quality": float(avg_quality),
        })
    found: list[Recommendation] = []
    for (template, step_id, agent), models in groups.items():
        for current in models:
            candidates = [
                other for other in models
                if other["cost_per_turn"] < current["cost_per_turn"]
                and other["quality"] >= current["quality"] - quality_tolerance
            ]
            if not candidates:
                continue
            best = min(candidates, key=lambda m: (m["cost_per_turn"], -m["quality"], m["model"]))
            current_cost = _usd(current["cost_per_turn"])
            best_cost = _usd(best["cost_per_turn"])
            saving = current_cost - best_cost
            found.append(
                Recommendation(
                    template=template, step_id=step_id, agent=agent,
                    current_model=current["model"], recommended_model=best["model"],
                    current_avg_quality=current["quality"], recommended_avg_quality=best["quality"],
                    current_cost_per_turn=current_cost, recommended_cost_per_turn=best_cost,
                    saving_per_turn_usd=saving,
                    saving_fraction=float(saving / current_cost) if current_cost else 0.0,
                    current_turns=current["turns"], recommended_turns=best["turns"],
                )
            )
    found.sort(key=lambda r: (-r.saving_per_turn_usd, r.template, r.step_id, r.agent, r.current_model))
    return found
