"""Shared helpers for GraphFlow tests: start a template run and act as an approver."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, WorkflowRunner

from convergio.agents.catalog import default_catalog
from convergio.contracts import AgentTurnInput
from convergio.graphflow.loader import default_registry, parse_template
from convergio.graphflow.run_models import ApprovalDecision, GraphFlowResult, PendingApproval
from convergio.graphflow.runs import build_run_input, start_template_run
from convergio.graphflow.template import Template
from convergio.settings import Settings
from convergio.tools.registry import tool_names
from convergio.workers.sandbox import workflow_runner
from convergio.workflows.graphflow import GraphFlowWorkflow

STRATEGIC_INPUTS = {
    "company": "Acme Analytics",
    "question": "Should we expand into the German mid-market?",
    "market": "German mid-market manufacturing analytics",
    "brief": (
        "Germany has about 12,000 mid-market manufacturers and 30% already buy analytics software. "
        "Our average contract is worth 40,000 euros a year at a 70% gross margin. "
        "Two local competitors discount aggressively. A Munich office costs 1.2 million euros a year."
    ),
}


def custom_template(data: dict[str, Any]) -> Template:
    return parse_template(data, agents=default_catalog().names(), tools=tool_names(), source="<test>")


async def start(
    client: Client, settings: Settings, template: Template | str, inputs: dict[str, Any], **kwargs: Any
) -> WorkflowHandle[Any, GraphFlowResult]:
    if isinstance(template, str):
        template = default_registry().get(template)
    run = build_run_input(template, inputs, default_catalog(), tenant=kwargs.pop("tenant", "default"), model=None)
    started = await start_template_run(client, settings, run, **kwargs)
    return client.get_workflow_handle_for(GraphFlowWorkflow.run, started.workflow_id)


async def wait_for_gate(handle: WorkflowHandle, gate_id: str, timeout: float = 60) -> PendingApproval:
    for _ in range(int(timeout / 0.1)):
        pending = await handle.query(GraphFlowWorkflow.pending_approvals)
        for gate in pending:
            if gate.gate_id == gate_id:
                return gate
        await asyncio.sleep(0.1)
    raise AssertionError(f"gate {gate_id} never opened")


def decision(
    gate_id: str, role: str = "executive", approver: str = "Ada", comment: str = "", edits: str | None = None
) -> ApprovalDecision:
    return ApprovalDecision(gate_id=gate_id, approver=approver, role=role, comment=comment, edits=edits)


def replayer(runner: WorkflowRunner | None = None) -> Replayer:
    """A replayer with the worker's workflows, converter and sandbox runner (or ``runner``): the
    default runner does not pass OpenTelemetry through, so replaying warned about late imports."""
    from convergio.workers.worker import WORKFLOWS

    runner = runner or workflow_runner()
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=runner)


def turn_inputs(history: WorkflowHistory, step_id: str) -> list[AgentTurnInput]:
    """What each model turn of a step was sent (decoded from the history), in order."""
    scheduled = [e.activity_task_scheduled_event_attributes for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    inputs = [pydantic_data_converter.payload_converter.from_payload(a.input.payloads[0], AgentTurnInput)
              for a in scheduled if a.activity_type.name == "run_agent_turn"]
    return [turn for turn in inputs if turn.step_id == step_id]
