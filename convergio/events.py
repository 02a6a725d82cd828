"""Agent events published to Redis Streams, one stream per workflow, kept
CONVERGIO_EVENT_RETENTION_DAYS after its last event.

The API (SSE / WebSocket) reads these streams; publishing never blocks a turn for
long and a Redis outage never fails one (events are a view, the workflow is the truth).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

EventType = Literal[
    "turn_started", "text_chunk", "turn_finished", "cost_update", "handoff",  # agent turns
    "tool_call", "tool_result",  # tool steps
    "approval_requested", "approval_decided", "sla_warning", "sla_breach",  # the workflow
    "error", "context_trimmed", "heartbeat",
]
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


class EventFactory:
    """Builds events that all carry one step's workflow, step and speaker (agent or tool)."""

    def __init__(self, workflow_id: str, step_id: str, agent: str) -> None:
        self._workflow_id = workflow_id
        self._step_id = step_id
        self._agent = agent

    def __call__(self, kind: str, **data: Any) -> AgentEvent:
        return AgentEvent(
            type=kind,  # type: ignore[arg-type]
            workflow_id=self._workflow_id,
            step_id=self._step_id,
            agent=self._agent,
            data=data,
        )


class EventPublisher:
    """Appends events to their run's stream. Each write also (re)sets the stream's expiry, in the
    same round trip: a run's stream leaves Redis ``retention`` after its last event instead of
    staying forever, and a workflow id reused later starts a fresh stream rather than extending
    an old run's. The worker passes CONVERGIO_EVENT_RETENTION_DAYS; readers need none."""

    def __init__(self, redis: aioredis.Redis, retention: timedelta = timedelta(days=30)) -> None:
        self._redis = redis
        self._ttl_s = max(1, round(retention.total_seconds()))

    async def publish(self, event: AgentEvent) -> str | None:
        """Append the event; returns its stream id, or None when Redis could not take it."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                self._append(pipe, event)
                pipe.expire(stream_key(event.workflow_id), self._ttl_s)
                event_id, _ = await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("could not publish %s event for %s: %s", event.type, event.workflow_id, exc)
            return None
        return event_id.decode() if isinstance(event_id, bytes) else str(event_id)

    async def publish_many(self, events: list[AgentEvent]) -> None:
        """Append several events in one round trip (pipelined XADDs, then one EXPIRE per stream)."""
        if not events:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    self._append(pipe, event)
                for workflow_id in dict.fromkeys(event.workflow_id for event in events):
                    pipe.expire(stream_key(workflow_id), self._ttl_s)
                await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("could not publish %d events for %s: %s", len(events), events[0].workflow_id, exc)

    @staticmethod
    def _append(pipe: Any, event: AgentEvent) -> None:
        pipe.xadd(
            stream_key(event.workflow_id),
            {"event": event.model_dump_json()},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )

    async def read(self, workflow_id: str, after: str = "0-0", count: int = 1000) -> list[AgentEvent]:
        entries = await self._redis.xrange(stream_key(workflow_id), min=f"({after}" if after != "0-0" else "-", count=count)
        return [AgentEvent.model_validate_json(fields[b"event"]) for _, fields in entries]


# Text chunks that piled up behind a write go out joined, up to this many characters per event.
COALESCED_CHUNK_CHARS = 400
# How long a turn's events may wait to go out together: watchers see them at most this late
# (20 updates a second), and a fast turn costs one or two Redis writes instead of one per chunk.
EVENT_LINGER_S = 0.05


class EventBuffer:
    """Publishes events in the background, batching what arrives within ``linger`` seconds.

    The model's stream never waits on Redis. Events that arrive within ``linger`` of the first
    unsent one go out in one round trip, and consecutive text chunks of one speaker are joined
    (up to COALESCED_CHUNK_CHARS), so a fast model does not cost one stream entry per few tokens;
    a slow model's chunks still go out one by one, as they come. ``close`` flushes what is left
    at once, so no event is lost (nor waits) when the turn ends.
    """

    def __init__(self, publisher: EventPublisher, linger: float = EVENT_LINGER_S) -> None:
        self._publisher = publisher
        self._linger = linger
        self._closing = asyncio.Event()
        self._queue: asyncio.Queue[AgentEvent] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def add(self, event: AgentEvent) -> None:
        self._queue.put_nowait(event)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._linger > 0 and not self._closing.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._linger)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._publisher.publish_many(coalesce_text_chunks(batch))
            except Exception:  # noqa: BLE001 - events are a view; never let them stop a turn
                log.exception("dropping %d events", len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def close(self) -> None:
        self._closing.set()
        await self._queue.join()
        self._task.cancel()


def coalesce_text_chunks(
    events: list[AgentEvent], max_chars: int = COALESCED_CHUNK_CHARS
) -> list[AgentEvent]:
    """``events`` with each run of consecutive text chunks from one speaker joined into chunks
    of at most ``max_chars`` (a single longer chunk stays whole); the text and order are kept."""
    merged: list[AgentEvent] = []
    for event in events:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and event.type == previous.type == "text_chunk"
            and _speaker(event) == _speaker(previous)
            and len(previous.data["text"]) + len(event.data["text"]) <= max_chars
        ):
            joined = {**previous.data, "text": previous.data["text"] + event.data["text"]}
            merged[-1] = previous.model_copy(update={"data": joined})
        else:
            merged.append(event)
    return merged


def _speaker(event: AgentEvent) -> tuple[str, str, str]:
    return event.workflow_id, event.step_id, event.agent


# Things a model client notices during a turn (a prompt trimmed to fit the model's window) that
# belong on the turn's event stream; the client knows no workflow, so the running turn listens.
TurnNotice = Callable[[EventType, dict[str, Any]], None]
_turn_listener: ContextVar[TurnNotice | None] = ContextVar("convergio_turn_listener", default=None)


@contextmanager
def listening_to_turn(listener: TurnNotice) -> Iterator[None]:
    """Route :func:`notify_turn` calls made in this context (and tasks it starts) to ``listener``."""
    token = _turn_listener.set(listener)
    try:
        yield
    finally:
        _turn_listener.reset(token)


def notify_turn(kind: EventType, **data: Any) -> bool:
    """Hand an event to the running turn, if one listens; False when none does (e.g. outside a worker)."""
    listener = _turn_listener.get()
    if listener is None:
        return False
    try:
        listener(kind, data)
    except Exception:  # noqa: BLE001 - events are a view; never let them stop a turn
        log.exception("turn listener failed for a %s event", kind)
    return True
