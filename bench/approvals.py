"""Approval benchmark: how fast a decision resumes a run, and what parked runs cost a worker.

Run as a file::

    .venv/bin/python bench/approvals.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with (among others)
``signal_to_next_activity_p50_ms``, ``signal_to_next_activity_p95_ms`` and
``parked_1000_worker_mb_delta``.

Everything runs against throw-away servers (Temporal dev server, PostgreSQL and Redis, started
by ``bench/engine.py``'s ``embedded_stack``: temp dirs, free ports), torn down at the end even
on error. The worker is ``build_worker``'s, in this process (and, for the capped-cache
measurement, in one child process), serving the real ``GraphFlowWorkflow`` and activities
with the offline model.

The template: an approval gate first (nothing before it, so parking a run costs one workflow
task), then one agent step that depends on it.

Method
------
1. Latency (worker with the default sticky cache of 1000, nothing else running). N runs one
   after the other: start, follow the history (long poll) until the first workflow task
   completed (the run is then parked at the gate), send ``approve``, wait for the result,
   read the history. Headline ``signal_to_next_activity_*``: the agent step's
   ``ActivityTaskStarted`` minus ``WorkflowExecutionSignaled``, both server timestamps.
   The worker takes the activity eagerly (in the reply to the workflow task that schedules
   it), so ``ActivityTaskStarted`` is when the server handed the activity over; the
   activity's code starts ``activity_started_to_code_p50_ms`` later. Extras:
   ``client_signal_to_activity_code_*``, from just before the client's ``signal`` call to the
   activity's own ``turn_started`` event (this process's clock at both ends: the worker is in
   this process), i.e. what an approver's decision waits for, signal RPC included;
   ``client_signal_to_activity_started_*`` (client clock → server clock, same host); and the
   split: signal → workflow task started (dispatch to the sticky queue), the workflow task,
   activity scheduled → started.
2. Memory. The worker's RSS (``gc.collect()`` and glibc ``malloc_trim`` first) with 0 runs
   parked, then with P runs parked at the gate, parked in 4 increments (RSS read after each).
   A run counts as parked when visibility shows its ``ConvergioPendingGates`` holding the gate
   (the workflow task that opened the gate completed, so it sits in the sticky cache); the
   bench never queries parked runs (a query would replay an evicted one).
   ``parked_1000_worker_mb_delta`` is RSS(P parked) − RSS(0), scaled to 1000 when P < 1000
   (``--quick`` parks 200 and sets ``parked_1000_extrapolated``; the growth is linear while
   everything fits in the cache, see ``rss_mb_by_parked``). A parked run holds no slot, but
   its workflow instance stays in the sticky cache until evicted: this is the cost of that
   cache. The same again with ``build_worker(..., max_cached_workflows=100)``, in a fresh child
   process (same servers, its own task queue) so that neither measurement reuses memory the
   other freed: the cap bounds what parked runs cost (``rss_mb_by_parked_cache_100``
   flattens past 100), and a run evicted from the cache is replayed from history when its
   decision comes (``approve_evicted_run_to_result_ms_cache_100``). Not extrapolated: the cap
   makes it non-linear, so ``parked_1000_worker_mb_delta_cache_100`` is null under ``--quick``.
3. Slots. Parked runs hold no worker slot: while P runs are parked (1000 in the full run, ten
   times the worker's 100 workflow-task slots and 100 activity slots), K fresh runs go
   through gate and agent step one after the other; ``fresh_run_while_parked_ms`` (start →
   result, client side, p50) sits next to ``fresh_run_no_parked_ms``, the same from phase 1.

Parked runs are terminated at the end of each phase. Caveats: the machine is shared (2 cores,
other sessions), so absolute numbers drift; latency runs go one at a time, so they show the
path's latency, not its behaviour under load. RSS holds the Rust core's per-run state as well
as Python's, plus a little client state (one handle per run); the baseline is taken after the
warm-up and latency runs, whose freed memory the first parked runs partly reuse, so the delta
leans low (``worker_kb_per_parked_workflow``, the slope over the increments, is a cross-check).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import percentile, progress, run_bench  # noqa: E402 - bench/ is this file's folder

GATE_ID = "gate"
GATE_ROLE = "executive"
TEMPLATE = {
    "name": "approval-bench",
    "version": 1,
    "steps": [
        {"id": GATE_ID, "kind": "approval", "title": "Sign off", "approvers": [GATE_ROLE]},
        {"id": "after", "agent": "strategic", "title": "After", "depends_on": [GATE_ID],
         "instruction": "Write the plan. Cover: Plan."},
    ],
}
RUN_TIMEOUT_S = 120  # one run taking longer is stuck: fail the bench instead of hanging
PARK_TIMEOUT_S = 600
CONCURRENCY = 32  # client calls in flight when starting or terminating many runs
SDK_DEFAULT_SLOTS = 100  # temporalio's fixed-size slot supplier when none is configured


log = progress("approvals")


@dataclass
class Ctx:
    client: Any
    settings: Any
    resources: Any
    template: Any
    catalog: Any


def _run_input(ctx: Ctx, tenant: str) -> Any:
    from convergio.graphflow.runs import build_run_input

    return build_run_input(ctx.template, {}, ctx.catalog, tenant=tenant, model=None)


async def _start(ctx: Ctx, run_input: Any) -> Any:
    from convergio.graphflow.runs import start_template_run
    from convergio.workflows.graphflow import GraphFlowWorkflow

    started = await start_template_run(ctx.client, ctx.settings, run_input)
    return ctx.client.get_workflow_handle_for(GraphFlowWorkflow.run, started.workflow_id)


async def _wait_parked(handle: Any) -> None:
    """Long-poll the history until the first workflow task completed: the gate is then open."""
    from temporalio.api.enums.v1 import EventType

    async for event in handle.fetch_history_events(wait_new_event=True):
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return
        if event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        ):
            break
    raise RuntimeError(f"workflow {handle.id} closed before reaching its gate")


async def _approve(handle: Any) -> None:
    from convergio.graphflow.run_models import ApprovalDecision
    from convergio.workflows.graphflow import GraphFlowWorkflow

    decision = ApprovalDecision(gate_id=GATE_ID, approver="bench", role=GATE_ROLE, comment="")
    await handle.signal(GraphFlowWorkflow.approve, decision)


async def gated_run(ctx: Ctx, run_input: Any) -> dict[str, float]:
    """One run through the gate and the agent step; its timings in ms."""
    from temporalio.api.enums.v1 import EventType

    from bench.engine import event_ms

    began = time.perf_counter()
    handle = await _start(ctx, run_input)
    await _wait_parked(handle)
    signal_sent_ms = time.time() * 1000
    await _approve(handle)
    result = await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
    run_ms = (time.perf_counter() - began) * 1000
    if result.status != "completed":
        raise RuntimeError(f"run {handle.id} ended {result.status}")

    found: dict[str, Any] = {}
    async for event in handle.fetch_history_events():
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            found.setdefault("signaled", event)
        elif "signaled" not in found:
            continue
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            found.setdefault("wft_started", event)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            found.setdefault("wft_completed", event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            found.setdefault("activity_scheduled", event)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            found.setdefault("activity_started", event)
    missing = {"signaled", "wft_started", "wft_completed", "activity_scheduled", "activity_started"} - set(found)
    if missing:
        raise RuntimeError(f"run {handle.id}: no {sorted(missing)} in its history")
    code_started = next(
        (e.at.timestamp() * 1000 for e in await ctx.resources.events.read(handle.id) if e.type == "turn_started"),
        None,
    )
    if code_started is None:
        raise RuntimeError(f"run {handle.id}: the activity published no turn_started event")
    t = {name: event_ms(event) for name, event in found.items()}
    return {
        "server": t["activity_started"] - t["signaled"],
        "client_to_code": code_started - signal_sent_ms,
        "client_to_started": t["activity_started"] - signal_sent_ms,
        "dispatch": t["wft_started"] - t["signaled"],
        "workflow_task": t["wft_completed"] - t["wft_started"],
        "activity_dispatch": t["activity_started"] - t["activity_scheduled"],
        "started_to_code": code_started - t["activity_started"],
        "run": run_ms,
    }


def _p(values: list[float], q: float) -> float:

    return round(percentile(values, q), 1)


# --------------------------------------------------------------------------- parking


async def _bounded(calls: list[Any]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Any) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def _wait_count(ctx: Ctx, tenant: str, count: int) -> None:
    """Until visibility shows ``count`` running runs of ``tenant`` with the gate pending."""
    query = (
        f"ConvergioTenant = '{tenant}' AND ConvergioPendingGates = '{GATE_ID}' "
        "AND ExecutionStatus = 'Running'"
    )
    deadline = time.monotonic() + PARK_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await ctx.client.count_workflows(query)).count >= count:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{count} runs of {tenant} never all reached the gate")


async def park_and_measure(ctx: Ctx, tenant: str, count: int, steps: int = 4) -> tuple[list[Any], list[tuple[int, int]]]:
    """Park ``count`` runs in ``steps`` increments; (parked, RSS bytes) after each."""
    from bench.engine import settled_rss

    run_input = _run_input(ctx, tenant)
    await asyncio.sleep(0.5)
    points = [(0, settled_rss())]
    handles: list[Any] = []
    for index in range(steps):
        size = count * (index + 1) // steps - len(handles)
        began = time.perf_counter()
        handles += await _bounded([lambda: _start(ctx, run_input)] * size)
        await _wait_count(ctx, tenant, len(handles))
        await asyncio.sleep(0.5)
        points.append((len(handles), settled_rss()))
        log(f"  {len(handles)} parked ({size} in {time.perf_counter() - began:.1f}s), "
            f"RSS {points[-1][1] / 2**20:.1f} MB")
    return handles, points


async def terminate(handles: list[Any]) -> None:
    began = time.perf_counter()
    await _bounded([lambda h=h: h.terminate(reason="bench done") for h in handles])
    log(f"  terminated {len(handles)} parked runs in {time.perf_counter() - began:.1f}s")


def _mb(points: list[tuple[int, int]]) -> list[float]:
    return [round(rss / 2**20, 1) for _, rss in points]


# --------------------------------------------------------------------------- phases


async def capped_cache_phase(ctx: Ctx, parked: int) -> dict[str, Any]:
    from convergio.workers.worker import build_worker

    log(f"cache 100: parking {parked} runs")
    async with build_worker(ctx.client, ctx.settings, ctx.resources, max_cached_workflows=100):
        default_input = _run_input(ctx, "default")
        for _ in range(2):  # warm-up: imports, pools, the sandbox's first module load
            await gated_run(ctx, default_input)
        handles, points = await park_and_measure(ctx, "bench-cache-100", parked)
        # An evicted run is replayed when its decision comes: one such run, end to end.
        began = time.perf_counter()
        await _approve(handles[0])
        await asyncio.wait_for(handles[0].result(), RUN_TIMEOUT_S)
        evicted_ms = (time.perf_counter() - began) * 1000
        await terminate(handles[1:])
    delta = (points[-1][1] - points[0][1]) / 2**20
    return {
        "parked_measured_worker_mb_delta_cache_100": round(delta, 1),
        "parked_1000_worker_mb_delta_cache_100": round(delta, 1) if parked == 1000 else None,
        "rss_mb_by_parked_cache_100": dict(zip([str(n) for n, _ in points], _mb(points))),
        "approve_evicted_run_to_result_ms_cache_100": round(evicted_ms, 1),
    }


async def default_cache_phase(ctx: Ctx, runs: int, parked: int, fresh: int) -> dict[str, Any]:
    from convergio.workers.worker import build_worker

    worker = build_worker(ctx.client, ctx.settings, ctx.resources)
    config = worker.config()
    default_input = _run_input(ctx, "default")
    async with worker:
        for _ in range(3):
            await gated_run(ctx, default_input)
        log(f"latency: {runs} runs, one at a time")
        began = time.perf_counter()
        timings = [await gated_run(ctx, default_input) for _ in range(runs)]
        log(f"  took {time.perf_counter() - began:.1f}s")

        log(f"default cache ({config['max_cached_workflows']}): parking {parked} runs")
        handles, points = await park_and_measure(ctx, "bench-cache-default", parked)
        log(f"slots: {fresh} fresh runs while {parked} are parked")
        while_parked = [await gated_run(ctx, default_input) for _ in range(fresh)]
        await terminate(handles)

    def col(rows: list[dict[str, float]], key: str) -> list[float]:
        return [row[key] for row in rows]

    delta_mb = (points[-1][1] - points[0][1]) / 2**20
    slope = statistics.linear_regression([n for n, _ in points], [rss for _, rss in points]).slope
    return {
        "signal_to_next_activity_p50_ms": _p(col(timings, "server"), 0.5),
        "signal_to_next_activity_p95_ms": _p(col(timings, "server"), 0.95),
        "signal_to_next_activity_max_ms": round(max(col(timings, "server")), 1),
        "client_signal_to_activity_code_p50_ms": _p(col(timings, "client_to_code"), 0.5),
        "client_signal_to_activity_code_p95_ms": _p(col(timings, "client_to_code"), 0.95),
        "client_signal_to_activity_started_p50_ms": _p(col(timings, "client_to_started"), 0.5),
        "client_signal_to_activity_started_p95_ms": _p(col(timings, "client_to_started"), 0.95),
        "signal_to_workflow_task_started_p50_ms": _p(col(timings, "dispatch"), 0.5),
        "workflow_task_p50_ms": _p(col(timings, "workflow_task"), 0.5),
        "activity_schedule_to_start_p50_ms": _p(col(timings, "activity_dispatch"), 0.5),
        "activity_started_to_code_p50_ms": _p(col(timings, "started_to_code"), 0.5),
        "latency_runs": runs,
        "parked_1000_worker_mb_delta": round(delta_mb * 1000 / parked, 1),
        "parked_1000_extrapolated": parked != 1000,
        "parked_measured": parked,
        "parked_measured_worker_mb_delta": round(delta_mb, 1),
        "worker_kb_per_parked_workflow": round(slope / 1024, 1),
        "rss_mb_by_parked": dict(zip([str(n) for n, _ in points], _mb(points))),
        "max_cached_workflows": config["max_cached_workflows"],
        "worker_workflow_task_slots": config.get("max_concurrent_workflow_tasks") or SDK_DEFAULT_SLOTS,
        "worker_activity_slots": config.get("max_concurrent_activities") or SDK_DEFAULT_SLOTS,
        "fresh_run_while_parked_ms": _p(col(while_parked, "run"), 0.5),
        "fresh_run_no_parked_ms": _p(col(timings, "run"), 0.5),
        "signal_to_next_activity_while_parked_p50_ms": _p(col(while_parked, "server"), 0.5),
        "fresh_runs_while_parked": fresh,
    }


# --------------------------------------------------------------------------- main


CHILD_SETTINGS = ("data_dir", "temporal_address", "database_url", "redis_url", "model")


async def run(quick: bool) -> dict[str, Any]:
    from bench.engine import embedded_stack

    _prepare()
    runs = 20 if quick else 100
    parked = 200 if quick else 1000
    fresh = 3 if quick else 10
    began = time.perf_counter()
    async with embedded_stack() as (client, settings, resources):
        settings = settings.model_copy(update={"temporal_task_queue": "convergio-bench-approvals"})
        log(f"stack up in {time.perf_counter() - began:.1f}s")
        main = await default_cache_phase(_ctx(client, settings, resources), runs, parked, fresh)
        capped = await _in_child(settings, parked)
    return {**main, **capped, "quick": quick}


def _prepare() -> None:
    from convergio.agents.tokens import install_offline_tiktoken_cache

    install_offline_tiktoken_cache()  # never reach a network for the tokenizer
    # SIGTERM (like Ctrl-C) cancels the run, so the servers are still stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)


def _ctx(client: Any, settings: Any, resources: Any) -> Ctx:
    from convergio.agents.catalog import default_catalog
    from convergio.graphflow.loader import parse_template
    from convergio.tools.registry import tool_names

    catalog = default_catalog()
    template = parse_template(TEMPLATE, agents=catalog.names(), tools=tool_names(), source="<bench/approvals>")
    return Ctx(client, settings, resources, template, catalog)


async def _in_child(settings: Any, parked: int) -> dict[str, Any]:
    """The capped-cache phase in a fresh process of its own (same servers, its own task
    queue), so that neither measurement sees memory the other one freed."""
    spec = {
        **settings.model_dump(mode="json", include=set(CHILD_SETTINGS)),
        "temporal_task_queue": "convergio-bench-approvals-cap",
        "parked": parked,
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await child.communicate()
    except BaseException:
        if child.returncode is None:
            child.terminate()
            await child.wait()
        raise
    if child.returncode != 0:
        raise RuntimeError(f"the cache-100 phase failed (exit {child.returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])


async def child(spec: dict[str, Any]) -> dict[str, Any]:
    from convergio.settings import Settings
    from convergio.temporal_client import connect_temporal
    from convergio.workers.worker import open_resources

    _prepare()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{key: spec[key] for key in (*CHILD_SETTINGS, "temporal_task_queue")},
    )
    client = await connect_temporal(settings)
    async with open_resources(settings.database_url, settings.redis_url) as resources:
        return await capped_cache_phase(_ctx(client, settings, resources), spec["parked"])



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run takes under a minute")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: the cache-100 phase
    run_bench("approvals", parser, lambda args: child(json.loads(args.child)) if args.child else run(args.quick))


if __name__ == "__main__":
    main()
