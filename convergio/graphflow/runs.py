"""Start a template run: resolve inputs, pin the template and its agents, start the workflow."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from psycopg import AsyncConnection
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from convergio.agents.catalog import AgentCatalog
from convergio.agents.performance import with_records
from convergio.costs.budget import BudgetLimits, resolve_limits
from convergio.failures import root_cause
from convergio.graphflow.loader import resolve_inputs
from convergio.graphflow.run_models import ApprovalDecision, GraphFlowInput, GraphFlowResult, RunStatus
from convergio.graphflow.template import Template
from convergio.security.guardian import redact
from convergio.settings import Settings
from convergio.workflows.graphflow import TEMPLATE_KEY, GraphFlowWorkflow, initial_search_attributes


class TemplateRunStarted(BaseModel):
    workflow_id: str
    run_id: str | None
    template: str
    version: int
    temporal_ui_url: str


class TemplateRunRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "template": "strategic-analysis",
                    "inputs": {"company": "Acme Analytics", "question": "Should we enter the German market?"},
                }
            ]
        },
    )

    template: str = Field(min_length=1, max_length=64, examples=["strategic-analysis"])
    version: int | None = Field(default=None, ge=1, description="Unset: the latest version.")
    inputs: dict[str, Any] = Field(default_factory=dict)
    tenant: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="Unset: the caller's tenant. Another tenant: admins only.",
    )
    model: str | None = Field(default=None, max_length=200, description="Model override for every agent.")


def build_run_input(
    template: Template,
    inputs: Mapping[str, Any],
    catalog: AgentCatalog,
    *,
    tenant: str,
    model: str | None,
    settings: Settings | None = None,
    budget_may_loosen: bool = True,
) -> GraphFlowInput:
    """Everything the run needs, resolved now: inputs with defaults, agents, budget limits
    (``budget_may_loosen``: see :func:`run_limits`)."""
    agents = {name: catalog.get(name) for step in template.steps for name in step.agents}
    return GraphFlowInput(
        template=template,
        inputs=resolve_inputs(template, inputs),
        agents=agents,
        tenant=tenant,
        model=model,
        budget=run_limits(
            settings or Settings(_env_file=None), template, tenant,  # type: ignore[call-arg]
            may_loosen=budget_may_loosen,
        ),
    )


def default_limits(settings: Settings) -> BudgetLimits:
    """CONVERGIO_BUDGET_* as limits; the tenant's own (CONVERGIO_BUDGET_TENANT_LIMITS) go on top."""
    return BudgetLimits(
        daily_usd=settings.budget_daily_usd,
        workflow_usd=settings.budget_workflow_usd,
        turn_spike_fraction=settings.budget_turn_spike_fraction,
    )


def run_limits(
    settings: Settings, template: Template, tenant: str, *, may_loosen: bool = True
) -> BudgetLimits:
    """Settings' defaults, then the tenant's overrides, then the template's own budget. Without
    ``may_loosen`` (a tenant's own stored template), the template only tightens a limit."""
    defaults = default_limits(settings)
    own = template.budget.model_dump(include={"daily_usd", "workflow_usd", "turn_spike_fraction"}, exclude_none=True)
    if not may_loosen:
        set_by_operator = resolve_limits(defaults, settings.budget_tenant_limits, None, tenant, template.name)
        own = {
            field: value for field, value in own.items()
            if getattr(set_by_operator, field) is None or value <= getattr(set_by_operator, field)
        }
    return resolve_limits(defaults, settings.budget_tenant_limits, {template.name: own}, tenant, template.name)


def template_workflow_id(template: Template, idempotency_key: str | None, tenant: str = "default") -> str:
    """With an idempotency key, the same id for the same tenant and key: a retry finds the first run.

    The tenant is part of the digest, so two tenants using the same key never share a run.
    """
    if idempotency_key:
        digest = hashlib.sha256(f"{tenant}\x00{idempotency_key}".encode()).hexdigest()[:20]
        return f"{template.name}-{digest}"
    return f"{template.name}-{uuid.uuid4().hex[:20]}"


async def with_performance_records(run: GraphFlowInput, conn: AsyncConnection) -> GraphFlowInput:
    """The run with each agent's performance blended with its record of reviewer scores
    (``convergio.agents.performance``); pinned with the run, like the agents themselves."""
    return run.model_copy(update={"agents": await with_records(conn, run.tenant, run.agents)})


