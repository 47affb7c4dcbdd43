"""Chart lines read from the history rollup (migration 0007) over the real engine.

Lines long enough for buckets of at least 3 rollup blocks are cut at block boundaries
and read from ``history_rollup``, with the range edges and rewritten blocks read from
the points. Expected answers are recomputed here from the logged points on that grid:
the last write of a (run, key, step) counts, as history FINAL keeps it. Covered: NaN
and infinities, steps rewritten later (the replaced value must not widen min/max),
system-metric style events sharing a step, zoom ranges off block boundaries, duplicate
inserts, a projector restart between batches, lines of both paths in one request, the
JSON answer, and the rollup filled from history written before the migration.
"""

from __future__ import annotations

import json
import math
import random
import shutil

import pytest
from runstream.v1 import events_pb2 as E
from runstream_server.api.chart_queries import ROLLUP_BLOCK, ROLLUP_MIN_BLOCKS
from runstream_server.api.convert import jsonable
from runstream_server.api.queries import Queries
from runstream_server.projector.processor import RowBatch, fold_records
from runstream_server.store.client import connect
from runstream_server.store.migrate import MIGRATIONS_DIR, apply_migrations
from runstream_server.store.writer import StoreWriter

pytestmark = pytest.mark.chdb

T0 = 1_700_000_000_000_000
NAN = float("nan")
MAX_STEP = 2**64 - 1


