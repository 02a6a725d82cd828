"""The baseline of ``bench/engine.py``: a bare Temporal workflow running batches of no-op
activities, the same shape as a Strategic Analysis run. Its own small module so the worker
can pass it through the sandbox exactly as it passes Convergio's workflow modules."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop_activity() -> None:
    """Does nothing: the cost of an activity round trip and nothing else."""


@workflow.defn(name="BenchBare")
class BareWorkflow:
    """``shape``: batches of concurrent no-op activities, run one batch after the other;
    a 0 is a gate that waits for the ``approve`` signal."""

    def __init__(self) -> None:
        self._approved = False

    @workflow.run
    async def run(self, shape: list[int]) -> int:
        done = 0
        for size in shape:
            if size == 0:
                await workflow.wait_condition(lambda: self._approved)
                continue
            await asyncio.gather(
                *(
                    workflow.execute_activity(noop_activity, start_to_close_timeout=timedelta(minutes=1))
                    for _ in range(size)
                )
            )
            done += size
        return done

    @workflow.signal
    def approve(self) -> None:
        self._approved = True
