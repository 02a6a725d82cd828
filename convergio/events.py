"""Agent events published to Redis Streams, one stream per workflow.

The API (SSE / WebSocket) reads these streams; publishing never blocks a turn for
long and a Redis outage never fails one (events are a view, the workflow is the truth).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

EventType = Literal["turn_started", "text_chunk", "turn_finished", "sla_breach", "error"]
STREAM_MAXLEN = 10_000


def stream_key(workflow_id: str) -> str:
    return f"convergio:events:{workflow_id}"


class AgentEvent(BaseModel):
    type: EventType
    workflow_id: str
    step_id: str
    agent: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class EventPublisher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def publish(self, event: AgentEvent) -> str | None:
        """Append the event; returns its stream id, or None when Redis could not take it."""
        try:
            event_id = await self._redis.xadd(
                stream_key(event.workflow_id),
                {"event": event.model_dump_json()},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        except aioredis.RedisError as exc:
            log.warning("could not publish %s event for %s: %s", event.type, event.workflow_id, exc)
            return None
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def read(self, workflow_id: str, after: str = "0-0", count: int = 1000) -> list[AgentEvent]:
        entries = await self._redis.xrange(stream_key(workflow_id), min=f"({after}" if after != "0-0" else "-", count=count)
        return [AgentEvent.model_validate_json(fields[b"event"]) for _, fields in entries]
