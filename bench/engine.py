"""Engine benchmark: what durability costs, measured side by side in one run on one server.

Run as a file::

    .venv/bin/python bench/engine.py [--quick]

Progress goes to stderr; the LAST line of stdout is one JSON object with (among others)
``throughput_ratio``, ``turn_overhead_p50_ms``, ``turn_overhead_p95_ms`` and
``worker_kb_per_workflow``.

Everything runs in this process against throw-away servers (Temporal dev server, PostgreSQL
and Redis from the pip packages, temp dirs, free ports), torn down at the end even on error.
The dev server gets the embedded stack's dynamic config (``DEV_SERVER_DYNAMIC_CONFIG``: without
it every task waits for a transfer-queue read capped at 20 per second).
One in-process worker serves both the real ``GraphFlowWorkflow`` (with the real activities,
built as ``build_worker`` builds them) and ``BareWorkflow`` below.

Method
------
1. Reference run. One Strategic Analysis run with the offline model, approved by the bench.
   Its history gives the shape the bare workflow copies: the activities each workflow task
   scheduled together (one batch each, run concurrently) and where the ``approve`` signal
   came in. For the shipped template that is 22 activities in 17 batches and one human gate:
   6 model turns, 1 tool step, 4 security screenings, 3 knowledge retrievals, 6 step memories
   and 2 run events (the JSON's ``workflow_shape``, 0 = the gate).
2. Memory. M Strategic Analysis runs are started in 4 increments and left waiting at the
   approval gate (running, held in the worker's sticky cache). After each increment the
   worker's RSS is read (after ``gc.collect()`` and glibc ``malloc_trim``); the slope of RSS
   over runs parked is ``worker_kb_per_workflow``. The worker is this process; the slope also
   holds the client's few handles per run, which is noise next to a workflow's state. The same
   is done first with the bare workflow for comparison (``bare_kb_per_workflow``).
3. Throughput. Rounds of K Strategic Analysis runs at once and K bare runs at once (the same
   number of no-op activities in the same batches, waiting for one signal at the same point),
   which kind goes first alternating round by round. A driver per run follows the history (long poll, no query polling) and sends
   the signal as soon as the workflow task that opened the gate completed; both kinds are
   driven identically. workflows/s = runs / summed makespans; ``throughput_ratio`` =
   GraphFlow workflows/s / bare workflows/s.
4. Turn overhead. R pairs, alternating: one durable Strategic Analysis run alone, then
   AutoGen's in-process ``GraphFlow`` running the same graph of turns (the reference run's
   turns as nodes, the template's dependencies as edges, ``AssistantAgent``s with the same
   system messages and ``OfflineChatCompletionClient()``, streaming as the activity does).
   A turn's time is from when it could start (its predecessors' answers exist) to when its
   answer exists:
   - durable: ``ActivityTaskCompleted`` minus ``WorkflowTaskScheduled`` of the workflow task
     that scheduled the turn (server timestamps). This covers the workflow task, dispatch,
     the activity (ledger look-up, streaming to Redis, the model, ledger insert) and the
     completion; the time spent waiting for the approver is not in it.
   - AutoGen: when the agent yielded its ``Response`` minus when the last of its predecessors
     did (or when ``run_stream`` was called, for the first turn).
   Overhead = durable − AutoGen for the same turn of the same pair; p50/p95 over all turns.
   Diagnostics: ``turn_overhead_vs_unstreamed_autogen_p50_ms`` is the same against AutoGen
   without streaming; ``model_turn_p50_ms`` is the durable turns' exact prompts run through a
   bare in-process ``AssistantAgent`` (the model work alone); ``durable_activity_p50_ms`` and
   ``durable_workflow_task_p50_ms`` split a durable turn into its activity and the workflow
   task that scheduled it; ``bare_activity_round_trip_p50_ms`` times the bare workflow's no-op
   activities the same way, i.e. what any activity costs on this server before doing anything
   (the floor under a durable turn that no engine change can remove).

Caveats: the machine is shared, so absolute numbers drift; read the ratios and differences.
The prompts differ between the two sides (a durable turn sees its step's instruction and its
dependencies' outputs; a GraphFlow agent sees the whole thread), so the model work is not
identical, but it is a few ms either way (see ``model_turn_p50_ms``). ``BareWorkflow`` lives
in ``bench/bare_workflow.py`` and is passed through the sandbox like Convergio's own
workflow modules (``build_worker``), so both sides pay the same per-run sandbox cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from bare_workflow import BareWorkflow, noop_activity  # noqa: E402 - bench/ is this file's folder
from harness import percentile, progress, run_bench  # noqa: E402


# --------------------------------------------------------------------------- helpers

RUN_TIMEOUT_S = 120  # a run that takes longer is stuck: fail the bench instead of hanging


log = progress("engine")




def rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def event_ms(event: Any) -> float:
    return event.event_time.ToNanoseconds() / 1e6


@dataclass
class Bench:
    client: Any
    settings: Any
    run_input: Any  # GraphFlowInput of Strategic Analysis
    gate_id: str
    gate_role: str
    shape: list[int] = field(default_factory=list)
    pre_gate_activities: int = 0
    turn_nodes: list[tuple[str, str, str]] = field(default_factory=list)  # (node, step_id, agent)
    node_parents: dict[str, list[str]] = field(default_factory=dict)


# --------------------------------------------------------------------------- the stack


@asynccontextmanager
async def embedded_stack() -> AsyncIterator[tuple[Any, Any, Any]]:
    """Temporal dev server, PostgreSQL and Redis as the test fixtures start them."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from convergio.db.migrate import apply_migrations
    from convergio.search_attributes import search_attribute_keys
    from convergio.settings import Settings
    from convergio.stack.binaries import temporal_cli
    from convergio.stack.postgres_server import EmbeddedPostgres
    from convergio.stack.process import free_port
    from convergio.stack.redis_server import EmbeddedRedis
    from convergio.stack.temporal_server import dynamic_config_args
    from convergio.workers.worker import open_resources

    with tempfile.TemporaryDirectory(prefix="convergio-bench-") as tmp:
        servers = Path(tmp)
        postgres = EmbeddedPostgres(servers / "postgres", port=free_port())
        redis = EmbeddedRedis(servers / "redis", port=free_port())
        env = None
        try:
            await postgres.start()
            await apply_migrations(postgres.url())
            await redis.start()
            # The dev server prints a banner on its stdout: send it to stderr, so that our
            # stdout carries only the JSON line.
            sys.stdout.flush()
            saved_stdout = os.dup(1)
            os.dup2(2, 1)
            try:
                env = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=str(temporal_cli()),
                    data_converter=pydantic_data_converter,
                    search_attributes=search_attribute_keys(),
                    dev_server_log_level="error",
                    dev_server_extra_args=dynamic_config_args(),
                )
            finally:
                os.dup2(saved_stdout, 1)
                os.close(saved_stdout)
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                data_dir=servers / "data",
                temporal_address=env.client.service_client.config.target_host,
                database_url=postgres.url(),
                redis_url=redis.url,
                model="offline",
                temporal_task_queue="convergio-bench",
            )
            async with open_resources(postgres.url(), redis.url) as resources:
                yield env.client, settings, resources
        finally:
            if env is not None:
                await env.shutdown()
            redis.stop()
            postgres.stop()


