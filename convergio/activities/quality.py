"""Attach a reviewer's score to the ledger entries of the turns that wrote the answer it judged
(quality per dollar, and the agents' records the speaker selector reads)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from convergio.costs import ledger


class QualityScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str
    turn: int = Field(ge=1, description="The turn that gave the answer.")
    also_turns: list[int] = Field(
        default_factory=list, description="A team answer: the other speakers' last turns in the chat."
    )
    score: float = Field(ge=0, le=10)


class QualityActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @activity.defn(name="record_quality")
    async def record_quality(self, quality: QualityScore) -> bool:
        """Were all those turns found in the ledger?"""
        turns = {quality.turn, *quality.also_turns}
        found = await ledger.set_quality(
            self._pool, quality.workflow_id, quality.step_id, sorted(turns), quality.score
        )
        return found == len(turns)
