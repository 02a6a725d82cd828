"""The web approval inbox: static pages served by the API.

No front-end build: ``static/inbox`` holds plain HTML, CSS and JavaScript. The page does
everything through the public API (``GET /workflows``, ``GET /workflows/{id}``, the approval
route, the SSE stream) with the caller's key, so the API's auth, tenants and roles apply to
the inbox exactly as to any other client; the pages themselves hold no data and need no key.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse

STATIC_DIR = Path(__file__).with_name("static") / "inbox"
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}

router = APIRouter(prefix="/inbox", tags=["inbox"])


@router.get("", include_in_schema=False)
async def inbox_redirect() -> RedirectResponse:
    return RedirectResponse("/inbox/", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/", include_in_schema=False)
async def inbox_page() -> FileResponse:
    # The page holds no data; never let a proxy keep an old copy of its script references.
    return FileResponse(
        STATIC_DIR / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"}
    )


@router.get("/assets/{name}", include_in_schema=False)
async def inbox_asset(name: str) -> FileResponse:
    path = STATIC_DIR / name
    # Only plain files of the inbox directory itself: no sub-paths, no other suffixes.
    if "/" in name or name.startswith(".") or path.suffix not in ASSET_TYPES or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no inbox asset {name!r}")
    return FileResponse(path, media_type=ASSET_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})
