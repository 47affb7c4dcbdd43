"""The one query module: every read of the store, as named, parameterised SQL.

Invariant 8: user values never become SQL text. Every value (entity, project, run id,
metric/config/summary keys, filter values, limits) is bound server-side with
clickhouse-connect's ``{name:Type}`` parameters. The only text put into SQL is the
validated database name and fragments chosen from the fixed constants below.

Reads use ``FINAL`` so that rows not yet merged by the ReplacingMergeTree engines never
show twice, and filter ``deleted = 0``. Results are plain dicts named like the fields of
``query.proto`` (RunView, ProjectView, Series). Blocking: the caller runs these in a
worker thread.

Sorting (``list_runs``): ``created_at`` (start time), ``name`` (case-insensitive),
``state``, ``duration`` (end time, or last event time while running, minus start time),
``summary.<key>`` (numeric summary; a non-numeric summary value sorts after numbers by
its JSON text), ``config.<key>`` (numbers numerically, then other JSON by text). Runs
missing the key (or whose summary value is NaN) sort last in both directions; ties break
by run id, so pages are stable. ``user`` sorts by the author; runs without one sort last.

Run filters (``list_runs``, ``bands``) are ``run_filter.RunFilter``s: their SQL conditions
live in ``run_filter.py`` under the same rule. The workspace's chart reads (many runs ×
keys, group bands) are in ``chart_queries.py``, a part of ``Queries``.

Workspace reads scoped to a project (``require_project=True``, ``columns``,
``project_keys``, ``project_history``, ``bands``) raise ``NotFoundError`` for a project
without any (not deleted) run; the check runs only when an answer came back empty.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from ..common.errors import NotFoundError, PermanentError, RunstreamError
from ..store.client import classify, run_query, validate_database
from .chart_queries import ChartQueries
from .names import validate_identity, validate_project
from .run_filter import PUBLIC_SQL, USER_SQL, RunFilter

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_BUCKETS = 100_000
MAX_PAGE_POINTS = 1_000_000
MAX_KEY_CHARS = 256
MAX_NAME_LIMIT = 5000        # config/summary keys or metric names per chooser answer
MAX_PREFIX_CHARS = 256
_SORT_RE = re.compile(r"^(created_at|name|state|duration|user|summary\.(.+)|config\.(.+))$",
                      re.DOTALL)
_REGEX_ERROR = 427           # ClickHouse CANNOT_COMPILE_REGEXP
_RE2_DETAIL = re.compile(r"cannot compile re2: .*?, error: (.*?)(?:\. Look at|$)", re.DOTALL)

# RunView fields, selected from the runs table (times as µs).
_RUN_VIEW_COLUMNS = (
    "entity, project, run_id, name, state, state_cause, notes, tags, `group`, job_type, "
    "sweep_id, privacy, config, summary, summary_other, metadata_json, "
    "toUnixTimestamp64Micro(start_time) AS start_time_us, "
    "toUnixTimestamp64Micro(last_event_time) AS last_event_time_us, "
    "toUnixTimestamp64Micro(end_time) AS end_time_us, "
    "exit_code, hidden, color, last_seq, dropped_points"
    ", last_step, seq_gaps"
)

_DURATION = ("if(toUnixTimestamp64Micro(end_time) > 0, toUnixTimestamp64Micro(end_time), "
             "toUnixTimestamp64Micro(last_event_time)) - toUnixTimestamp64Micro(start_time)")
_RUN_VIEW_COLUMNS += f", {USER_SQL} AS user, {_DURATION} AS duration_us"

# ORDER BY templates; {d} is ASC or DESC. Only these fixed texts reach SQL.
_ORDER = {
    "created_at": "start_time {d}",
    "name": "lowerUTF8(name) {d}, name {d}",
    "state": "state {d}",
    "user": f"{USER_SQL} = '' ASC, {USER_SQL} {{d}}",
    "duration": f"({_DURATION}) {{d}}",
    "summary": ("(NOT mapContains(summary, {sort_key:String}) "
                "OR isNaN(summary[{sort_key:String}])) "
                "AND NOT mapContains(summary_other, {sort_key:String}) ASC, "
                "if(mapContains(summary, {sort_key:String}) "
                "AND NOT isNaN(summary[{sort_key:String}]), "
                "summary[{sort_key:String}], NULL) {d} NULLS LAST, "
                "summary_other[{sort_key:String}] {d}"),
    "config": ("NOT mapContains(config, {sort_key:String}) ASC, "
               "toFloat64OrNull(config[{sort_key:String}]) {d} NULLS LAST, "
               "config[{sort_key:String}] {d}"),
}


class Queries(ChartQueries):
    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = validate_database(database)

    # --- helpers ---------------------------------------------------------------------

    def _query(self, sql: str, parameters: dict[str, Any], what: str):
        return run_query(self.client, sql, parameters, what,
                         lambda e, w: _classify(e, w, parameters))

    @staticmethod
    def _run_view(row: dict[str, Any]) -> dict[str, Any]:
        row["tags"] = list(row["tags"])
        row["config"] = dict(row["config"])
        row["summary"] = dict(row["summary"])
        row["summary_other"] = dict(row["summary_other"])
        row["hidden"] = bool(row["hidden"])
        return row

    # --- projects --------------------------------------------------------------------

    def list_projects(self, entity: str | None, name_contains: str = "",
                      members_of: list[str] | None = None) -> list[dict[str, Any]]:
        """Projects with at least one (not deleted) run; all entities when ``entity`` is empty.

        ``name_contains``: only projects whose name holds it (case-insensitive).
        ``members_of`` (a non-admin reader's entities): only the runs of those entities
        and public runs count, and only projects with such a run are listed.
        """
        where = "deleted = 0"
        params: dict[str, Any] = {}
        if members_of is not None:
            where += f" AND (entity IN {{members_of:Array(String)}} OR {PUBLIC_SQL})"
            params["members_of"] = list(members_of)
        if entity:
            where += " AND entity = {entity:String}"
            params["entity"] = entity
        if name_contains:
            if len(name_contains) > MAX_PREFIX_CHARS:
                raise PermanentError(f"q longer than {MAX_PREFIX_CHARS} characters")
            where += " AND positionCaseInsensitiveUTF8(project, {q:String}) > 0"
            params["q"] = name_contains
        res = self._query(
            "SELECT entity, project, count() AS run_count, "
            "max(toUnixTimestamp64Micro(last_event_time)) AS last_event_time_us "
            f"FROM {self.db}.runs FINAL WHERE {where} "
            "GROUP BY entity, project ORDER BY entity, project",
            params, "listing projects")
        return [{"entity": r["entity"], "name": r["project"], "run_count": int(r["run_count"]),
                 "last_event_time_us": int(r["last_event_time_us"])}
                for r in res.named_results()]

    def project_exists(self, entity: str, project: str, public_only: bool = False) -> bool:
        """Whether the project has at least one (not deleted; public) run."""
        public = f" AND {PUBLIC_SQL}" if public_only else ""
        res = self._query(
            f"SELECT 1 FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
            f"AND project = {{project:String}} AND deleted = 0{public} LIMIT 1",
            {"entity": entity, "project": project}, "looking up a project")
        return bool(res.result_rows)

    def require_project(self, entity: str, project: str, public_only: bool = False) -> None:
        """``NotFoundError`` unless the project has a (public) run; the same answer
        whether it has none or only runs the caller may not see."""
        self._require_project(entity, project, public_only)

    def _require_project(self, entity: str, project: str, public_only: bool = False) -> None:
        validate_project(entity, project)
        if not self.project_exists(entity, project, public_only):
            raise NotFoundError(f"project {entity}/{project} not found: it has no runs")

    # --- runs ------------------------------------------------------------------------

    def list_runs(self, entity: str, project: str,
                  filter: RunFilter | dict[str, Any] | None, sort_by: str, descending: bool,
                  limit: int, offset: int,
                  require_project: bool = False) -> tuple[list[dict[str, Any]], int]:
        """One page of the runs of a project, and the number of runs matching ``filter``.

        ``filter``: a ``RunFilter`` or a dict of its fields (see ``run_filter.py``). When
        neither the filter nor the sort reads a wide column (config/summary maps, the
        metadata JSON: ``config.``/``summary.``/``user`` filters and sorts), two queries:
        the first filters and sorts the latest versions (FINAL) on the narrow columns and
        returns the page's ``(run_id, version)`` pairs and the total (a window count);
        the second reads the full rows of those pairs (``_page_rows``), so the wide
        columns are read only in the page's granules and never sorted. Otherwise one
        query (page and window count): a second pass would read the maps twice, and the
        page's runs lie in most 8,192-row granules anyway (measured slower at 100k runs).
        A page past the end costs a count. ``require_project``: ``NotFoundError`` instead
        of an empty answer for a project without runs.
        """
        flt = RunFilter.of(filter)
        limit = int(limit or 0) or DEFAULT_LIMIT
        offset = int(offset or 0)
        if not 1 <= limit <= MAX_LIMIT:
            raise PermanentError(f"limit must be 1..{MAX_LIMIT} (0 means {DEFAULT_LIMIT}), "
                                 f"got {limit}")
        if offset < 0:
            raise PermanentError(f"offset must be >= 0, got {offset}")
        m = _SORT_RE.fullmatch(sort_by or "created_at")
        if not m:
            raise PermanentError(f"cannot sort by {sort_by!r}: use created_at, name, state, "
                                 "duration, user, summary.<key> or config.<key>")
        params: dict[str, Any] = {"entity": entity, "project": project}
        where = ["entity = {entity:String}", "project = {project:String}", "deleted = 0",
                 *flt.where(params)]
        where_sql = " AND ".join(where)

        kind = m.group(1)
        sort_key = m.group(2) or m.group(3)
        if sort_key is not None:
            if len(sort_key) > MAX_KEY_CHARS:
                raise PermanentError(f"sort key longer than {MAX_KEY_CHARS} characters")
            kind = kind.split(".", 1)[0]
        direction = "DESC" if descending else "ASC"
        order = _ORDER[kind].replace("{d}", direction) + ", run_id ASC"
        page_params = dict(params, limit=limit, offset=offset)
        if sort_key is not None:
            page_params["sort_key"] = sort_key

        total = 0
        if flt.config or flt.summary or flt.users or kind in ("summary", "config", "user"):
            # The filter or sort reads the wide columns (maps, metadata JSON) anyway: one
            # query, which reads each column once.
            res = self._query(
                f"SELECT {_RUN_VIEW_COLUMNS}, count() OVER () AS matching "
                f"FROM {self.db}.runs FINAL WHERE {where_sql} "
                f"ORDER BY {order} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}",
                page_params, "listing runs")
            runs = [self._run_view(r) for r in res.named_results()]
            for r in runs:
                total = int(r.pop("matching"))
        else:
            # Two phases: the page's (run id, version) pairs and the total from the narrow
            # filter and sort columns, then the page's full rows by pair.
            page = self._query(
                f"SELECT run_id, version, count() OVER () AS matching "
                f"FROM {self.db}.runs FINAL WHERE {where_sql} "
                f"ORDER BY {order} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}",
                page_params, "listing runs").result_rows
            runs = self._page_rows(entity, project, [(r[0], int(r[1])) for r in page])
            if page:
                total = int(page[0][2])
        if not runs:
            total = int(self._query(
                f"SELECT count() FROM {self.db}.runs FINAL WHERE {where_sql}",
                params, "counting runs").result_rows[0][0])
        if total == 0 and require_project:
            self._require_project(entity, project, flt.public_only)
        return runs, total

    def _page_rows(self, entity: str, project: str,
                   page: list[tuple[str, int]]) -> list[dict[str, Any]]:
        """RunViews of ``(run_id, version)`` pairs chosen by ``list_runs``, in that order.

        The exact row versions that were filtered and sorted, read without FINAL: only the
        pairs' granules are read, not one from each part holding older versions, and no
        merge of wide rows. A same-version duplicate (a batch written twice) is the same
        state: ``LIMIT 1 BY``. A version merged away since (a newer one was written
        between the two queries) is read with FINAL instead; a run deleted since drops
        out of the page.
        """
        if not page:
            return []
        params: dict[str, Any] = {"entity": entity, "project": project, "pairs": page,
                                  "ids": [rid for rid, _ in page]}
        res = self._query(
            f"SELECT {_RUN_VIEW_COLUMNS} FROM {self.db}.runs "
            "PREWHERE entity = {entity:String} AND project = {project:String} "
            "AND run_id IN {ids:Array(String)} "
            "AND (run_id, version) IN {pairs:Array(Tuple(String, UInt64))} "
            "LIMIT 1 BY run_id", params, "reading a page of runs")
        rows = {r["run_id"]: r for r in res.named_results()}
        missing = [rid for rid, _ in page if rid not in rows]
        if missing:
            res = self._query(
                f"SELECT {_RUN_VIEW_COLUMNS} FROM {self.db}.runs FINAL "
                "WHERE entity = {entity:String} AND project = {project:String} "
                "AND run_id IN {ids:Array(String)} AND deleted = 0",
                {"entity": entity, "project": project, "ids": missing}, "reading a page of runs")
            rows.update((r["run_id"], r) for r in res.named_results())
        return [self._run_view(rows[rid]) for rid, _ in page if rid in rows]

    def get_run(self, entity: str, project: str, run_id: str) -> dict[str, Any]:
        """One run as a RunView dict; ``NotFoundError`` if it does not exist or was deleted."""
        validate_identity(entity, project, run_id)
        res = self._query(
            f"SELECT {_RUN_VIEW_COLUMNS} FROM {self.db}.runs FINAL "
            "WHERE entity = {entity:String} AND project = {project:String} "
            "AND run_id = {run_id:String} AND deleted = 0",
            {"entity": entity, "project": project, "run_id": run_id}, "reading a run")
        rows = list(res.named_results())
        if not rows:
            raise NotFoundError(f"run {entity}/{project}/{run_id} not found")
        return self._run_view(rows[0])

    def run_keys(self, entity: str, project: str, run_id: str) -> dict[str, list[str]]:
        """The history keys of a run: ``{"numeric": [...], "other": [...]}``, sorted.

        Numeric keys come from ``history_series`` (one row per key), other keys from a
        scan of the run's non-numeric history (usually small).
        """
        self.get_run(entity, project, run_id)
        params = {"entity": entity, "project": project, "run_id": run_id}
        out = {}
        for name, table in (("numeric", "history_series"), ("other", "history_other")):
            res = self._query(
                f"SELECT DISTINCT key FROM {self.db}.{table} WHERE entity = {{entity:String}} "
                "AND project = {project:String} AND run_id = {run_id:String} ORDER BY key",
                params, "listing history keys")
            out[name] = [r[0] for r in res.result_rows]
        return out

    # --- workspace choosers ----------------------------------------------------------

    def columns(self, entity: str, project: str, prefix: str,
                limit: int, public_only: bool = False) -> dict[str, Any]:
        """Config and summary keys of the project's runs: ``{"config", "summary",
        "truncated"}`` (of its public runs only with ``public_only``).

        Distinct keys over every (not deleted) run, those starting with ``prefix``
        (case-sensitive), sorted, at most ``limit`` (1..5000) of each; ``summary`` holds
        numeric and other summary keys. ``truncated``: either list was cut.
        """
        _check_prefix_limit(prefix, limit)
        params = {"entity": entity, "project": project, "prefix": prefix}
        # One scan of the runs; the distinct keys that match are few enough to sort here.
        config, summary = self._query(
            "SELECT groupUniqArrayArray(arrayFilter(k -> startsWith(k, {prefix:String}), "
            "mapKeys(config))), groupUniqArrayArray(arrayFilter(k -> startsWith(k, "
            "{prefix:String}), arrayConcat(mapKeys(summary), mapKeys(summary_other)))) "
            f"FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
            "AND project = {project:String} AND deleted = 0"
            + (f" AND {PUBLIC_SQL}" if public_only else ""),
            params, "listing config and summary keys").result_rows[0]
        if not config and not summary:
            self._require_project(entity, project, public_only)
        return {"config": sorted(config)[:limit], "summary": sorted(summary)[:limit],
                "truncated": len(config) > limit or len(summary) > limit}

    def project_keys(self, entity: str, project: str, prefix: str,
                     limit: int, public_only: bool = False) -> dict[str, Any]:
        """Numeric history keys of the project's (not deleted; public) runs: ``{"keys",
        "truncated"}``, sorted, starting with ``prefix``, at most ``limit`` (1..5000)."""
        _check_prefix_limit(prefix, limit)
        params = {"entity": entity, "project": project, "prefix": prefix, "n": limit + 1}
        # Private runs are left out for a non-member as deleted runs are for everyone.
        hidden = f"(deleted = 1 OR NOT {PUBLIC_SQL})" if public_only else "deleted = 1"
        res = self._query(
            f"SELECT DISTINCT key FROM {self.db}.history_series "
            "WHERE entity = {entity:String} AND project = {project:String} "
            "AND startsWith(key, {prefix:String}) AND run_id NOT IN ("
            f"SELECT run_id FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
            f"AND project = {{project:String}} AND {hidden}) "
            "ORDER BY key LIMIT {n:UInt32}", params, "listing metric names")
        keys = [r[0] for r in res.result_rows]
        if not keys:
            self._require_project(entity, project, public_only)
        return {"keys": keys[:limit], "truncated": len(keys) > limit}

    # --- history ---------------------------------------------------------------------

    def get_history(self, entity: str, project: str, run_id: str, keys: list[str],
                    buckets: int, min_step: int, max_step: int) -> list[dict[str, Any]]:
        """Numeric series of a run, one Series dict per key.

        ``keys`` empty → every numeric key with points in range (sorted); otherwise one
        series per given key, in order (empty if never logged). ``max_step`` 0 → no upper
        bound. A key with at most ``buckets`` points in range (or ``buckets`` 0) comes
        back raw. Otherwise the key's steps in range (its first to last logged step, from
        ``history_series``, clipped to the range) are cut into at most ``buckets``
        equal-width buckets, on the 16-step block grid and read from ``history_rollup``
        when the buckets would be at least 48 steps wide (``ChartQueries._plan_grid``, the
        path of ``project_history``), and the database returns, per non-empty bucket: its
        last step, the value at that step, min and max (NaN ignored unless all are NaN)
        and the client time of the last step. ``total_points``: the points in range.
        """
        buckets = int(buckets or 0)
        min_step = int(min_step or 0)
        max_step = int(max_step or 0) or 2**64 - 1
        if not 0 <= buckets <= MAX_BUCKETS:
            raise PermanentError(f"buckets must be 0..{MAX_BUCKETS}, got {buckets}")
        if min_step < 0 or max_step < min_step:
            raise PermanentError(f"empty step range {min_step}..{max_step}")
        keys = [str(k) for k in keys or ()]
        if len(keys) > 10_000:
            raise PermanentError("at most 10000 keys per history request")
        if buckets == 0:
            self._require_run(entity, project, run_id)
            series = self._raw_history(entity, project, run_id, keys, min_step, max_step)
        else:
            # One query for the run's existence, the lines' step ranges and rewritten
            # blocks (no scan of the points), one for every line's buckets.
            plan = self._plan_grid(entity, project, [run_id], list(dict.fromkeys(keys)) or None,
                                   buckets, min_step, max_step)
            if run_id not in plan.known:
                raise NotFoundError(f"run {entity}/{project}/{run_id} not found")
            series = {}
            for (_, k), s in self._read_lines(plan).items():
                del s["run_id"]
                series[k] = s
            # Few points on a wide step range: the grid could still put two in a bucket.
            few = [k for k, s in series.items()
                   if s["downsampled"] and s["total_points"] <= buckets]
            if few:
                series.update(self._raw_history(entity, project, run_id, few, min_step,
                                                max_step))
        order = keys or sorted(k for k, s in series.items() if s["total_points"])
        return [series.get(k) or _empty_series(k) for k in order]

    def public_run_ids(self, entity: str, project: str, run_ids: list[str]) -> list[str]:
        """The ids among ``run_ids`` of public, not deleted runs, in the given order."""
        if not run_ids:
            return []
        res = self._query(
            f"SELECT run_id FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
            "AND project = {project:String} AND run_id IN {ids:Array(String)} "
            f"AND deleted = 0 AND {PUBLIC_SQL}",
            {"entity": entity, "project": project, "ids": list(run_ids)},
            "looking up public runs")
        public = {r[0] for r in res.result_rows}
        return [r for r in run_ids if r in public]

    def _require_run(self, entity: str, project: str, run_id: str) -> None:
        """``NotFoundError`` unless the run exists and is not deleted (reads no wide column)."""
        validate_identity(entity, project, run_id)
        if not self._query(
                f"SELECT 1 FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
                "AND project = {project:String} AND run_id = {run_id:String} AND deleted = 0 "
                "LIMIT 1", {"entity": entity, "project": project, "run_id": run_id},
                "reading a run").result_rows:
            raise NotFoundError(f"run {entity}/{project}/{run_id} not found")

    def _raw_history(self, entity: str, project: str, run_id: str, keys: list[str],
                     min_step: int, max_step: int) -> dict[str, dict[str, Any]]:
        """Every point in range of ``keys`` (empty: of every key with points in range):
        key → raw Series dict (given keys without points: empty)."""
        params: dict[str, Any] = {"entity": entity, "project": project, "run_id": run_id,
                                  "min_step": min_step, "max_step": max_step}
        where = ("entity = {entity:String} AND project = {project:String} "
                 "AND run_id = {run_id:String} "
                 "AND step >= {min_step:UInt64} AND step <= {max_step:UInt64}")
        if keys:
            where += " AND key IN {keys:Array(String)}"
            params["keys"] = sorted(set(keys))
        tbl = self._query_np(
            "SELECT key, step, value, toUnixTimestamp64Micro(ts) AS ts_us "
            f"FROM {self.db}.history_numeric FINAL WHERE {where} ORDER BY key, step",
            params, "reading history")
        series = {k: _empty_series(k) for k in keys}
        for k, cols in _split_by_key(tbl):
            s = series[k] = _empty_series(k)
            s["step"] = cols["step"].tolist()
            s["value"] = cols["value"].tolist()
            s["min"] = s["value"]
            s["max"] = s["value"]
            s["time_us"] = cols["ts_us"].tolist()
            s["total_points"] = len(s["step"])
        return series

    def history_page(self, entity: str, project: str, run_id: str, keys: list[str],
                     min_step: int, max_step: int,
                     page_points: int) -> tuple[list[dict[str, Any]], bool, int]:
        """One page of raw numeric points: ``(series, has_more, next_min_step)``.

        Whole steps from ``min_step`` on (``max_step`` 0 → no upper bound), lowest first,
        with at most ``page_points`` points in all, or the one lowest step when that step
        alone has more. Series as ``get_history`` (raw; ``total_points`` counts the page).
        Reading pages from ``next_min_step`` until ``has_more`` is false returns every
        point exactly once, even while the run is still logging at higher steps.
        """
        page_points = int(page_points or 0)
        if not 1 <= page_points <= MAX_PAGE_POINTS:
            raise PermanentError(f"page_points must be 1..{MAX_PAGE_POINTS}, got {page_points}")
        min_step = int(min_step or 0)
        max_step = int(max_step or 0) or 2**64 - 1
        if min_step < 0 or max_step < min_step:
            raise PermanentError(f"empty step range {min_step}..{max_step}")
        keys = [str(k) for k in keys or ()]
        if len(keys) > 10_000:
            raise PermanentError("at most 10000 keys per history request")
        self.get_run(entity, project, run_id)
        t = f"{self.db}.history_numeric"
        params: dict[str, Any] = {"entity": entity, "project": project, "run_id": run_id,
                                  "min_step": min_step, "max_step": max_step,
                                  "n": page_points}
        where = ("entity = {entity:String} AND project = {project:String} "
                 "AND run_id = {run_id:String} "
                 "AND step >= {min_step:UInt64} AND step <= {max_step:UInt64}")
        if keys:
            where += " AND key IN {keys:Array(String)}"
            params["keys"] = sorted(set(keys))
        # The step of the first point after the page (points in step order), if any.
        cut_rows = self._query(
            f"SELECT step FROM {t} FINAL WHERE {where} ORDER BY step "
            "LIMIT 1 OFFSET {n:UInt64}", params, "paging history").result_rows
        has_more = bool(cut_rows)
        hi = max_step
        next_step = 0
        if has_more:
            cut = int(cut_rows[0][0])
            if cut > min_step:
                first = self._query(
                    f"SELECT min(step) FROM {t} FINAL WHERE {where}", params,
                    "paging history").result_rows[0][0]
            else:
                first = cut
            if cut > int(first):
                hi, next_step = cut - 1, cut        # whole steps below the cut
            else:                                   # one step holds more than a page
                hi, next_step = cut, cut + 1
                has_more = cut < max_step and bool(self._query(
                    f"SELECT 1 FROM {t} FINAL WHERE {where} AND step > {{cut:UInt64}} "
                    "LIMIT 1", dict(params, cut=cut), "paging history").result_rows)
        order = keys or None
        tbl = self._query_np(
            f"SELECT key, step, value, toUnixTimestamp64Micro(ts) AS ts_us FROM {t} FINAL "
            f"WHERE {where} AND step <= {{hi:UInt64}} ORDER BY key, step",
            dict(params, hi=hi), "reading history")
        series: dict[str, dict[str, Any]] = {k: _empty_series(k) for k in keys}
        for k, cols in _split_by_key(tbl):
            s = series.setdefault(k, _empty_series(k))
            s["step"] = cols["step"].tolist()
            s["value"] = cols["value"].tolist()
            s["min"] = s["value"]
            s["max"] = s["value"]
            s["time_us"] = cols["ts_us"].tolist()
            s["total_points"] = len(s["step"])
        names = order or sorted(series)
        return [series[k] for k in names], has_more, next_step if has_more else 0

    def _query_np(self, sql: str, parameters: dict[str, Any], what: str) -> dict[str, np.ndarray]:
        """A query's columns as numpy arrays (Arrow transfer: no per-row Python objects)."""
        try:
            tbl = self.client.query_arrow(sql, parameters=parameters)
        except Exception as e:
            raise _classify(e, what, parameters) from e
        out: dict[str, np.ndarray] = {}
        for name in tbl.column_names:
            col = tbl.column(name)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            out[name] = col.to_numpy()
        return out