def bench_worker(client: Any, settings: Any, resources: Any) -> Any:
    """``build_worker``'s worker plus the bare workflow and its no-op activity."""
    from convergio.workers.worker import build_worker

    return build_worker(
        client, settings, resources, extra_workflows=[BareWorkflow], extra_activities=[noop_activity]
    )


# --------------------------------------------------------------------------- driving runs


async def start_graphflow(bench: Bench) -> Any:
    from convergio.graphflow.runs import start_template_run
    from convergio.workflows.graphflow import GraphFlowWorkflow

    started = await start_template_run(bench.client, bench.settings, bench.run_input)
    return bench.client.get_workflow_handle_for(GraphFlowWorkflow.run, started.workflow_id)


async def start_bare(bench: Bench) -> Any:
    return await bench.client.start_workflow(
        BareWorkflow.run, bench.shape, id=f"bench-bare-{uuid.uuid4().hex[:16]}",
        task_queue=bench.settings.temporal_task_queue,
    )


async def wait_at_gate(handle: Any, pre_gate_activities: int) -> None:
    """Follow the history (long poll) until the workflow task after the last activity before
    the gate completed: the workflow is then waiting for its signal."""
    from temporalio.api.enums.v1 import EventType

    completed = 0
    async for event in handle.fetch_history_events(wait_new_event=True):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and completed >= pre_gate_activities:
            return
        elif event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
        ):
            break
    raise RuntimeError(f"workflow {handle.id} closed before reaching its gate")


