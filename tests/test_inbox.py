"""The inbox's pages as the API serves them: no key needed for the page, nothing from outside, no way out."""

from __future__ import annotations

import re

import httpx

from convergio.api.app import create_app
from convergio.api.inbox import STATIC_DIR
from convergio.settings import Settings


def client(settings: Settings) -> httpx.AsyncClient:
    # The inbox's routes touch nothing the lifespan opens, so none is run.
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(settings)), base_url="http://inbox.test"
    )


async def test_the_page_and_its_assets_are_served_without_a_key(settings: Settings) -> None:
    async with client(settings) as http:
        redirect = await http.get("/inbox")
        assert redirect.status_code == 307 and redirect.headers["location"] == "/inbox/"
        page = await http.get("/inbox/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = re.findall(r'(?:src|href)="(/inbox/assets/[^"]+)"', page.text)
        assert sorted(assets) == ["/inbox/assets/inbox.css", "/inbox/assets/inbox.js"]
        for asset in assets:
            response = await http.get(asset)
            assert response.status_code == 200 and response.text.strip()
        assert (
            (await http.get("/inbox/assets/inbox.js")).headers["content-type"].startswith("text/javascript")
        )
        # The API behind it does want a key.
        assert (await http.get("/workflows")).status_code == 401


async def test_nothing_outside_the_inbox_directory_is_served(settings: Settings) -> None:
    async with client(settings) as http:
        for name in [
            "../inbox.py",
            "..%2Finbox.py",
            "%2e%2e%2f%2e%2e%2fsettings.py",
            ".hidden.js",
            "nope.js",
            "inbox.py",
            "index.htm",
        ]:
            response = await http.get(f"/inbox/assets/{name}")
            assert response.status_code == 404, name


def test_the_inbox_loads_nothing_from_outside() -> None:
    # The machine running it may be offline: no CDN, no web font, no remote script.
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://|//cdn|@import", text), path.name
