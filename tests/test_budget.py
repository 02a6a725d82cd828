"""The budget hierarchy on the real Redis: atomic reservations under racing workers."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from convergio.costs.budget import (
    BudgetLimits,
    RedisBudget,
    ReservationResult,
    reservation_id,
    resolve_limits,
    to_micros,
)

DAY = "2031-03-14"
D = Decimal


def _budget(client: aioredis.Redis, **kwargs: object) -> RedisBudget:
    """A budget under its own key prefix: tests share one Redis."""
    prefix = f"test-budget:{uuid.uuid4().hex}"
    return RedisBudget(client, key_prefix=prefix, **kwargs)  # type: ignore[arg-type]


def _id() -> str:
    return uuid.uuid4().hex[:12]


# --------------------------------------------------------------------------- limits


def test_limits_defaults_and_decimal_safety() -> None:
    limits = BudgetLimits()
    assert (limits.daily_usd, limits.workflow_usd, limits.turn_spike_fraction) == (D("50"), D("5"), D("0.10"))
    assert limits.turn_spike_usd == D("5.000")
    # floats mean their decimal text: not 0.0300000000000000016...
    assert BudgetLimits(daily_usd=0.1, turn_spike_fraction=0.3).turn_spike_usd == D("0.03")
    assert BudgetLimits(daily_usd=None).turn_spike_usd is None
    with pytest.raises(ValueError):
        BudgetLimits(daily_usd=-1)
    with pytest.raises(ValueError):
        BudgetLimits(turn_spike_fraction=0)


def test_resolve_limits_tenant_then_template() -> None:
    defaults = BudgetLimits()
    tenants = {"acme": {"daily_usd": "200"}, "tiny": BudgetLimits(daily_usd=D("5"))}
    templates = {
        "due-diligence": {"workflow_usd": 20, "turn_spike_fraction": "0.25"},
        "open": {"workflow_usd": None},
    }

    assert resolve_limits(defaults, tenants, templates, "other", "other") == defaults
    acme = resolve_limits(defaults, tenants, templates, "acme", "due-diligence")
    assert (acme.daily_usd, acme.workflow_usd, acme.turn_spike_fraction) == (D("200"), D("20"), D("0.25"))
    assert acme.turn_spike_usd == D("50.00")
    tiny = resolve_limits(defaults, tenants, templates, "tiny", "strategic-analysis")
    # a BudgetLimits override replaces only the fields it was given
    assert (tiny.daily_usd, tiny.workflow_usd, tiny.turn_spike_fraction) == (D("5"), D("5"), D("0.10"))
    assert resolve_limits(defaults, tenants, templates, "acme", "open").workflow_usd is None
    assert resolve_limits(defaults, None, None, "acme", "open") == defaults
    with pytest.raises(ValueError, match="daily_limit"):
        resolve_limits(defaults, {"acme": {"daily_limit": 1}}, {}, "acme", "x")


# --------------------------------------------------------------------------- basics


async def test_reserve_then_commit(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    rid = reservation_id(wf, "analysis", 0, 1)
    assert rid == f"{wf}:analysis:0"

    held = await budget.reserve(rid, tenant, wf, DAY, D("0.25"), BudgetLimits())
    assert held.granted and held.reason == "ok" and not held.retryable and not held.already_committed
    assert (held.daily_committed, held.daily_reserved) == (0, D("0.25"))
    assert (held.workflow_committed, held.workflow_reserved) == (0, D("0.25"))
    assert held.remaining_daily == D("49.75")

    done = await budget.commit(rid, tenant, wf, DAY, D("0.1234567"))
    assert done.committed and done.reservation_found and done.reserved_usd == D("0.25")
    # Redis keeps micro-dollars, rounded up: never under-counts
    assert done.daily_committed == D("0.123457") and done.daily_reserved == 0
    assert done.workflow_committed == D("0.123457") and done.workflow_reserved == 0
    assert await budget.spent(tenant, DAY) == D("0.123457")
    assert await budget.workflow_spent(wf) == D("0.123457")
    assert await budget.reserved(tenant, DAY) == 0
    assert await budget.spent(tenant, "2031-03-15") == 0  # another day
    assert await budget.spent(_id(), DAY) == 0


async def test_release_frees_the_hold(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    limits = BudgetLimits(daily_usd=D("1"), turn_spike_fraction=None)
    assert (await budget.reserve(f"{wf}:a:0", tenant, wf, DAY, D("0.8"), limits)).granted
    assert not (await budget.reserve(f"{wf}:a:1", tenant, wf, DAY, D("0.3"), limits)).granted
    assert await budget.release(f"{wf}:a:0", tenant, wf, DAY)
    assert not await budget.release(f"{wf}:a:0", tenant, wf, DAY)  # already gone
    again = await budget.reserve(f"{wf}:a:1", tenant, wf, DAY, D("0.3"), limits)
    assert again.granted and again.daily_reserved == D("0.3")
    assert await budget.spent(tenant, DAY) == 0


async def test_unlimited_levels(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    limits = BudgetLimits(daily_usd=None, workflow_usd=None)
    held = await budget.reserve(f"{wf}:a:0", tenant, wf, DAY, D("1000000"), limits)
    assert held.granted and held.remaining_daily is None


# --------------------------------------------------------------------------- the race


async def _race(
    redis_url: str, *, racers: int, spread: float, seed: int, limit: D, already_spent: D
) -> dict[str, object]:
    """``racers`` workflows, each on its own Redis connection (its own worker), loop
    reserve -> (model call) -> commit until the budget refuses them for good."""
    rng = random.Random(seed)
    tenant = _id()
    workers = [aioredis.Redis.from_url(redis_url) for _ in range(racers)]
    prefix = f"test-budget:{uuid.uuid4().hex}"
    limits = BudgetLimits(daily_usd=limit, workflow_usd=D("5"))
    actuals: list[D] = []
    estimates: list[D] = []
    refusals: Counter[str] = Counter()
    in_flight = 0
    max_in_flight = 0

    setup = RedisBudget(workers[0], key_prefix=prefix)
    await setup.commit("earlier:turn:0", tenant, "earlier", DAY, already_spent)

    async def racer(index: int) -> None:
        nonlocal in_flight, max_in_flight
        budget = RedisBudget(workers[index], key_prefix=prefix)
        wf = f"wf-{index}-{_id()}"
        turn = 0
        for _ in range(5000):
            estimate = D(rng.randint(10_000, 60_000)) / 1_000_000  # $0.01 .. $0.06
            rid = reservation_id(wf, "step", turn, 1)
            held = await budget.reserve(rid, tenant, wf, DAY, estimate, limits, ttl_s=60)
            if not held.granted:
                refusals[f"{held.reason}{'/retry' if held.retryable else ''}"] += 1
                if held.retryable:
                    await asyncio.sleep(rng.uniform(0, 0.002))
                    continue
                return
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
            await asyncio.sleep(rng.uniform(0, 0.003))  # the model answers
            factor = D(str(rng.uniform(1 - spread, 1 + spread)))
            actual = (estimate * factor).quantize(D("0.000001"))
            estimates.append(estimate)
            actuals.append(actual)
            in_flight -= 1
            done = await budget.commit(rid, tenant, wf, DAY, actual)
            assert done.committed and done.reservation_found
            turn += 1
        raise AssertionError("racer never got a final refusal")

    try:
        await asyncio.gather(*(racer(i) for i in range(racers)))
        spent = await setup.spent(tenant, DAY)
        reserved = await setup.reserved(tenant, DAY)
    finally:
        for worker in workers:
            await worker.aclose()
    return {
        "spent": spent, "reserved": reserved, "actuals": actuals, "estimates": estimates,
        "refusals": refusals, "max_in_flight": max_in_flight,
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_twenty_workflows_race_for_the_last_dollar(redis_url: str, seed: int) -> None:
    """Actual costs differ from the estimates by up to ±50%: committed spend never ends more than
    one turn's actual cost above the daily limit, and every dollar is counted exactly once."""
    limit, before = D("50"), D("49")
    result = await _race(redis_url, racers=20, spread=0.5, seed=seed, limit=limit, already_spent=before)
    spent, actuals = result["spent"], result["actuals"]
    assert isinstance(spent, D) and isinstance(actuals, list)

    assert result["max_in_flight"] > 5, "the racers did not actually overlap"
    assert spent == before + sum(actuals)  # counted exactly once, no drift
    assert result["reserved"] == 0  # every hold was committed
    assert spent <= limit + max(actuals), (spent, max(actuals), result["refusals"])
    # ... and the last dollar was used: each racer stopped only when its turn no longer fit
    assert spent > limit - D("0.06")
    refusals = result["refusals"]
    assert isinstance(refusals, Counter)
    assert refusals["daily_limit"] == 20  # every racer's last word


