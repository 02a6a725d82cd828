"""The main job in one process: embedded stack, an in-process worker, a template run to completion.

The demo plays the approver itself (and says so), so it finishes unattended; under
``convergio up`` a person decides through the API or the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from convergio.agents.catalog import default_catalog
from convergio.graphflow.loader import default_registry
from convergio.graphflow.run_models import ApprovalDecision, GraphFlowResult, PendingApproval, StepState
from convergio.graphflow.runs import build_run_input, start_template_run, with_performance_records
from convergio.settings import Settings
from convergio.stack.embedded import EmbeddedStack, ProgressCallback
from convergio.temporal_client import connect_temporal
from convergio.knowledge import sample_dir
from convergio.rag.embeddings import build_embedder
from convergio.rag.ingest import expand_paths, ingest_files
from convergio.rag.store import KnowledgeStore
from convergio.workers.worker import WorkerResources, build_worker, open_resources
from convergio.workflows.graphflow import GraphFlowWorkflow

DEMO_TEMPLATE = "strategic-analysis"
DEMO_INPUTS: dict[str, Any] = {
    "company": "Acme Analytics",
    "question": "Should Acme Analytics expand into the German mid-market?",
    "market": "German mid-market manufacturers",
    "brief": (
        "Germany has about 12,000 mid-market manufacturers, and 30% of them already buy analytics software "
        "[source: market-report-2026]. Our average contract is worth 40,000 euros a year with a 70% gross "
        "margin [source: finance-kpis]. Entering needs a Munich sales office costing 1.2 million euros a year "
        "and GDPR-compliant hosting in the EU [source: ops-plan]. Two local competitors hold most of the market "
        "and discount aggressively [source: win-loss-review]. Customers name predictive maintenance as their "
        "top need and expect German-language support [source: customer-interviews]."
    ),
}
DEMO_APPROVER = "convergio-demo"

StepCallback = Callable[[StepState], None]
GateCallback = Callable[[PendingApproval, ApprovalDecision], None]


async def run_demo(
    settings: Settings,
    *,
    template_name: str = DEMO_TEMPLATE,
    inputs: dict[str, Any] | None = None,
    progress: ProgressCallback,
    on_step: StepCallback,
    on_gate: GateCallback,
) -> tuple[GraphFlowResult, str]:
    template = default_registry().get(template_name)
    run = build_run_input(
        template, inputs or DEMO_INPUTS, default_catalog(), tenant="default", model=None, settings=settings
    )
    stack = EmbeddedStack(settings)
    endpoints = await stack.start(progress)
    try:
        client = await connect_temporal(settings, endpoints.temporal_address)
        async with open_resources(
            endpoints.database_url, endpoints.redis_url, event_retention=settings.event_retention
        ) as resources:
            progress("knowledge base")
            await ingest_sample_knowledge(settings, resources, run.tenant)
            progress("worker")
            async with resources.pool.connection() as conn:
                run = await with_performance_records(run, conn)
            async with build_worker(client, settings, resources):
                started = await start_template_run(client, settings, run)
                progress(f"workflow {started.workflow_id}")
                handle = client.get_workflow_handle_for(GraphFlowWorkflow.run, started.workflow_id)
                result_task = asyncio.ensure_future(handle.result())
                await _follow(handle, result_task, on_step, on_gate)
                return await result_task, started.temporal_ui_url
    finally:
        stack.stop()


async def ingest_sample_knowledge(settings: Settings, resources: WorkerResources, tenant: str) -> int:
    """The shipped sample knowledge base, for the template's knowledge steps; again is a no-op (hashes)."""
    store = KnowledgeStore(resources.pool, build_embedder(settings, resources.redis), settings)
    report = await ingest_files(store, expand_paths([sample_dir()]), tenant)
    return report.chunks_added


async def _follow(handle: Any, done: asyncio.Future[Any], on_step: StepCallback, on_gate: GateCallback) -> None:
    """Report step changes while the run goes on, and approve each gate as the demo operator."""
    seen: dict[str, str] = {}
    decided: set[str] = set()
    while not done.done():
        status = await handle.query(GraphFlowWorkflow.status)
        for step in status.steps:
            if seen.get(step.id) != step.status:
                seen[step.id] = step.status
                on_step(step)
        for gate in status.pending_approvals:
            if gate.gate_id in decided:
                continue
            decided.add(gate.gate_id)
            decision = ApprovalDecision(
                gate_id=gate.gate_id,
                approver=DEMO_APPROVER,
                role=gate.approvers[0],
                comment="approved by `convergio demo` so the run finishes unattended",
            )
            await handle.signal(GraphFlowWorkflow.approve, decision)
            on_gate(gate, decision)
        await asyncio.wait([done], timeout=0.25)