async def approve(bench: Bench, handle: Any, kind: str) -> None:
    if kind == "graphflow":
        from convergio.graphflow.run_models import ApprovalDecision
        from convergio.workflows.graphflow import GraphFlowWorkflow

        decision = ApprovalDecision(gate_id=bench.gate_id, approver="bench", role=bench.gate_role)
        await handle.signal(GraphFlowWorkflow.approve, decision)
    else:
        await handle.signal(BareWorkflow.approve)


async def drive(bench: Bench, kind: str) -> Any:
    """Start one run, approve it when it reaches the gate, return its handle once finished."""
    handle = await (start_graphflow(bench) if kind == "graphflow" else start_bare(bench))
    await wait_at_gate(handle, bench.pre_gate_activities)
    await approve(bench, handle, kind)
    await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
    return handle


async def history(handle: Any) -> list[Any]:
    return [event async for event in handle.fetch_history_events()]


# --------------------------------------------------------------------------- reference run


async def reference_run(bench: Bench) -> None:
    """Learn the shape (batches, gate) and the turn graph from one real run."""
    from temporalio.api.enums.v1 import EventType

    handle = await start_graphflow(bench)
    await _poll_gate(handle, bench.gate_id)
    await approve(bench, handle, "graphflow")
    result = await asyncio.wait_for(handle.result(), RUN_TIMEOUT_S)
    if result.status != "completed":
        raise RuntimeError(f"reference run did not complete: {result.status}")

    batches: dict[int, int] = {}
    shape: list[int] = []
    for event in await history(handle):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            wft = event.activity_task_scheduled_event_attributes.workflow_task_completed_event_id
            if wft not in batches:
                batches[wft] = len(shape)
                shape.append(0)
            shape[batches[wft]] += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            batches.clear()
            shape.append(0)
    bench.shape = shape
    bench.pre_gate_activities = sum(shape[: shape.index(0)])

    # The turn graph: one node per model turn; a step's turns form a chain; a step's first
    # turn follows the last turn of each step it depends on (through tool and approval steps).
    template = bench.run_input.template
    by_step: dict[str, list[str]] = {}
    used: set[str] = set()
    for turn in result.turns:
        node = turn.agent
        n = 2
        while node in used:
            node, n = f"{turn.agent}_{n}", n + 1
        used.add(node)
        bench.turn_nodes.append((node, turn.step_id, turn.agent))
        by_step.setdefault(turn.step_id, []).append(node)

    def last_nodes(step_id: str) -> list[str]:
        if by_step.get(step_id):
            return [by_step[step_id][-1]]
        return [n for dep in template.step(step_id).depends_on for n in last_nodes(dep)]

    for step_id, nodes in by_step.items():
        first_parents = [n for dep in template.step(step_id).depends_on for n in last_nodes(dep)]
        bench.node_parents[nodes[0]] = list(dict.fromkeys(first_parents))
        for previous, node in zip(nodes, nodes[1:]):
            bench.node_parents[node] = [previous]


async def _poll_gate(handle: Any, gate_id: str) -> None:
    from convergio.workflows.graphflow import GraphFlowWorkflow

    for _ in range(600):
        if any(g.gate_id == gate_id for g in await handle.query(GraphFlowWorkflow.pending_approvals)):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"gate {gate_id} never opened")


# --------------------------------------------------------------------------- memory


