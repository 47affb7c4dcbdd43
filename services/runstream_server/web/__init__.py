"""The web UI: static files (``static/``) served by the HTTP API's aiohttp app.

``add_routes(app)`` adds ``GET /`` (the single page, ``static/index.html``) and
``GET /static/...`` (the ES modules, CSS and the page itself; content types from
aiohttp's own table: text/html, text/css, application/javascript). There is no build step:
the files in ``static/`` are what the browser runs. See docs/web.md.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Revalidate on every load (ETag / Last-Modified answer 304), so an upgraded server never
# runs a stale mix of cached modules.
_NO_CACHE = {"Cache-Control": "no-cache"}


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=_NO_CACHE)


async def _no_cache(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/static/") and "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-cache"


def add_routes(app: web.Application) -> None:
    """``GET /`` → index.html; ``GET /static/<path>`` → files under ``static/``."""
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, name="static")
    app.on_response_prepare.append(_no_cache)
