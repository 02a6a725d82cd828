"""Proof of durability: SIGKILL the worker in the middle of a team step; the run finishes
on a new worker with the same result as an undisturbed run, and no completed model call
is repeated."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from convergio.events import EventPublisher
from convergio.settings import Settings
from convergio.workers.worker import WorkerResources, build_worker
from convergio.workflows.graphflow import GraphFlowWorkflow
from tests.graphflow_helpers import custom_template, start

TEMPLATE = {
    "name": "durable-debate",
    "version": 1,
    "inputs": {"topic": {"type": "string", "required": True}},
    "steps": [
        {"id": "brief", "agent": "market_analyst", "instruction": "Brief the team on {inputs.topic}. Cover: Facts."},
        {"id": "debate", "kind": "team", "participants": ["cfo", "strategic", "risk_officer"], "max_turns": 5,
         "depends_on": ["brief"], "heartbeat_timeout": "3s",
         "instruction": "Debate {inputs.topic}: revenue, margin, competitors and risks. Cover: Position."},
        {"id": "decision", "agent": "chief_of_staff", "depends_on": ["debate"],
         "instruction": "Decide on {inputs.topic}. Cover: Decision, Next steps."},
    ],
}
INPUTS = {"topic": "opening a Munich office for 1.2 million euros a year"}


def start_worker_process(settings: Settings, task_queue: str, log: Path) -> subprocess.Popen[bytes]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVERGIO_")}
    env.update(
        CONVERGIO_TEMPORAL_ADDRESS=str(settings.temporal_address),
        CONVERGIO_DATABASE_URL=str(settings.database_url),
        CONVERGIO_REDIS_URL=str(settings.redis_url),
        CONVERGIO_TEMPORAL_TASK_QUEUE=task_queue,
        CONVERGIO_OFFLINE_LATENCY_MS="400",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "convergio", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_for_poller(client: Client, task_queue: str, worker: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert worker.poll() is None, "worker exited"
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=task_queue))
        )
        if response.pollers:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("worker never polled")


async def test_worker_killed_mid_team_step_resumes_without_repeating_calls(
    dev_client: Client, settings: Settings, resources: WorkerResources, redis_client, tmp_path: Path
) -> None:
    template = custom_template(TEMPLATE)
    task_queue = f"durability-{uuid.uuid4().hex[:8]}"
    crash_settings = settings.model_copy(update={"temporal_task_queue": task_queue})
    log = tmp_path / "workers.log"

    first = start_worker_process(settings, task_queue, log)
    try:
        await wait_for_poller(dev_client, task_queue, first)
        handle = await start(dev_client, crash_settings, template, INPUTS)
        # Wait until the team step has finished at least one turn, then kill the worker hard.
        for _ in range(600):
            status = await handle.query(GraphFlowWorkflow.status)
            debate = next(step for step in status.steps if step.id == "debate")
            if debate.status == "running" and len(debate.agents) >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the team step never got going")
        turns_before_crash = len(debate.agents)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)

    second = start_worker_process(settings, task_queue, log)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    # The same run, undisturbed, on an in-process worker.
    async with build_worker(dev_client, settings, resources):
        calm = await (await start(dev_client, settings, template, INPUTS)).result()

    assert turns_before_crash < 5  # the crash really happened inside the team step
    assert [(t.step_id, t.agent, t.content) for t in result.turns] == [
        (t.step_id, t.agent, t.content) for t in calm.turns
    ]
    assert [s.output for s in result.steps] == [s.output for s in calm.steps]
    # Every completed model call happened once: one turn_finished event per turn in the result.
    events = await EventPublisher(redis_client).read(handle.id)
    finished = [(e.step_id, e.agent) for e in events if e.type == "turn_finished"]
    assert len(finished) == len(result.turns) == 7
