"""Live updates of a project's runs for the web workspace, as Server-Sent Events.

Routes (installed on the HTTP app by ``LiveUpdates.install``):

  GET /api/v1/projects/{entity}/{project}/live[?since_us=<t>]
      ``text/event-stream``. Once the response headers have arrived, every change of a run
      row of the project that the store shows from then on is delivered, as::

          id: <now_us>
          event: runs
          data: {"now_us": t, "runs": [{run_id, name, state, state_cause,
                 last_event_time_us, last_step, end_time_us, summary, hidden, color}],
                 "deleted": [run_id, ...]}

      at most about one message per ``POLL_INTERVAL_S``, and only when something changed.
      A message lists each changed run once with its whole current row (so applying
      messages is idempotent; a run never goes back to an older row on one stream);
      ``deleted`` lists runs deleted since the previous message. ``now_us`` is the
      server time (µs) at which the poll that made the message began; pass it back as
      ``since_us`` when reconnecting (``EventSource`` does so by itself: it sends the
      last ``id`` as ``Last-Event-ID``, used when ``since_us`` is absent; a malformed
      ``Last-Event-ID`` is ignored).
      ``since_us`` absent or 0: start from now (nothing is sent until something changes).
      ``since_us`` > 0: the first message also lists the runs whose last client event
      (server time) or end time is after ``since_us`` minus ``CATCHUP_MARGIN_US`` (the
      margin covers events received before ``since_us`` but not yet projected then).
      Changes made by the server alone (rename, hide, colour, crash detection, delete)
      before the stream opened are not replayed: a client that needs them reloads the
      run list after reconnecting. A malformed ``since_us`` → 400. An unknown project is
      not an error: its first run appears when it is created.
      A ``: ping`` comment is sent after ``PING_INTERVAL_S`` without any message, so that
      proxies keep the connection. ``retry: RECONNECT_MS`` is sent first.

  GET /api/v1/live
      ``{"projects": [{"entity", "project", "subscribers"}]}``: the open streams per
      project (operations and tests; a project leaves the list with its last stream).

How it works: one ``_Poller`` task per (entity, project) with at least one open stream,
whatever the number of streams, every ``POLL_INTERVAL_S``: it reads the highest version
of every run row of the project (``max(version)`` without FINAL: ReplacingMergeTree keeps
the highest version, so this is the version FINAL would show; it reads two columns of the
project's primary-key range), compares them with the versions it saw at the previous
poll, and reads the rows of the changed runs (FINAL, by run id). Each stream
(``_Subscriber``) merges what it is offered by run id, keeping the highest version, and
writes it as one message when it gets to run. The poll task stops when the last stream of
its project closes. Every value in SQL is a bound parameter. All store calls go through
the process's one store thread (``StoreAccess``).
Shutdown (``on_shutdown`` of the app, which ``AppRunner.cleanup`` runs before waiting for
handlers): every stream ends at once; a handler stuck writing to a client that does not
read is cancelled after ``SHUTDOWN_GRACE_S``; the poll tasks are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..common import clock
from ..common.errors import PermanentError, RetryableError, RunstreamError
from ..store.client import run_query, validate_database
from .convert import jsonable
from .mutations import validate_project
from .store_access import StoreAccess

log = logging.getLogger(__name__)

# Issue 4 asks for new points within 2 s of log(): the projector writes every 0.5 s, a
# poll every second adds at most 1 s, so a point shows after ~1.5 s at worst.
POLL_INTERVAL_S = 1.0
# Proxies close idle connections (nginx: 60 s by default); a comment every 15 s is
# well inside that and costs nothing.
PING_INTERVAL_S = 15.0
# How often an idle stream checks that its client is still connected (aiohttp does not
# cancel handlers when the peer goes away): a closed stream leaves the registry within it.
CHECK_INTERVAL_S = 1.0
# Catch-up on reconnect looks this far before since_us: events received before it but
# still in the pipeline (projector batches: 0.5 s; a backlog: more) are not missed.
# Re-sending a run the client already has is harmless: messages carry whole rows.
CATCHUP_MARGIN_US = 60_000_000
# Browsers reconnect an EventSource after this many ms when the stream ends (restart,
# network): short, since a stream exists to be fresh.
RECONNECT_MS = 1000
# At shutdown, handlers get this long to end their streams before they are cancelled.
SHUTDOWN_GRACE_S = 2.0

LIVE_PATH = "/api/v1/projects/{entity}/{project}/live"
STATS_PATH = "/api/v1/live"

# The run fields of a message (RunView names, times as µs), plus what merging needs.
_COLUMNS = (
    "run_id, name, state, state_cause, "
    "toUnixTimestamp64Micro(last_event_time) AS last_event_time_us, last_step, "
    "toUnixTimestamp64Micro(end_time) AS end_time_us, summary, hidden, color, "
    "deleted, version"
)
_PUBLIC = ("run_id", "name", "state", "state_cause", "last_event_time_us", "last_step",
           "end_time_us", "summary", "hidden", "color")


class LiveQueries:
    """The live stream's reads of the ``runs`` table (blocking; run on the store thread)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = validate_database(database)

    def _query(self, sql: str, parameters: dict[str, Any], what: str):
        return run_query(self.client, sql, parameters, what)

    @staticmethod
    def _row(r: dict[str, Any]) -> dict[str, Any]:
        r["summary"] = dict(r["summary"])
        r["hidden"] = bool(r["hidden"])
        r["deleted"] = bool(r["deleted"])
        r["version"] = int(r["version"])
        return r

    def versions(self, entity: str, project: str) -> dict[str, int]:
        """run id → the highest stored version, for every run row of the project
        (deleted runs included)."""
        res = self._query(
            f"SELECT run_id, max(version) FROM {self.db}.runs "
            "WHERE entity = {entity:String} AND project = {project:String} GROUP BY run_id",
            {"entity": entity, "project": project}, "polling run versions")
        return {r[0]: int(r[1]) for r in res.result_rows}

    def rows(self, entity: str, project: str, run_ids: list[str]) -> list[dict[str, Any]]:
        """The current rows (FINAL) of ``run_ids`` of the project."""
        if not run_ids:
            return []
        res = self._query(
            f"SELECT {_COLUMNS} FROM {self.db}.runs FINAL "
            "WHERE entity = {entity:String} AND project = {project:String} "
            "AND run_id IN {ids:Array(String)}",
            {"entity": entity, "project": project, "ids": run_ids}, "reading changed runs")
        return [self._row(r) for r in res.named_results()]

    def changed_since(self, entity: str, project: str, since_us: int) -> list[dict[str, Any]]:
        """Rows (FINAL) of the project's runs whose last client event or end time is
        after ``since_us``."""
        res = self._query(
            f"SELECT {_COLUMNS} FROM {self.db}.runs FINAL "
            "WHERE entity = {entity:String} AND project = {project:String} "
            "AND greatest(toUnixTimestamp64Micro(last_event_time), "
            "toUnixTimestamp64Micro(end_time)) > {since:Int64}",
            {"entity": entity, "project": project, "since": since_us}, "reading changed runs")
        return [self._row(r) for r in res.named_results()]


