"""Budget benchmark: what reserving and committing a turn's cost adds to every turn.

Run as a file::

    .venv/bin/python bench/budget.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with (among others)
``reserve_commit_p50_ms`` and ``reserve_commit_p95_ms``.

Everything runs against a throw-away embedded Redis (the redis-server from the pip package, a
temp dir, a free port), stopped at the end even on error.

Method
------
A turn's budget overhead is ``RedisBudget.reserve`` then ``RedisBudget.commit`` (two Lua
scripts, two round trips), timed together with ``perf_counter`` around the awaits.

1. Sequential: one client, N turns one after the other (N = 2000; 300 with ``--quick``), spread
   over 50 workflows of one tenant under the default limits (daily raised so nothing is refused:
   refusals are cheaper and would flatter the numbers). The first 50 turns warm up (script
   load, connections) and are not counted. ``ping_p50_ms`` is a bare ``PING`` round trip on the
   same connection, the floor two round trips cannot beat.
2. Concurrent: 8 clients (own connections, as 8 workers would have) each running N/8 turns at
   once against the same tenant and day, so every script contends on the same keys. Per-turn
   latency p50/p95 and the aggregate turns/s.
   All 8 clients share this process's one event loop, so their latency includes waiting for
   it (client-side CPU: RESP parsing, result models); ``server_us_per_script`` (Redis
   ``INFO commandstats``, mean over all script calls) is what a script costs Redis itself.
3. Check: the committed total equals the sum of the actual costs (exact, micro-dollars).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from harness import percentile, progress, run_bench  # noqa: E402 - bench/ is this file's folder

DAY = "2031-01-01"
WORKFLOWS = 50
CLIENTS = 8
WARMUP = 50


log = progress("budget")




async def turns(budget: Any, limits: Any, tenant: str, worker: int, count: int, rng: random.Random,
                actuals: list[Decimal]) -> tuple[list[float], list[float], list[float]]:
    """``count`` reserve + commit pairs; (total, reserve, commit) milliseconds per turn."""
    from convergio.costs.budget import reservation_id

    total_ms, reserve_ms, commit_ms = [], [], []
    for turn in range(count):
        workflow_id = f"{tenant}-wf-{worker}-{turn % WORKFLOWS}"
        rid = reservation_id(workflow_id, "step", turn, 1)
        estimate = Decimal(rng.randint(1_000, 20_000)) / 1_000_000
        actual = (estimate * Decimal(str(rng.uniform(0.5, 1.0)))).quantize(Decimal("0.000001"))
        started = time.perf_counter()
        held = await budget.reserve(rid, tenant, workflow_id, DAY, estimate, limits)
        reserved = time.perf_counter()
        done = await budget.commit(rid, tenant, workflow_id, DAY, actual)
        finished = time.perf_counter()
        if not held.granted or not done.committed:
            raise RuntimeError(f"turn {rid} was refused or not committed: {held} {done}")
        actuals.append(actual)
        total_ms.append((finished - started) * 1000)
        reserve_ms.append((reserved - started) * 1000)
        commit_ms.append((finished - reserved) * 1000)
    return total_ms, reserve_ms, commit_ms


async def run(quick: bool) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from convergio.costs.budget import BudgetLimits, RedisBudget
    from convergio.stack.process import free_port
    from convergio.stack.redis_server import EmbeddedRedis

    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    count = 300 if quick else 2000
    rng = random.Random(42)
    # Workflow limit raised too: 50 workflows share the turns, none may run dry.
    limits = BudgetLimits(daily_usd=Decimal("1000000"), workflow_usd=Decimal("1000000"))

    with tempfile.TemporaryDirectory(prefix="convergio-bench-budget-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port())
        clients: list[Any] = []
        try:
            clock = time.perf_counter()
            await server.start()
            log(f"redis up in {time.perf_counter() - clock:.1f}s")
            clients = [aioredis.Redis.from_url(server.url) for _ in range(CLIENTS)]

            # 1. sequential
            budget = RedisBudget(clients[0])
            sequential_actuals: list[Decimal] = []
            await turns(budget, limits, "bench-seq", 99, WARMUP, rng, sequential_actuals)  # warm-up
            ping_ms = []
            for _ in range(200):
                started = time.perf_counter()
                await clients[0].ping()
                ping_ms.append((time.perf_counter() - started) * 1000)
            clock = time.perf_counter()
            total, reserve, commit = await turns(
                budget, limits, "bench-seq", 0, count, rng, sequential_actuals
            )
            sequential_s = time.perf_counter() - clock
            log(f"sequential: {count} turns in {sequential_s:.2f}s, p50 {percentile(total, 0.5):.3f} ms, "
                f"p95 {percentile(total, 0.95):.3f} ms (ping p50 {percentile(ping_ms, 0.5):.3f} ms)")
            spent = await budget.spent("bench-seq", DAY)
            if spent != sum(sequential_actuals):
                raise RuntimeError(f"sequential: committed {spent} != actuals {sum(sequential_actuals)}")

            # 2. concurrent
            per_client = max(1, count // CLIENTS)
            concurrent_actuals: list[Decimal] = []
            budgets = [RedisBudget(client) for client in clients]
            # TaskGroup: a failing client cancels the others before the connections close.
            async with asyncio.TaskGroup() as group:
                for i, b in enumerate(budgets):
                    group.create_task(turns(b, limits, "bench-warm", i, 10, random.Random(i), []))
            clock = time.perf_counter()
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        turns(b, limits, "bench-conc", i, per_client, random.Random(1000 + i),
                              concurrent_actuals)
                    )
                    for i, b in enumerate(budgets)
                ]
            concurrent_s = time.perf_counter() - clock
            results = [task.result() for task in tasks]
            concurrent = [ms for result in results for ms in result[0]]
            log(f"concurrent: {CLIENTS} clients x {per_client} turns in {concurrent_s:.2f}s, "
                f"p50 {percentile(concurrent, 0.5):.3f} ms, p95 {percentile(concurrent, 0.95):.3f} ms")
            stats = await clients[0].info("commandstats")
            script_us = stats.get("cmdstat_evalsha", {}).get("usec_per_call", float("nan"))
            log(f"redis: {script_us} us of server time per script call (reserve or commit)")
            spent = await budgets[0].spent("bench-conc", DAY)
            if spent != sum(concurrent_actuals):
                raise RuntimeError(f"concurrent: committed {spent} != actuals {sum(concurrent_actuals)}")
        finally:
            for client in clients:
                await client.aclose()
            server.stop()

    return {
        "reserve_commit_p50_ms": round(percentile(total, 0.5), 3),
        "reserve_commit_p95_ms": round(percentile(total, 0.95), 3),
        "reserve_commit_mean_ms": round(statistics.fmean(total), 3),
        "reserve_p50_ms": round(percentile(reserve, 0.5), 3),
        "commit_p50_ms": round(percentile(commit, 0.5), 3),
        "ping_p50_ms": round(percentile(ping_ms, 0.5), 3),
        "sequential_turns_per_s": round(count / sequential_s, 1),
        "server_us_per_script": script_us,
        "concurrent_clients": CLIENTS,
        "concurrent_reserve_commit_p50_ms": round(percentile(concurrent, 0.5), 3),
        "concurrent_reserve_commit_p95_ms": round(percentile(concurrent, 0.95), 3),
        "concurrent_turns_per_s": round(len(concurrent) / concurrent_s, 1),
        "turns_measured": len(total),
        "concurrent_turns_measured": len(concurrent),
        "totals_exact": True,
        "quick": quick,
    }



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 turns instead of 2000: a few seconds")
    run_bench("budget", parser, lambda args: run(args.quick))


if __name__ == "__main__":
    main()
