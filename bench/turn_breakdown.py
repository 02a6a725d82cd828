"""Where an agent turn's time goes: the ``run_agent_turn`` activity alone, split by component.

Run as a file::

    .venv/bin/python bench/turn_breakdown.py [--quick]

Starts the same throw-away stack as ``bench/engine.py``, runs one Strategic Analysis to capture
the real inputs of its six turns, then runs those turns again and again straight through the
activity (``ActivityEnvironment``, no workflow, no task queue) with a timer around each part:

* ``screen_ms``: the guardian (instruction, context and answer; rules, and the classifier if on);
* ``budget_reserve_ms`` / ``budget_commit_ms``: the Redis budget scripts;
* ``agent_ms``: AutoGen's ``AssistantAgent.run_stream`` with the offline model (the model's own
  work included; ``model_ms`` is the offline client's ``create_stream`` alone);
* ``record_ms``: the one Postgres statement that writes verdicts, turn record and ledger row;
* ``events_close_ms``: waiting for the last events to reach Redis.

The last three run concurrently at the end of a turn, so the parts add up to more than
``activity_ms``. Means per turn in ms; the LAST stdout line is the JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402


def _timed(totals: dict[str, float], key: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            totals[key] += (time.perf_counter() - started) * 1000

    return wrapper


def _timed_stream(totals: dict[str, float], key: str, fn: Any) -> Any:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        async for item in fn(*args, **kwargs):
            yield item
        totals[key] += (time.perf_counter() - started) * 1000

    return wrapper


async def run(rounds: int) -> dict[str, Any]:
    from temporalio.testing import ActivityEnvironment

    from convergio.activities import agent_turn
    from convergio.agents.catalog import default_catalog
    from convergio.agents.offline import OfflineChatCompletionClient
    from convergio.agents.tokens import install_offline_tiktoken_cache
    from convergio.contracts import AgentTurnInput
    from convergio.costs.metering import TurnMeter
    from convergio.events import EventBuffer
    from convergio.graphflow.loader import default_registry
    from convergio.graphflow.runs import build_run_input
    from convergio.workers.worker import worker_activities
    from tests.graphflow_helpers import STRATEGIC_INPUTS

    install_offline_tiktoken_cache()
    template = default_registry().get("strategic-analysis")
    gate = next(step for step in template.steps if step.kind == "approval")
    run_input = build_run_input(template, STRATEGIC_INPUTS, default_catalog(), tenant="default", model=None)
    totals: dict[str, float] = defaultdict(float)
    async with engine.embedded_stack() as (client, settings, resources):
        bench = engine.Bench(client, settings, run_input, gate_id=gate.id, gate_role=gate.approvers[0])
        async with engine.bench_worker(client, settings, resources):
            await engine.reference_run(bench)
            inputs = await engine.turn_inputs(await engine.drive(bench, "graphflow"))
        turn_activity = next(
            fn for fn in worker_activities(settings, resources)
            if getattr(fn, "__temporal_activity_definition").name == "run_agent_turn"
        )
        agent_turn.screen_input = _timed(totals, "screen_ms", agent_turn.screen_input)  # type: ignore[assignment]
        TurnMeter.reserve = _timed(totals, "budget_reserve_ms", TurnMeter.reserve)  # type: ignore[method-assign]
        TurnMeter.commit_entry = _timed(totals, "budget_commit_ms", TurnMeter.commit_entry)  # type: ignore[method-assign]
        agent_turn.AgentTurnActivities._record = _timed(  # type: ignore[method-assign]
            totals, "record_ms", agent_turn.AgentTurnActivities._record
        )
        EventBuffer.close = _timed(totals, "events_close_ms", EventBuffer.close)  # type: ignore[method-assign]
        agent_turn.AssistantAgent.run_stream = _timed_stream(  # type: ignore[method-assign]
            totals, "agent_ms", agent_turn.AssistantAgent.run_stream
        )
        OfflineChatCompletionClient.create_stream = _timed_stream(  # type: ignore[method-assign]
            totals, "model_ms", OfflineChatCompletionClient.create_stream
        )
        env = ActivityEnvironment()

        async def once(raw: dict[str, Any]) -> float:
            turn = AgentTurnInput.model_validate(raw)
            turn.workflow_id = f"breakdown-{uuid.uuid4().hex[:12]}"
            started = time.perf_counter()
            await env.run(turn_activity, turn)
            return (time.perf_counter() - started) * 1000

        for raw in inputs:  # warm-up
            await once(raw)
        totals.clear()
        times = [await once(raw) for _ in range(rounds) for raw in inputs]
    result: dict[str, Any] = {key: round(value / len(times), 2) for key, value in sorted(totals.items())}
    result["activity_ms"] = round(statistics.mean(times), 2)
    result["activity_p50_ms"] = round(statistics.median(times), 2)
    result["turns_measured"] = len(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    for name in list(os.environ):
        if name.startswith("CONVERGIO_"):
            del os.environ[name]
    print(json.dumps(asyncio.run(run(5 if args.quick else 20))))


if __name__ == "__main__":
    main()
