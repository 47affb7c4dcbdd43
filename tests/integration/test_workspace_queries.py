"""The workspace read API through the real HTTP app over the real engine (chDB).

Projects search, run filters and sorting, the column and metric choosers, many-run
history, group bands and run keys. The data is built by folding records and written
with ``StoreWriter``, as the projector does; expected answers are recomputed here from
the logged points. Also: bad input → 400 with the allowed range, unknown projects → 404,
injection-looking values are data, duplicates and replay change no answer, and the
series index (migration 0006) is filled from history written before it.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Callable
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from runstream.v1 import events_pb2 as E
from runstream_server.api.convert import jsonable
from runstream_server.api.http import HttpApi
from runstream_server.api.queries import Queries
from runstream_server.api.store_access import StoreAccess
from runstream_server.projector.processor import RowBatch, fold_records
from runstream_server.store.client import connect, drop_projections
from runstream_server.store.migrate import MIGRATIONS_DIR, apply_migrations
from runstream_server.store.writer import StoreWriter

from tests.fixtures.identity import admin_table, auth_headers

pytestmark = pytest.mark.chdb

DB = "wsq"
T0 = 1_700_000_000_000_000
EVIL = "x'); DROP TABLE runs; --{db}\\\"`"
EVIL_NAME = "x'); DROP TABLE runs; --\"`"     # in the URL path: no braces (aiohttp routes)
P = "/api/v1/projects/ent/ws"
NAN = float("nan")


class Log:
    """LogRecords of one event each (as the gateway writes a request of one run), and
    every logged number by (run, key) as ``(step, value, client time)``."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.points: dict[tuple[str, str], list[tuple[int, float, int]]] = {}
        self.seq: dict[str, int] = {}
        self.t = T0

    def add(self, run_id: str, project: str = "ws", entity: str = "ent", seq: int | None = None,
            **body) -> int:
        if seq is None:
            seq = self.seq[run_id] = self.seq.get(run_id, 0) + 1
        self.t += 1_000
        e = E.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                    client_time_us=self.t - 500)
        ((name, msg),) = body.items()
        getattr(e, name).CopyFrom(msg)
        self.records.append(E.LogRecord(events=[e], server_time_us=self.t).SerializeToString())
        return self.t - 500

    def start(self, run_id: str, name: str, user: str = "", tags=(), config=None,
              **where) -> None:
        meta = E.RunMetadata(hostname="h", username=user)
        self.add(run_id, run_start=E.RunStart(
            name=name, tags=list(tags), metadata=meta,
            config={k: E.JsonValue(json=v) for k, v in (config or {}).items()}), **where)

    def log(self, run_id: str, step: int, numbers: dict[str, float], others=None,
            **where) -> None:
        t = self.add(run_id, log=E.Log(step=step, numbers=numbers, others={
            k: E.JsonValue(json=v) for k, v in (others or {}).items()}), **where)
        for k, v in numbers.items():
            self.points.setdefault((run_id, k), []).append((step, v, t))


