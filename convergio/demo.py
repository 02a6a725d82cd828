"""The main job in one process: embedded stack, an in-process worker, one run to completion."""

from __future__ import annotations

from convergio.contracts import AgentTurnRequest, AgentTurnResult
from convergio.settings import Settings
from convergio.stack.embedded import EmbeddedStack, ProgressCallback
from convergio.temporal_client import connect_temporal
from convergio.workers.worker import build_worker, open_resources
from convergio.workflow_runs import start_agent_turn


async def run_demo(
    settings: Settings, request: AgentTurnRequest, progress: ProgressCallback
) -> tuple[AgentTurnResult, str]:
    stack = EmbeddedStack(settings)
    endpoints = await stack.start(progress)
    try:
        client = await connect_temporal(settings, endpoints.temporal_address)
        async with open_resources(endpoints.database_url, endpoints.redis_url) as resources:
            progress("worker")
            async with build_worker(client, settings, resources):
                started = await start_agent_turn(client, settings, request)
                progress(f"workflow {started.workflow_id}")
                handle = client.get_workflow_handle(started.workflow_id, result_type=AgentTurnResult)
                result = await handle.result()
        return result, started.temporal_ui_url
    finally:
        stack.stop()
