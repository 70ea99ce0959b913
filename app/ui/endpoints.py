"""The dashboard: `/ui` serves one page of plain HTML, CSS and JavaScript (no build step, nothing from a CDN)
that reads the JSON API with the user's API key, which it asks for when the API answers 401.

The files themselves need no key: they hold no data, and a browser cannot send a bearer token with a page
load. Every data call does. Only the files listed in STATIC_FILES are served, so no path reaches the disk.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from app.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page runs only its own scripts and talks only to this origin: an event message or a job's metadata
# that smuggles markup in cannot load or run anything. Charts are inline SVG; downloads are blob: URLs.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate (ETag): a new release's page is seen at once
}


@router.get("/")
async def root(request: Request) -> RedirectResponse:
    # A path, not url_for's absolute URL: behind a TLS-terminating proxy that would say http://.
    return RedirectResponse(request.scope.get("root_path", "") + "/ui", status_code=307)


@router.get("/ui")
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/static/{name}")
async def static_file(name: str) -> FileResponse:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard file {name!r}", param="name")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=HEADERS)
