"""The cost ledger on the real Postgres: written once per turn, reported to the cent (and below)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from psycopg_pool import AsyncConnectionPool

from convergio.costs import ledger
from convergio.costs.pricing import TurnCost, cost_usd

D = Decimal


def _id() -> str:
    return uuid.uuid4().hex[:12]


def _turn(
    tenant: str, *, workflow_id: str | None = None, step_id: str = "analysis", turn: int = 0,
    template: str = "strategic-analysis", agent: str = "cfo", model: str = "openai:gpt-4o",
    prompt: int = 1000, completion: int = 500, quality: float | None = None,
    at: datetime | None = None, cost: Decimal | None = None,
) -> TurnCost:
    return TurnCost(
        workflow_id=workflow_id or _id(), step_id=step_id, turn=turn, tenant=tenant, template=template,
        agent=agent, model=model, prompt_tokens=prompt, completion_tokens=completion,
        cost_usd=cost if cost is not None else cost_usd(model, prompt, completion),
        quality_score=quality, at=at or datetime.now(UTC),
    )


async def test_record_is_idempotent_per_turn(db_pool: AsyncConnectionPool) -> None:
    tenant = _id()
    first = _turn(tenant, cost=D("0.12345678"))
    assert await ledger.record(db_pool, first)
    # the retried activity: same (workflow, step, turn), even if it measured differently
    retried = first.model_copy(update={"cost_usd": D("0.5"), "completion_tokens": 999})
    assert not await ledger.record(db_pool, retried)
    assert await ledger.record(db_pool, first.model_copy(update={"turn": 1}))  # the next turn is new

    async with db_pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT turn, cost_usd, completion_tokens FROM cost_ledger WHERE workflow_id = %s ORDER BY turn",
            (first.workflow_id,),
        )
        rows = await cursor.fetchall()
    assert rows == [(0, D("0.12345678"), 500), (1, D("0.12345678"), 500)]

    report = await ledger.report(db_pool, tenant=tenant)
    assert report.total_usd == D("0.24691356") and report.turns == 2


async def test_concurrent_retries_record_once(db_pool: AsyncConnectionPool) -> None:
    tenant = _id()
    turn = _turn(tenant)
    results = await asyncio.gather(*(ledger.record(db_pool, turn) for _ in range(8)))
    assert sum(results) == 1
    assert (await ledger.report(db_pool, tenant=tenant)).turns == 1


async def test_report_totals_are_exact(db_pool: AsyncConnectionPool) -> None:
    tenant = _id()
    day1 = datetime(2040, 5, 1, 9, 30, tzinfo=UTC)
    day3 = datetime(2040, 5, 3, 23, 59, 59, tzinfo=UTC)  # still 3 May in UTC
    wf1, wf2 = _id(), _id()
    turns = [
        _turn(tenant, workflow_id=wf1, turn=0, agent="cfo", model="openai:gpt-4o", at=day1,
              cost=D("0.10000001")),
        _turn(tenant, workflow_id=wf1, turn=1, agent="cto", model="openai:gpt-4o-mini", at=day1,
              cost=D("0.00000003"), prompt=10, completion=20),
        _turn(tenant, workflow_id=wf2, turn=0, agent="cfo", model="openai:gpt-4o", at=day3,
              template="due-diligence", cost=D("1.23456789")),
    ]
    for turn in turns:
        assert await ledger.record(db_pool, turn)
    # noise: another tenant, and this tenant outside the window
    await ledger.record(db_pool, _turn(_id(), at=day1, cost=D("9")))
    await ledger.record(db_pool, _turn(tenant, at=day3 + timedelta(seconds=1), cost=D("7")))

    report = await ledger.report(db_pool, tenant=tenant, since=date(2040, 5, 1), until=date(2040, 5, 3))
    assert report.total_usd == D("1.33456793")
    assert report.turns == 3
    assert report.prompt_tokens == 2010 and report.completion_tokens == 1020
    assert [(t.key, t.cost_usd, t.turns) for t in report.by_day] == [
        ("2040-05-01", D("0.10000004"), 2),
        ("2040-05-03", D("1.23456789"), 1),
    ]
    assert [(t.key, t.cost_usd) for t in report.by_tenant] == [(tenant, D("1.33456793"))]
    assert [(t.key, t.cost_usd) for t in report.by_template] == [
        ("due-diligence", D("1.23456789")),
        ("strategic-analysis", D("0.10000004")),
    ]
    assert [(t.key, t.cost_usd, t.turns) for t in report.by_agent] == [
        ("cfo", D("1.33456790"), 2),
        ("cto", D("0.00000003"), 1),
    ]
    assert [(t.key, t.cost_usd) for t in report.by_model] == [
        ("openai:gpt-4o", D("1.33456790")),
        ("openai:gpt-4o-mini", D("0.00000003")),
    ]
    # the trend is a daily series: the quiet day in between is there, at zero
    assert [(p.day, p.cost_usd, p.turns, p.cumulative_usd) for p in report.trend] == [
        (date(2040, 5, 1), D("0.10000004"), 2, D("0.10000004")),
        (date(2040, 5, 2), D("0"), 0, D("0.10000004")),
        (date(2040, 5, 3), D("1.23456789"), 1, D("1.33456793")),
    ]

    one_day = await ledger.report(db_pool, tenant=tenant, since=date(2040, 5, 3), until=date(2040, 5, 3))
    assert one_day.total_usd == D("1.23456789") and [p.day for p in one_day.trend] == [date(2040, 5, 3)]
    everything = await ledger.report(db_pool, tenant=tenant)
    assert everything.total_usd == D("8.33456793")
    assert everything.trend[-1].day == date(2040, 5, 4)
    empty = await ledger.report(db_pool, tenant=_id())
    assert empty.total_usd == 0 and empty.turns == 0 and empty.trend == [] and empty.by_day == []
    assert ledger.CostReport.model_validate_json(report.model_dump_json()) == report


async def test_report_across_tenants(db_pool: AsyncConnectionPool) -> None:
    # a day of its own, so other tests' rows stay out of the all-tenant report
    day = date(2100, 1, 1) + timedelta(days=random.randrange(300_000))
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    acme, globex = _id(), _id()
    await ledger.record(db_pool, _turn(acme, at=at, cost=D("0.5")))
    await ledger.record(db_pool, _turn(acme, at=at, cost=D("0.25")))
    await ledger.record(db_pool, _turn(globex, at=at, cost=D("2")))
    report = await ledger.report(db_pool, tenant=None, since=day, until=day)
    assert report.total_usd == D("2.75")
    assert [(t.key, t.cost_usd, t.turns) for t in report.by_tenant] == [
        (globex, D("2"), 1),
        (acme, D("0.75"), 2),
    ]


async def test_efficiency_is_quality_per_dollar(db_pool: AsyncConnectionPool) -> None:
    tenant = _id()
    await ledger.record(db_pool, _turn(tenant, agent="cfo", model="m:big", cost=D("0.02"), quality=8.0))
    await ledger.record(db_pool, _turn(tenant, agent="cfo", model="m:big", cost=D("0.06"), quality=9.0))
    await ledger.record(db_pool, _turn(tenant, agent="cfo", model="m:big", cost=D("0.04")))  # not scored
    await ledger.record(db_pool, _turn(tenant, agent="cto", model="m:small", cost=D("0.001")))

    report = await ledger.report(db_pool, tenant=tenant)
    by_key = {(e.agent, e.model): e for e in report.efficiency}
    cfo = by_key[("cfo", "m:big")]
    assert cfo.turns == 3 and cfo.scored_turns == 2 and cfo.cost_usd == D("0.12")
    assert cfo.avg_cost_per_turn == D("0.04") and cfo.avg_quality == 8.5
    assert cfo.quality_per_dollar is not None and abs(cfo.quality_per_dollar - 8.5 / 0.04) < 1e-9
    cto = by_key[("cto", "m:small")]
    assert cto.avg_quality is None and cto.quality_per_dollar is None

    assert await ledger.set_quality(db_pool, "no-such-workflow", "analysis", [0], 1.0) == 0
    wf = _id()
    await ledger.record(db_pool, _turn(tenant, workflow_id=wf, agent="cto", model="m:small", cost=D("0.002")))
    assert await ledger.set_quality(db_pool, wf, "analysis", [0, 5], 7.0) == 1  # turn 5 was never recorded
    again = await ledger.report(db_pool, tenant=tenant)
    cto = {(e.agent, e.model): e for e in again.efficiency}[("cto", "m:small")]
    assert cto.avg_quality == 7.0 and cto.quality_per_dollar is not None
    assert abs(cto.quality_per_dollar - 7.0 / 0.002) < 1e-6


async def test_recommendations_follow_the_data(db_pool: AsyncConnectionPool) -> None:
    tenant = _id()
    sa = "strategic-analysis"

    async def turns(step: str, agent: str, model: str, qualities: list[float], prompt: int = 2000,
                    completion: int = 800) -> None:
        for quality in qualities:
            await ledger.record(db_pool, _turn(tenant, step_id=step, agent=agent, model=model,
                                               prompt=prompt, completion=completion, quality=quality))

    # "analysis": gpt-4o-mini held quality (8.3 vs 8.6): recommended, with the saving per turn
    await turns("analysis", "cfo", "openai:gpt-4o", [8.5, 8.7])
    await turns("analysis", "cfo", "openai:gpt-4o-mini", [8.2, 8.4])
    await turns("analysis", "cfo", "openai:gpt-4.1-nano", [6.0, 7.0])  # cheaper still, but worse
    # "synthesis": the cheaper model lost a full point: no recommendation
    await turns("synthesis", "ceo", "anthropic:claude-sonnet-4-20250514", [9.0])
    await turns("synthesis", "ceo", "anthropic:claude-3-5-haiku-20241022", [8.0])
    # a step seen on one model only, and unscored turns: nothing to compare
    await turns("review", "cto", "openai:gpt-4o", [9.0])
    await ledger.record(db_pool, _turn(tenant, step_id="review", agent="cto", model="openai:gpt-4o-mini"))

    report = await ledger.report(db_pool, tenant=tenant)
    assert len(report.recommendations) == 1
    rec = report.recommendations[0]
    gpt4o = cost_usd("openai:gpt-4o", 2000, 800)
    mini = cost_usd("openai:gpt-4o-mini", 2000, 800)
    assert (rec.template, rec.step_id, rec.agent) == (sa, "analysis", "cfo")
    assert (rec.current_model, rec.recommended_model) == ("openai:gpt-4o", "openai:gpt-4o-mini")
    assert rec.current_cost_per_turn == gpt4o == D("0.013")
    assert rec.recommended_cost_per_turn == mini == D("0.00078")
    assert rec.saving_per_turn_usd == D("0.01222")
    assert abs(rec.current_avg_quality - 8.6) < 1e-9 and abs(rec.recommended_avg_quality - 8.3) < 1e-9
    assert rec.current_turns == 2 and rec.recommended_turns == 2
    assert abs(rec.saving_fraction - 0.94) < 1e-9

    # a looser tolerance lets the nano model in for both dearer ones, the cheapest wins
    loose = await ledger.report(db_pool, tenant=tenant, quality_tolerance=2.5)
    pairs = {(r.step_id, r.current_model, r.recommended_model) for r in loose.recommendations}
    assert pairs == {
        ("analysis", "openai:gpt-4o", "openai:gpt-4.1-nano"),
        ("analysis", "openai:gpt-4o-mini", "openai:gpt-4.1-nano"),
        ("synthesis", "anthropic:claude-sonnet-4-20250514", "anthropic:claude-3-5-haiku-20241022"),
    }
    assert loose.recommendations == sorted(loose.recommendations, key=lambda r: -r.saving_per_turn_usd)


async def test_dollars_print_as_plain_decimals(
    db_pool: AsyncConnectionPool, settings  # noqa: ANN001
) -> None:
    """`convergio costs` said "Total $0E-8" for a tenant without spend, and the JSON (CLI and API)
    "0E-8": str() of a quantized Decimal below a millionth of a dollar."""
    from typer.testing import CliRunner

    from convergio.cli import app

    tenant, idle = _id(), _id()
    assert await ledger.record(db_pool, _turn(tenant, cost=D("0.0000005")))
    env = {"CONVERGIO_DATABASE_URL": str(settings.database_url), "COLUMNS": "200"}

    def costs(*args: str) -> str:
        result = CliRunner().invoke(app, ["costs", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "Total $0.00000000 over 0 turns" in await asyncio.to_thread(costs, "--tenant", idle)
    shown = await asyncio.to_thread(costs, "--tenant", tenant)
    assert "Total $0.00000050 over 1 turns" in shown and "E-" not in shown, shown
    as_json = await asyncio.to_thread(costs, "--tenant", tenant, "--json")
    assert '"total_usd": "0.00000050"' in as_json and "E-" not in as_json, as_json


def test_costs_refuses_a_range_the_report_should_not_be_asked_for() -> None:
    """`GET /costs` checked the range and the CLI did not: `--since 0001-01-01 --until 9999-12-31`
    kept a CPU busy for over a minute (a row per day), and a reversed range printed empty tables."""
    from typer.testing import CliRunner

    from convergio.cli import app

    for args, says in [(["--since", "0001-01-01", "--until", "9999-12-31"], "since must be between"),
                       (["--since", "2030-01-01", "--until", "2020-01-01"], "since must not be after until")]:
        unreachable = {"CONVERGIO_DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}  # never asked
        result = CliRunner().invoke(app, ["costs", *args], env=unreachable)
        assert result.exit_code == 1 and f"--since/--until: {says}" in result.stderr, result.stderr


async def test_costs_as_text_shows_the_trend_quality_per_dollar_and_advice(
    db_pool: AsyncConnectionPool, settings  # noqa: ANN001
) -> None:
    """README: `convergio costs` gives the daily trend, quality per dollar and cheaper-model
    recommendations. As text it showed none of the first two and the advice as raw JSON."""
    from typer.testing import CliRunner

    from convergio.cli import app

    tenant = _id()
    for model, qualities in [("openai:gpt-4o", [8.5, 8.7]), ("openai:gpt-4o-mini", [8.2, 8.4])]:
        for quality in qualities:
            await ledger.record(db_pool, _turn(tenant, agent="cfo", model=model, prompt=2000, completion=800,
                                               quality=quality))
    env = {"CONVERGIO_DATABASE_URL": str(settings.database_url), "COLUMNS": "200"}
    result = await asyncio.to_thread(CliRunner().invoke, app, ["costs", "--tenant", tenant], env=env)
    assert result.exit_code == 0, result.output
    shown = result.stdout
    assert "daily trend" in shown and "quality per dollar" in shown and "cumulative (USD)" in shown
    assert "8.6" in shown and "8.3" in shown  # each model's average quality
    assert ("advice strategic-analysis / analysis / cfo: openai:gpt-4o-mini instead of openai:gpt-4o saves "
            "$0.01222000 a turn (94%)") in shown
    assert "{" not in shown
