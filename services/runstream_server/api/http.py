"""The HTTP/JSON API (and, later, the web UI). Errors become 4xx/5xx here, once.

Routes (JSON):
  GET    /healthz
  GET    /api/v1/projects[?entity=]
  GET    /api/v1/projects/{entity}/{project}/runs
           ?state=&tag=&name=&config.<key>=<json>&sort=&desc=&limit=&offset=
  GET    /api/v1/runs/{entity}/{project}/{run_id}
  GET    /api/v1/runs/{entity}/{project}/{run_id}/history?keys=a,b&buckets=&min_step=&max_step=
  PATCH  /api/v1/runs/{entity}/{project}/{run_id}        {name, notes, tags, privacy, hidden, color}
  DELETE /api/v1/runs/{entity}/{project}/{run_id}
  POST   /api/v1/runs/{entity}/{project}/{run_id}/stop   [{requested_by}]
Changes answer 202 {"accepted": {...the appended server event...}} once the event is in
the event log; reads show them within about one projector batch (``api/mutations.py``).
Errors: {"error": {"code", "message"}} with 400 INVALID_ARGUMENT, 404 NOT_FOUND,
409 FAILED_PRECONDITION (stopping a run that is not running) or 503 UNAVAILABLE.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from ..common import status
from ..common.errors import PermanentError
from ..common.status import TRANSLATED
from .convert import jsonable
from .mutations import Mutations, patch_from_json
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
    def __init__(self, store: StoreAccess, queries: Queries,
                 mutations: Mutations | None = None) -> None:
        self._store = store
        self._q = queries
        self._m = mutations

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/", self.index)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/api/v1/projects", self.projects)
        app.router.add_get("/api/v1/projects/{entity}/{project}/runs", self.runs)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}", self.run)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}/history", self.history)
        if self._m is not None:
            app.router.add_patch("/api/v1/runs/{entity}/{project}/{run_id}", self.update_run)
            app.router.add_delete("/api/v1/runs/{entity}/{project}/{run_id}", self.delete_run)
            app.router.add_post("/api/v1/runs/{entity}/{project}/{run_id}/stop", self.stop_run)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except TRANSLATED as e:
            code, http_status = status.translate(e)
            return _error(http_status, code.name, str(e))

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

    # --- changes ---------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request, required: bool) -> Any:
        if not request.can_read_body:
            if required:
                raise PermanentError("a JSON body is required")
            return {}
        try:
            return json.loads(await request.text())
        except ValueError:
            raise PermanentError("the body is not valid JSON") from None

    @staticmethod
    def _accepted(event) -> web.Response:
        return _json({"accepted": json_format.MessageToDict(
            event, preserving_proto_field_name=True)}, 202)

    async def update_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        patch = patch_from_json(await self._body(request, required=True))
        ev = await self._m.update(m["entity"], m["project"], m["run_id"], patch)
        return self._accepted(ev)

    async def delete_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        ev = await self._m.delete(m["entity"], m["project"], m["run_id"])
        return self._accepted(ev)

    async def stop_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        body = await self._body(request, required=False)
        if not isinstance(body, dict) or set(body) - {"requested_by"}:
            raise PermanentError('the body must be {} or {"requested_by": "<who>"}')
        who = body.get("requested_by") or ""
        if not isinstance(who, str):
            raise PermanentError("requested_by must be a string")
        ev = await self._m.stop(m["entity"], m["project"], m["run_id"], who,
                                default_requester="web")
        return self._accepted(ev)