@dataclass(eq=False)
class _Subscriber:
    """One open stream: the changes offered to it and not written yet, merged by run."""

    poller: _Poller
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)   # run id → version last written
    now_us: int = 0
    closed: bool = False
    task: asyncio.Task | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, rows: Iterable[dict[str, Any]], now_us: int) -> None:
        """Merge ``rows``: a run keeps its highest version; versions written are skipped."""
        got = False
        for r in rows:
            rid, v = r["run_id"], r["version"]
            if self.sent.get(rid, -1) >= v:
                continue
            old = self.pending.get(rid)
            if old is None or old["version"] < v:
                self.pending[rid] = r
                got = True
        self.now_us = max(self.now_us, now_us)
        if got:
            self.wake.set()

    def take(self) -> dict[str, Any] | None:
        """The next message's data, or None when nothing is pending."""
        if not self.pending:
            return None
        rows, self.pending = self.pending, {}
        runs, deleted = [], []
        for rid in sorted(rows):
            r = rows[rid]
            self.sent[rid] = r["version"]
            if r["deleted"]:
                deleted.append(rid)
            else:
                runs.append({k: r[k] for k in _PUBLIC})
        return {"now_us": self.now_us, "runs": runs, "deleted": deleted}

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def wait(self, within_s: float) -> None:
        """Until something is offered, the stream is closed, or ``within_s`` passed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), within_s)
        self.wake.clear()


class _Poller:
    """The one poll task of a project; broadcasts changed rows to its subscribers."""

    def __init__(self, hub: LiveUpdates, entity: str, project: str) -> None:
        self.hub = hub
        self.entity = entity
        self.project = project
        self.subscribers: set[_Subscriber] = set()
        self.ready = asyncio.Event()    # set once the first poll has read the versions
        self.task = asyncio.create_task(self._run(), name=f"live {entity}/{project}")

    async def _run(self) -> None:
        store, q = self.hub.store, self.hub.queries
        known: dict[str, int] | None = None
        failing = False
        while True:
            started = time.monotonic()
            now_us = clock.now_us()
            try:
                versions = await store.call(q.versions, self.entity, self.project)
                changed = [] if known is None else \
                    sorted(r for r, v in versions.items() if known.get(r) != v)
                rows = await store.call(q.rows, self.entity, self.project, changed) \
                    if changed else []
            except Exception as e:   # a dead poller would freeze every stream: log, retry
                if not failing:
                    log.warning("live updates of %s/%s: %s (retrying every %.0f s)",
                                self.entity, self.project, e, self.hub.poll_interval_s,
                                exc_info=not isinstance(e, RunstreamError))
                failing = True
            else:
                failing = False
                for r in rows:          # rows read later may be newer than versions
                    versions[r["run_id"]] = max(versions.get(r["run_id"], 0), r["version"])
                known = versions
                for sub in self.subscribers:
                    sub.offer(rows, now_us)
                if not self.ready.is_set():
                    self.ready.set()
                    for sub in self.subscribers:
                        sub.wake.set()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.hub.poll_interval_s - elapsed))


def _since(request: web.Request) -> int:
    """``since_us`` of the query (PermanentError if malformed), else a well-formed
    ``Last-Event-ID``, else 0."""
    raw = request.query.get("since_us")
    if raw is None or raw == "":
        raw = request.headers.get("Last-Event-ID", "").strip()
        return int(raw) if raw.isdigit() and len(raw) <= 18 else 0   # 18 digits < 2**63
    try:
        v = int(raw)
    except ValueError:
        raise PermanentError(f"query parameter since_us={raw!r} is not an integer") from None
    if not 0 <= v <= 2**63 - 1:
        raise PermanentError(f"query parameter since_us={v} is out of range 0..2**63-1")
    return v


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _event(data: dict[str, Any]) -> bytes:
    text = json.dumps(jsonable(data), separators=(",", ":"), ensure_ascii=False)
    return f"id: {data['now_us']}\nevent: runs\ndata: {text}\n\n".encode()


class LiveUpdates:
    """The registry of live streams (subscribers per (entity, project)) and their routes."""

    def __init__(self, store: StoreAccess, *, poll_interval_s: float = POLL_INTERVAL_S,
                 ping_interval_s: float = PING_INTERVAL_S,
                 access: Callable[[web.Request, str, str], None] | None = None) -> None:
        """``access(request, entity, project)`` raises unless the caller may follow the
        project (``entity``/``project`` empty: the registry of streams); ``None`` lets
        everyone (for tests of the streams alone)."""
        self.store = store
        self._access = access
        self.queries = LiveQueries(store.client, store.database)
        self.poll_interval_s = poll_interval_s
        self.ping_interval_s = ping_interval_s
        self._pollers: dict[tuple[str, str], _Poller] = {}
        self._poll_tasks: set[asyncio.Task] = set()   # running or being cancelled
        self._closed = False
        self._drained = asyncio.Event()               # closed, and no stream left

    def install(self, app: web.Application) -> None:
        """Add the routes to ``app`` and end every stream when it shuts down."""
        app.router.add_get(LIVE_PATH, self.stream)
        app.router.add_get(STATS_PATH, self.stats_handler)
        app.on_shutdown.append(self._on_shutdown)

    # --- registry --------------------------------------------------------------------

    def subscribe(self, entity: str, project: str) -> _Subscriber:
        """A new subscriber of the project; starts the project's poll task if needed."""
        if self._closed:
            raise RetryableError("the server is shutting down")
        poller = self._pollers.get((entity, project))
        if poller is None:
            poller = self._pollers[(entity, project)] = _Poller(self, entity, project)
            self._poll_tasks.add(poller.task)
            poller.task.add_done_callback(self._poll_tasks.discard)
        sub = _Subscriber(poller, now_us=clock.now_us(), task=asyncio.current_task())
        poller.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscriber) -> None:
        """Remove ``sub``; the project's poll task stops with its last subscriber."""
        p = sub.poller
        p.subscribers.discard(sub)
        if not p.subscribers and self._pollers.get((p.entity, p.project)) is p:
            del self._pollers[(p.entity, p.project)]
            p.task.cancel()
        if self._closed and not self._pollers:
            self._drained.set()

    def stats(self) -> list[dict[str, Any]]:
        return [{"entity": e, "project": p, "subscribers": len(poller.subscribers)}
                for (e, p), poller in sorted(self._pollers.items())]

    async def close(self) -> None:
        """End every stream and poll task (idempotent); new streams are refused (503)."""
        self._closed = True
        for p in self._pollers.values():
            for s in p.subscribers:
                s.close()                  # its handler returns at once
        if self._pollers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), SHUTDOWN_GRACE_S)
        for p in self._pollers.values():   # handlers stuck writing to a silent client
            for s in p.subscribers:
                if s.task is not None and not s.task.done():
                    s.task.cancel()
        self._pollers.clear()
        tasks = list(self._poll_tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    # --- handlers --------------------------------------------------------------------

    async def stats_handler(self, request: web.Request) -> web.Response:
        if self._access is not None:
            self._access(request, "", "")
        return web.json_response({"projects": self.stats()})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """The SSE stream of a project (see the module docstring)."""
        entity, project = request.match_info["entity"], request.match_info["project"]
        validate_project(entity, project)
        if self._access is not None:
            self._access(request, entity, project)
        since_us = _since(request)
        sub = self.subscribe(entity, project)
        try:
            # Headers go out once the poller has its baseline: every change after them
            # is seen by a later poll.
            while not sub.poller.ready.is_set():
                if sub.closed:
                    raise RetryableError("the server is shutting down")
                if _gone(request):
                    return web.Response(status=204)
                await sub.wait(CHECK_INTERVAL_S)
            if since_us > 0:
                now_us = clock.now_us()
                rows = await self.store.call(self.queries.changed_since, entity, project,
                                             max(0, since_us - CATCHUP_MARGIN_US))
                sub.offer(rows, now_us)
            resp = web.StreamResponse(headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache, no-store",
                "X-Accel-Buffering": "no",       # nginx: do not buffer the stream
            })
            await resp.prepare(request)
            try:
                await resp.write(f"retry: {RECONNECT_MS}\n\n".encode())
                last_write = time.monotonic()
                while not sub.closed and not _gone(request):
                    data = sub.take()
                    if data is not None:
                        await resp.write(_event(data))
                        last_write = time.monotonic()
                    elif time.monotonic() - last_write >= self.ping_interval_s:
                        await resp.write(b": ping\n\n")
                        last_write = time.monotonic()
                    to_ping = self.ping_interval_s - (time.monotonic() - last_write)
                    await sub.wait(max(0.0, min(CHECK_INTERVAL_S, to_ping)))
            except ConnectionError:
                pass                              # the client went away mid-write
            return resp
        finally:
            self.unsubscribe(sub)
