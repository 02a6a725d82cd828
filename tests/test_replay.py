"""Determinism guard: recorded histories must replay on today's workflow code.

To record a new history after an intended, versioned change, run
``RECORD_TEMPORAL_HISTORIES=1 bash scripts/test.sh tests/test_replay.py`` and commit
the file it writes under ``tests/histories/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from convergio.contracts import AgentProfile, AgentTurnRequest
from convergio.settings import Settings
from convergio.workers.worker import WORKFLOWS, WorkerResources, build_worker
from convergio.workflow_runs import start_agent_turn

HISTORIES = Path(__file__).parent / "histories"


def replayer() -> Replayer:
    return Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)


def recorded_histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded() -> None:
    assert [path.name for path in recorded_histories()] == ["agent_turn.json"]


@pytest.mark.parametrize("path", recorded_histories(), ids=lambda path: path.stem)
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None


async def test_fresh_history_replays(dev_client: Client, settings: Settings, resources: WorkerResources) -> None:
    request = AgentTurnRequest(
        task="Decide on the EU launch. Cover: Market, Costs, Recommendation.",
        agent=AgentProfile(name="cfo", role="Chief Financial Officer", system_message="You are the CFO."),
    )
    async with build_worker(dev_client, settings, resources):
        started = await start_agent_turn(dev_client, settings, request)
        handle = dev_client.get_workflow_handle(started.workflow_id)
        await handle.result()
    history = await handle.fetch_history()
    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None
    if os.environ.get("RECORD_TEMPORAL_HISTORIES") == "1":
        (HISTORIES / "agent_turn.json").write_text(history.to_json())
