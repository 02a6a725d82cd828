"""Attach a reviewer's score to the ledger entry of the turn it judged (quality per dollar)."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity

from convergio.costs import ledger


class QualityScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str
    turn: int = Field(ge=1)
    score: float = Field(ge=0, le=10)


class QualityActivities:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @activity.defn(name="record_quality")
    async def record_quality(self, quality: QualityScore) -> bool:
        return await ledger.set_quality(self._pool, quality.workflow_id, quality.step_id, quality.turn, quality.score)
