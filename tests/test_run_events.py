"""Every kind of live event a run announces reaches its Redis stream (what SSE and the
WebSocket serve): turns, cost updates, handoffs, tool calls and results, gates requested and
decided, SLA warnings and breaches."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from convergio.api.workflows import follow_events
from convergio.events import AgentEvent, EventFactory, EventPublisher
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflows.graphflow import GraphFlowWorkflow
from tests.graphflow_helpers import custom_template, decision, start, wait_for_gate
from tests.test_approvals import finish


def eventful_template() -> dict[str, Any]:
    return {
        "name": "eventful",
        "version": 1,
        "steps": [
            {"id": "numbers", "kind": "tool", "tool": "break_even",
             "arguments": {"fixed_costs": 120000, "price_per_unit": 100, "variable_cost_per_unit": 40}},
            {"id": "debate", "kind": "team", "participants": ["cfo", "strategic"], "max_turns": 2,
             "depends_on": ["numbers"], "instruction": "Debate the plan. Cover: Position."},
            # Nobody decides: at 80% of the SLA a warning, at the SLA a breach, an hour later the escalation approves.
            {"id": "sign_off", "kind": "approval", "depends_on": ["debate"], "approvers": ["executive"],
             "sla": "1h", "escalation": [{"action": "notify"},
                                         {"action": "auto_decide", "decision": "approve", "after": "1h"}]},
            {"id": "publish", "agent": "chief_of_staff", "depends_on": ["sign_off"],
             "instruction": "Publish the plan. Cover: Announcement."},
        ],
    }


async def test_a_run_announces_every_kind_of_event(
    time_skipping_env: WorkflowEnvironment, settings: Settings, resources: WorkerResources, redis_client
) -> None:
    queue_settings = settings.model_copy(update={"temporal_task_queue": "convergio-run-events"})
    async with build_worker(time_skipping_env.client, queue_settings, resources):
        handle = await start(
            time_skipping_env.client, queue_settings, custom_template(eventful_template()), {}, search_attributes=False
        )
        result = await finish(time_skipping_env, handle)
    assert result.status == "completed"
    events = await EventPublisher(redis_client).read(handle.id)
    by_type: dict[str, list[Any]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)
    for kind in ("turn_started", "text_chunk", "turn_finished", "cost_update", "handoff", "tool_call",
                 "tool_result", "approval_requested", "sla_warning", "sla_breach", "approval_decided"):
        assert kind in by_type, (kind, sorted(by_type))

    tool_call, tool_result = by_type["tool_call"][0], by_type["tool_result"][0]
    assert tool_call.step_id == tool_result.step_id == "numbers"
    assert tool_call.data["arguments"]["fixed_costs"] == 120000
    assert "2,000" in tool_result.data["summary"]  # 120,000 / (100 - 40) units

    handoff = by_type["handoff"][0]
    assert handoff.step_id == "debate" and handoff.data["from_agent"] != handoff.data["to_agent"]
    assert {handoff.data["from_agent"], handoff.data["to_agent"]} == {"cfo", "strategic"}

    # The run's cost grows turn by turn and ends where the result says.
    run_costs = [float(e.data["run_cost_usd"]) for e in by_type["cost_update"]]
    assert run_costs == sorted(run_costs) and run_costs[0] > 0
    assert 0 <= run_costs[-1] - result.cost_usd <= 1e-6 * len(run_costs)  # micro-dollars, rounded up

    requested, decided = by_type["approval_requested"][0], by_type["approval_decided"][0]
    assert requested.data["gate_id"] == decided.data["gate_id"] == "sign_off"
    assert requested.data["approvers"] == ["executive"] and requested.data["deadline"]
    assert decided.data["outcome"] == "approve" and decided.data["approver"] == "sla-escalation"
    order = [e.type for e in events]
    assert order.index("approval_requested") < order.index("sla_warning") < order.index("sla_breach")
    assert order.index("sla_breach") < order.index("approval_decided")
    assert by_type["sla_warning"][0].data["remaining_s"] == 12 * 60  # 20% of the hour


async def test_a_quiet_running_run_sends_heartbeats_then_end(
    dev_client: Client, settings: Settings, resources: WorkerResources, redis_client
) -> None:
    from tests.test_approvals import gated_template

    async with build_worker(dev_client, settings, resources):
        handle = await start(dev_client, settings, custom_template(gated_template()), {}, search_attributes=False)
        await wait_for_gate(handle, "sign_off")
        seen: list[str] = []
        stream = follow_events(redis_client, dev_client, handle.id, "0-0", heartbeat_s=0.5)
        async for item in stream:
            seen.append(item["event"])
            if item["event"] == "heartbeat":
                assert "id" not in item  # resuming with Last-Event-ID skips nothing
                assert json.loads(item["data"])["running"] is True
                break
        assert "approval_requested" in seen  # the gate's own event came first
        await handle.signal(GraphFlowWorkflow.approve, decision("sign_off"))
        await handle.result()
        rest = [item["event"] async for item in stream]
    assert rest[-1] == "end" and "approval_decided" in rest


class LateLastEvent:
    """The real Redis client, except that the first blocking read that comes back empty is followed
    at once by the run's last event: the moment a run's final events land just after the read
    gave up, before the stream looks at the (already closed) run."""

    def __init__(self, redis: aioredis.Redis, late: AgentEvent) -> None:
        self._redis = redis
        self._late: AgentEvent | None = late

    async def xread(self, streams: dict[str, str], count: int | None = None, block: int | None = None) -> Any:
        batch = await self._redis.xread(streams, count=count, block=block)
        if block is not None and not batch and self._late is not None:
            await EventPublisher(self._redis).publish(self._late)
            self._late = None
        return batch


async def test_events_that_land_as_the_run_closes_come_before_end(
    dev_client: Client, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """Before, `end` followed an empty blocking read at once when the run was closed, and the run's
    last events (written meanwhile) were never sent."""
    from tests.test_approvals import gated_template

    idle = settings.model_copy(update={"temporal_task_queue": "convergio-nobody-polls"})
    handle = await start(dev_client, idle, custom_template(gated_template()), {}, search_attributes=False)
    await handle.terminate("closed before its last event is read")
    last = EventFactory(handle.id, "draft", "strategic")("turn_finished", completion_tokens=2)
    redis: Any = LateLastEvent(redis_client, last)
    items = [item async for item in follow_events(redis, dev_client, handle.id, "0-0")]
    assert [item["event"] for item in items] == ["turn_finished", "end"]
    assert json.loads(items[0]["data"])["data"]["completion_tokens"] == 2
