"""The HTTP/JSON API and the web UI (served from ``web/``). Errors become 4xx/5xx here, once.

Routes (JSON):
  GET    /healthz
  GET    /api/v1/projects[?entity=&q=]
  GET    /api/v1/projects/{entity}/{project}/runs?<filters>&sort=&desc=&limit=&offset=
  GET    /api/v1/projects/{entity}/{project}/columns?prefix=&limit=
  GET    /api/v1/projects/{entity}/{project}/keys?prefix=&limit=
  GET    /api/v1/projects/{entity}/{project}/history?runs=a,b&keys=x,y&buckets=&min_step=&max_step=
  GET    /api/v1/projects/{entity}/{project}/bands?key=&group_by=config.<key>&buckets=&<filters>
  GET    /api/v1/runs/{entity}/{project}/{run_id}
  GET    /api/v1/runs/{entity}/{project}/{run_id}/keys
  GET    /api/v1/runs/{entity}/{project}/{run_id}/history?keys=a,b&buckets=&min_step=&max_step=
<filters> (api/run_filter.py): state=, tag= (repeatable), name=, name_regex=, user=
(repeatable), config.<key>=<json>, summary.<key>=<lo>..<hi>, hidden=0|1. The project
reads answer 404 for a project without runs, and 400 for a query parameter they do not
know (a typo never silently widens a selection). Shapes: docs/api.md.
  PATCH  /api/v1/runs/{entity}/{project}/{run_id}        {name, notes, tags, privacy, hidden, color}
  DELETE /api/v1/runs/{entity}/{project}/{run_id}
  POST   /api/v1/runs/{entity}/{project}/{run_id}/stop   [{requested_by}]
  GET    /api/v1/projects/{entity}/{project}/workspace?user=   (api/workspaces.py)
  PUT    /api/v1/projects/{entity}/{project}/workspace        {user, state}
  GET    /api/v1/projects/{entity}/{project}/live?since_us=   Server-Sent Events (api/live.py)
  GET    /api/v1/live                                         open live streams per project
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

from .. import web as web_ui
from ..auth.access import COOKIE, authenticate, key_from_header, require_admin
from ..auth.identity import IdentityTable, Principal
from ..common import status
from ..common.errors import NotFoundError, PermanentError
from ..common.status import TRANSLATED
from . import authz, run_filter
from .chart_queries import MAX_CHART_BUCKETS
from .convert import jsonable
from .live import LiveUpdates
from .mutations import Mutations, patch_from_json, validate_project
from .queries import Queries
from .store_access import StoreAccess
from .workspaces import WorkspaceQueries, workspace_from_json

_WORKSPACE = "/api/v1/projects/{entity}/{project}/workspace"
_PROJECT = "/api/v1/projects/{entity}/{project}"
_RUNS_PARAMS = frozenset({"sort", "desc", "limit", "offset"})
_BANDS_PARAMS = frozenset({"key", "group_by", "buckets", "min_step", "max_step"})
DEFAULT_CHART_BUCKETS = 1500     # about one point per pixel of a wide chart


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(jsonable(data)), status=status,
                        content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"error": {"code": code, "message": message}}, status)


# The caller of a request, set by the ``_auth`` middleware.
PRINCIPAL = web.RequestKey("principal", Principal)


def _whoami(p: Principal) -> dict[str, Any]:
    return {"user": p.user, "admin": p.admin, "teams": sorted(p.teams), "key_id": p.key_id}


def _known_params(q, allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise PermanentError(f"unknown query parameters {unknown}; this endpoint takes "
                             f"{sorted(allowed)}")


def _bool(q, name: str) -> bool:
    raw = q.get(name, "")
    if raw not in ("", "0", "1", "true", "false"):
        raise PermanentError(f"query parameter {name}={raw!r}: use 0 or 1")
    return raw in ("1", "true")


def _names(q, name: str, literal: str = "") -> list[str]:
    """Comma-separated ``name`` values, plus repeated ``literal`` ones taken whole."""
    out = [v for raw in q.getall(name, []) for v in raw.split(",") if v]
    return out + ([v for v in q.getall(literal, []) if v] if literal else [])


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
                 mutations: Mutations | None, identity: IdentityTable,
                 secure_cookie: bool = False) -> None:
        self._store = store
        self._q = queries
        self._m = mutations
        self._identity = identity
        self._secure_cookie = secure_cookie

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._auth])
        web_ui.add_routes(app)   # GET / and GET /static/... (web/)
        app.router.add_get("/healthz", self.health)
        app.router.add_post("/api/v1/login", self.login)
        app.router.add_post("/api/v1/logout", self.logout)
        app.router.add_get("/api/v1/whoami", self.whoami)
        app.router.add_get("/api/v1/projects", self.projects)
        app.router.add_get("/api/v1/projects/{entity}/{project}/runs", self.runs)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}", self.run)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}/history", self.history)
        app.router.add_get("/api/v1/runs/{entity}/{project}/{run_id}/keys", self.run_keys)
        app.router.add_get(_PROJECT + "/columns", self.columns)
        app.router.add_get(_PROJECT + "/keys", self.project_keys)
        app.router.add_get(_PROJECT + "/history", self.project_history)
        app.router.add_get(_PROJECT + "/bands", self.bands)
        if self._m is not None:
            app.router.add_patch("/api/v1/runs/{entity}/{project}/{run_id}", self.update_run)
            app.router.add_delete("/api/v1/runs/{entity}/{project}/{run_id}", self.delete_run)
            app.router.add_post("/api/v1/runs/{entity}/{project}/{run_id}/stop", self.stop_run)
        # Saved workspaces (api/workspaces.py).
        app.router.add_get(_WORKSPACE, self.get_workspace)
        if self._m is not None:
            app.router.add_put(_WORKSPACE, self.put_workspace)
        # Live updates (SSE) and their registry; streams end on app shutdown (api/live.py).
        LiveUpdates(self._store, access=self._live_access).install(app)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        """Every /api/ route but login needs a valid key: the Authorization header, else
        the login cookie. The page and its static files are public (they hold no data)."""
        path = request.path
        if path.startswith("/api/") and path != "/api/v1/login":
            key = (key_from_header(request.headers.get("Authorization"))
                   or request.cookies.get(COOKIE, ""))
            request[PRINCIPAL] = authenticate(self._identity, key)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except TRANSLATED as e:
            code, http_status = status.translate(e)
            return _error(http_status, code.name, str(e))

    async def health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    # --- sign-in (the web UI) ----------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        """``{"key": "..."}`` → the caller's identity, and an HttpOnly cookie holding the
        key for the page's later requests (SameSite=Strict; Secure over TLS)."""
        body = await self._body(request, required=True)
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            raise PermanentError('the body must be {"key": "<API key>"}')
        p = authenticate(self._identity, key.strip())
        resp = _json(_whoami(p))
        resp.set_cookie(COOKIE, key.strip(), httponly=True, samesite="Strict",
                        secure=self._secure_cookie, path="/", max_age=30 * 24 * 3600)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = _json({"signed_out": True})
        resp.del_cookie(COOKIE, path="/")
        return resp

    async def whoami(self, request: web.Request) -> web.Response:
        return _json(_whoami(request[PRINCIPAL]))

    async def projects(self, request: web.Request) -> web.Response:
        q = request.query
        _known_params(q, {"entity", "q"})
        rows = await self._store.call(self._q.list_projects, q.get("entity") or None,
                                      q.get("q", ""), authz.members_of(request[PRINCIPAL]))
        return _json({"projects": rows})

    async def runs(self, request: web.Request) -> web.Response:
        q, m = request.query, request.match_info
        flt = run_filter.from_query(q, _RUNS_PARAMS)
        sort, desc = q.get("sort", "created_at"), _bool(q, "desc")
        limit, offset = _int(q, "limit", 0, 0, 1000), _int(q, "offset", 0)

        def read():
            flt.public_only = self._public_only(request, m)
            return self._q.list_runs(m["entity"], m["project"], flt, sort, desc, limit,
                                     offset, True)
        rows, total = await self._store.call(read)
        return _json({"runs": rows, "total": total})

    async def columns(self, request: web.Request) -> web.Response:
        q, m = request.query, request.match_info
        _known_params(q, {"prefix", "limit"})
        prefix, limit = q.get("prefix", ""), _int(q, "limit", 200, 1, 5000)
        out = await self._store.call(lambda: self._q.columns(
            m["entity"], m["project"], prefix, limit, self._public_only(request, m)))
        return _json(out)

    async def project_keys(self, request: web.Request) -> web.Response:
        q, m = request.query, request.match_info
        _known_params(q, {"prefix", "limit"})
        prefix, limit = q.get("prefix", ""), _int(q, "limit", 1000, 1, 5000)
        out = await self._store.call(lambda: self._q.project_keys(
            m["entity"], m["project"], prefix, limit, self._public_only(request, m)))
        return _json(out)

    async def project_history(self, request: web.Request) -> web.Response:
        q, m = request.query, request.match_info
        _known_params(q, {"runs", "keys", "key", "buckets", "min_step", "max_step"})
        runs, keys = _names(q, "runs"), _names(q, "keys", "key")
        if not runs or not keys:
            raise PermanentError("runs=<id>,<id> and keys=<key>,<key> are required "
                                 "(key=<key> for a key holding a comma)")
        buckets = _int(q, "buckets", DEFAULT_CHART_BUCKETS, 1, MAX_CHART_BUCKETS)
        lo, hi = _int(q, "min_step", 0), _int(q, "max_step", 0)

        def read():
            visible = runs
            if self._public_only(request, m):
                visible = self._q.public_run_ids(m["entity"], m["project"], runs)
            return self._q.project_history_json(m["entity"], m["project"], visible, keys,
                                                buckets, lo, hi)
        text = await self._store.call(read)
        return web.Response(text=text, content_type="application/json")  # JSON made by the store

    async def bands(self, request: web.Request) -> web.Response:
        q, m = request.query, request.match_info
        flt = run_filter.from_query(q, _BANDS_PARAMS)
        key = q.get("key", "")
        if not key:
            raise PermanentError("key=<metric> is required")
        group_by = q.get("group_by", "")
        if group_by and not group_by.startswith("config."):
            raise PermanentError(f"group_by={group_by!r}: use config.<key> (or leave it out)")
        buckets = _int(q, "buckets", DEFAULT_CHART_BUCKETS, 1, MAX_CHART_BUCKETS)
        lo, hi = _int(q, "min_step", 0), _int(q, "max_step", 0)

        def read():
            flt.public_only = self._public_only(request, m)
            return self._q.bands(m["entity"], m["project"], key, group_by[len("config."):],
                                 flt, buckets, lo, hi)
        out = await self._store.call(read)
        return _json(out)

    async def run_keys(self, request: web.Request) -> web.Response:
        m = request.match_info
        _known_params(request.query, set())
        def read():
            self._visible_run(request, m)
            return self._q.run_keys(m["entity"], m["project"], m["run_id"])
        out = await self._store.call(read)
        return _json(out)

    async def run(self, request: web.Request) -> web.Response:
        m = request.match_info
        row = await self._store.call(self._visible_run, request, m)
        return _json(row)

    async def history(self, request: web.Request) -> web.Response:
        m, q = request.match_info, request.query
        keys = [k for k in q.get("keys", "").split(",") if k]
        buckets = _int(q, "buckets", 0, 0, 100_000)
        lo, hi = _int(q, "min_step", 0), _int(q, "max_step", 0)

        def read():
            self._visible_run(request, m)
            return self._q.get_history(m["entity"], m["project"], m["run_id"], keys, buckets,
                                       lo, hi)
        rows = await self._store.call(read)
        return _json({"series": rows})

    # --- access (blocking: these run on the store thread) --------------------------------

    def _live_access(self, request: web.Request, entity: str, project: str) -> None:
        """Live updates carry every run of the project: members only (a non-member of a
        public project reads it without them). ``NotFoundError`` otherwise."""
        p = request[PRINCIPAL]
        if request.path == "/api/v1/live":
            require_admin(p)
        elif not p.member_of(entity):
            raise NotFoundError(f"project {entity}/{project} not found: it has no runs")

    def _public_only(self, request: web.Request, m) -> bool:
        return authz.project_public_only(self._q, request[PRINCIPAL], m["entity"],
                                         m["project"])

    def _visible_run(self, request: web.Request, m) -> dict[str, Any]:
        return authz.visible_run(self._q, request[PRINCIPAL], m["entity"], m["project"],
                                 m["run_id"])

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
        ev = await self._m.update(request[PRINCIPAL], m["entity"], m["project"],
                                  m["run_id"], patch)
        return self._accepted(ev)

    async def delete_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        ev = await self._m.delete(request[PRINCIPAL], m["entity"], m["project"],
                                  m["run_id"])
        return self._accepted(ev)

    async def stop_run(self, request: web.Request) -> web.Response:
        m = request.match_info
        body = await self._body(request, required=False)
        if not isinstance(body, dict) or set(body) - {"requested_by"}:
            raise PermanentError('the body must be {} or {"requested_by": "<who>"}')
        who = body.get("requested_by") or ""
        if not isinstance(who, str):
            raise PermanentError("requested_by must be a string")
        ev = await self._m.stop(request[PRINCIPAL], m["entity"], m["project"],
                                m["run_id"], who)
        return self._accepted(ev)

    # --- saved workspaces (api/workspaces.py) ------------------------------------------

    async def get_workspace(self, request: web.Request) -> web.Response:
        """``{"user", "state", "updated_us"}``; ``{}`` and 0 when never saved."""
        m = request.match_info
        validate_project(m["entity"], m["project"])
        if "user" not in request.query:
            raise PermanentError("query parameter user is required")
        reader = WorkspaceQueries(self._store.client, self._store.database)

        def read():
            self._public_only(request, m)          # NotFoundError if not visible at all
            return reader.get(m["entity"], m["project"], request.query["user"])
        ws = await self._store.call(read)
        # Not _json: a saved state holds no NaN, and may be nested deeper than jsonable goes.
        return web.Response(text=json.dumps(ws, ensure_ascii=False),
                            content_type="application/json")

    async def put_workspace(self, request: web.Request) -> web.Response:
        """``{"user", "state"}`` → 202 once the WorkspaceSaved event is in the event log."""
        m = request.match_info
        try:
            text = await request.text()
        except web.HTTPRequestEntityTooLarge:
            raise PermanentError("the body is too large: the state is limited to 256 KiB "
                                 "as JSON") from None
        if not text.strip():
            raise PermanentError('a JSON body {"user": "...", "state": {...}} is required')
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            raise PermanentError("the body is not valid JSON (or is nested too deeply)") from None
        user, state = workspace_from_json(body)
        ev = await self._m.save_workspace(request[PRINCIPAL], m["entity"], m["project"],
                                          user, state)
        return self._accepted(ev)