async def test_race_with_upper_bound_estimates_never_overruns(redis_url: str) -> None:
    """When estimates are upper bounds (max completion tokens priced), the limit holds exactly."""
    limit, before = D("50"), D("49")
    result = await _race(redis_url, racers=20, spread=0.0, seed=7, limit=limit, already_spent=before)
    # spread 0: actual == estimate, the worst case an upper-bound estimate allows
    spent = result["spent"]
    assert isinstance(spent, D)
    assert spent <= limit
    assert spent == before + sum(result["actuals"])  # type: ignore[arg-type]
    assert spent > limit - D("0.06")


async def test_the_tail_is_spent_one_turn_at_a_time(redis_client: aioredis.Redis) -> None:
    """Near the limit a turn waits for those in flight (retryable) instead of risking an overrun;
    with no margin the plain rule committed + reserved + estimate <= limit applies."""
    tenant, wf = _id(), _id()
    limits = BudgetLimits(daily_usd=D("1"), turn_spike_fraction=None)
    budget = _budget(redis_client)
    assert (await budget.reserve(f"{wf}:a:0", tenant, wf, DAY, D("0.4"), limits)).granted
    second = await budget.reserve(f"{wf}:b:0", tenant, wf, DAY, D("0.4"), limits)
    assert not second.granted and second.reason == "daily_limit" and second.retryable
    await budget.commit(f"{wf}:a:0", tenant, wf, DAY, D("0.45"))
    assert (await budget.reserve(f"{wf}:b:0", tenant, wf, DAY, D("0.4"), limits)).granted  # alone now

    plain = _budget(redis_client, underestimate_margin=0)
    tenant = _id()
    assert (await plain.reserve(f"{wf}:a:0", tenant, wf, DAY, D("0.4"), limits)).granted
    assert (await plain.reserve(f"{wf}:b:0", tenant, wf, DAY, D("0.4"), limits)).granted
    third = await plain.reserve(f"{wf}:c:0", tenant, wf, DAY, D("0.4"), limits)
    assert not third.granted and third.retryable  # fits once the others settle below estimate
    final = await plain.reserve(f"{wf}:d:0", tenant, wf, DAY, D("1.01"), limits)
    assert not final.granted and not final.retryable  # can never fit