def workspace() -> Log:
    """Project ent/ws: r1..r4 (r5 deleted); ent/other: o1; ent/many: 1001 runs by seed."""
    log = Log()
    log.start("r1", "alpha-1", "alice", ["base"],
              {"opt": '"adam"', "lr": "0.1", "arch": '{"depth": 2}'})
    log.start("r2", "Beta-2", "bob", ["base", "prod"], {"opt": '"sgd"', "lr": "0.01"})
    log.start("r3", "gamma-3", "alice", [], {"opt": '"adam"', "lr": "0.001"})
    log.add("r4", run_start=E.RunStart(name="delta-4", config={"lr": E.JsonValue(json="0.5")}))
    log.start("r5", "gone", "eve", config={"secretcfg": "1"})
    log.log("r5", 0, {"secret": 1.0})
    log.add("r5", seq=0, delete=E.Delete())
    for s in range(300):
        nums = {"loss": 1 / (s + 1), "acc": s / 300}
        if s % 50 == 0:
            nums["val/loss"] = 2 / (s + 1)
        log.log("r1", s, nums, others={"text": '"t"'} if s == 0 else None)
    special = {10: ("loss", NAN), 20: ("acc", math.inf), 30: ("acc", -math.inf)}
    for s in range(100):
        nums = {"loss": 2 / (s + 1), "acc": s / 100}
        if s in special:
            nums[special[s][0]] = special[s][1]
        log.log("r2", s, nums)
    for s in range(100, 400):
        log.log("r3", s, {"loss": 0.5 / (s + 1)})
    for s in range(50):
        log.log("r4", s, {"loss": 3 / (s + 1)})
    log.add("r1", summary_update=E.SummaryUpdate(others={"note": E.JsonValue(json='"hi"')}))
    log.add("r1", finish=E.Finish(exit_code=0))
    log.add("r2", finish=E.Finish(exit_code=1))
    log.add("r4", finish=E.Finish(exit_code=0))
    log.add("r4", seq=0, run_patch=E.RunPatch(hidden=True))
    log.start("o1", "other-run", "carol", project="other")
    log.log("o1", 0, {"loss": 1.0}, project="other")
    for i in range(1001):
        log.start(f"m{i}", f"m{i}", config={"seed": str(i)}, project="many")
    return log


def write(client, db: str, records: list[bytes], token: str | None = None) -> RowBatch:
    batch = RowBatch()
    fold_records({}, [(0, i, r) for i, r in enumerate(records)], batch)
    StoreWriter(client, db).write(batch, token)
    return batch


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    """One engine for the module (chDB: one data directory per process at a time); each
    test that changes data uses a database of its own."""
    c = connect(f"chdb:///{tmp_path_factory.mktemp('wsq') / 'chdb'}", DB)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def ws(chdb):
    apply_migrations(chdb, DB)
    log = workspace()
    write(chdb, DB, log.records)
    return Http(chdb, DB), log


class Http:
    """The real HTTP app (aiohttp test server on 127.0.0.1) over the store."""

    def __init__(self, client, db: str) -> None:
        self.client, self.db = client, db

    def run(self, check: Callable) -> None:
        """``await check(get)``; ``await get(path, params)`` → ``(status, body)``."""
        async def main():
            store = StoreAccess(self.client, self.db)
            http = TestClient(TestServer(HttpApi(store, Queries(self.client, self.db), None,
                                                 admin_table()).app()))
            await http.start_server()

            async def get(path: str, params=None):
                r = await http.get(path, params=params, headers=auth_headers())
                return r.status, await r.json()
            try:
                await check(get)
            finally:
                await http.close()
                store.close()
        asyncio.run(asyncio.wait_for(main(), 120))

    def answers(self, requests: list[tuple[str, object]]) -> list:
        out = []

        async def check(get):
            for path, params in requests:
                out.append(await get(path, params))
        self.run(check)
        return out


async def bad(get, path: str, params, *fragments: str, status: int = 400) -> None:
    code, body = await get(path, params)
    assert code == status, (path, params, body)
    expected = "INVALID_ARGUMENT" if status == 400 else "NOT_FOUND"
    assert body["error"]["code"] == expected
    for f in fragments:
        assert f in body["error"]["message"], (f, body)


# --- expected answers, recomputed from the points ----------------------------------------

