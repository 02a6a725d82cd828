"""TEMPORARY dev loop helper (to be deleted)."""
import asyncio
from pathlib import Path

from tests.test_schemathesis import live_url  # noqa: F401


async def test_serve(live_url: str) -> None:
    Path("/tmp/api_dev_url").write_text(live_url)
    stop = Path("/tmp/api_dev_stop")
    while not stop.exists():
        await asyncio.sleep(1)
