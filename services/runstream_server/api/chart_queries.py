"""The workspace's chart reads: many runs × keys at once, and group bands. Part of ``Queries``.

Both are computed in the database, never from raw points in Python, and both cut step
ranges into equal-width buckets:

- ``project_history``: one line per (run, key). The line's steps in range, from
  ``history_series`` (one row per series, so no scan of the points), are cut into at
  most ``buckets`` buckets; a line spanning at most ``buckets`` steps comes back raw.
  Per non-empty bucket: its last step, the value at that step, min and max (NaN ignored
  unless all are NaN) and the client time of that step, as ``Queries.get_history``.
  One query reads the step ranges, one reads every line (grouped by one integer per
  (line, bucket)); ``project_history_json`` has the database format the answer's
  numbers as JSON too (the HTTP route), which Python would take longer for than the
  query itself.
  Lines whose buckets would be at least ``ROLLUP_MIN_BLOCKS`` rollup blocks wide
  (``history_rollup``: 16 steps per block) are cut at block boundaries instead (bucket
  width a multiple of 16 steps, so a few fewer buckets) and read from the rollup: whole
  blocks in range come from it, the partial blocks at the range's edges and blocks
  with a rewritten step from ``history_numeric`` FINAL. The answer is the same as the
  points would give on that grid (tests/integration/test_history_rollup.py).
  ``Queries.get_history`` (one run, its keys) plans and reads its downsampled lines the
  same way: ``_plan_grid`` and ``_read_lines``.
- ``bands``: the key's step range over the matching runs is cut into at most ``buckets``
  buckets; per run and bucket the last value (at the highest step) counts; per group and
  bucket: mean, population standard deviation, min and max over the group's runs whose
  value there is finite, and the highest of their steps. Three queries: the groups
  (at most 1000, counted first), the key's step range, the bands.

Invariant 8 holds as in ``queries.py``: values are bound parameters; SQL text is fixed
fragments and the validated database name. Mixed into ``Queries``, whose ``_query``,
``_query_np``, ``_require_project`` and ``db`` these methods use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..common.errors import PermanentError
from ..common.limits import MAX_ID_CHARS, MAX_KEY_CHARS
from .run_filter import RunFilter

MAX_CHART_BUCKETS = 10_000      # points per line or band: far more than a chart's pixels
MAX_CHART_RUNS = 200
MAX_CHART_KEYS = 50
# runs × keys × buckets of one history request: ~3M points is ~150 MB of JSON already.
MAX_CHART_POINTS = 3_000_000
MAX_GROUPS = 1000
_MAX_STEP = 2**64 - 1
_LINE_SHIFT = 2**32             # group id = line * 2^32 + bucket (buckets < 2^32)

# The (line, bucket) group of a history point. Lines are numbered from 1, runs × keys in
# request order; {lo}/{width}/{last} hold each line's first step, bucket width and last
# bucket (a point newer than the step range read first joins the last bucket).
_LINE = ("transform(run_id, {ids:Array(String)}, {run_no:Array(UInt32)}, toUInt32(0)) "
         "* {nkeys:UInt32} + transform(key, {keys:Array(String)}, {key_no:Array(UInt32)}, "
         "toUInt32(0)) + 1")
_BUCKETS_SQL = (
    "WITH {line} AS line "
    "SELECT line * {shift} + least(intDiv(step - {{lo:Array(UInt64)}}[line], "
    "{{width:Array(UInt64)}}[line]), {{last:Array(UInt64)}}[line]) AS g, "
    "max(step) AS b_step, argMax(value, step) AS b_value, min(value) AS b_min, "
    "max(value) AS b_max, argMax(toUnixTimestamp64Micro(ts), step) AS b_time_us, "
    "count() AS b_points "
    "FROM {db}.history_numeric FINAL "
    "WHERE entity = {{entity:String}} AND project = {{project:String}} "
    "AND run_id IN {{raw_ids:Array(String)}} AND key IN {{keys:Array(String)}} "
    "AND step >= {{min_step:UInt64}} AND step <= {{max_step:UInt64}} "
    "AND {{path:Array(UInt8)}}[line] = 0 "
    "GROUP BY g")
# Rollup lines (path 1): bucket = blocks from the line's first block; {lo}/{width}/{last}
# are in blocks. Whole blocks in [{full_lo}, {full_hi}] come from the rollup but for the
# rewritten ones ({skip}); those and the partial blocks at the range's edges ({exact},
# when there are any) from the points under FINAL, folded into the same per-block shape.
# Both are explicit step ranges, so the primary key prunes the points read. Blocks are
# grouped by line number and block, two integers (faster than run_id, key, block); the
# line is ``ln``, as the raw part's WITH alias ``line`` reaches every part of the UNION.
_ROLLUP_SQL = (
    "SELECT ln * {shift} + least(intDiv(block - {{lo:Array(UInt64)}}[ln], "
    "{{width:Array(UInt64)}}[ln]), {{last:Array(UInt64)}}[ln]) AS g, "
    "toUInt64(bitShiftRight(max(l), 192)) AS b_step, "
    "reinterpretAsFloat64(toUInt64(bitAnd(bitShiftRight(max(l), 64), {low64}))) AS b_value, "
    "min(mn) AS b_min, max(mx) AS b_max, "
    "reinterpretAsInt64(toUInt64(bitAnd(max(l), {low64}))) AS b_time_us, "
    "sum(n) AS b_points FROM ("
    "SELECT {line} AS ln, block, toUInt64(bitCount(groupBitOr(steps))) AS n, "
    "min(min_value) AS mn, max(max_value) AS mx, max(last) AS l "
    "FROM {db}.history_rollup WHERE {roll_where} "
    "AND block >= {{full_lo:Int64}} AND block <= {{full_hi:Int64}} AND NOT {skip} "
    "GROUP BY ln, block{exact}) "
    "WHERE {{path:Array(UInt8)}}[ln] = 1 GROUP BY g")
# history_rollup.last of points (migration 0007): step, seq, value's bits, ts packed.
_PACK = ("max(bitOr(bitOr(bitShiftLeft(toUInt256(step), 192), bitShiftLeft(toUInt256(seq), "
         "128)), bitOr(bitShiftLeft(toUInt256(reinterpretAsUInt64(value)), 64), "
         "toUInt256(reinterpretAsUInt64(toUnixTimestamp64Micro(ts))))))")
_EXACT_SQL = (
    " UNION ALL "
    "SELECT {line} AS ln, intDiv(step, 16) AS block, count() AS n, min(value) AS mn, "
    f"max(value) AS mx, {_PACK} AS l "
    "FROM {db}.history_numeric FINAL WHERE {roll_where} "
    "AND step >= {{min_step:UInt64}} AND step <= {{max_step:UInt64}} AND {exact} "
    "GROUP BY ln, block")
_ROLL_WHERE = ("entity = {entity:String} AND project = {project:String} "
               "AND run_id IN {roll_ids:Array(String)} AND key IN {keys:Array(String)}")
# One rewritten block range of one line; {i} numbers the ranges of a request.
_RANGE = "(run_id = {{rr{i}:String}} AND key = {{rk{i}:String}} AND {col} >= {{{a}{i}:UInt64}} " \
         "AND {col} <= {{{b}{i}:UInt64}})"
ROLLUP_BLOCK = 16               # steps per history_rollup block (migration 0007)
# A line is read from the rollup when its buckets would be at least this many blocks
# wide: rounding the width up to whole blocks then costs at most a quarter of the buckets.
ROLLUP_MIN_BLOCKS = 3
# Rewritten block ranges one request reads from the points; lines beyond are read from
# the points whole (each range is a term of the query text).
MAX_EXACT_RANGES = 200
_HISTORY_SQL = "{buckets} ORDER BY g"
# One row per line, its arrays as JSON text (non-finite numbers quoted: "nan", "inf").
_HISTORY_JSON_SQL = (
    "SELECT line, points, length(pts) AS n, toJSONString(arrayMap(p -> p.1, pts)), "
    "toJSONString(arrayMap(p -> p.2, pts)), toJSONString(arrayMap(p -> p.3, pts)), "
    "toJSONString(arrayMap(p -> p.4, pts)), toJSONString(arrayMap(p -> p.5, pts)) "
    f"FROM (SELECT intDiv(g, {_LINE_SHIFT}) AS line, sum(b_points) AS points, "
    "arraySort(groupArray((b_step, b_value, b_min, b_max, b_time_us))) AS pts "
    "FROM ({buckets}) GROUP BY line) ORDER BY line "
    "SETTINGS output_format_json_quote_denormals = 1, "
    "output_format_json_quote_64bit_integers = 0")
_EMPTY_LINE_JSON = ('"step":[],"value":[],"min":[],"max":[],"time_us":[],"total_points":0,'
                    '"downsampled":false')
_NON_FINITE = (('"nan"', '"NaN"'), ('"-inf"', '"-Infinity"'), ('"inf"', '"Infinity"'))

# Per run and bucket: the value at the highest step. With width 1 every step is a bucket
# and FINAL already left one row per (run, step), so the points are read as they are.
_RUN_BUCKETS = (
    "SELECT run_id, intDiv(step - {lo:UInt64}, {width:UInt64}) AS b, "
    "argMax(value, step) AS v, max(step) AS s")
_RUN_STEPS = "SELECT run_id, step - {lo:UInt64} AS b, value AS v, step AS s"
_BANDS_SQL = (
    "SELECT {grp_out} AS grp, b, avg(v) AS mean, stddevPop(v) AS std, min(v) AS b_min, "
    "max(v) AS b_max, max(s) AS step FROM ({per_run} "
    "FROM {db}.history_numeric FINAL WHERE entity = {{entity:String}} "
    "AND project = {{project:String}} AND key = {{key:String}} "
    "AND step >= {{lo:UInt64}} AND step <= {{hi:UInt64}} "
    "AND run_id IN (SELECT run_id FROM {db}.runs FINAL WHERE {where}) {group_by_run}) AS p "
    "{join} WHERE isFinite(v) GROUP BY grp, b ORDER BY grp, b")
_GROUP_JOIN = ("INNER JOIN (SELECT run_id, {grp} AS grp FROM {db}.runs FINAL WHERE {where}) "
               "AS g ON p.run_id = g.run_id")
_GROUP_OF = "if(mapContains(config, {group_key:String}), config[{group_key:String}], '')"


def _check_buckets(buckets: int) -> int:
    buckets = int(buckets)
    if not 1 <= buckets <= MAX_CHART_BUCKETS:
        raise PermanentError(f"buckets must be 1..{MAX_CHART_BUCKETS}, got {buckets}")
    return buckets


def _check_steps(min_step: int, max_step: int) -> tuple[int, int]:
    min_step = int(min_step or 0)
    max_step = int(max_step or 0) or _MAX_STEP
    if min_step < 0 or max_step < min_step:
        raise PermanentError(f"empty step range {min_step}..{max_step}")
    return min_step, max_step


def _check_key(what: str, key: str) -> str:
    if not isinstance(key, str) or not key:
        raise PermanentError(f"{what} is empty")
    if len(key) > MAX_KEY_CHARS:
        raise PermanentError(f"{what} longer than {MAX_KEY_CHARS} characters")
    return key


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(str(v) for v in values))


def _grid(lo: int, hi: int, buckets: int) -> tuple[int, int]:
    """(bucket width, bucket count) cutting steps lo..hi into at most ``buckets``."""
    span = hi - lo + 1
    width = 1 if span <= buckets else -(-span // buckets)        # ceil
    return width, (hi - lo) // width + 1


class ChartQueries:
    """``project_history`` and ``bands`` (see the module docstring)."""

    db: str

    def project_history(self, entity: str, project: str, run_ids: list[str],
                        keys: list[str], buckets: int, min_step: int,
                        max_step: int) -> list[dict[str, Any]]:
        """Series of many runs × keys: one Series dict (plus ``run_id``) per line.

        Lines of the known, not deleted runs, in request order (runs, then keys); a key
        a run never logged gives an empty line; unknown run ids give none. Each line as
        ``Queries.get_history`` (``downsampled``: some bucket held several points;
        ``total_points``: points in range). ``max_step`` 0 → no upper bound.
        ``NotFoundError`` for a project without runs.
        """
        plan = self._plan_lines(entity, project, run_ids, keys, buckets, min_step, max_step)
        series = self._read_lines(plan)
        return [series[rk] for rk in plan.order]

    def _read_lines(self, plan: _LinePlan) -> dict[tuple[str, str], dict[str, Any]]:
        """Every line of ``plan`` (``_plan_grid``): (run, key) → Series dict with
        ``run_id``; lines without points in range are empty. One query."""
        series = {rk: _empty_line(*rk) for rk in plan.order}
        if plan.params is not None:
            cols = self._query_np(
                _HISTORY_SQL.format(buckets=self._buckets_sql(plan)), plan.params,
                "reading the history of several runs")
            g = cols["g"].astype(np.uint64)
            lines = g // np.uint64(_LINE_SHIFT)
            starts = [0, *(np.flatnonzero(lines[1:] != lines[:-1]) + 1).tolist(), len(g)]
            for a, b in zip(starts[:-1], starts[1:], strict=True):
                if a == b:
                    continue
                s = series[plan.line_of[int(lines[a])]]
                s["step"] = cols["b_step"][a:b].tolist()
                s["value"] = cols["b_value"][a:b].tolist()
                s["min"] = cols["b_min"][a:b].tolist()
                s["max"] = cols["b_max"][a:b].tolist()
                s["time_us"] = cols["b_time_us"][a:b].tolist()
                s["total_points"] = int(cols["b_points"][a:b].sum())
                s["downsampled"] = s["total_points"] > b - a
        return series

    def project_history_json(self, entity: str, project: str, run_ids: list[str],
                             keys: list[str], buckets: int, min_step: int,
                             max_step: int) -> str:
        """``{"series": project_history(...)}`` as JSON text, the numbers formatted by the
        database (Python's float formatting costs ~0.6 µs a number: 250 ms for 50 lines of
        1500 points). Non-finite numbers are the strings ``"NaN"``, ``"Infinity"``,
        ``"-Infinity"``, as everywhere in the HTTP API."""
        plan = self._plan_lines(entity, project, run_ids, keys, buckets, min_step, max_step)
        found: dict[tuple[str, str], str] = {}
        if plan.params is not None:
            rows = self._query(_HISTORY_JSON_SQL.format(buckets=self._buckets_sql(plan)),
                               plan.params, "reading the history of several runs").result_rows
            for line, points, n, step, value, lo, hi, time_us in rows:
                found[plan.line_of[int(line)]] = (
                    f'"step":{step},"value":{_finite_json(value)},"min":{_finite_json(lo)},'
                    f'"max":{_finite_json(hi)},"time_us":{time_us},"total_points":{points},'
                    f'"downsampled":{"true" if points > n else "false"}')
        parts = []
        for rk in plan.order:
            head = f'"run_id":{json.dumps(rk[0])},"key":{json.dumps(rk[1])}'
            body = found.get(rk) or _EMPTY_LINE_JSON
            parts.append(f"{{{head},{body}}}")
        return '{"series":[' + ",".join(parts) + "]}"

    def _buckets_sql(self, plan: _LinePlan) -> str:
        """Per (line, bucket) aggregates: raw lines from the points, the others from the
        rollup (module docstring); columns g, b_step, b_value, b_min, b_max, b_time_us,
        b_points."""
        parts = []
        if plan.raw_ids:
            parts.append(_BUCKETS_SQL.format(line=_LINE, shift=_LINE_SHIFT, db=self.db))
        if plan.roll_ids:
            rng = range(plan.exact_ranges)
            skip = " OR ".join(["0", *(_RANGE.format(i=i, col="block", a="ba", b="bb")
                                       for i in rng)])
            exact = [_RANGE.format(i=i, col="step", a="sa", b="sb") for i in rng]
            if plan.edges:
                exact[:0] = ["step < {edge_lo:UInt64}", "step > {edge_hi:UInt64}"]
            exact_sql = _EXACT_SQL.format(line=_LINE, db=self.db, roll_where=_ROLL_WHERE,
                                          exact="(" + " OR ".join(exact) + ")")
            parts.append(_ROLLUP_SQL.format(
                line=_LINE, shift=_LINE_SHIFT, db=self.db, roll_where=_ROLL_WHERE,
                low64=2**64 - 1,
                skip=f"({skip})", exact=exact_sql if exact else ""))
        if len(parts) == 1:
            return parts[0]
        return "SELECT * FROM (" + " UNION ALL ".join(f"({p})" for p in parts) + ")"

    def _plan_lines(self, entity: str, project: str, run_ids: list[str], keys: list[str],
                    buckets: int, min_step: int, max_step: int) -> _LinePlan:
        """Check the request of ``project_history``, then ``_plan_grid``."""
        runs = _distinct(run_ids)
        keys = _distinct(keys)
        if not 1 <= len(runs) <= MAX_CHART_RUNS:
            raise PermanentError(f"runs: give 1..{MAX_CHART_RUNS} run ids, got {len(runs)}")
        if not 1 <= len(keys) <= MAX_CHART_KEYS:
            raise PermanentError(f"keys: give 1..{MAX_CHART_KEYS} keys, got {len(keys)}")
        for r in runs:
            if len(r) > MAX_ID_CHARS:
                raise PermanentError(f"run id longer than {MAX_ID_CHARS} characters")
        for k in keys:
            _check_key("key", k)
        buckets = _check_buckets(buckets)
        if len(runs) * len(keys) * buckets > MAX_CHART_POINTS:
            raise PermanentError(
                f"runs × keys × buckets = {len(runs) * len(keys) * buckets} is more than "
                f"{MAX_CHART_POINTS}: ask for fewer runs, keys or buckets")
        min_step, max_step = _check_steps(min_step, max_step)
        plan = self._plan_grid(entity, project, runs, keys, buckets, min_step, max_step)
        if not plan.known:
            self._require_project(entity, project)
        return plan

    def _plan_grid(self, entity: str, project: str, runs: list[str], keys: list[str] | None,
                   buckets: int, min_step: int, max_step: int) -> _LinePlan:
        """Read which runs exist (not deleted), each line's step range and the rewritten
        rollup blocks in range (one query), and lay out the bucket grid.

        Arguments already checked: distinct ``runs`` and ``keys``, ``buckets`` ≥ 1,
        ``min_step`` ≤ ``max_step``. ``keys`` None: every numeric key the runs logged
        (sorted). ``plan.known``: the runs that exist; ``plan.order``: their lines.
        """
        key_cond = "" if keys is None else " AND key IN {keys:Array(String)}"
        base = {"entity": entity, "project": project, "ids": runs}
        if keys is not None:
            base["keys"] = keys
        blk = ROLLUP_BLOCK
        full_lo, full_hi = -(-min_step // blk), (max_step + 1) // blk - 1  # whole blocks
        # The runs that exist (not deleted) and the step range of each of their lines.
        rows = self._query(
            f"SELECT run_id, '' AS key, toUInt64(0) AS lo, toUInt64(0) AS hi, 0 AS line "
            f"FROM {self.db}.runs FINAL WHERE entity = {{entity:String}} "
            "AND project = {project:String} AND run_id IN {ids:Array(String)} "
            "AND deleted = 0 "
            "UNION ALL SELECT run_id, toString(key), min(min_step), max(max_step), 1 "
            f"FROM {self.db}.history_series WHERE entity = {{entity:String}} "
            f"AND project = {{project:String}} AND run_id IN {{ids:Array(String)}}{key_cond} "
            "GROUP BY run_id, key "
            # the whole rollup blocks in range with a rewritten step (read from the points)
            "UNION ALL SELECT run_id, toString(key), block, block, 2 "
            f"FROM {self.db}.history_rollup WHERE entity = {{entity:String}} "
            f"AND project = {{project:String}} AND run_id IN {{ids:Array(String)}}{key_cond} "
            "AND rewrite = 1 "
            "AND block >= {full_lo:Int64} AND block <= {full_hi:Int64} "
            "GROUP BY run_id, key, block",
            dict(base, full_lo=full_lo, full_hi=full_hi),
            "reading series step ranges").result_rows
        known = {r[0] for r in rows if r[4] == 0}
        if keys is None:
            keys = sorted({r[1] for r in rows if r[4] == 1 and r[0] in known})
            base["keys"] = keys
        ranges = {(r[0], r[1]): (max(int(r[2]), min_step), min(int(r[3]), max_step))
                  for r in rows if r[4] == 1 and r[0] in known}
        ranges = {rk: lh for rk, lh in ranges.items() if lh[0] <= lh[1]}
        plan = _LinePlan(order=[(r, k) for r in runs if r in known for k in keys],
                         known=known)
        if not ranges:
            return plan
        rewritten: dict[tuple[str, str], list[int]] = {}
        for r in rows:
            if r[4] == 2:
                rewritten.setdefault((r[0], r[1]), []).append(int(r[2]))
        ids = [r for r in runs if any((r, k) in ranges for k in keys)]
        lo, width, last, path = [], [], [], []
        raw_ids, roll_ids = set(), set()
        exact: dict[str, Any] = {}
        n_exact = 0
        for i, r in enumerate(ids):
            for j, k in enumerate(keys):
                plan.line_of[i * len(keys) + j + 1] = (r, k)
                a, b = ranges.get((r, k), (0, 0))
                w, n = _grid(a, b, buckets)
                spans = _spans(sorted(rewritten.get((r, k), ())))
                rolled = (w >= ROLLUP_MIN_BLOCKS * blk
                          and n_exact + len(spans) <= MAX_EXACT_RANGES)
                if rolled:          # the grid in blocks: a // blk … b // blk
                    w, n = _grid(a // blk, b // blk, buckets)
                    a //= blk
                    for ba, bb in spans:
                        exact.update({f"rr{n_exact}": r, f"rk{n_exact}": k,
                                      f"ba{n_exact}": ba, f"bb{n_exact}": bb,
                                      f"sa{n_exact}": ba * blk, f"sb{n_exact}": bb * blk + blk - 1})
                        n_exact += 1
                (roll_ids if rolled else raw_ids).add(r)
                lo.append(a)
                width.append(w)
                last.append(n - 1)
                path.append(int(rolled))
        plan.raw_ids = [r for r in ids if r in raw_ids]
        plan.roll_ids = [r for r in ids if r in roll_ids]
        plan.exact_ranges = n_exact
        # Partial blocks at the range's edges: below full_lo or above full_hi.
        plan.edges = min_step % blk != 0 or full_hi < (_MAX_STEP + 1) // blk - 1
        plan.params = dict(base, ids=ids, run_no=list(range(len(ids))), nkeys=len(keys),
                           key_no=list(range(len(keys))), lo=lo, width=width, last=last,
                           path=path, raw_ids=plan.raw_ids, roll_ids=plan.roll_ids,
                           min_step=min_step, max_step=max_step, full_lo=full_lo,
                           full_hi=full_hi, edge_lo=max(full_lo, 0) * blk,
                           edge_hi=max(full_hi + 1, 0) * blk - 1 if full_hi >= 0 else 0,
                           **exact)
        return plan

    def bands(self, entity: str, project: str, key: str, group_by: str | None,
              filter: RunFilter | dict[str, Any] | None, buckets: int,
              min_step: int = 0, max_step: int = 0) -> dict[str, Any]:
        """Mean/std/min/max bands of ``key`` per group of matching runs.

        ``group_by``: a config key, or empty for one group ``""`` of all matching runs.
        Answer: ``{"groups": [{"group", "count", "step", "mean", "std", "min", "max"}],
        "buckets": n}``, groups sorted by their config value (canonical JSON text; ``""``
        for runs without the key), ``count`` the group's matching runs, arrays one entry
        per bucket where some run of the group has a finite value; ``buckets`` the number
        of buckets the range was cut into (0 when no run has the key). More than 1000
        groups → ``PermanentError``; a project without runs → ``NotFoundError``.
        """
        _check_key("key", key)
        if group_by:
            _check_key("group_by key", group_by)
        buckets = _check_buckets(buckets)
        min_step, max_step = _check_steps(min_step, max_step)
        flt = RunFilter.of(filter)
        params: dict[str, Any] = {"entity": entity, "project": project, "key": key}
        where = " AND ".join(["entity = {entity:String}", "project = {project:String}",
                              "deleted = 0", *flt.where(params)])
        grp = _GROUP_OF if group_by else "''"
        if group_by:
            params["group_key"] = group_by
        groups = self._query(
            f"SELECT {grp} AS grp, count() AS n FROM {self.db}.runs FINAL WHERE {where} "
            "GROUP BY grp ORDER BY grp LIMIT {n:UInt32}",
            dict(params, n=MAX_GROUPS + 1), "grouping runs").result_rows
        if not groups:
            self._require_project(entity, project, flt.public_only)
            return {"groups": [], "buckets": 0}
        if len(groups) > MAX_GROUPS:
            raise PermanentError(f"group_by config.{group_by} makes more than {MAX_GROUPS} "
                                 "groups: group by a key with fewer values, or filter")
        out = {g: {"group": g, "count": int(n), "step": [], "mean": [], "std": [], "min": [],
                   "max": []} for g, n in groups}
        lo, hi = self._band_range(params, where)
        lo, hi = max(lo, min_step), min(hi, max_step)
        if lo > hi:
            return {"groups": list(out.values()), "buckets": 0}
        width, nb = _grid(lo, hi, buckets)
        sql = _BANDS_SQL.format(
            grp_out="g.grp" if group_by else "''",
            per_run=_RUN_STEPS if width == 1 else _RUN_BUCKETS,
            group_by_run="" if width == 1 else "GROUP BY run_id, b",
            join=_GROUP_JOIN.format(grp=grp, db=self.db, where=where) if group_by else "",
            db=self.db, where=where)
        cols = self._query_np(sql, dict(params, lo=lo, hi=hi, width=width),
                              "computing group bands")
        self._fill_bands(cols, out)
        return {"groups": list(out.values()), "buckets": nb}

    def _band_range(self, params: dict[str, Any], where: str) -> tuple[int, int]:
        """The key's step range over the matching runs; (0, -1) when none has it."""
        rows = self._query(
            f"SELECT min(min_step), max(max_step), count() FROM {self.db}.history_series "
            "WHERE entity = {entity:String} AND project = {project:String} "
            f"AND key = {{key:String}} AND run_id IN (SELECT run_id FROM {self.db}.runs "
            f"FINAL WHERE {where})", params, "reading the step range of a band").result_rows
        lo, hi, n = rows[0]
        return (int(lo), int(hi)) if n else (0, -1)

    @staticmethod
    def _fill_bands(cols: dict[str, np.ndarray], out: dict[str, dict[str, Any]]) -> None:
        grp = cols["grp"]
        if not len(grp):
            return
        starts = [0, *(np.flatnonzero(grp[1:] != grp[:-1]) + 1).tolist(), len(grp)]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            g = out.get(str(grp[a]))
            if g is None:       # a run that joined the group after it was counted
                continue
            g["step"] = cols["step"][a:b].tolist()
            g["mean"] = cols["mean"][a:b].tolist()
            g["std"] = cols["std"][a:b].tolist()
            g["min"] = cols["b_min"][a:b].tolist()
            g["max"] = cols["b_max"][a:b].tolist()


