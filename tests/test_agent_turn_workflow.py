"""The walking skeleton end to end on the real dev server, Postgres and Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from convergio.activities.agent_turn import AgentTurnActivities
from convergio.contracts import AgentProfile, AgentTurnInput, AgentTurnRequest, AgentTurnResult
from convergio.events import AgentEvent, EventPublisher
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflow_runs import read_run, start_agent_turn

CFO = AgentProfile(
    name="cfo",
    role="Chief Financial Officer",
    system_message="You are the CFO. You judge investments by payback, margin and cash.",
)
TASK = (
    "Judge the proposal. Revenue grew 40% last year to 12 million euros. "
    "Hiring ten engineers costs 1.5 million euros a year. "
    "Cover: Revenue, Costs, Recommendation."
)


async def _events(redis_client, workflow_id: str) -> list[AgentEvent]:
    return await EventPublisher(redis_client).read(workflow_id)


async def test_run_completes_with_grounded_answer_recorded_and_streamed(
    dev_client: Client, settings: Settings, resources: WorkerResources, db_pool, redis_client
) -> None:
    request = AgentTurnRequest(task=TASK, agent=CFO)
    async with build_worker(dev_client, settings, resources):
        started = await start_agent_turn(dev_client, settings, request)
        result = await dev_client.get_workflow_handle(started.workflow_id, result_type=AgentTurnResult).result()

    assert result.agent == "cfo" and result.model == "offline"
    assert result.finish_reason == "stop"
    for section in ("## Revenue", "## Costs", "## Recommendation"):
        assert section in result.content
    # Grounded: the revenue sentence of the task lands in the answer.
    assert "Revenue grew 40%" in result.content
    assert result.prompt_tokens > 0 and result.completion_tokens > 0

    async with db_pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT content, completion_tokens FROM agent_turns WHERE workflow_id = %s",
                (started.workflow_id,),
            )
        ).fetchone()
    assert row == (result.content, result.completion_tokens)

    events = await _events(redis_client, started.workflow_id)
    kinds = [event.type for event in events]
    assert kinds[0] == "turn_started" and kinds[-1] == "turn_finished"
    chunks = "".join(str(event.data["text"]) for event in events if event.type == "text_chunk")
    assert chunks == result.content
    assert kinds.count("text_chunk") > 1

    state = await read_run(dev_client, settings, started.workflow_id)
    assert state.status == "completed" and state.result == result


async def test_search_attributes_and_summary_are_visible(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    request = AgentTurnRequest(task=TASK, agent=CFO, tenant=tenant)
    async with build_worker(dev_client, settings, resources):
        started = await start_agent_turn(dev_client, settings, request)
        handle = dev_client.get_workflow_handle(started.workflow_id)
        await handle.result()

    description = await handle.describe()
    summary = await description.static_summary()
    assert summary is not None and summary.startswith("Chief Financial Officer · Judge the proposal")
    assert "**Task**" in (await description.static_details() or "")
    history = await handle.fetch_history()
    scheduled = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")]
    activity_summary = dev_client.data_converter.payload_converter.from_payload(
        scheduled[0].user_metadata.summary, str
    )
    assert activity_summary == "Chief Financial Officer · answer"
    query = f'ConvergioTenant = "{tenant}" AND ConvergioStatus = "completed" AND ConvergioTemplate = "agent-turn"'
    found: list[str] = []
    for _ in range(50):  # visibility is eventually consistent
        found = [execution.id async for execution in dev_client.list_workflows(query)]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found == [started.workflow_id]


async def test_same_idempotency_key_never_starts_a_second_run(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    key = f"key-{uuid.uuid4()}"
    request = AgentTurnRequest(task=TASK, agent=CFO)
    async with build_worker(dev_client, settings, resources):
        first = await start_agent_turn(dev_client, settings, request, idempotency_key=key)
        await dev_client.get_workflow_handle(first.workflow_id).result()
        again = await start_agent_turn(dev_client, settings, request, idempotency_key=key)
    assert again.workflow_id == first.workflow_id
    assert again.run_id == first.run_id


async def test_retried_turn_is_served_from_the_ledger_without_a_model_call(
    settings: Settings, resources: WorkerResources, redis_client
) -> None:
    activities = AgentTurnActivities(settings, resources.pool, resources.events)
    turn = AgentTurnInput(
        workflow_id=f"wf-{uuid.uuid4()}", step_id="answer", turn=1, request=AgentTurnRequest(task=TASK, agent=CFO)
    )
    env = ActivityEnvironment()
    first = await env.run(activities.run_agent_turn, turn)
    events_after_first = len(await _events(redis_client, turn.workflow_id))
    second = await env.run(activities.run_agent_turn, turn)

    assert first.replayed_from_ledger is False
    assert second.replayed_from_ledger is True
    assert second.content == first.content
    assert second.completion_tokens == first.completion_tokens
    # No second model call: nothing new was streamed.
    assert len(await _events(redis_client, turn.workflow_id)) == events_after_first


async def test_bad_model_override_fails_the_run_with_the_setting_named(
    dev_client: Client, settings: Settings, resources: WorkerResources
) -> None:
    from temporalio.client import WorkflowFailureError

    request = AgentTurnRequest(task=TASK, agent=CFO, model="openai:gpt-4o-mini")  # no key configured
    async with build_worker(dev_client, settings, resources):
        started = await start_agent_turn(dev_client, settings, request)
        with pytest.raises(WorkflowFailureError) as failure:
            await dev_client.get_workflow_handle(started.workflow_id).result()
    activity_failure = failure.value.cause
    assert "CONVERGIO_OPENAI_API_KEY" in str(activity_failure.cause)
    state = await read_run(dev_client, settings, started.workflow_id)
    assert state.status == "failed"
    assert state.error is not None and "CONVERGIO_OPENAI_API_KEY" in state.error


async def test_runs_on_the_time_skipping_server(
    time_skipping_env: WorkflowEnvironment, settings: Settings, resources: WorkerResources
) -> None:
    client = time_skipping_env.client
    worker_settings = settings.model_copy(update={"temporal_task_queue": "convergio-time-skipping"})
    request = AgentTurnRequest(task=TASK, agent=CFO)
    async with build_worker(client, worker_settings, resources):
        started = await start_agent_turn(client, worker_settings, request, search_attributes=False)
        result = await client.get_workflow_handle(started.workflow_id, result_type=AgentTurnResult).result()
    assert "## Recommendation" in result.content