class Log:
    """One event per record; ``points[(run, key)][step] = (value, client time)`` keeps the
    last write of each step, as history FINAL does."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.points: dict[tuple[str, str], dict[int, tuple[float, int]]] = {}
        self.seq: dict[str, int] = {}
        self.t = T0

    def add(self, run_id: str, **body) -> int:
        seq = self.seq[run_id] = self.seq.get(run_id, 0) + 1
        self.t += 1_000
        e = E.Event(run_id=run_id, project="p", entity="e", seq=seq, client_time_us=self.t)
        ((name, msg),) = body.items()
        getattr(e, name).CopyFrom(msg)
        self.records.append(E.LogRecord(events=[e], server_time_us=self.t).SerializeToString())
        return self.t

    def log(self, run_id: str, step: int, numbers: dict[str, float]) -> None:
        t = self.add(run_id, log=E.Log(step=step, numbers=numbers))
        for k, v in numbers.items():
            self.points.setdefault((run_id, k), {})[step] = (v, t)


def build() -> Log:
    rnd = random.Random(7)
    log = Log()
    for r in ("a", "b", "c", "short"):
        log.add(r, run_start=E.RunStart(name=r))
    # a: a smooth line with NaN and infinities, and system metrics at the current step
    # (separate events sharing the step with the user's keys: no rewrite).
    for s in range(6000):
        v = math.sin(s / 300) + rnd.random() * 0.1
        if s % 997 == 0:
            v = NAN
        elif s == 4321:
            v = math.inf
        elif s == 4400:
            v = -math.inf
        log.log("a", s, {"loss": v, "acc": s / 6000})
        if s % 250 == 0:
            log.log("a", s + 1, {"system/cpu": rnd.random()})
    # b: steps rewritten later with values that would change min, max and last; a block
    # of only NaN; a step logged twice by the same key in a row.
    for s in range(0, 9000, 3):
        log.log("b", s, {"loss": 1.0 + (s % 7) / 10})
    for s in (30, 31 * 16 + 3, 4500, 8997):
        log.log("b", s, {"loss": -50.0 if s != 4500 else 99.0})
    for s in range(16 * 100, 16 * 101):
        if s % 3 == 0:
            log.log("b", s, {"loss": NAN})
    log.log("b", 9000, {"loss": 5.0})
    log.log("b", 9000, {"loss": -5.0})
    # c: sparse steps across a wide range.
    for s in sorted(rnd.sample(range(200_000), 3000)):
        log.log("c", s, {"loss": rnd.gauss(0, 1)})
    # short: read from the points in the same request.
    for s in range(40):
        log.log("short", s, {"loss": s * 0.5})
    return log


def expected_line(pts: dict[int, tuple[float, int]], buckets: int, min_step: int = 0,
                  max_step: int = MAX_STEP) -> dict:
    """The line on the grid of ``project_history``: rollup lines at block boundaries."""
    inr = sorted((s, v, t) for s, (v, t) in pts.items() if min_step <= s <= max_step)
    if not inr:
        return {"step": [], "value": [], "min": [], "max": [], "time_us": [],
                "total_points": 0, "downsampled": False}
    # The grid spans the series' steps clipped to the range (not the points in range).
    lo, hi = max(min(pts), min_step), min(max(pts), max_step)

    def grid(a: int, b: int) -> int:
        return 1 if b - a + 1 <= buckets else -(-(b - a + 1) // buckets)
    width = grid(lo, hi)
    if width >= ROLLUP_MIN_BLOCKS * ROLLUP_BLOCK:
        lo_b, w_b = lo // ROLLUP_BLOCK, grid(lo // ROLLUP_BLOCK, hi // ROLLUP_BLOCK)

        def bucket(s: int) -> int:
            return (s // ROLLUP_BLOCK - lo_b) // w_b
    else:
        def bucket(s: int) -> int:
            return (s - lo) // width
    groups: dict[int, list] = {}
    for p in inr:
        groups.setdefault(bucket(p[0]), []).append(p)
    out = {"step": [], "value": [], "min": [], "max": [], "time_us": []}
    for b in sorted(groups):
        g = groups[b]
        finite = [v for _, v, _ in g if not math.isnan(v)]
        out["step"].append(g[-1][0])
        out["value"].append(g[-1][1])
        out["min"].append(min(finite) if finite else NAN)
        out["max"].append(max(finite) if finite else NAN)
        out["time_us"].append(g[-1][2])
    out["total_points"] = len(inr)
    out["downsampled"] = len(inr) > len(groups)
    return jsonable(out)


def expected_history(pts: dict[int, tuple[float, int]], buckets: int, min_step: int = 0,
                     max_step: int = MAX_STEP) -> dict:
    """The series of ``get_history``: raw when it has at most ``buckets`` points in range,
    else the line of ``project_history``."""
    inr = sorted((s, v, t) for s, (v, t) in pts.items() if min_step <= s <= max_step)
    if len(inr) > buckets:
        return expected_line(pts, buckets, min_step, max_step)
    values = [v for _, v, _ in inr]
    return jsonable({"step": [s for s, _, _ in inr], "value": values, "min": values,
                     "max": values, "time_us": [t for _, _, t in inr],
                     "total_points": len(inr), "downsampled": False})


def write(client, db: str, log: Log, chunk: int, fresh_states: bool = False) -> None:
    """Fold and write in batches of ``chunk`` records; ``fresh_states``: forget the fold
    state between batches, as a restarted projector does (it reloads from the store)."""
    states: dict = {}
    writer = StoreWriter(client, db)
    pos = [(0, i, r) for i, r in enumerate(log.records)]
    for i in range(0, len(pos), chunk):
        if fresh_states:
            states = writer.load_states({e.run_id for e in _events(pos[i:i + chunk])})
        batch = RowBatch()
        fold_records(states, pos[i:i + chunk], batch)
        writer.write(batch, None)


def _events(pos):
    for _p, _o, rec in pos:
        yield from E.LogRecord.FromString(rec).events


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    c = connect(f"chdb:///{tmp_path_factory.mktemp('rollup') / 'chdb'}", "rollup")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def loaded(chdb):
    log = build()
    apply_migrations(chdb, "rollup")
    write(chdb, "rollup", log, chunk=997)
    return log


CASES = [  # (buckets, min_step, max_step)
    (100, 0, 0), (1500, 0, 0), (37, 0, 0), (60, 1601, 5555), (20, 17, 8999),
    (40, 3, 190_000), (500, 0, 16 * 40 - 1),
    # c's 3000 points on ~200,000 steps: get_history answers them raw (rollup grid, then
    # the points grid), project_history puts several in some buckets.
    (3000, 0, 0), (5000, 0, 0),
]


def check_all(client, db: str, log: Log) -> None:
    q = Queries(client, db)
    runs, keys = ["short", "a", "b", "c"], ["loss", "acc", "system/cpu"]
    for buckets, lo, hi in CASES:
        got = jsonable(q.project_history("e", "p", runs, keys, buckets, lo, hi))
        assert [(s["run_id"], s["key"]) for s in got] == [(r, k) for r in runs for k in keys]
        for s in got:
            want = expected_line(log.points.get((s["run_id"], s["key"]), {}), buckets, lo,
                                 hi or MAX_STEP)
            assert {k: v for k, v in s.items() if k not in ("run_id", "key")} == want, (
                buckets, lo, hi, s["run_id"], s["key"])
        assert json.loads(q.project_history_json("e", "p", runs, keys, buckets, lo, hi)) == {
            "series": got}
        # get_history reads each run's lines the same way (one run, given keys or all).
        for r in runs:
            want = {k: expected_history(log.points.get((r, k), {}), buckets, lo,
                                        hi or MAX_STEP) for k in keys}
            got = jsonable(q.get_history("e", "p", r, keys, buckets, lo, hi))
            assert [s.pop("key") for s in got] == keys
            assert got == [want[k] for k in keys], (buckets, lo, hi, r)
            every = jsonable(q.get_history("e", "p", r, [], buckets, lo, hi))
            assert [s.pop("key") for s in every] == sorted(k for k in keys
                                                           if want[k]["total_points"])
            assert every == [want[s] for s in sorted(keys) if want[s]["total_points"]]


def test_rollup_lines_equal_the_points_on_the_block_grid(chdb, loaded):
    # b's line (steps 0…9000) in 100 buckets: 91 steps wide from the points (99 buckets),
    # 6 blocks wide on the block grid (blocks 0…562: 94 buckets).
    got = Queries(chdb, "rollup").project_history("e", "p", ["b"], ["loss"], 100, 0, 0)[0]
    assert len(got["step"]) == 94
    check_all(chdb, "rollup", loaded)


def test_rewrites_are_flagged_and_shared_steps_are_not(chdb, loaded):
    flagged = chdb.query(
        "SELECT run_id, key, block FROM rollup.history_rollup WHERE rewrite = 1 "
        "GROUP BY run_id, key, block ORDER BY run_id, key, block").result_rows
    # b's steps logged below its last step (30, 499, the NaN block 100, 4500, 8997) and
    # its step 9000 logged twice (block 562 too); a's system metrics share steps with
    # the user's keys without rewriting a point: not flagged.
    assert flagged == [("b", "loss", b) for b in (1, 31, 100, 281, 562)]


def test_duplicates_and_restarts_change_no_answer(chdb, loaded):
    db = "rollup_dup"
    apply_migrations(chdb, db)
    write(chdb, db, loaded, chunk=301, fresh_states=True)
    write(chdb, db, loaded, chunk=503)            # every record again, other batches
    check_all(chdb, db, loaded)


def test_rollup_is_filled_from_history_written_before_it(chdb, loaded, tmp_path):
    db = "rollup_old"
    older = tmp_path / "migrations"
    older.mkdir()
    for p in MIGRATIONS_DIR.glob("000[1-6]_*.sql"):
        shutil.copy(p, older / p.name)
    apply_migrations(chdb, db, older)
    # The history as written before: the module's rows without the rewrite column.
    cols = "entity, project, run_id, key, step, ts, value, seq"
    chdb.command(f"INSERT INTO {db}.history_numeric ({cols}) SELECT {cols} "
                 "FROM rollup.history_numeric")
    chdb.command(f"INSERT INTO {db}.runs SELECT * FROM rollup.runs")
    assert apply_migrations(chdb, db) == ["0007_history_rollup.sql", "0008_history_codecs.sql",
                                          "0009_history_compress_blocks.sql"]
    check_all(chdb, db, loaded)
