"""The event buffer behind every turn's live stream, against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import ValidationError

from convergio.events import (
    COALESCED_CHUNK_CHARS,
    EventBuffer,
    EventFactory,
    EventPublisher,
    coalesce_text_chunks,
    stream_key,
)
from convergio.settings import Settings


def test_consecutive_chunks_of_one_speaker_are_joined_up_to_the_limit() -> None:
    cfo, cmo = EventFactory("wf", "step", "cfo"), EventFactory("wf", "step", "cmo")
    events = [
        cfo("turn_started"),
        *(cfo("text_chunk", text="a" * 150) for _ in range(3)),  # 450 chars: two events
        cmo("text_chunk", text="b"),  # another speaker: never joined with the CFO's text
        cfo("text_chunk", text="c" * (COALESCED_CHUNK_CHARS + 10)),  # longer than the limit: kept whole
        cfo("turn_finished"),
    ]
    merged = coalesce_text_chunks(events)
    assert [(e.type, e.agent, len(e.data.get("text", ""))) for e in merged] == [
        ("turn_started", "cfo", 0),
        ("text_chunk", "cfo", 300),
        ("text_chunk", "cfo", 150),
        ("text_chunk", "cmo", 1),
        ("text_chunk", "cfo", COALESCED_CHUNK_CHARS + 10),
        ("turn_finished", "cfo", 0),
    ]
    assert "".join(e.data.get("text", "") for e in merged) == "".join(e.data.get("text", "") for e in events)


@pytest_asyncio.fixture
async def publisher(redis_url: str) -> AsyncIterator[EventPublisher]:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        yield EventPublisher(redis)
    finally:
        await redis.aclose()


async def test_a_burst_of_chunks_reaches_redis_whole_in_fewer_entries(publisher: EventPublisher) -> None:
    workflow_id = f"buffer-{uuid.uuid4().hex[:8]}"
    event = EventFactory(workflow_id, "step", "cfo")
    words = [f"word{i} " for i in range(200)]
    buffer = EventBuffer(publisher)
    buffer.add(event("turn_started"))
    await asyncio.sleep(0)  # the buffer has taken the first event; the burst piles up behind it
    for word in words:
        buffer.add(event("text_chunk", text=word))
    buffer.add(event("turn_finished"))
    await buffer.close()
    stored = await publisher.read(workflow_id)
    chunks = [e for e in stored if e.type == "text_chunk"]
    assert stored[0].type == "turn_started" and stored[-1].type == "turn_finished"
    assert "".join(e.data["text"] for e in chunks) == "".join(words)
    assert 1 < len(chunks) < len(words)
    assert all(len(e.data["text"]) <= COALESCED_CHUNK_CHARS for e in chunks)


async def test_events_go_out_within_the_linger_and_close_sends_the_rest_at_once(publisher: EventPublisher) -> None:
    workflow_id = f"linger-{uuid.uuid4().hex[:8]}"
    event = EventFactory(workflow_id, "step", "cfo")

    short = EventBuffer(publisher, linger=0.05)
    short.add(event("turn_started"))
    await asyncio.sleep(1.0)  # twenty lingers: the event must be out without a close
    assert [e.type for e in await publisher.read(workflow_id)] == ["turn_started"]

    long = EventBuffer(publisher, linger=30.0)
    long.add(event("tool_call", tool="npv"))
    long.add(event("tool_result", tool="npv"))
    await asyncio.sleep(0.2)
    assert len(await publisher.read(workflow_id)) == 1  # still waiting for company
    loop = asyncio.get_running_loop()
    started = loop.time()
    await long.close()
    assert loop.time() - started < 10.0  # close does not sit out the linger
    await short.close()
    stored = await publisher.read(workflow_id)
    assert [e.type for e in stored] == ["turn_started", "tool_call", "tool_result"]


async def test_a_run_stream_expires_after_its_last_event_and_each_event_extends_it(redis_url: str) -> None:
    """Streams used to stay in Redis forever (only their length was capped), and a workflow id
    used again appended to the old run's events."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        workflow_id = f"expiry-{uuid.uuid4().hex[:8]}"
        key = stream_key(workflow_id)
        event = EventFactory(workflow_id, "step", "cfo")

        # The default comes from CONVERGIO_EVENT_RETENTION_DAYS (30 days).
        await EventPublisher(redis).publish(event("turn_started"))
        assert 29 * 86_400 < await redis.ttl(key) <= 30 * 86_400

        hour = EventPublisher(redis, retention=timedelta(hours=1))
        await redis.expire(key, 5)
        await hour.publish(event("text_chunk", text="a"))  # a new event: the stream lives on
        assert 3_590 < await redis.ttl(key) <= 3_600
        other = f"expiry-{uuid.uuid4().hex[:8]}"
        await redis.expire(key, 5)
        await hour.publish_many([event("turn_finished"), EventFactory(other, "s", "cmo")("turn_started")])
        assert 3_590 < await redis.ttl(key) <= 3_600
        assert 3_590 < await redis.ttl(stream_key(other)) <= 3_600

        # Once expired, the same workflow id starts from an empty stream.
        short = EventPublisher(redis, retention=timedelta(seconds=1))
        await short.publish(event("turn_started"))
        for _ in range(50):
            if not await redis.exists(key):
                break
            await asyncio.sleep(0.1)
        assert not await redis.exists(key)
        await short.publish(event("tool_call", tool="npv"))
        assert [e.type for e in await short.read(workflow_id)] == ["tool_call"]
    finally:
        await redis.aclose()


def test_the_retention_is_a_setting() -> None:
    def settings(**values: object) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert settings().event_retention_days == 30
    assert settings(event_retention_days=7).event_retention_days == 7
    with pytest.raises(ValidationError):
        settings(event_retention_days=0)