async def start_template_run(
    client: Client,
    settings: Settings,
    run: GraphFlowInput,
    *,
    idempotency_key: str | None = None,
    search_attributes: bool = True,
) -> TemplateRunStarted:
    template = run.template
    workflow_id = template_workflow_id(template, idempotency_key, run.tenant)
    subject = next((str(v) for k, v in run.inputs.items() if k in ("question", "product", "market") and v), "")
    try:
        handle = await client.start_workflow(
            GraphFlowWorkflow.run,
            run,
            id=workflow_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=initial_search_attributes(run) if search_attributes else None,
            # Shown in the Web UI's list of runs: what the guardian would redact stays out of it.
            static_summary=redact(
                f"{template.name} v{template.version} · {run.inputs.get('company', '')} · {subject}"
            )[:200],
            static_details=redact(_details(run)),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        run_id = handle.first_execution_run_id or handle.result_run_id
    except WorkflowAlreadyStartedError as exc:
        run_id = exc.run_id
    return TemplateRunStarted(
        workflow_id=workflow_id,
        run_id=run_id,
        template=template.name,
        version=template.version,
        temporal_ui_url=settings.workflow_ui_url(workflow_id),
    )


def _details(run: GraphFlowInput) -> str:
    steps = "\n".join(
        f"{i}. **{step.label}** ({step.kind}: {', '.join(step.agents) or step.tool or ', '.join(step.approvers)})"
        for i, step in enumerate(run.template.steps, 1)
    )
    inputs = "\n".join(f"- `{k}`: {v}" for k, v in run.inputs.items() if v not in (None, ""))
    return f"{run.template.description}\n\n**Steps**\n\n{steps}\n\n**Inputs**\n\n{inputs}"


class RunView(BaseModel):
    """A run as the API and CLI show it: live status while running, the report when done."""

    workflow_id: str
    status: str
    workflow_type: str
    template: str | None = None
    temporal_ui_url: str
    progress: RunStatus | None = None
    result: GraphFlowResult | None = None
    error: str | None = None


QUERY_TIMEOUT = timedelta(seconds=5)


def no_worker_answered(exc: RPCError) -> bool:
    """Whether a query failed for want of a worker (none running, or a busy or restarting one), not
    because of the run: it timed out, or, once no worker polled for about a minute, Temporal
    answers at once with FAILED_PRECONDITION "no poller seen for task queue recently"."""
    if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
        return True
    return exc.status == RPCStatusCode.FAILED_PRECONDITION and "no poller" in exc.message


async def read_template_run(client: Client, settings: Settings, workflow_id: str) -> RunView:
    handle = client.get_workflow_handle_for(GraphFlowWorkflow.run, workflow_id)
    description = await handle.describe()
    status = description.status or WorkflowExecutionStatus.RUNNING
    template = description.typed_search_attributes.get(TEMPLATE_KEY)
    view = RunView(
        workflow_id=workflow_id,
        status=status.name.lower(),
        workflow_type=description.workflow_type,
        template=template,
        temporal_ui_url=settings.workflow_ui_url(workflow_id),
    )
    if status == WorkflowExecutionStatus.RUNNING:
        try:
            view.progress = await handle.query(GraphFlowWorkflow.status, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            if no_worker_answered(exc):
                # Queries are answered by a worker; without one the run is shown without its progress.
                view.error = f"no worker answered ({exc.message}); is a worker running?"
            elif (await handle.describe()).status not in (None, WorkflowExecutionStatus.RUNNING):
                return await read_template_run(client, settings, workflow_id)  # it closed meanwhile
            else:
                raise
    elif status == WorkflowExecutionStatus.COMPLETED:
        view.result = await handle.result()
    else:
        try:
            await handle.result()
        except WorkflowFailureError as exc:
            view.error = root_cause(exc)
            details = getattr(exc.cause, "details", ())
            if details and isinstance(details[0], dict):
                view.result = GraphFlowResult.model_validate(details[0])
        except Exception as exc:  # noqa: BLE001 - cancelled, terminated, timed out: report why
            view.error = root_cause(exc)
    return view


async def decide(
    client: Client,
    workflow_id: str,
    outcome: Literal["approve", "deny", "request_changes"],
    decision: ApprovalDecision,
) -> None:
    """Send a decision; the workflow records and ignores one it cannot accept."""
    handle = client.get_workflow_handle_for(GraphFlowWorkflow.run, workflow_id)
    signal = {
        "approve": GraphFlowWorkflow.approve,
        "deny": GraphFlowWorkflow.deny,
        "request_changes": GraphFlowWorkflow.request_changes,
    }[outcome]
    await handle.signal(signal, decision)
