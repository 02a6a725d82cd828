"""Local model benchmark: SmolLM2-135M-Instruct (llama.cpp, in the worker) on this machine.

Run as a file (needs ``bash scripts/install-local-llm.sh`` first)::

    .venv/bin/python bench/local_llm.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with ``tokens_per_s``,
``first_token_ms`` and ``template_s`` (plus what explains them).

Method
------
1. Generation. ``LocalChatCompletionClient`` with the worker's settings (``n_ctx`` 2048, half
   the cores) streams answers to R analyst prompts (after one warm-up), without section
   scaffolding, so every chunk is model output. ``first_token_ms`` is the
   median time from ``create_stream`` to the first chunk (prompt evaluation included);
   ``tokens_per_s`` is the median of completion tokens (counted by the model's tokenizer) over
   the time from the first chunk to the result (decoding speed).
2. Template. One Strategic Analysis run (the demo's inputs) on ``CONVERGIO_MODEL=local``, through
   the real worker on throw-away servers (Temporal dev server, PostgreSQL, Redis: the same
   ``embedded_stack`` as ``bench/engine.py``), the bench approving the executive gate as soon as
   it opens. ``template_s`` is the wall time from start to result, whether the run completed or
   failed (a 135M model often misses the sections the quality checks ask for; the JSON says
   how the run ended, which steps failed and how many prompts were trimmed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "Analyse the German mid-market for predictive-maintenance analytics. Cover: Market size, Customers.",
    "As CFO, assess a 1.2 million euro Munich office for Acme. Cover: Investment case, Returns.",
    "List the key risks of entering a market with two aggressive local competitors. Cover: Key risks.",
    "Write a short recommendation on whether Acme should expand. Cover: Decision, Next steps.",
    "Summarise why German-language support matters to mid-market manufacturers.",
]


def log(message: str) -> None:
    print(f"[bench/local_llm] {message}", file=sys.stderr, flush=True)


async def measure_generation(rounds: int) -> dict[str, Any]:
    from autogen_core.models import CreateResult, SystemMessage, UserMessage

    from convergio.agents.local_llm import LocalChatCompletionClient
    from convergio.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    # No section scaffolding here: its headings are written by the client, not the model, and
    # would make the first chunk arrive before the model has produced anything.
    client = LocalChatCompletionClient(
        "smollm2", n_ctx=settings.local_n_ctx, max_tokens=settings.local_max_tokens,
        n_threads=settings.local_threads, scaffold_sections=False,
    )
    load_s = time.perf_counter() - started
    first_ms: list[float] = []
    rates: list[float] = []
    completion: list[int] = []
    for index in range(rounds + 1):  # the first round warms up and is not counted
        messages = [
            SystemMessage(content="You are a senior analyst at Acme Analytics."),
            UserMessage(content=PROMPTS[index % len(PROMPTS)], source="user"),
        ]
        begin = time.perf_counter()
        first: float | None = None
        result: CreateResult | None = None
        async for item in client.create_stream(messages):
            if isinstance(item, CreateResult):
                result = item
            elif first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        assert result is not None and first is not None
        if index == 0:
            continue
        first_ms.append((first - begin) * 1000)
        rates.append(result.usage.completion_tokens / max(end - first, 1e-9))
        completion.append(result.usage.completion_tokens)
        log(f"round {index}: first token {first_ms[-1]:.0f} ms, {completion[-1]} tokens at {rates[-1]:.0f}/s")
    return {
        "model_load_s": round(load_s, 3),
        "first_token_ms": round(statistics.median(first_ms), 1),
        "tokens_per_s": round(statistics.median(rates), 1),
        "completion_tokens_median": statistics.median(completion),
        "generation_rounds": rounds,
    }


async def measure_template() -> dict[str, Any]:
    from temporalio.client import WorkflowFailureError
    from temporalio.worker import Worker

    from bench.engine import embedded_stack
    from convergio.agents.catalog import default_catalog
    from convergio.demo import DEMO_INPUTS, DEMO_TEMPLATE
    from convergio.events import EventPublisher
    from convergio.graphflow.loader import default_registry
    from convergio.graphflow.run_models import ApprovalDecision, GraphFlowResult
    from convergio.graphflow.runs import build_run_input, start_template_run
    from convergio.workers.worker import WORKFLOWS, worker_activities
    from convergio.workflows.graphflow import GraphFlowWorkflow

    async with embedded_stack() as (client, settings, resources):
        settings = settings.model_copy(update={"model": "local"})
        run = build_run_input(
            default_registry().get(DEMO_TEMPLATE), DEMO_INPUTS, default_catalog(),
            tenant="default", model=None, settings=settings,
        )
        async with Worker(
            client, task_queue=settings.temporal_task_queue, workflows=WORKFLOWS,
            activities=worker_activities(settings, resources),
        ):
            begin = time.perf_counter()
            started = await start_template_run(client, settings, run)
            handle = client.get_workflow_handle_for(GraphFlowWorkflow.run, started.workflow_id)
            done = asyncio.ensure_future(handle.result())
            approved: set[str] = set()
            while not done.done():
                for gate in await handle.query(GraphFlowWorkflow.pending_approvals):
                    if gate.gate_id not in approved:
                        approved.add(gate.gate_id)
                        await handle.signal(GraphFlowWorkflow.approve, ApprovalDecision(
                            gate_id=gate.gate_id, approver="bench", role=gate.approvers[0], comment="bench"))
                await asyncio.wait([done], timeout=0.25)
            try:
                result = done.result()
            except WorkflowFailureError as failure:
                details = getattr(failure.cause, "details", None) or [None]
                result = GraphFlowResult.model_validate(details[0]) if details[0] else None
            template_s = time.perf_counter() - begin
            events = await EventPublisher(resources.redis).read(started.workflow_id, count=100_000)
    if result is None:
        return {"template_s": round(template_s, 2), "template_status": "failed (no result)"}
    for step in result.steps:
        log(f"step {step.id}: {step.status} {step.quality_notes or ''} {step.error or ''}")
    return {
        "template_s": round(template_s, 2),
        "template_status": result.status,
        "template_steps": {step.id: step.status for step in result.steps},
        "template_turns": len(result.turns),
        "template_models": sorted({turn.model for turn in result.turns}),
        "template_prompt_tokens": result.prompt_tokens,
        "template_completion_tokens": result.completion_tokens,
        "template_cost_usd": result.cost_usd,
        "context_trimmed_events": sum(1 for event in events if event.type == "context_trimmed"),
    }


async def main(quick: bool) -> dict[str, Any]:
    generation = await measure_generation(rounds=2 if quick else 5)
    template = await measure_template()
    return {**generation, **template}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer generation rounds")
    args = parser.parse_args()
    from convergio.agents.local_llm import require_llama_cpp, smollm2_gguf

    require_llama_cpp()
    smollm2_gguf()
    print(json.dumps(asyncio.run(main(args.quick))))