def settled_rss() -> int:
    """RSS after a full collection and after handing free heap pages back to the OS, so that
    memory freed by earlier runs does not hide (or fake) what the parked runs hold."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS as it is
        pass
    return rss_bytes()


async def memory_per_workflow(bench: Bench, kind: str, count: int, steps: int = 4) -> float:
    """KB of worker RSS per running workflow parked at its gate (held in the sticky cache).

    Parks ``count`` runs in ``steps`` equal increments, all kept running, and fits a line
    through (runs parked, RSS): the slope is the cost of one more running workflow, without
    the one-off cost of the first ones (pools, caches) and less exposed to allocator reuse."""
    starter = start_graphflow if kind == "graphflow" else start_bare
    increment = max(1, count // steps)
    points = [(0, settled_rss())]
    handles: list[Any] = []
    for _ in range(steps):
        more = await asyncio.gather(*(starter(bench) for _ in range(increment)))
        await asyncio.wait_for(
            asyncio.gather(*(wait_at_gate(h, bench.pre_gate_activities) for h in more)), RUN_TIMEOUT_S
        )
        handles += more
        await asyncio.sleep(0.2)
        points.append((len(handles), settled_rss()))
    await asyncio.gather(*(approve(bench, h, kind) for h in handles))
    await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), RUN_TIMEOUT_S)
    slope = statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope
    log(f"memory {kind}: RSS MB at {[p[0] for p in points]} parked: {[round(p[1] / 2**20, 1) for p in points]}")
    return slope / 1024


# --------------------------------------------------------------------------- throughput


async def makespan(bench: Bench, kind: str, count: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(drive(bench, kind) for _ in range(count)))
    return time.perf_counter() - started


# --------------------------------------------------------------------------- turns


async def durable_turn_times(bench: Bench, handle: Any) -> dict[str, dict[str, float]]:
    """Per node: ``total`` (ready → answer in history), ``activity`` and ``workflow_task`` ms."""
    from temporalio.api.enums.v1 import EventType

    events = await history(handle)
    by_id = {e.event_id: e for e in events}
    occurrences: dict[str, int] = {}
    turns: list[tuple[int, str, dict[str, float]]] = []
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        attrs = event.activity_task_completed_event_attributes
        scheduled = by_id[attrs.scheduled_event_id].activity_task_scheduled_event_attributes
        if scheduled.activity_type.name != "run_agent_turn":
            continue
        payload = json.loads(scheduled.input.payloads[0].data)
        wft_completed = by_id[scheduled.workflow_task_completed_event_id]
        wft_attrs = wft_completed.workflow_task_completed_event_attributes
        wft_scheduled = by_id[wft_attrs.scheduled_event_id]
        wft_started = by_id[wft_attrs.started_event_id]
        activity_started = by_id[attrs.started_event_id]
        turns.append((
            payload["turn"], payload["step_id"],
            {
                "total": event_ms(event) - event_ms(wft_scheduled),
                "activity": event_ms(event) - event_ms(activity_started),
                "workflow_task": event_ms(wft_completed) - event_ms(wft_started),
            },
        ))
    times: dict[str, dict[str, float]] = {}
    nodes_by_step: dict[str, list[str]] = {}
    for node, step_id, _ in bench.turn_nodes:
        nodes_by_step.setdefault(step_id, []).append(node)
    for _, step_id, timing in sorted(turns, key=lambda t: t[0]):
        index = occurrences.get(step_id, 0)
        occurrences[step_id] = index + 1
        nodes = nodes_by_step.get(step_id, [])
        if index < len(nodes):
            times[nodes[index]] = timing
    return times


async def bare_round_trips(handle: Any) -> list[float]:
    """The floor under any durable turn on this server: a bare run's no-op activities, each
    timed like a durable turn (``ActivityTaskCompleted`` minus ``WorkflowTaskScheduled`` of the
    workflow task that scheduled it)."""
    from temporalio.api.enums.v1 import EventType

    events = await history(handle)
    by_id = {e.event_id: e for e in events}
    times: list[float] = []
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        scheduled = by_id[event.activity_task_completed_event_attributes.scheduled_event_id]
        wft_completed = by_id[scheduled.activity_task_scheduled_event_attributes.workflow_task_completed_event_id]
        wft_scheduled = by_id[wft_completed.workflow_task_completed_event_attributes.scheduled_event_id]
        times.append(event_ms(event) - event_ms(wft_scheduled))
    return times


async def turn_inputs(handle: Any) -> list[dict[str, Any]]:
    from temporalio.api.enums.v1 import EventType

    return [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in await history(handle)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_agent_turn"
    ]


def _timed_agent_class() -> type:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.base import Response

    class TimedAgent(AssistantAgent):
        """An ``AssistantAgent`` that notes when it produced its answer."""

        def __init__(self, *args: Any, clock: dict[str, float], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._clock = clock

        async def on_messages_stream(self, messages, cancellation_token):  # type: ignore[no-untyped-def,override]
            async for item in super().on_messages_stream(messages, cancellation_token):
                if isinstance(item, Response):
                    self._clock[self.name] = time.perf_counter()
                yield item

    return TimedAgent


async def autogen_turn_times(bench: Bench, task: str, *, stream: bool = True) -> dict[str, float]:
    """AutoGen's in-process GraphFlow over the same turn graph; per node, ready → answer in ms.

    ``stream`` as in the activity (it streams chunks to Redis; here they go to ``run_stream``)."""
    from autogen_agentchat.teams import DiGraphBuilder, GraphFlow

    from convergio.agents.offline import OfflineChatCompletionClient

    timed_agent = _timed_agent_class()
    clock: dict[str, float] = {}
    agents = {
        node: timed_agent(
            node, model_client=OfflineChatCompletionClient(), clock=clock,
            system_message=bench.run_input.agents[agent].system_message, model_client_stream=stream,
        )
        for node, _, agent in bench.turn_nodes
    }
    builder = DiGraphBuilder()
    for agent in agents.values():
        builder.add_node(agent)
    for node, parents in bench.node_parents.items():
        for parent in parents:
            builder.add_edge(agents[parent], agents[node])
    flow = GraphFlow(participants=builder.get_participants(), graph=builder.build())
    started = time.perf_counter()
    async for _ in flow.run_stream(task=task):
        pass
    missing = [node for node in agents if node not in clock]
    if missing:
        raise RuntimeError(f"AutoGen GraphFlow did not run {missing}")
    return {
        node: (clock[node] - max((clock[p] for p in bench.node_parents[node]), default=started)) * 1000
        for node in agents
    }


async def model_turn_ms(inputs: list[dict[str, Any]]) -> list[float]:
    """The durable turns' exact prompts through a bare in-process ``AssistantAgent``."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import TextMessage

    from convergio.agents.offline import OfflineChatCompletionClient

    times = []
    for turn in inputs:
        name = turn["request"]["agent"]["name"]
        messages = [TextMessage(content=m["content"], source=m["source"]) for m in turn["context"]]
        messages.append(TextMessage(content=turn["request"]["task"], source="user"))
        agent = AssistantAgent(
            name, model_client=OfflineChatCompletionClient(),
            system_message=turn["request"]["agent"]["system_message"], model_client_stream=True,
        )
        started = time.perf_counter()
        await agent.run(task=messages)
        times.append((time.perf_counter() - started) * 1000)
    return times


