"""API benchmark: how fast ``POST /workflows`` answers under concurrent clients, and how soon a
published event reaches an SSE client.

Run as a file::

    .venv/bin/python bench/api.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with (among others)
``start_p50_ms``, ``start_p95_ms`` and ``sse_latency_p95_ms``.

Set-up: throw-away servers (Temporal dev server, PostgreSQL and Redis, from ``bench/engine.py``'s
``embedded_stack``: temp dirs, free ports), torn down at the end even on error. The API is the
real one, ``convergio api`` (uvicorn, one process) and the worker is ``convergio worker`` (one
process), both children of this one, configured through ``CONVERGIO_*`` like a deployment,
with one admin API key (auth is on) and a rate limit high enough not to answer 429. The
clients are in this process, so neither server shares an event loop with them.

Method
------
1. Starts. C clients (default 20) at once, each sending R ``POST /workflows`` one after the
   other (the demo's Strategic Analysis with the offline model; every request a new run). A request's
   time is from just before the client sends it to when its 202 is read (httpx, keep-alive
   connections, one per client). A warm-up of C requests goes first and is not counted. The
   worker runs the started runs meanwhile (each goes through five agent and tool steps to its
   approval gate), so the API competes for the two cores with real work, as it would.
   ``start_p50_ms``/``start_p95_ms`` over all C × R requests; ``start_throughput_per_s`` is
   C × R / wall time. All started runs are then terminated. For comparison,
   ``direct_start_p50_ms``/``p95``: the same C × R starts made by this process straight to
   Temporal (``start_template_run``, same concurrency, worker running), without the API.
2. SSE latency. One fresh run is started and left waiting at its gate (so the stream stays
   open), S clients (default 1) follow ``GET /workflows/{id}/events``, and this process
   publishes N events with the project's ``EventPublisher`` (one XADD each, ``interval_ms``
   apart, each carrying ``time.perf_counter_ns()`` of just before the XADD). Latency = arrival
   of the event's SSE frame at a client (perf_counter again, same process and clock) minus
   that stamp: Redis, the API's blocking XREAD, serialisation, the HTTP stream and the
   client's parsing. ``sse_latency_p50_ms``/``p95``/``max`` over every event at every client.

Caveats: the machine is shared (2 cores, other sessions), so absolute numbers drift between
runs; the starts share the CPU with the worker on purpose (see 1.).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from harness import REPO_ROOT, percentile, progress, run_bench  # noqa: E402 - bench/ is this file's folder

BENCH_KEY = "cvg_bench-admin-key-000000000000000000"
STREAM_STEP = "bench_sse"



log = progress("api")




def child_env(settings: Any, api_port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVERGIO_")}
    env.update(
        CONVERGIO_DATA_DIR=str(settings.data_dir),
        CONVERGIO_TEMPORAL_ADDRESS=str(settings.temporal_address),
        CONVERGIO_TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
        CONVERGIO_DATABASE_URL=str(settings.database_url),
        CONVERGIO_REDIS_URL=str(settings.redis_url),
        CONVERGIO_MODEL="offline",
        CONVERGIO_API_PORT=str(api_port),
        CONVERGIO_API_KEYS=json.dumps([{"name": "bench", "role": "admin", "key": BENCH_KEY}]),
        CONVERGIO_RATE_LIMIT_REQUESTS="1000000",
    )
    return env


async def wait_healthy(base: str, api: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while time.monotonic() < deadline:
            if api.poll() is not None:
                raise RuntimeError(f"convergio api exited with {api.returncode}")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{base}/healthz did not answer within {timeout}s")


async def measure_starts(base: str, clients: int, requests: int) -> dict[str, Any]:
    import httpx

    from convergio.demo import DEMO_INPUTS, DEMO_TEMPLATE

    body = {"template": DEMO_TEMPLATE, "inputs": DEMO_INPUTS}
    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    started: list[str] = []

    async def client(count: int, times: list[float] | None) -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            for _ in range(count):
                begin = time.perf_counter()
                response = await http.post("/workflows", json=body)
                elapsed = (time.perf_counter() - begin) * 1000
                if response.status_code != 202:
                    raise RuntimeError(
                        f"POST /workflows answered {response.status_code}: {response.text[:300]}"
                    )
                started.append(response.json()["workflow_id"])
                if times is not None:
                    times.append(elapsed)

    log(f"warm-up: {clients} starts")
    await asyncio.gather(*(client(1, None) for _ in range(clients)))
    times: list[float] = []
    log(f"measuring: {clients} clients x {requests} starts")
    wall = time.perf_counter()
    await asyncio.gather(*(client(requests, times) for _ in range(clients)))
    wall = time.perf_counter() - wall
    return {
        "started": started,
        "start_requests": len(times),
        "start_clients": clients,
        "start_p50_ms": round(statistics.median(times), 2),
        "start_p95_ms": round(percentile(times, 0.95), 2),
        "start_max_ms": round(max(times), 2),
        "start_throughput_per_s": round(len(times) / wall, 1),
    }


async def measure_direct_starts(client: Any, settings: Any, clients: int, requests: int) -> dict[str, Any]:
    """The same starts without the API: ``start_template_run`` from this process, same concurrency.
    What the API adds is the difference."""
    from convergio.agents.catalog import default_catalog
    from convergio.demo import DEMO_INPUTS, DEMO_TEMPLATE
    from convergio.graphflow.loader import default_registry
    from convergio.graphflow.runs import build_run_input, start_template_run

    template = default_registry().get(DEMO_TEMPLATE)
    started: list[str] = []
    times: list[float] = []

    async def one_client() -> None:
        for _ in range(requests):
            begin = time.perf_counter()
            run = build_run_input(
                template, DEMO_INPUTS, default_catalog(), tenant="default", model=None, settings=settings
            )
            result = await start_template_run(client, settings, run)
            times.append((time.perf_counter() - begin) * 1000)
            started.append(result.workflow_id)

    log(f"direct starts (no API): {clients} clients x {requests}")
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return {
        "started": started,
        "direct_start_p50_ms": round(statistics.median(times), 2),
        "direct_start_p95_ms": round(percentile(times, 0.95), 2),
    }


async def terminate_all(client: Any, workflow_ids: list[str]) -> None:
    from temporalio.service import RPCError

    async def one(workflow_id: str) -> None:
        try:
            await client.get_workflow_handle(workflow_id).terminate(reason="bench over")
        except RPCError:
            pass  # already ended

    for chunk in range(0, len(workflow_ids), 50):
        await asyncio.gather(*(one(w) for w in workflow_ids[chunk : chunk + 50]))


async def parked_run(base: str) -> str:
    """A fresh run waiting at its gate: its event stream stays open."""
    import httpx

    from convergio.demo import DEMO_INPUTS, DEMO_TEMPLATE

    headers = {"Authorization": f"Bearer {BENCH_KEY}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        response = await http.post("/workflows", json={"template": DEMO_TEMPLATE, "inputs": DEMO_INPUTS})
        workflow_id = response.json()["workflow_id"]
        for _ in range(600):
            view = (await http.get(f"/workflows/{workflow_id}")).json()
            if (view.get("progress") or {}).get("pending_approvals"):
                return workflow_id
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{workflow_id} never reached its gate")


async def measure_sse(
    base: str, redis_url: str, workflow_id: str, *, clients: int, events: int, interval_ms: float
) -> dict[str, Any]:
    import httpx
    import redis.asyncio as aioredis

    from convergio.events import AgentEvent, EventPublisher
    from convergio.watch import read_sse

    headers = {"Authorization": f"Bearer {BENCH_KEY}", "Accept": "text/event-stream"}
    latencies: list[float] = []
    ready = [asyncio.Event() for _ in range(clients)]

    async def follow(index: int) -> int:
        received = 0
        async with httpx.AsyncClient(
            base_url=base, headers=headers, timeout=httpx.Timeout(30, read=None)
        ) as http:
            async with http.stream("GET", f"/workflows/{workflow_id}/events") as response:
                if response.status_code != 200:
                    raise RuntimeError(f"events answered {response.status_code}")
                ready[index].set()
                async for message in read_sse(response.aiter_lines()):
                    arrived = time.perf_counter_ns()
                    if message.event == "end":
                        break
                    event = AgentEvent.model_validate_json(message.data)
                    if event.step_id != STREAM_STEP:
                        continue  # the run's own events, replayed from the start
                    if event.data.get("last"):
                        return received
                    latencies.append((arrived - int(event.data["sent_ns"])) / 1e6)
                    received += 1
        return received

    readers = [asyncio.create_task(follow(i)) for i in range(clients)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), timeout=30)
    await asyncio.sleep(0.5)  # past the replay of the run's earlier events
    redis = aioredis.Redis.from_url(redis_url)
    publisher = EventPublisher(redis)
    try:
        log(f"publishing {events} events, {interval_ms} ms apart, to {clients} SSE client(s)")
        for i in range(events):
            event = AgentEvent(
                type="text_chunk",
                workflow_id=workflow_id,
                step_id=STREAM_STEP,
                agent="bench",
                data={"text": f"chunk {i}", "sent_ns": time.perf_counter_ns()},
            )
            event.data["sent_ns"] = time.perf_counter_ns()  # as late as possible: the XADD is next
            await publisher.publish(event)
            await asyncio.sleep(interval_ms / 1000)
        await publisher.publish(
            AgentEvent(
                type="text_chunk",
                workflow_id=workflow_id,
                step_id=STREAM_STEP,
                agent="bench",
                data={"last": True},
            )
        )
        counts = await asyncio.wait_for(asyncio.gather(*readers), timeout=60)
    finally:
        for reader in readers:
            reader.cancel()
        await redis.aclose()
    if sum(counts) != events * clients:
        raise RuntimeError(f"SSE clients received {counts} of {events} events each")
    return {
        "sse_clients": clients,
        "sse_events": events,
        "sse_interval_ms": interval_ms,
        "sse_latency_p50_ms": round(statistics.median(latencies), 2),
        "sse_latency_p95_ms": round(percentile(latencies, 0.95), 2),
        "sse_latency_max_ms": round(max(latencies), 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.engine import embedded_stack
    from convergio.stack.process import free_port

    async with embedded_stack() as (client, settings, _resources):
        api_port = free_port()
        base = f"http://127.0.0.1:{api_port}"
        env = child_env(settings, api_port)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": None if args.verbose else subprocess.DEVNULL}
        worker = subprocess.Popen(
            [sys.executable, "-m", "convergio", "worker"], env=env, cwd=REPO_ROOT, **quiet
        )
        api = subprocess.Popen([sys.executable, "-m", "convergio", "api"], env=env, cwd=REPO_ROOT, **quiet)
        started: list[str] = []
        try:
            await wait_healthy(base, api)
            log(f"API up at {base}")
            starts = await measure_starts(base, args.clients, args.requests)
            started = starts.pop("started")
            log(
                f"starts: p50 {starts['start_p50_ms']} ms, p95 {starts['start_p95_ms']} ms; terminating {len(started)} runs"
            )
            await terminate_all(client, started)
            direct = await measure_direct_starts(client, settings, args.clients, args.requests)
            started = direct.pop("started")
            log(
                f"direct starts: p50 {direct['direct_start_p50_ms']} ms, p95 {direct['direct_start_p95_ms']} ms"
            )
            await terminate_all(client, started)
            target = await parked_run(base)
            started = [target]
            sse = await measure_sse(
                base,
                str(settings.redis_url),
                target,
                clients=args.sse_clients,
                events=args.events,
                interval_ms=args.interval_ms,
            )
            log(f"SSE: p50 {sse['sse_latency_p50_ms']} ms, p95 {sse['sse_latency_p95_ms']} ms")
        finally:
            await terminate_all(client, started)
            for process in (api, worker):
                process.terminate()
            for process in (api, worker):
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    return {"bench": "api", "quick": args.quick, "cpus": os.cpu_count(), **starts, **direct, **sse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer requests and events (a smoke run).")
    parser.add_argument("--clients", type=int, default=20, help="Concurrent clients starting runs.")
    parser.add_argument("--requests", type=int, default=None, help="Starts per client (default 10; quick 3).")
    parser.add_argument("--sse-clients", type=int, default=1, help="Clients following the event stream.")
    parser.add_argument("--events", type=int, default=None, help="Events published (default 500; quick 100).")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="Pause between published events.")
    parser.add_argument("--verbose", action="store_true", help="Show the API's and worker's logs.")

    def configured(args: argparse.Namespace) -> Any:
        args.requests = args.requests or (3 if args.quick else 10)
        args.events = args.events or (100 if args.quick else 500)
        return run(args)

    run_bench("api", parser, configured, clean_env=False)


if __name__ == "__main__":
    main()