def _grid(lo: int, hi: int, buckets: int) -> int:
    span = hi - lo + 1
    return 1 if span <= buckets else -(-span // buckets)


def expected_line(pts, buckets: int, min_step: int = 0, max_step: int = 2**64 - 1) -> dict:
    inr = [p for p in pts if min_step <= p[0] <= max_step]
    if not inr:
        return {"step": [], "value": [], "min": [], "max": [], "time_us": [],
                "total_points": 0, "downsampled": False}
    lo = max(min(p[0] for p in pts), min_step)
    hi = min(max(p[0] for p in pts), max_step)
    width = _grid(lo, hi, buckets)
    groups: dict[int, list] = {}
    for p in inr:
        groups.setdefault((p[0] - lo) // width, []).append(p)
    out = {"step": [], "value": [], "min": [], "max": [], "time_us": []}
    for b in sorted(groups):
        g = groups[b]
        last = max(g, key=lambda p: p[0])
        finite = [v for _, v, _ in g if not math.isnan(v)]
        out["step"].append(last[0])
        out["value"].append(last[1])
        out["min"].append(min(finite) if finite else NAN)
        out["max"].append(max(finite) if finite else NAN)
        out["time_us"].append(last[2])
    out["total_points"] = len(inr)
    out["downsampled"] = len(inr) > len(groups)
    return jsonable(out)


def expected_bands(log: Log, groups: dict[str, list[str]], key: str, buckets: int) -> dict:
    """``groups``: group value → its matching runs."""
    runs = [r for rs in groups.values() for r in rs]
    steps = [p[0] for r in runs for p in log.points.get((r, key), [])]
    if not steps:
        return {"buckets": 0, "groups": [{"group": g, "count": len(rs), "step": [], "mean": [],
                                          "std": [], "min": [], "max": []}
                                         for g, rs in sorted(groups.items())]}
    lo, hi = min(steps), max(steps)
    width = _grid(lo, hi, buckets)
    out = []
    for g, rs in sorted(groups.items()):
        per_bucket: dict[int, list[tuple[int, float]]] = {}
        for r in rs:
            last: dict[int, tuple[int, float]] = {}
            for s, v, _ in log.points.get((r, key), []):
                b = (s - lo) // width
                if b not in last or s > last[b][0]:
                    last[b] = (s, v)
            for b, sv in last.items():
                if math.isfinite(sv[1]):
                    per_bucket.setdefault(b, []).append(sv)
        band = {"group": g, "count": len(rs), "step": [], "mean": [], "std": [], "min": [],
                "max": []}
        for b in sorted(per_bucket):
            vals = [v for _, v in per_bucket[b]]
            mean = sum(vals) / len(vals)
            band["step"].append(max(s for s, _ in per_bucket[b]))
            band["mean"].append(mean)
            band["std"].append(math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)))
            band["min"].append(min(vals))
            band["max"].append(max(vals))
        out.append(band)
    return {"buckets": (hi - lo) // width + 1, "groups": out}


def assert_bands(got: dict, want: dict) -> None:
    assert got["buckets"] == want["buckets"]
    assert [(g["group"], g["count"], g["step"]) for g in got["groups"]] == [
        (g["group"], g["count"], g["step"]) for g in want["groups"]]
    for a, b in zip(got["groups"], want["groups"], strict=True):
        for f in ("mean", "std", "min", "max"):
            assert a[f] == pytest.approx(b[f], rel=1e-9, abs=1e-12), (a["group"], f)


# --- A. projects -------------------------------------------------------------------------

def test_projects_are_found_by_name(ws):
    http, _ = ws

    async def check(get):
        status, body = await get("/api/v1/projects", {"q": "WS"})
        assert status == 200
        assert body == {"projects": [{"entity": "ent", "name": "ws", "run_count": 4,
                                      "last_event_time_us": body["projects"][0][
                                          "last_event_time_us"]}]}
        assert body["projects"][0]["last_event_time_us"] > T0
        names = [p["name"] for p in (await get("/api/v1/projects", {"entity": "ent"}))[1][
            "projects"]]
        assert names == ["many", "other", "ws"]
        assert (await get("/api/v1/projects", {"q": "tHe"}))[1]["projects"][0]["name"] == \
            "other"
        assert (await get("/api/v1/projects", {"q": "zzz"}))[1] == {"projects": []}
        assert (await get("/api/v1/projects", {"entity": "nobody", "q": "ws"}))[1] == {
            "projects": []}
        await bad(get, "/api/v1/projects", {"name": "ws"}, "unknown query parameters",
                  "'name'")
    http.run(check)


# --- B. run filters and sorting ----------------------------------------------------------

def test_run_filters_each_and_combined(ws):
    http, _ = ws

    async def ids(get, params) -> tuple[list[str], int]:
        status, body = await get(P + "/runs", params)
        assert status == 200, body
        return [r["run_id"] for r in body["runs"]], body["total"]

    async def check(get):
        assert await ids(get, {}) == (["r1", "r2", "r3", "r4"], 4)
        assert await ids(get, [("state", "failed"), ("state", "running")]) == (["r2", "r3"], 2)
        assert await ids(get, [("tag", "base"), ("tag", "prod")]) == (["r2"], 1)
        assert await ids(get, {"name": "ETA"}) == (["r2"], 1)          # case-insensitive
        assert await ids(get, {"name_regex": "^[a-c]"}) == (["r1"], 1)  # case-sensitive
        assert await ids(get, {"name_regex": "(?i)^[a-c]"}) == (["r1", "r2"], 2)
        assert await ids(get, {"name_regex": r"-\d$"}) == (["r1", "r2", "r3", "r4"], 4)
        assert await ids(get, {"user": "alice"}) == (["r1", "r3"], 2)
        assert await ids(get, [("user", "bob"), ("user", "alice")]) == (["r1", "r2", "r3"], 3)
        assert await ids(get, {"user": ""}) == (["r4"], 1)
        assert await ids(get, {"config.opt": '"adam"'}) == (["r1", "r3"], 2)
        assert await ids(get, {"config.arch": '{ "depth" : 2 }'}) == (["r1"], 1)
        assert await ids(get, {"config.lr": "1e-3"}) == (["r3"], 1)
        # Summaries: loss is the last value logged (r1 1/300, r2 2/100, r3 0.5/400, r4 3/50).
        assert await ids(get, {"summary.loss": "0.002..0.03"}) == (["r1", "r2"], 2)
        assert await ids(get, {"summary.loss": "..0.002"}) == (["r3"], 1)
        assert await ids(get, {"summary.loss": "0.06.."}) == (["r4"], 1)
        assert await ids(get, {"summary.loss": "0.06..0.06"}) == (["r4"], 1)   # inclusive
        assert await ids(get, {"summary.loss": ".."}) == (["r1", "r2", "r3", "r4"], 4)
        assert await ids(get, {"summary.val/loss": ".."}) == (["r1"], 1)
        assert await ids(get, {"hidden": "1"}) == (["r4"], 1)
        assert await ids(get, {"hidden": "0"}) == (["r1", "r2", "r3"], 3)
        # All together (AND).
        assert await ids(get, [("state", "finished"), ("state", "running"), ("user", "alice"),
                               ("config.opt", '"adam"'), ("summary.loss", "..0.01"),
                               ("hidden", "0"), ("name", "a"), ("name_regex", "3$")]) == (
            ["r3"], 1)
        # A filter that matches nothing in a known project: 200, empty.
        assert await ids(get, {"user": "nobody"}) == ([], 0)
    http.run(check)


def test_run_view_has_author_and_duration_and_sorts_by_author(ws):
    http, _ = ws

    async def check(get):
        _, body = await get(P + "/runs", {"sort": "user"})
        rows = body["runs"]
        assert [(r["run_id"], r["user"]) for r in rows] == [
            ("r1", "alice"), ("r3", "alice"), ("r2", "bob"), ("r4", "")]   # unknown last
        _, body = await get(P + "/runs", {"sort": "user", "desc": "1"})
        assert [r["run_id"] for r in body["runs"]] == ["r2", "r1", "r3", "r4"]
        for r in rows:
            end = r["end_time_us"] or r["last_event_time_us"]
            assert r["duration_us"] == end - r["start_time_us"] > 0
        _, run = await get("/api/v1/runs/ent/ws/r2")
        assert run["user"] == "bob" and run["duration_us"] == next(
            r["duration_us"] for r in rows if r["run_id"] == "r2")
        _, body = await get(P + "/runs", {"sort": "summary.loss", "limit": "2", "offset": "1"})
        assert [r["run_id"] for r in body["runs"]] == ["r1", "r2"] and body["total"] == 4
        _, body = await get(P + "/runs", {"sort": "summary.loss", "offset": "10"})
        assert body == {"runs": [], "total": 4}                    # past the end
    http.run(check)


def test_runs_bad_input_is_400_and_unknown_project_404(ws):
    http, _ = ws

    async def check(get):
        await bad(get, P + "/runs", {"limit": "5000"}, "limit", "0..1000")
        await bad(get, P + "/runs", {"offset": "-1"}, "offset")
        await bad(get, P + "/runs", {"sate": "running"}, "unknown query parameters", "sate")
        await bad(get, P + "/runs", {"name_regex": "(ab"}, "name_regex", "RE2", "missing )")
        await bad(get, P + "/runs", {"summary.loss": "0.1"}, "summary.loss", "<lo>..<hi>")
        await bad(get, P + "/runs", {"summary.loss": "a..b"}, "summary.loss")
        await bad(get, P + "/runs", {"summary.loss": "1..0"}, "empty range")
        await bad(get, P + "/runs", {"summary.": "0..1"}, "key is empty")
        await bad(get, P + "/runs", {"config.opt": "adam"}, "JSON value")
        await bad(get, P + "/runs", {"hidden": "maybe"}, "hidden")
        await bad(get, P + "/runs", {"desc": "yes"}, "desc")
        await bad(get, P + "/runs", {"sort": "bogus"}, "cannot sort")
        await bad(get, P + "/runs", [("name", "a"), ("name", "b")], "more than once")
        await bad(get, P + "/runs", [("user", str(i)) for i in range(101)], "at most 100")
        await bad(get, P + "/runs", {"name": "x" * 1025}, "1024")
        await bad(get, "/api/v1/projects/ent/nope/runs", {}, "ent/nope", status=404)
        await bad(get, "/api/v1/projects/nobody/ws/runs", {"user": "alice"}, status=404)
    http.run(check)


def test_injection_looking_filter_values_are_data(chdb):
    db = "wsq_evil"
    apply_migrations(chdb, db)
    log = Log()
    where = {"project": EVIL_NAME, "entity": EVIL_NAME}
    log.start("e1", EVIL, EVIL, [EVIL], {EVIL: f'"{EVIL[:5]}"'}, **where)
    log.log("e1", 3, {EVIL: 1.5}, **where)
    write(chdb, db, log.records)
    http = Http(chdb, db)
    base = f"/api/v1/projects/{quote(EVIL_NAME, safe='')}/{quote(EVIL_NAME, safe='')}"

    async def check(get):
        _, body = await get(base + "/runs", [
            ("tag", EVIL), ("user", EVIL), ("name", EVIL), ("name_regex", "DROP TABLE"),
            (f"config.{EVIL}", f'"{EVIL[:5]}"'), (f"summary.{EVIL}", "1..2"),
            ("sort", f"summary.{EVIL}")])
        assert body["total"] == 1 and body["runs"][0]["user"] == EVIL
        assert (await get(base + "/columns", {"prefix": EVIL}))[1] == {
            "config": [EVIL], "summary": [EVIL], "truncated": False}
        assert (await get(base + "/keys", {"prefix": EVIL[:3]}))[1] == {
            "keys": [EVIL], "truncated": False}
        _, body = await get(base + "/history", [("runs", "e1"), ("key", EVIL)])
        assert [(s["key"], s["value"]) for s in body["series"]] == [(EVIL, [1.5])]
        _, body = await get(base + "/bands", {"key": EVIL, "group_by": f"config.{EVIL}"})
        assert [(g["group"], g["mean"]) for g in body["groups"]] == [(f'"{EVIL[:5]}"', [1.5])]
    http.run(check)
    tables = chdb.query("SELECT count() FROM system.tables WHERE database = {db:String}",
                        parameters={"db": db}).result_rows[0][0]
    assert tables == len(chdb.query(
        "SELECT name FROM system.tables WHERE database = {db:String}",
        parameters={"db": DB}).result_rows)        # nothing dropped or created


# --- C, D, G. the choosers ---------------------------------------------------------------

def test_columns_and_metric_names(ws):
    http, _ = ws

    async def check(get):
        assert (await get(P + "/columns"))[1] == {
            "config": ["arch", "lr", "opt"],                  # r5's secretcfg: deleted
            "summary": ["acc", "loss", "note", "text", "val/loss"], "truncated": False}
        assert (await get(P + "/columns", {"prefix": "l"}))[1] == {
            "config": ["lr"], "summary": ["loss"], "truncated": False}
        assert (await get(P + "/columns", {"limit": "2"}))[1] == {
            "config": ["arch", "lr"], "summary": ["acc", "loss"], "truncated": True}
        assert (await get(P + "/columns", {"prefix": "zz"}))[1] == {
            "config": [], "summary": [], "truncated": False}
        assert (await get(P + "/keys"))[1] == {"keys": ["acc", "loss", "val/loss"],
                                               "truncated": False}
        assert (await get(P + "/keys", {"prefix": "val/"}))[1] == {"keys": ["val/loss"],
                                                                   "truncated": False}
        assert (await get(P + "/keys", {"limit": "1"}))[1] == {"keys": ["acc"],
                                                               "truncated": True}
        assert (await get("/api/v1/runs/ent/ws/r1/keys"))[1] == {
            "numeric": ["acc", "loss", "val/loss"], "other": ["text"]}
        assert (await get("/api/v1/runs/ent/ws/r3/keys"))[1] == {"numeric": ["loss"],
                                                                 "other": []}
        for path in ("/columns", "/keys"):
            await bad(get, P + path, {"limit": "0"}, "limit", "1..5000")
            await bad(get, P + path, {"limit": "5001"}, "1..5000")
            await bad(get, P + path, {"prefx": "a"}, "unknown query parameters")
            await bad(get, "/api/v1/projects/ent/nope" + path, {}, "not found", status=404)
        await bad(get, "/api/v1/runs/ent/ws/r5/keys", None, "not found", status=404)
        await bad(get, "/api/v1/runs/ent/ws/nope/keys", None, status=404)
    http.run(check)


# --- E. many-run history -------------------------------------------------------------------

def test_history_of_many_runs_and_keys_is_downsampled_per_line(ws):
    http, log = ws

    async def series(get, params) -> list[dict]:
        status, body = await get(P + "/history", params)
        assert status == 200, body
        return body["series"]

    async def check(get):
        for buckets, lo, hi in ((1500, 0, 0), (37, 0, 0), (7, 120, 250), (100, 0, 49)):
            params = {"runs": "r3,r1,nope,r5,r2,r4", "keys": "loss,val/loss,missing,acc",
                      "buckets": str(buckets)}
            if lo:
                params["min_step"] = str(lo)
            if hi:
                params["max_step"] = str(hi)
            got = await series(get, params)
            # Known runs in request order × keys in request order; unknown/deleted: none.
            assert [(s["run_id"], s["key"]) for s in got] == [
                (r, k) for r in ("r3", "r1", "r2", "r4")
                for k in ("loss", "val/loss", "missing", "acc")]
            # The Python API gives the same answer (the HTTP text is made by the store).
            assert jsonable(Queries(http.client, http.db).project_history(
                "ent", "ws", params["runs"].split(","), params["keys"].split(","), buckets,
                lo, hi)) == got
            for s in got:
                want = expected_line(log.points.get((s["run_id"], s["key"]), []), buckets,
                                     lo, hi or 2**64 - 1)
                assert {k: v for k, v in s.items() if k not in ("run_id", "key")} == want, (
                    buckets, lo, hi, s["run_id"], s["key"])
                assert len(s["step"]) <= buckets
        # 100 points in 37 buckets are downsampled; r2's NaN is skipped by min/max, its
        # infinities are not; JSON spells them as strings.
        got = await series(get, {"runs": "r2", "keys": "loss,acc", "buckets": "37"})
        assert got[0]["downsampled"] and got[0]["total_points"] == 100
        assert "NaN" not in got[0]["min"] and "NaN" in (await series(
            get, {"runs": "r2", "keys": "loss"}))[0]["value"]
        assert "Infinity" in got[1]["max"] and "-Infinity" in got[1]["min"]
        got = await series(get, [("runs", "r1"), ("runs", "r2"), ("keys", "acc"),
                                 ("key", "loss")])
        assert [(s["run_id"], s["key"]) for s in got] == [
            ("r1", "acc"), ("r1", "loss"), ("r2", "acc"), ("r2", "loss")]
        assert not got[0]["downsampled"] and got[0]["step"] == list(range(300))
        assert await series(get, {"runs": "nope", "keys": "loss"}) == []
    http.run(check)


def test_history_bad_input(ws):
    http, _ = ws

    async def check(get):
        h = P + "/history"
        await bad(get, h, {"keys": "loss"}, "runs=")
        await bad(get, h, {"runs": "r1"}, "keys=")
        await bad(get, h, {"runs": "r1", "keys": "loss", "buckets": "0"}, "1..10000")
        await bad(get, h, {"runs": "r1", "keys": "loss", "buckets": "100001"}, "1..10000")
        await bad(get, h, {"runs": ",".join(f"r{i}" for i in range(201)), "keys": "loss"},
                  "1..200")
        await bad(get, h, {"runs": "r1", "keys": ",".join(f"k{i}" for i in range(51))},
                  "1..50")
        await bad(get, h, {"runs": ",".join(f"r{i}" for i in range(200)),
                           "keys": ",".join(f"k{i}" for i in range(50)), "buckets": "1500"},
                  "3000000")
        await bad(get, h, {"runs": "r1", "keys": "loss", "min_step": "9", "max_step": "3"},
                  "empty step range")
        await bad(get, h, {"runs": "r1", "keys": "loss", "step": "3"}, "unknown query")
        await bad(get, "/api/v1/projects/ent/nope/history", {"runs": "r1", "keys": "loss"},
                  "not found", status=404)
    http.run(check)


# --- F. group bands --------------------------------------------------------------------------

def test_bands_by_config_value_with_filters(ws):
    http, log = ws

    async def bands(get, params) -> dict:
        status, body = await get(P + "/bands", params)
        assert status == 200, body
        return body

    async def check(get):
        # r4 has no "opt": group "". r2's NaN at step 10 leaves that bucket to r2's
        # other steps (or to nobody, with width 1).
        groups = {'"adam"': ["r1", "r3"], '"sgd"': ["r2"], "": ["r4"]}
        for buckets in ("1500", "40", "7"):
            got = await bands(get, {"key": "loss", "group_by": "config.opt",
                                    "buckets": buckets})
            assert_bands(got, expected_bands(log, groups, "loss", int(buckets)))
        got = await bands(get, {"key": "loss", "buckets": "40"})       # one group of all
        assert_bands(got, expected_bands(log, {"": ["r1", "r2", "r3", "r4"]}, "loss", 40))
        # Filters of the runs table apply: finished or failed runs of alice or bob.
        got = await bands(get, [("key", "loss"), ("group_by", "config.opt"),
                                ("buckets", "40"), ("state", "finished"),
                                ("state", "failed"), ("user", "alice"), ("user", "bob")])
        assert_bands(got, expected_bands(log, {'"adam"': ["r1"], '"sgd"': ["r2"]}, "loss", 40))
        # A key only some groups have: the others keep their count and no points.
        got = await bands(get, {"key": "val/loss", "group_by": "config.opt"})
        assert_bands(got, expected_bands(log, groups, "val/loss", 1500))
        got = await bands(get, {"key": "missing", "group_by": "config.opt"})
        assert got["buckets"] == 0 and [g["count"] for g in got["groups"]] == [1, 2, 1]
        assert (await bands(get, {"key": "loss", "user": "nobody"})) == {"groups": [],
                                                                         "buckets": 0}
    http.run(check)


def test_bands_bad_input(ws):
    http, _ = ws

    async def check(get):
        b = P + "/bands"
        await bad(get, b, {}, "key=")
        await bad(get, b, {"key": "loss", "group_by": "opt"}, "config.<key>")
        await bad(get, b, {"key": "loss", "buckets": "0"}, "1..10000")
        await bad(get, b, {"key": "loss", "buckets": "10001"}, "1..10000")
        await bad(get, b, {"key": "loss", "name_regex": "a["}, "RE2", "missing ]")
        await bad(get, b, {"key": "loss", "summary.loss": "x..y"}, "<lo>..<hi>")
        await bad(get, b, {"key": "loss", "group": "config.opt"}, "unknown query")
        await bad(get, "/api/v1/projects/ent/many/bands", {"key": "loss",
                                                           "group_by": "config.seed"},
                  "more than 1000 groups")
        await bad(get, "/api/v1/projects/ent/nope/bands", {"key": "loss"}, status=404)
        # 1000 groups are fine.
        _, body = await get("/api/v1/projects/ent/many/bands", {
            "key": "loss", "group_by": "config.seed", "name_regex": "^m([0-9]{1,3})$"})
        assert len(body["groups"]) == 1000 and body["buckets"] == 0
    http.run(check)


# --- invariants --------------------------------------------------------------------------

def project_answers(http: Http) -> list:
    reqs = [(P + "/runs", {"sort": "summary.loss"}), (P + "/columns", None),
            (P + "/keys", None), ("/api/v1/runs/ent/ws/r1/keys", None)]
    for buckets in ("1500", "37", "7"):
        reqs.append((P + "/history", {"runs": "r1,r2,r3,r4", "keys": "loss,acc,val/loss",
                                      "buckets": buckets}))
        reqs.append((P + "/bands", {"key": "loss", "group_by": "config.opt",
                                    "buckets": buckets}))
    return http.answers(reqs)


def test_duplicates_and_replay_change_no_answer(chdb):
    db = "wsq_dup"
    apply_migrations(chdb, db)
    log = workspace()
    batch = RowBatch()
    fold_records({}, [(0, i, r) for i, r in enumerate(log.records)], batch)
    StoreWriter(chdb, db).write(batch, "first")
    http = Http(chdb, db)
    before = project_answers(http)
    assert all(status == 200 for status, _ in before)
    StoreWriter(chdb, db).write(batch, "again")          # the same rows, inserted twice
    assert project_answers(http) == before
    drop_projections(chdb, db)
    apply_migrations(chdb, db)
    states: dict = {}
    positions = [(0, i, r) for i, r in enumerate(log.records)]
    for i in range(0, len(positions), 97):               # other batch boundaries
        batch = RowBatch()
        fold_records(states, positions[i:i + 97], batch)
        StoreWriter(chdb, db).write(batch, None)
    assert project_answers(http) == before


def test_series_index_is_filled_from_history_written_before_it(chdb, ws, tmp_path):
    db = "wsq_old"
    older = tmp_path / "migrations"
    older.mkdir()
    for p in MIGRATIONS_DIR.glob("000[1-5]_*.sql"):
        shutil.copy(p, older / p.name)
    apply_migrations(chdb, db, older)
    # The module's data as written before 0006 (history without 0007's rewrite column).
    cols = "entity, project, run_id, key, step, ts, value, seq"
    chdb.command(f"INSERT INTO {db}.history_numeric ({cols}) SELECT {cols} "
                 f"FROM {DB}.history_numeric")
    for table in ("history_other", "runs", "workspaces"):
        chdb.command(f"INSERT INTO {db}.{table} SELECT * FROM {DB}.{table}")
    assert apply_migrations(chdb, db) == ["0006_history_series.sql", "0007_history_rollup.sql",
                                          "0008_history_codecs.sql",
                                          "0009_history_compress_blocks.sql"]
    reference = project_answers(Http(chdb, DB))          # the module's store, same data
    assert project_answers(Http(chdb, db)) == reference