# --------------------------------------------------------------------------- phases


async def throughput_phase(bench: Bench, parallel: int, rounds: int) -> dict[str, Any]:
    """Rounds of K runs at once, alternating which kind goes first (ABBA), so drift of a
    shared machine hits both kinds alike."""
    spent = {"graphflow": 0.0, "bare": 0.0}
    round_ratios = []
    for index in range(rounds):
        order = ("graphflow", "bare") if index % 2 == 0 else ("bare", "graphflow")
        seconds = {}
        for kind in order:
            seconds[kind] = await makespan(bench, kind, parallel)
            spent[kind] += seconds[kind]
        round_ratios.append(seconds["bare"] / seconds["graphflow"])
        log(f"throughput round {index + 1}: {parallel} GraphFlow runs in {seconds['graphflow']:.2f}s, "
            f"{parallel} bare runs in {seconds['bare']:.2f}s (ratio {round_ratios[-1]:.2f})")
    graphflow_wps = parallel * rounds / spent["graphflow"]
    bare_wps = parallel * rounds / spent["bare"]
    return {
        "throughput_ratio": round(graphflow_wps / bare_wps, 3),
        "throughput_ratio_round_median": round(statistics.median(round_ratios), 3),
        "graphflow_workflows_per_s": round(graphflow_wps, 2),
        "bare_workflows_per_s": round(bare_wps, 2),
        "workflows_measured": 2 * parallel * rounds,
    }


