"""Attach a reviewer's score to the ledger entries of the turns that wrote the answer it judged
(quality per dollar, and the agents' records the speaker selector reads)."""

from __future__ import annotations

from typing import Annotated, Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from temporalio import activity

from convergio.costs import ledger


class QualityScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    step_id: str
    turn: int = Field(ge=1, description="The turn that gave the answer.")
    also_turns: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="A team answer: the other speakers' last turns in the chat."
    )
    score: float = Field(ge=0, le=10)

    @model_serializer(mode="wrap")
    def _without_empty_also_turns(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """An agent step's score serialises as before ``also_turns`` existed, so workers still on
        the older code can record it during a rolling deploy."""
        data: dict[str, Any] = handler(self)
        if not self.also_turns:
            data.pop("also_turns", None)
        return data


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
