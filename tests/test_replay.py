"""Determinism guard: recorded histories of every template must replay on today's code.

``tests/histories/*.json`` are runs recorded before knowledge retrieval and live events existed;
``tests/histories/per-patch-markers/`` holds runs that recorded one marker per workflow change,
before ``ALL_CHANGES_V1`` stood for all of them; ``tests/histories/paths/`` holds runs of small
templates that take paths the shipped templates do not (a loop, change requests on a team, a
stale decision, a condition that cannot be evaluated). After an intended, versioned change to workflow
code, record new histories with ``RECORD_TEMPORAL_HISTORIES=1 bash scripts/test.sh
tests/test_replay.py`` and commit the files written under ``tests/histories/``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from convergio.graphflow.loader import default_registry
from convergio.settings import Settings
from convergio.workers.sandbox import workflow_runner
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflows.graphflow import ALL_CHANGES_V1, GraphFlowWorkflow
from tests.graphflow_helpers import STRATEGIC_INPUTS, decision, replayer, start, wait_for_gate

HISTORIES = Path(__file__).parent / "histories"
TEMPLATE_RUNS = {
    "strategic-analysis": (STRATEGIC_INPUTS, "executive_approval", "executive"),
    "product-launch": (
        {"company": "Acme", "product": "Acme Predict", "brief": "Pilot customers cut downtime by 20%."},
        "launch_readiness",
        "product_owner",
    ),
    "market-entry": (
        {"company": "Acme", "market": "Poland", "brief": "Poland has 4,000 mid-market manufacturers."},
        "entry_approval",
        "country_manager",
    ),
}


def test_every_template_has_a_recorded_history() -> None:
    recorded = sorted(path.stem for path in HISTORIES.glob("*.json"))
    assert recorded == sorted(default_registry().names())


RECORDED = [
    *sorted(HISTORIES.glob("*.json")),
    *sorted((HISTORIES / "per-patch-markers").glob("*.json")),
    *sorted((HISTORIES / "paths").glob("*.json")),
]


def test_every_template_has_a_per_patch_marker_history() -> None:
    recorded = sorted(path.stem for path in (HISTORIES / "per-patch-markers").glob("*.json"))
    assert recorded == sorted(default_registry().names())


@pytest.mark.parametrize("runner", ["convergio", "sdk"])
@pytest.mark.parametrize("path", RECORDED, ids=lambda path: f"{path.parent.name}/{path.stem}")
async def test_recorded_history_replays(path: Path, runner: str) -> None:
    """Under Convergio's sandbox runner and under temporalio's own."""
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    sdk_runner = SandboxedWorkflowRunner(restrictions=workflow_runner().restrictions)
    result = await replayer(sdk_runner if runner == "sdk" else None).replay_workflow(history)
    assert result.replay_failure is None


@pytest.mark.parametrize("template", sorted(TEMPLATE_RUNS))
async def test_fresh_history_replays(
    template: str, dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    inputs, gate, role = TEMPLATE_RUNS[template]
    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, template, inputs)
        await wait_for_gate(handle, gate)
        await handle.signal(GraphFlowWorkflow.approve, decision(gate, role=role))
        result = await handle.result()
    assert result.status == "completed"
    history = await handle.fetch_history()
    replay = await replayer().replay_workflow(history)
    assert replay.replay_failure is None
    markers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    # One marker for all workflow changes (each marker also costs a search-attribute write).
    patches = [
        json.loads(marker.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)
        for marker in markers
    ]
    assert [patch["id"] for patch in patches] == [ALL_CHANGES_V1]
    if os.environ.get("RECORD_TEMPORAL_HISTORIES") == "1":
        (HISTORIES / f"{template}.json").write_text(history.to_json())


# A team drafts, a reviewer critiques, and a loop sends the run back once; then a person asks
# for changes to both outputs before approving. Its history holds the rework and loop rounds.
REVISIT_TEMPLATE = {
    "name": "revisit",
    "version": 1,
    "steps": [
        {"id": "draft", "kind": "team", "participants": ["strategic", "cfo"], "max_turns": 2,
         "title": "Draft", "instruction": "Draft the plan. Cover: Plan."},
        {"id": "critique", "agent": "reviewer", "depends_on": ["draft"], "title": "Critique",
         "instruction": "Critique the draft. Cover: Critique.",
         "loop": {"back_to": "draft", "while": "steps.critique.status == 'completed'", "max_iterations": 2}},
        {"id": "sign_off", "kind": "approval", "depends_on": ["draft", "critique"], "approvers": ["executive"]},
    ],
}


async def test_a_run_through_loops_and_change_requests_replays(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """Recorded as tests/histories/paths/revisit.json (with RECORD_TEMPORAL_HISTORIES=1)."""
    from tests.graphflow_helpers import custom_template

    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(REVISIT_TEMPLATE), {})
        await wait_for_gate(handle, "sign_off")
        await handle.signal(GraphFlowWorkflow.request_changes, decision("sign_off", comment="Add the costs."))
        for _ in range(300):  # the gate opens again once both steps are reworked
            status = await handle.query(GraphFlowWorkflow.status)
            if status.pending_approvals and all(s.revisions for s in status.steps if s.id != "sign_off"):
                break
            await asyncio.sleep(0.1)
        await handle.signal(GraphFlowWorkflow.approve, decision("sign_off"))
        result = await handle.result()
    assert result.status == "completed"
    assert {s.id: s.iterations for s in result.steps} == {"draft": 2, "critique": 2, "sign_off": 1}
    await replays_with_marker(await handle.fetch_history(), "revisit-context-v1", "revisit")


async def replays_with_marker(history: WorkflowHistory, marker: str, name: str) -> None:
    """The run replays and recorded ``marker``; with RECORD_TEMPORAL_HISTORIES=1 it is written to
    tests/histories/paths/<name>.json."""
    assert (await replayer().replay_workflow(history)).replay_failure is None
    markers = [e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
               for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    assert any(marker.encode() in recorded for recorded in markers)
    if os.environ.get("RECORD_TEMPORAL_HISTORIES") == "1":
        (HISTORIES / "paths").mkdir(exist_ok=True)
        (HISTORIES / "paths" / f"{name}.json").write_text(history.to_json())


UNEVALUABLE_TEMPLATE = {
    "name": "unevaluable",
    "version": 1,
    "inputs": {"units": {"type": "number", "default": 0}},
    "steps": [
        {"id": "draft", "agent": "strategic", "title": "Draft", "instruction": "Draft the plan. Cover: Plan.",
         "requires_approval": True, "approvers": ["executive"]},
        {"id": "pricing", "agent": "cfo", "depends_on": ["draft"], "instruction": "Price it. Cover: Prices.",
         "when": "100 / inputs.units > 1"},
    ],
}


async def test_a_run_failed_by_its_condition_after_a_stale_decision_replays(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    """Recorded as tests/histories/paths/unevaluable.json: a decision for an earlier round of a gate
    is ignored, then a condition that cannot be evaluated fails its step and the run, with the report
    (patch condition-failure-report-v1)."""
    from temporalio.client import WorkflowFailureError

    from tests.graphflow_helpers import custom_template

    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(UNEVALUABLE_TEMPLATE), {})
        first = await wait_for_gate(handle, "draft")
        await handle.signal(GraphFlowWorkflow.request_changes, decision("draft", comment="Add the costs."))
        for _ in range(300):  # the gate opens again once the draft is reworked
            pending = await handle.query(GraphFlowWorkflow.pending_approvals)
            if pending and pending[0].requested_at != first.requested_at:
                break
            await asyncio.sleep(0.1)
        await handle.signal(GraphFlowWorkflow.approve, decision("draft").model_copy(
            update={"reviewed_at": first.requested_at}))
        await handle.signal(GraphFlowWorkflow.approve, decision("draft").model_copy(
            update={"reviewed_at": pending[0].requested_at}))
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    report = failure.value.cause.details[0]  # type: ignore[union-attr]
    assert {s["id"]: s["status"] for s in report["steps"]} == {"draft": "completed", "pricing": "failed"}
    outcomes = [entry["outcome"] for entry in report["audit"]]
    assert outcomes[0] == "changes requested" and outcomes[2] == "approved", outcomes
    assert outcomes[1].startswith("approve ignored: the gate reopened"), outcomes
    await replays_with_marker(await handle.fetch_history(), "condition-failure-report-v1", "unevaluable")
