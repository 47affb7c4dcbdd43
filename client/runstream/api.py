"""The public API: read runs, their history, and change them — like ``wandb.Api()``.

    import runstream
    api = runstream.Api()                       # RUNSTREAM_API_URL, else RUNSTREAM_URL
    runs = api.runs("my-team/my-project", filters={"state": "finished", "config.lr": 0.1},
                    order="-summary.loss")
    print(len(runs), [r.name for r in runs])
    run = api.run("my-team/my-project/abc123")
    rows = run.history(keys=["loss"], samples=500)    # downsampled by the server
    for row in run.scan_history(keys=["loss"]):        # every point, paged
        ...
    run.name = "better name"; run.tags.append("best"); run.update()
    run.stop()                                         # the script gets KeyboardInterrupt
    run.delete()

Talks gRPC to the api role (services Query and Runs). In the embedded server
(``runstream server``) the gateway and the api share one gRPC port, so the URL the
training scripts use works here too. ``api_key`` (default ``RUNSTREAM_API_KEY``) is sent
as ``authorization: Bearer <key>`` metadata.

Paths: ``"entity/project"`` or ``"project"`` for runs; ``"entity/project/run_id"`` (also
``"entity/project/runs/run_id"``, as in web URLs) or ``"project/run_id"`` for one run.
A missing entity is ``RUNSTREAM_ENTITY``, else the user name (as ``runstream.init``).

``filters`` (all must hold): ``{"state": "running" | [states...]}``,
``{"tags": "t" | [tags...]}`` (runs having every tag), ``{"name": "substr"}``
(case-insensitive substring of the display name), ``{"config.<key>": value}`` (equal
JSON value; nested config keys are flattened with ``/``, e.g. ``"config.arch/layers"``).
``order``: ``"+"``/``"-"`` (ascending/descending, default ascending) followed by
``created_at``, ``name``, ``state``, ``duration``, ``summary.<key>`` or ``config.<key>``;
wandb's spellings ``createdAt``, ``display_name``, ``summary_metrics.<key>`` are accepted.
Runs missing a sort key come last. Default: ``"-created_at"`` (newest first).

Errors are ``runstream.errors`` types: ``NotFound``, ``InvalidInput``, ``Conflict``,
``PermissionDenied``, ``Unavailable``.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc

from . import errors
from ._channel import channel
from .v1 import events_pb2, query_pb2, query_pb2_grpc, runs_pb2, runs_pb2_grpc

DEFAULT_URL = "localhost:50051"
MAX_PER_PAGE = 1000
MAX_SAMPLES = 100_000

_ERRORS = {
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidInput,
    grpc.StatusCode.OUT_OF_RANGE: errors.InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: errors.Conflict,
    grpc.StatusCode.ALREADY_EXISTS: errors.Conflict,
    grpc.StatusCode.UNAUTHENTICATED: errors.PermissionDenied,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.Unavailable,
}
_ORDER_ALIASES = {"createdAt": "created_at", "created": "created_at",
                  "display_name": "name", "displayName": "name", "runtime": "duration"}
_PRIVACY = {events_pb2.PRIVACY_PRIVATE: "private", events_pb2.PRIVACY_PUBLIC: "public"}
_PRIVACY_VALUES = {v: k for k, v in _PRIVACY.items()}


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def _default_entity() -> str:
    return os.environ.get("RUNSTREAM_ENTITY") or _username() or "default"


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _time(us: int) -> datetime | None:
    return datetime.fromtimestamp(us / 1e6, tz=UTC) if us > 0 else None


def _as_list(v: Any) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("$in", "$all"):
        v = next(iter(v.values()))       # wandb/Mongo style {"$in": [...]}
    if not isinstance(v, Iterable):
        raise errors.InvalidInput(f"expected a string or a list of strings, got {v!r}")
    return [str(x) for x in v]


def run_filter(filters: dict[str, Any] | None) -> query_pb2.RunFilter:
    """``filters`` (see the module docstring) → the server's RunFilter."""
    f = query_pb2.RunFilter()
    for k, v in (filters or {}).items():
        if k in ("state", "states"):
            f.states.extend(_as_list(v))
        elif k in ("tags", "tag"):
            f.tags.extend(_as_list(v))
        elif k in ("name", "display_name"):
            f.name_contains = str(v)
        elif k.startswith("config.") and len(k) > len("config."):
            f.config.add(key=k[len("config."):], json=json.dumps(v))
        elif k == "config" and isinstance(v, dict):
            for ck, cv in v.items():
                f.config.add(key=str(ck), json=json.dumps(cv))
        else:
            raise errors.InvalidInput(
                f"unknown filter {k!r}: use state, tags, name or config.<key>")
    return f


