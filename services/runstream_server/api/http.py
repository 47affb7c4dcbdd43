"""The HTTP/JSON API (and, later, the web UI). Errors become 4xx/5xx here, once.

Routes (all GET, JSON):
  /healthz
  /api/v1/projects[?entity=]
  /api/v1/projects/{entity}/{project}/runs?state=&tag=&name=&config.<key>=<json>&sort=&desc=&limit=&offset=
  /api/v1/runs/{entity}/{project}/{run_id}
  /api/v1/runs/{entity}/{project}/{run_id}/history?keys=a,b&buckets=&min_step=&max_step=
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..common.errors import NotFoundError, PermanentError, RetryableError
from .convert import jsonable
from .queries import Queries
from .store_access import StoreAccess

_INDEX = """<!doctype html><html><head><meta charset="utf-8"><title>Runstream</title></head>
<body><h1>Runstream</h1><p>The server is running. JSON API:
<a href="/api/v1/projects">/api/v1/projects</a>. The web workspace is on its way.</p>
</body></html>"""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(jsonable(data)), status=status,
                        content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


def _int(q, name: str, default: int, lo: int = 0, hi: int = 2**63 - 1) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise PermanentError(f"query parameter {name}={raw!r} is not an integer") from None
    if not lo <= v <= hi:
        raise PermanentError(f"query parameter {name}={v} is out of range {lo}..{hi}")
    return v


class HttpApi:
    def __init__(self, store: StoreAccess, queries: Queries) -> None:
        self._store = store
        self._q = queries

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/api/v1/projects", self.projects)
        app.router.add_get("/api/v1/projects/{entity}/{project}/runs", self.runs)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}", self.run)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}/history", self.history)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except NotFoundError as e:
            return _error(404, "NOT_FOUND", str(e))
        except PermanentError as e:
            return _error(400, "INVALID_ARGUMENT", str(e))
        except RetryableError as e:
            return _error(503, "UNAVAILABLE", str(e))

    async def index(self, request: web.Request) -> web.Response:
        return web.Response(text=_INDEX, content_type="text/html")

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def projects(self, request: web.Request) -> web.Response:
        entity = request.query.get("entity") or None
        rows = await self._store.call(self._q.list_projects, entity)
        return _json({"projects": rows})

    async def runs(self, request: web.Request) -> web.Response:
        q = request.query
        config = []
        for k, v in q.items():
            if k.startswith("config."):
                try:
                    json.loads(v)
                except ValueError:
                    raise PermanentError(f"{k} must be a JSON value, got {v!r}") from None
                config.append((k[len("config."):], v))
        flt = {"states": q.getall("state", []), "tags": q.getall("tag", []),
               "name_contains": q.get("name", ""), "config": config}
        rows, total = await self._store.call(
            self._q.list_runs, request.match_info["entity"], request.match_info["project"], flt,
            q.get("sort", "created_at"), q.get("desc", "") in ("1", "true"),
            _int(q, "limit", 0, 0, 1000), _int(q, "offset", 0))
        return _json({"runs": rows, "total": total})

    async def run(self, request: web.Request) -> web.Response:
        m = request.match_info
        row = await self._store.call(self._q.get_run, m["entity"], m["project"], m["run_id"])
        return _json(row)

    async def history(self, request: web.Request) -> web.Response:
        m, q = request.match_info, request.query
        keys = [k for k in q.get("keys", "").split(",") if k]
        rows = await self._store.call(
            self._q.get_history, m["entity"], m["project"], m["run_id"], keys,
            _int(q, "buckets", 0, 0, 100_000), _int(q, "min_step", 0), _int(q, "max_step", 0))
        return _json({"series": rows})