# --------------------------------------------------------------------------- failures


async def test_dead_workers_reservation_expires(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, dead_wf, live_wf = _id(), _id(), _id()
    limits = BudgetLimits(daily_usd=D("1"), workflow_usd=D("1"), turn_spike_fraction=None)

    dead = await budget.reserve(f"{dead_wf}:a:0", tenant, dead_wf, DAY, D("0.9"), limits, ttl_s=1)
    assert dead.granted  # ... and its worker dies: no commit, no release

    blocked = await budget.reserve(f"{live_wf}:a:0", tenant, live_wf, DAY, D("0.3"), limits)
    assert not blocked.granted and blocked.reason == "daily_limit" and blocked.retryable
    assert blocked.daily_reserved == D("0.9")

    await asyncio.sleep(1.2)
    freed = await budget.reserve(f"{live_wf}:a:0", tenant, live_wf, DAY, D("0.3"), limits)
    assert freed.granted and freed.daily_reserved == D("0.3")  # the dead hold was purged
    # the dead workflow's own hold is gone too: its retry holds only what it asks for now
    retry = await budget.reserve(f"{dead_wf}:a:0", tenant, dead_wf, DAY, D("0.2"), limits)
    assert retry.granted and retry.workflow_reserved == D("0.2") and retry.daily_reserved == D("0.5")


async def test_retried_turn_is_counted_once(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    limits = BudgetLimits()
    rid = reservation_id(wf, "analysis", 2, 1)

    first = await budget.reserve(rid, tenant, wf, DAY, D("0.3"), limits)
    again = await budget.reserve(rid, tenant, wf, DAY, D("0.3"), limits)  # retried before commit
    assert first.granted and again.granted and again.daily_reserved == D("0.3")  # one hold, not two

    done = await budget.commit(rid, tenant, wf, DAY, D("0.25"))
    twice = await budget.commit(rid, tenant, wf, DAY, D("0.25"))  # retried after commit
    assert done.committed and not twice.committed and not twice.reservation_found
    assert twice.daily_committed == D("0.25")
    assert await budget.spent(tenant, DAY) == D("0.25")
    assert await budget.workflow_spent(wf) == D("0.25")

    after = await budget.reserve(rid, tenant, wf, DAY, D("0.3"), limits)  # retried activity re-runs
    assert after.granted and after.already_committed and after.daily_reserved == 0

    racing = await asyncio.gather(*(budget.commit(rid, tenant, wf, DAY, D("0.25")) for _ in range(10)))
    assert not any(r.committed for r in racing)
    assert await budget.spent(tenant, DAY) == D("0.25")


async def test_concurrent_duplicate_commits_count_once(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    rid = reservation_id(wf, "s", 0, 1)
    await budget.reserve(rid, tenant, wf, DAY, D("0.5"), BudgetLimits())
    results = await asyncio.gather(*(budget.commit(rid, tenant, wf, DAY, D("0.5")) for _ in range(20)))
    assert sum(r.committed for r in results) == 1
    assert await budget.spent(tenant, DAY) == D("0.5")


async def test_commit_after_expiry_still_counts(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    rid = reservation_id(wf, "slow", 0, 1)
    await budget.reserve(rid, tenant, wf, DAY, D("0.5"), BudgetLimits(), ttl_s=0.2)
    await asyncio.sleep(0.4)
    done = await budget.commit(rid, tenant, wf, DAY, D("0.4"))
    assert done.committed and not done.reservation_found and done.reserved_usd is None
    assert await budget.spent(tenant, DAY) == D("0.4")


# --------------------------------------------------------------------------- the hierarchy


async def test_turn_spike_refused(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf = _id(), _id()
    limits = BudgetLimits(daily_usd=D("50"), workflow_usd=D("100"))  # spike at $5.00
    spike = await budget.reserve(f"{wf}:a:0", tenant, wf, DAY, D("5.000001"), limits)
    assert not spike.granted and spike.reason == "turn_spike" and not spike.retryable
    assert spike.daily_reserved == 0
    assert (await budget.reserve(f"{wf}:a:1", tenant, wf, DAY, D("5"), limits)).granted  # at the line

    looser = resolve_limits(limits, {}, {"big-report": {"turn_spike_fraction": "0.5"}}, tenant, "big-report")
    assert (await budget.reserve(f"{wf}:a:2", tenant, wf, DAY, D("6"), looser)).granted

    done = await budget.commit(f"{wf}:a:1", tenant, wf, DAY, D("7"), limits=limits)
    assert done.turn_spike  # the actual cost spiked although the estimate did not


async def test_workflow_limit_is_enforced_independently(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    tenant, wf_a, wf_b = _id(), _id(), _id()
    limits = BudgetLimits(daily_usd=D("50"), workflow_usd=D("1"))
    await budget.reserve(f"{wf_a}:s:0", tenant, wf_a, DAY, D("0.9"), limits)
    await budget.commit(f"{wf_a}:s:0", tenant, wf_a, DAY, D("0.9"))

    over = await budget.reserve(f"{wf_a}:s:1", tenant, wf_a, DAY, D("0.2"), limits)
    assert not over.granted and over.reason == "workflow_limit" and not over.retryable
    assert over.workflow_committed == D("0.9") and over.remaining_daily == D("49.1")
    other = await budget.reserve(f"{wf_b}:s:0", tenant, wf_b, DAY, D("0.2"), limits)
    assert other.granted and other.workflow_committed == 0 and other.daily_committed == D("0.9")

    # and the daily limit binds across workflows that are each within their own limit
    daily = BudgetLimits(daily_usd=D("1"), workflow_usd=D("5"), turn_spike_fraction=None)
    tenant, wf_c, wf_d = _id(), _id(), _id()
    await budget.commit(f"{wf_c}:s:0", tenant, wf_c, DAY, D("0.6"))
    refused = await budget.reserve(f"{wf_d}:s:0", tenant, wf_d, DAY, D("0.6"), daily)
    assert not refused.granted and refused.reason == "daily_limit" and not refused.retryable


async def test_tenants_are_isolated(redis_client: aioredis.Redis) -> None:
    budget = _budget(redis_client)
    acme, globex = _id(), _id()
    limits = BudgetLimits(daily_usd=D("1"), turn_spike_fraction=None)
    await budget.commit("wf-acme:s:0", acme, "wf-acme", DAY, D("1"))
    assert not (await budget.reserve("wf-acme:s:1", acme, "wf-acme", DAY, D("0.01"), limits)).granted
    other = await budget.reserve("wf-globex:s:0", globex, "wf-globex", DAY, D("0.9"), limits)
    assert other.granted and other.daily_committed == 0
    assert await budget.spent(acme, DAY) == D("1") and await budget.spent(globex, DAY) == 0
    # the same tenant on the next day starts afresh
    assert (await budget.reserve("wf-acme:s:1", acme, "wf-acme-2", "2031-03-15", D("0.5"), limits)).granted


def test_amounts_round_toward_safety() -> None:
    assert to_micros(D("0.0000001")) == 1  # amounts up
    assert to_micros(D("0.9999999"), round_up=False) == 999_999  # limits down
    assert to_micros(0.1) == 100_000


def test_reservation_result_is_serialisable() -> None:
    result = ReservationResult(
        reservation_id="w:s:0", granted=True, reason="ok", estimate_usd=D("0.1"),
        daily_committed=D(0), daily_reserved=D("0.1"), workflow_committed=D(0),
        workflow_reserved=D("0.1"), remaining_daily=D("49.9"),
    )
    assert ReservationResult.model_validate_json(result.model_dump_json()) == result


def test_a_tenants_own_template_only_tightens_the_operators_limits() -> None:
    """A custom template (registered by a tenant's operator) cannot lift the daily cap the
    operator set for the tenant; it may lower it. Shipped templates may set any limit."""
    from convergio.graphflow.runs import run_limits
    from convergio.graphflow.template import Template
    from convergio.settings import Settings

    limits = {"acme": {"daily_usd": 20}}
    settings = Settings(_env_file=None, budget_tenant_limits=limits)  # type: ignore[call-arg]

    def template(**budget: float) -> Template:
        return Template.model_validate({"name": "custom", "version": 1, "budget": budget,
                                        "steps": [{"id": "a", "agent": "cfo", "instruction": "x"}]})

    greedy = template(daily_usd=100_000, workflow_usd=100_000, turn_spike_fraction=1)
    operator_set = run_limits(settings, template(), "acme")
    assert run_limits(settings, greedy, "acme", may_loosen=False) == operator_set
    assert run_limits(settings, greedy, "acme").daily_usd == D("100000")  # a shipped template may
    modest = run_limits(settings, template(daily_usd=5, workflow_usd=1), "acme", may_loosen=False)
    assert (modest.daily_usd, modest.workflow_usd) == (D("5"), D("1"))


async def test_a_run_counter_restored_from_what_the_run_knows_expires_again(redis_client) -> None:
    """The run's key had expired; the reserve restores its committed spend from the run's own
    count and refuses the turn, and the restored key expires like any other."""
    budget = RedisBudget(redis_client, workflow_key_ttl_s=3600)
    wf = f"wf-{uuid.uuid4()}"
    limits = BudgetLimits(daily_usd=D("100"), workflow_usd=D("5"))
    result = await budget.reserve(
        reservation_id(wf, "s", 3, 1), "acme", wf, DAY, D("0.5"), limits, workflow_spent_usd=D("4.8")
    )
    assert not result.granted and result.reason == "workflow_limit" and result.workflow_committed == D("4.8")
    assert 0 < await redis_client.ttl(f"convergio:budget:wf:{wf}") <= 3600