def sort_order(order: str | None) -> tuple[str, bool]:
    """``"-summary.loss"`` → ``("summary.loss", True)``; see the module docstring."""
    text = (order or "-created_at").strip()
    descending = text.startswith("-")
    text = text.lstrip("+-")
    if text.startswith("summary_metrics."):
        text = "summary." + text[len("summary_metrics."):]
    text = _ORDER_ALIASES.get(text, text)
    if not (text in ("created_at", "name", "state", "duration")
            or (text.startswith(("summary.", "config.")) and "." in text[:-1])):
        raise errors.InvalidInput(f"cannot order by {order!r}: use [+-]created_at, name, "
                                  "state, duration, summary.<key> or config.<key>")
    return text, descending


def _split_path(path: str, parts: int) -> list[str]:
    if not isinstance(path, str) or not path.strip("/"):
        raise errors.InvalidInput(f"invalid path {path!r}")
    items = [p for p in path.strip("/").split("/") if p]
    if parts == 3 and len(items) == 4 and items[2] == "runs":
        items = [items[0], items[1], items[3]]
    if len(items) == parts - 1:
        items = [_default_entity(), *items]
    if len(items) != parts:
        want = "entity/project" if parts == 2 else "entity/project/run_id"
        raise errors.InvalidInput(f"path {path!r} is not {want}")
    return items


def merge_rows(series: Iterable[query_pb2.Series]) -> list[dict[str, Any]]:
    """Series (one per key) → one dict per step: ``{"_step": s, "_timestamp": t, key: v}``."""
    rows: dict[int, dict[str, Any]] = {}
    for s in series:
        times = s.time_us
        for i, (step, value) in enumerate(zip(s.step, s.value, strict=True)):
            row = rows.get(step)
            if row is None:
                row = rows[step] = {"_step": step}
                if i < len(times):
                    row["_timestamp"] = times[i] / 1e6
            row[s.key] = value
    return [rows[k] for k in sorted(rows)]