async def turn_phase(bench: Bench, pairs: int) -> dict[str, Any]:
    """Durable runs one at a time, each followed by AutoGen's in-process GraphFlow."""
    from convergio.graphflow.placeholders import render_text

    first = bench.run_input.template.steps[0]
    task = render_text(first.instruction, {"inputs": bench.run_input.inputs, "steps": {}})
    overheads: list[float] = []
    unstreamed_overheads: list[float] = []  # versus AutoGen without streaming
    durable: list[float] = []
    autogen: list[float] = []
    activity_ms: list[float] = []
    wft_ms: list[float] = []
    model_ms: list[float] = []
    bare_ms: list[float] = []
    inputs: list[dict[str, Any]] = []
    for index in range(pairs):
        bare_ms += await bare_round_trips(await drive(bench, "bare"))
        handle = await drive(bench, "graphflow")
        durable_times = await durable_turn_times(bench, handle)
        if len(durable_times) != len(bench.turn_nodes):
            raise RuntimeError(f"durable run had turns {sorted(durable_times)}, expected {bench.turn_nodes}")
        autogen_times = await autogen_turn_times(bench, task)
        unstreamed_times = await autogen_turn_times(bench, task, stream=False)
        for node, timing in durable_times.items():
            durable.append(timing["total"])
            activity_ms.append(timing["activity"])
            wft_ms.append(timing["workflow_task"])
            autogen.append(autogen_times[node])
            overheads.append(timing["total"] - autogen_times[node])
            unstreamed_overheads.append(timing["total"] - unstreamed_times[node])
        inputs = inputs or await turn_inputs(handle)
        model_ms += await model_turn_ms(inputs)
        log(f"turn pair {index + 1}: durable turn p50 "
            f"{statistics.median(t['total'] for t in durable_times.values()):.1f} ms, "
            f"AutoGen turn p50 {statistics.median(autogen_times.values()):.1f} ms")
    return {
        "turn_overhead_p50_ms": round(percentile(overheads, 0.5), 1),
        "turn_overhead_p95_ms": round(percentile(overheads, 0.95), 1),
        "turn_overhead_vs_unstreamed_autogen_p50_ms": round(percentile(unstreamed_overheads, 0.5), 1),
        "autogen_turn_p50_ms": round(percentile(autogen, 0.5), 1),
        "durable_turn_p50_ms": round(percentile(durable, 0.5), 1),
        "durable_turn_p95_ms": round(percentile(durable, 0.95), 1),
        "durable_activity_p50_ms": round(percentile(activity_ms, 0.5), 1),
        "durable_workflow_task_p50_ms": round(percentile(wft_ms, 0.5), 1),
        "model_turn_p50_ms": round(percentile(model_ms, 0.5), 1),
        "bare_activity_round_trip_p50_ms": round(percentile(bare_ms, 0.5), 1),
        "turns_measured": len(overheads),
    }


# --------------------------------------------------------------------------- main


async def run(quick: bool) -> dict[str, Any]:
    from convergio.agents.catalog import default_catalog
    from convergio.agents.tokens import install_offline_tiktoken_cache
    from convergio.graphflow.loader import default_registry
    from convergio.graphflow.runs import build_run_input
    from tests.graphflow_helpers import STRATEGIC_INPUTS

    install_offline_tiktoken_cache()  # never reach a network for the tokenizer
    # SIGTERM (like Ctrl-C) cancels the run, so the servers are still stopped on the way out.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    parallel = 6 if quick else 20  # K runs at once per throughput round
    rounds = 3 if quick else 4
    pairs = 6 if quick else 12  # durable / AutoGen pairs for the turn overhead
    parked = 32 if quick else 160  # workflows held at the gate for memory, in 4 increments

    template = default_registry().get("strategic-analysis")
    gate = next(step for step in template.steps if step.kind == "approval")
    run_input = build_run_input(template, STRATEGIC_INPUTS, default_catalog(), tenant="default", model=None)
    clock = time.perf_counter()
    async with embedded_stack() as (client, settings, resources):
        log(f"stack up in {time.perf_counter() - clock:.1f}s")
        bench = Bench(client, settings, run_input, gate_id=gate.id, gate_role=gate.approvers[0])
        async with bench_worker(client, settings, resources):
            await reference_run(bench)
            log(f"reference run: shape {bench.shape} (0 = gate), {sum(bench.shape)} activities, "
                f"turn graph {bench.node_parents}")
            # Warm-up: first runs of each kind pay for imports and caches.
            await asyncio.gather(*(drive(bench, kind) for kind in ("graphflow", "bare") for _ in range(2)))

            # Bare first: the smaller one frees less memory for the headline number to reuse.
            clock = time.perf_counter()
            bare_kb = await memory_per_workflow(bench, "bare", parked)
            graphflow_kb = await memory_per_workflow(bench, "graphflow", parked)
            log(f"memory: {graphflow_kb:.0f} KB per parked GraphFlow run, {bare_kb:.0f} KB per bare run "
                f"({time.perf_counter() - clock:.1f}s)")
            clock = time.perf_counter()
            throughput = await throughput_phase(bench, parallel, rounds)
            log(f"throughput phase took {time.perf_counter() - clock:.1f}s")
            clock = time.perf_counter()
            turns = await turn_phase(bench, pairs)
            log(f"turn phase took {time.perf_counter() - clock:.1f}s")

    return {
        **throughput,
        "activities_per_workflow": sum(bench.shape),
        "workflow_shape": bench.shape,
        "turns_per_workflow": len(bench.turn_nodes),
        **turns,
        "worker_kb_per_workflow": round(graphflow_kb, 1),
        "bare_kb_per_workflow": round(bare_kb, 1),
        "workflows_parked_for_memory": parked,
        "quick": quick,
    }



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run takes under a minute")
    run_bench("engine", parser, lambda args: run(args.quick))


if __name__ == "__main__":
    main()
