"""Per-key rate limits in Redis: a fixed window shared by every API process.

One counter per key and window (``INCR`` and ``EXPIRE`` in one transaction); past the
limit the caller gets 429 with ``Retry-After`` (seconds until the window ends).
"""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis
from fastapi import HTTPException, status
from redis.exceptions import RedisError

from convergio.settings import Settings

PREFIX = "convergio:ratelimit:"


async def enforce_rate_limit(redis: aioredis.Redis, settings: Settings, limit_key: str) -> None:
    """Count one request for ``limit_key``; raise 429 once the window's budget is spent."""
    window = settings.rate_limit_window_s
    now = time.time()
    index = int(now // window)
    key = f"{PREFIX}{limit_key}:{index}"
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, window + 1)
            count, _ = await pipe.execute()
    except RedisError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"rate limiter unavailable: {exc}") from exc
    if count > settings.rate_limit_requests:
        retry_after = max(1, math.ceil((index + 1) * window - now))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {settings.rate_limit_requests} requests per {window}s reached; "
            f"retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
