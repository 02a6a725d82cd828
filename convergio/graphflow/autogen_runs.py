"""Start an AutoGen ``GraphFlow`` config as a durable ``AutoGenGraphFlow`` workflow run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from temporalio.client import Client

from convergio.costs.budget import resolve_limits
from convergio.graphflow.autogen_graph import load_graphflow_config
from convergio.graphflow.runs import default_limits
from convergio.security.policy import SecurityPolicy
from convergio.settings import Settings
from convergio.workflows.autogen_graphflow import AutoGenGraphFlowWorkflow


async def start_autogen_graphflow(
    client: Client,
    settings: Settings,
    config: Mapping[str, Any],
    task: str,
    *,
    workflow_id: str | None = None,
    model: str | None = None,
    tenant: str = "default",
) -> str:
    """Import ``config`` (``GraphFlow.dump_component().model_dump()``) and start it on ``task``.

    Returns the workflow id; ``client.get_workflow_handle(id).result()`` gives the
    :class:`~convergio.graphflow.autogen_graph.AutoGenGraphFlowResult`. Raises
    :class:`~convergio.graphflow.autogen_graph.GraphFlowImportError` before starting
    anything if the config cannot run durably. ``model`` overrides every participant's
    model (CONVERGIO_MODEL syntax); otherwise each uses the model its client config names
    when recognised; a client with no equivalent needs ``model``.

    Turns are metered against the tenant's budget and screened by the guardian like a
    template's: flagged text is redacted; a blocked turn, or one over budget, fails the run.
    """
    imported = load_graphflow_config(config)
    run = imported.run_input(task, model=model, tenant=tenant).model_copy(update={
        "budget": resolve_limits(default_limits(settings), settings.budget_tenant_limits, None, tenant, ""),
        "security": SecurityPolicy(on_flag="redact", on_block="block"),
    })
    workflow_id = workflow_id or f"autogen-graphflow-{uuid.uuid4().hex[:20]}"
    await client.start_workflow(
        AutoGenGraphFlowWorkflow.run,
        run,
        id=workflow_id,
        task_queue=settings.temporal_task_queue,
        static_summary=f"AutoGen {run.name} · {', '.join(run.participants)}"[:200],
    )
    return workflow_id