def _check_prefix_limit(prefix: str, limit: int) -> None:
    if len(prefix) > MAX_PREFIX_CHARS:
        raise PermanentError(f"prefix longer than {MAX_PREFIX_CHARS} characters")
    if not 1 <= int(limit) <= MAX_NAME_LIMIT:
        raise PermanentError(f"limit must be 1..{MAX_NAME_LIMIT}, got {limit}")


def _classify(exc: BaseException, what: str, parameters: dict[str, Any]) -> RunstreamError:
    """``store.client.classify``, plus a clear message for a regex the engine refused."""
    text = str(exc)
    if f"Code: {_REGEX_ERROR}." in text and "f_regex" in parameters:
        m = _RE2_DETAIL.search(text)
        detail = m.group(1) if m else "it does not compile"
        return PermanentError(f"name_regex {parameters['f_regex']!r} is not a valid RE2 "
                              f"regular expression: {detail}")
    return classify(exc, what)


def _empty_series(key: str) -> dict[str, Any]:
    return {"key": key, "step": [], "value": [], "min": [], "max": [], "time_us": [],
            "total_points": 0, "downsampled": False}


def _split_by_key(cols: dict[str, np.ndarray]):
    """(key, {column: slice}) for each run of equal keys of a result sorted by key."""
    keys = cols["key"]
    if not len(keys):
        return
    starts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist(), len(keys)]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        yield keys[a], {name: c[a:b] for name, c in cols.items() if name != "key"}