@dataclass
class _LinePlan:
    order: list[tuple[str, str]]                  # the lines answered, in request order
    known: set[str] = field(default_factory=set)  # the runs that exist (not deleted)
    line_of: dict[int, tuple[str, str]] = field(default_factory=dict)  # line no → (run, key)
    params: dict[str, Any] | None = None          # None: no line has points in range
    raw_ids: list[str] = field(default_factory=list)   # runs with a line read from points
    roll_ids: list[str] = field(default_factory=list)  # runs with a line read from the rollup
    exact_ranges: int = 0         # rewritten block ranges of rollup lines (params rr0 …)
    edges: bool = False           # the step range cuts a block: its points are read exactly


def _spans(blocks: list[int]) -> list[tuple[int, int]]:
    """Sorted block numbers as runs of consecutive blocks: [(first, last), …]."""
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and b == out[-1][1] + 1:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out


def _finite_json(text: str) -> str:
    """The database's quoted non-finite numbers, as the HTTP API spells them."""
    if '"' in text:
        for a, b in _NON_FINITE:
            text = text.replace(a, b)
    return text


def _empty_line(run_id: str, key: str) -> dict[str, Any]:
    return {"run_id": run_id, "key": key, "step": [], "value": [], "min": [], "max": [],
            "time_us": [], "total_points": 0, "downsampled": False}