class Api:
    """Reads and changes runs over gRPC. Use as a context manager or call ``close()``."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0) -> None:
        url = (url or os.environ.get("RUNSTREAM_API_URL") or os.environ.get("RUNSTREAM_URL")
               or DEFAULT_URL)
        self.url = url
        self.api_key = api_key if api_key is not None else os.environ.get("RUNSTREAM_API_KEY", "")
        self.timeout = timeout
        self.default_entity = _default_entity()
        self._metadata = (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()
        options = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]
        self._channel = channel(url, options=options)
        self._query = query_pb2_grpc.QueryStub(self._channel)
        self._runs = runs_pb2_grpc.RunsStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<runstream.Api {self.url}>"

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            cls = _ERRORS.get(code, errors.RunstreamError)
            detail = e.details() if hasattr(e, "details") else str(e)
            raise cls(f"{detail} [{code.name if code else 'error'} from {self.url}]") from None

    # -- reading -------------------------------------------------------------------
    def projects(self, entity: str | None = None) -> list[dict[str, Any]]:
        """Projects with at least one run: ``[{entity, name, run_count, last_event_at}]``."""
        resp = self._call(self._query.ListProjects,
                          query_pb2.ListProjectsRequest(entity=entity or ""))
        return [{"entity": p.entity, "name": p.name, "run_count": p.run_count,
                 "last_event_at": _time(p.last_event_time_us)} for p in resp.projects]

    def runs(self, path: str, filters: dict[str, Any] | None = None,
             order: str | None = "-created_at", per_page: int = 50) -> Runs:
        """The runs of a project, lazily fetched ``per_page`` at a time; ``len()`` works."""
        entity, project = _split_path(path, 2)
        if not 1 <= int(per_page) <= MAX_PER_PAGE:
            raise errors.InvalidInput(f"per_page must be 1..{MAX_PER_PAGE}")
        sort_by, descending = sort_order(order)
        return Runs(self, entity, project, run_filter(filters), sort_by, descending,
                    int(per_page))

    def run(self, path: str) -> ApiRun:
        """One run by ``"entity/project/run_id"``; raises ``NotFound``."""
        entity, project, run_id = _split_path(path, 3)
        view = self._call(self._query.GetRun, query_pb2.GetRunRequest(
            entity=entity, project=project, run_id=run_id))
        return ApiRun(self, view)


class Runs:
    """A lazy, paged list of runs (``ListRuns``). Iterate it, index it, take ``len()``.

    Pages are fetched by offset as the iteration reaches them; runs created or changed
    meanwhile can shift later pages (the order is stable: ties break by run id).
    """

    def __init__(self, api: Api, entity: str, project: str, flt: query_pb2.RunFilter,
                 sort_by: str, descending: bool, per_page: int) -> None:
        self._api = api
        self.entity = entity
        self.project = project
        self._filter = flt
        self._sort_by = sort_by
        self._descending = descending
        self.per_page = per_page
        self._runs: list[ApiRun] = []
        self._total: int | None = None
        self.pages_fetched = 0

    def _more(self) -> bool:
        return self._total is None or len(self._runs) < self._total

    def _fetch(self) -> bool:
        """Fetch the next page; False when there was nothing more."""
        if not self._more():
            return False
        resp = self._api._call(self._api._query.ListRuns, query_pb2.ListRunsRequest(
            entity=self.entity, project=self.project, filter=self._filter,
            sort_by=self._sort_by, descending=self._descending, limit=self.per_page,
            offset=len(self._runs)))
        self.pages_fetched += 1
        self._total = int(resp.total)
        self._runs.extend(ApiRun(self._api, v) for v in resp.runs)
        if not resp.runs:              # the set shrank under us: stop here
            self._total = len(self._runs)
        return bool(resp.runs)

    def __len__(self) -> int:
        if self._total is None:
            self._fetch()
        return int(self._total or 0)

    def __iter__(self) -> Iterator[ApiRun]:
        i = 0
        while True:
            if i < len(self._runs):
                yield self._runs[i]
                i += 1
            elif not self._fetch():
                return

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        while index >= len(self._runs) and self._fetch():
            pass
        if not 0 <= index < len(self._runs):
            raise IndexError("run index out of range")
        return self._runs[index]

    def __repr__(self) -> str:
        return f"<Runs {self.entity}/{self.project} ({len(self)})>"


class ApiRun:
    """One run as the server sees it. Set ``name``, ``notes``, ``tags``, ``privacy``,
    ``hidden`` or ``color`` and call ``update()``; ``delete()``; ``stop()``.

    ``config`` and ``summary`` hold decoded JSON values (config keys flattened with
    ``/``); ``metadata`` is what the client captured at init (host, OS, Python, git...).
    ``seq_gaps``: events of the run the server never received (dropped by a client
    whose journal disk was full, or lost; docs/client.md "Journal"); 0 when every event
    arrived.
    """

    def __init__(self, api: Api, view: query_pb2.RunView) -> None:
        self._api = api
        self._load(view)

    def _load(self, view: query_pb2.RunView) -> None:
        self._view = view
        self.entity = view.entity
        self.project = view.project
        self.id = view.run_id
        self.name = view.name
        self.state = view.state
        self.state_cause = view.state_cause
        self.notes = view.notes
        self.tags = list(view.tags)
        self.group = view.group
        self.job_type = view.job_type
        self.sweep_id = view.sweep_id
        self.privacy = view.privacy or "private"
        self.hidden = view.hidden
        self.color = view.color
        self.exit_code = view.exit_code
        self.seq_gaps = view.seq_gaps
        self.config = {k: _decode(v) for k, v in view.config.items()}
        self.summary: dict[str, Any] = dict(view.summary)
        self.summary.update({k: _decode(v) for k, v in view.summary_other.items()})
        self.metadata = _decode(view.metadata_json) if view.metadata_json else {}
        self.created_at = _time(view.start_time_us)
        self.heartbeat_at = _time(view.last_event_time_us)
        self.ended_at = _time(view.end_time_us)
        self.deleted = False
        self._saved = self._editable()

    def _editable(self) -> tuple:
        return (self.name, self.notes, tuple(self.tags), self.privacy, self.hidden, self.color)

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to the last event while running)."""
        v = self._view
        end = v.end_time_us or v.last_event_time_us
        return max(0, end - v.start_time_us) / 1e6 if v.start_time_us else 0.0

    def load(self) -> ApiRun:
        """Re-read the run from the server (changes made elsewhere, new summary...)."""
        view = self._api._call(self._api._query.GetRun, query_pb2.GetRunRequest(
            entity=self.entity, project=self.project, run_id=self.id))
        self._load(view)
        return self

    refresh = load

    # -- history -------------------------------------------------------------------
    def history(self, keys: list[str] | None = None, samples: int = 1500,
                pandas: bool = False) -> list[dict[str, Any]]:
        """Numeric history, downsampled by the server to at most ``samples`` points per key.

        One dict per step, ``{"_step": s, "_timestamp": t, key: value, ...}``, sorted by
        step; a key absent at a step is missing from that dict. A key with more points
        than ``samples`` is cut into at most ``samples`` equal step ranges (whole 16-step
        blocks when a range spans 48 steps or more: docs/api.md, "Chart downsampling"),
        each giving its last point (min/max per range: ``history_series``).
        ``pandas=True`` → a DataFrame.
        """
        rows = merge_rows(self.history_series(keys, samples))
        if pandas:
            import pandas as pd
            return pd.DataFrame(rows)
        return rows

    def history_series(self, keys: list[str] | None = None,
                       samples: int = 1500) -> list[query_pb2.Series]:
        """Per key: steps, last/min/max value per bucket, times, total points (protobufs)."""
        if not 1 <= int(samples) <= MAX_SAMPLES:
            raise errors.InvalidInput(f"samples must be 1..{MAX_SAMPLES}")
        resp = self._api._call(self._api._query.GetHistory, query_pb2.GetHistoryRequest(
            entity=self.entity, project=self.project, run_id=self.id, keys=list(keys or ()),
            buckets=int(samples)))
        return list(resp.series)

    def scan_history(self, keys: list[str] | None = None, page_size: int = 10_000,
                     min_step: int | None = None,
                     max_step: int | None = None) -> Iterator[dict[str, Any]]:
        """Every numeric point, as one dict per step in step order, fetched in pages of
        about ``page_size`` points (whole steps; a page never splits a step)."""
        if not 1 <= int(page_size) <= 1_000_000:
            raise errors.InvalidInput("page_size must be 1..1000000")
        cursor = int(min_step or 0)
        hi = int(max_step) if max_step is not None else 0
        if max_step is not None and hi < cursor:
            return
        while True:
            resp = self._api._call(self._api._query.GetHistory, query_pb2.GetHistoryRequest(
                entity=self.entity, project=self.project, run_id=self.id,
                keys=list(keys or ()), min_step=cursor, max_step=hi,
                page_points=int(page_size)))
            yield from merge_rows(resp.series)
            if not resp.has_more or resp.next_min_step <= cursor:
                return
            cursor = resp.next_min_step

    # -- changes -------------------------------------------------------------------
    def update(self) -> ApiRun:
        """Send the changed ``name``, ``notes``, ``tags``, ``privacy``, ``hidden``, ``color``.

        The server checks them (``InvalidInput``) and records the change; other readers
        see it within about a second. Config and summary belong to the script.
        """
        p = events_pb2.RunPatch()
        name, notes, tags, privacy, hidden, color = self._saved
        if self.name != name:
            p.name = self.name
        if self.notes != notes:
            p.notes = self.notes
        if tuple(self.tags) != tags:
            p.tags.extend(self.tags)
            p.set_tags = True
        if self.privacy != privacy:
            if self.privacy not in _PRIVACY_VALUES:
                raise errors.InvalidInput("privacy must be 'private' or 'public'")
            p.privacy = _PRIVACY_VALUES[self.privacy]
        if self.hidden != hidden:
            p.hidden = bool(self.hidden)
        if self.color != color:
            p.color = self.color
        if p.ByteSize() == 0:
            return self
        resp = self._api._call(self._api._runs.UpdateRun, runs_pb2.UpdateRunRequest(
            entity=self.entity, project=self.project, run_id=self.id, patch=p))
        ch = resp.event.run_patch
        if ch.set_tags:
            self.tags = list(ch.tags)
        if ch.HasField("color"):
            self.color = ch.color
        self._saved = self._editable()
        return self

    def delete(self) -> None:
        """Delete the run: it disappears from ``runs()`` and ``run()`` raises ``NotFound``."""
        self._api._call(self._api._runs.DeleteRun, runs_pb2.DeleteRunRequest(
            entity=self.entity, project=self.project, run_id=self.id))
        self.deleted = True

    def stop(self, requested_by: str | None = None) -> None:
        """Ask the running script to stop (see ``runstream._control``); the run ends
        ``killed`` with cause ``stopped by <requested_by> at <time>``. Raises ``Conflict``
        if the run is not running."""
        self._api._call(self._api._runs.StopRun, runs_pb2.StopRunRequest(
            entity=self.entity, project=self.project, run_id=self.id,
            requested_by=requested_by or _username()))

    def __repr__(self) -> str:
        return f"<ApiRun {self.path} name={self.name!r} state={self.state}>"
