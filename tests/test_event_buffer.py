"""The event buffer behind every turn's live stream, against a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from convergio.events import (
    COALESCED_CHUNK_CHARS,
    EventBuffer,
    EventFactory,
    EventPublisher,
    coalesce_text_chunks,
)


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
