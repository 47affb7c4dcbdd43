"""The store on the real engine (chDB): migrations, fold → writer → queries, invariants 2, 3, 8."""

from __future__ import annotations

import math
import shutil
import struct

import pytest
from runstream.v1 import events_pb2 as E
from runstream.v1 import query_pb2
from runstream_server.api.chart_queries import ROLLUP_BLOCK, ROLLUP_MIN_BLOCKS
from runstream_server.api.queries import Queries
from runstream_server.common.errors import (
    ConfigError,
    NotFoundError,
    PermanentError,
    RetryableError,
)
from runstream_server.projector.processor import RowBatch, RunKey, fold_records
from runstream_server.store.client import connect, drop_projections
from runstream_server.store.migrate import MIGRATIONS_DIR, apply_migrations, migration_files
from runstream_server.store.writer import StoreWriter

pytestmark = pytest.mark.chdb

DB = "rs_test"
T0 = 1_700_000_000_000_000
EVIL = "x'); DROP TABLE runs; --{db}\\\"`"
# Entity and project names cannot hold "\\" (the gateway and the API refuse it): the
# same quotes, parentheses, braces and backtick, as a name.
EVIL_NAME = EVIL.replace("\\", "")


@pytest.fixture
def store_dsn(any_store_dsn):
    return any_store_dsn


@pytest.fixture
def client(store_dsn):
    c = connect(store_dsn, DB)
    try:
        yield c
    finally:
        c.close()   # chDB: one data directory per process at a time; the next test opens another


@pytest.fixture
def store(client):
    apply_migrations(client, DB)
    return client


class Log:
    """Builds a log of LogRecords (one run per record, as the gateway writes them)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.seq: dict[str, int] = {}
        self.t = T0

    def add(self, run_id: str, body: str, msg, project: str = "proj", entity: str = "ent",
            seq: int | None = None, client_us: int | None = None) -> None:
        if seq is None:
            seq = self.seq.get(run_id, 0) + 1
            self.seq[run_id] = seq
        self.t += 1_000
        e = E.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                    client_time_us=self.t - 500 if client_us is None else client_us)
        getattr(e, body).CopyFrom(msg)
        self.records.append(E.LogRecord(events=[e], server_time_us=self.t).SerializeToString())

    def positions(self, partition: int = 0):
        return [(partition, i, r) for i, r in enumerate(self.records)]


def workspace_log() -> Log:
    log = Log()
    runs = [("r1", "alpha", 0.1, ["base"], "adam"), ("r2", "Beta", 0.01, ["base", "prod"], "sgd"),
            ("r3", "gamma", 0.001, [], "adam")]
    for rid, name, lr, tags, opt in runs:
        log.add(rid, "run_start", E.RunStart(
            name=name, tags=tags, config={"lr": E.JsonValue(json=repr(lr)),
                                          "opt": E.JsonValue(json=f'"{opt}"'),
                                          "net": E.JsonValue(json='{"depth": 2}')},
            metadata=E.RunMetadata(hostname="host-" + rid)))
    # Summary modes whose answers equal "last" here (loss falls, acc rises), so that the
    # define_metric columns go through every round trip below.
    log.add("r1", "define_metric", E.DefineMetric(name="loss", summary="min"))
    log.add("r2", "define_metric", E.DefineMetric(name="ac*", summary="max", step_metric="x"))
    for step in range(200):
        for i, (rid, *_rest) in enumerate(runs):
            log.add(rid, "log", E.Log(step=step, numbers={"loss": (i + 1) / (step + 1),
                                                           "acc": step * (i + 1) / 1000},
                                      others={"note": E.JsonValue(json=f'{{"s": {step}}}')}))
    log.add("r1", "finish", E.Finish(exit_code=0))
    log.add("r2", "finish", E.Finish(exit_code=2))
    log.add("r4", "run_start", E.RunStart(name="other"), project="proj2")
    log.add("r5", "run_start", E.RunStart(name="gone"))
    log.add("r5", "delete", E.Delete(), seq=0)
    return log


def fold_and_write(client, log: Log, states=None, token: str | None = "p0:all"):
    states = {} if states is None else states
    batch = RowBatch()
    fold_records(states, log.positions(), batch)
    StoreWriter(client, DB).write(batch, token)
    return states, batch


def answers(q: Queries) -> dict:
    """Every query answer the UI could ask for about the workspace log."""
    out: dict = {"projects": q.list_projects(None), "projects_ent": q.list_projects("ent")}
    for sort in ("created_at", "name", "state", "duration", "summary.loss", "config.lr"):
        for desc in (False, True):
            out[f"runs {sort} {desc}"] = q.list_runs("ent", "proj", {}, sort, desc, 0, 0)
    out["page"] = q.list_runs("ent", "proj", {}, "name", False, 2, 1)
    for rid in ("r1", "r2", "r3"):
        out[f"run {rid}"] = q.get_run("ent", "proj", rid)
        out[f"raw {rid}"] = q.get_history("ent", "proj", rid, [], 0, 0, 0)
        out[f"ds {rid}"] = q.get_history("ent", "proj", rid, ["loss", "acc"], 37, 5, 150)
        out[f"keys {rid}"] = q.run_keys("ent", "proj", rid)
    return out


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def normalized(a):
    """NaN != NaN: compare floats by their bits."""
    if isinstance(a, float):
        return ("f", bits(a))
    if isinstance(a, dict):
        return {k: normalized(v) for k, v in a.items()}
    if isinstance(a, list | tuple):
        return [normalized(v) for v in a]
    return a


# --- migrations ----------------------------------------------------------------------------

def test_migrate_is_idempotent(client):
    first = apply_migrations(client, DB)
    assert first[:2] == ["0001_history.sql", "0002_runs.sql"]
    assert first == [p.name for p in migration_files()]
    assert apply_migrations(client, DB) == []
    tables = {r[0] for r in client.query(
        "SELECT name FROM system.tables WHERE database = {db:String}",
        parameters={"db": DB}).result_rows}
    assert tables == {"history_numeric", "history_other", "runs", "schema_migrations",
                      "workspaces", "history_series", "history_series_mv",
                      "history_rollup", "history_rollup_mv"}


def test_edited_migration_is_refused(client, tmp_path):
    d = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, d)
    apply_migrations(client, DB, d)
    (d / "0002_runs.sql").write_text((d / "0002_runs.sql").read_text() + "\n-- edited\n")
    with pytest.raises(ConfigError, match="0002_runs.sql changed"):
        apply_migrations(client, DB, d)


def test_bad_database_name_is_refused(store_dsn):
    with pytest.raises(ConfigError):
        connect(store_dsn, "x; DROP")


# --- fold → write → query ------------------------------------------------------------------

def test_workspace_queries(store):
    states, batch = fold_and_write(store, workspace_log())
    q = Queries(store, DB)
    assert batch.rows() == {"history_numeric": 1200, "history_other": 600, "workspaces": 0,
                            "runs": 5}

    projects = q.list_projects(None)
    assert [(p["entity"], p["name"], p["run_count"]) for p in projects] == [
        ("ent", "proj", 3), ("ent", "proj2", 1)]
    assert projects[0]["last_event_time_us"] == max(
        states[RunKey("ent", "proj", r)].last_event_time for r in ("r1", "r2", "r3"))
    assert q.list_projects("nobody") == []

    runs, total = q.list_runs("ent", "proj", {}, "created_at", False, 0, 0)
    assert total == 3 and [r["run_id"] for r in runs] == ["r1", "r2", "r3"]
    r2 = q.get_run("ent", "proj", "r2")
    assert r2 == runs[1]
    assert (r2["name"], r2["state"], r2["state_cause"], r2["exit_code"]) == (
        "Beta", "failed", "exit code 2", 2)
    assert r2["config"] == {"lr": "0.01", "opt": '"sgd"', "net": '{"depth":2}'}
    assert r2["summary"] == {"loss": 2 / 200, "acc": 199 * 2 / 1000}
    assert r2["summary_other"] == {"note": '{"s": 199}'}
    assert r2["tags"] == ["base", "prod"] and r2["last_seq"] == 203 and r2["end_time_us"] > 0
    assert r2["last_step"] == 199 and q.get_run("ent", "proj2", "r4")["last_step"] == -1
    assert q.get_run("ent", "proj", "r3")["end_time_us"] == 0
    # The dicts are RunView fields exactly.
    assert query_pb2.RunView(**r2).name == "Beta"

    def ids(flt=None, sort="created_at", desc=False, limit=0, offset=0):
        rows, n = q.list_runs("ent", "proj", flt or {}, sort, desc, limit, offset)
        return [r["run_id"] for r in rows], n

    assert ids({"states": ["failed", "running"]}) == (["r2", "r3"], 2)
    assert ids({"tags": ["base", "prod"]}) == (["r2"], 1)
    assert ids({"tags": ["base"]}) == (["r1", "r2"], 2)
    assert ids({"name_contains": "BET"}) == (["r2"], 1)
    assert ids({"config": [("opt", '"adam"')]}) == (["r1", "r3"], 2)
    assert ids({"config": [("opt", '"adam"'), ("lr", "1e-3")]}) == (["r3"], 1)
    assert ids({"config": [("net", '{ "depth" : 2 }')]})[1] == 3
    assert ids(sort="summary.loss") == (["r1", "r2", "r3"], 3)
    assert ids(sort="summary.loss", desc=True) == (["r3", "r2", "r1"], 3)
    assert ids(sort="config.lr") == (["r3", "r2", "r1"], 3)       # numerically, not as text
    assert ids(sort="name", desc=True) == (["r3", "r2", "r1"], 3)
    assert ids(sort="name", limit=1, offset=1) == (["r2"], 3)
    assert ids(sort="state") == (["r2", "r1", "r3"], 3)

    hist = q.get_history("ent", "proj", "r1", [], 0, 0, 0)
    assert [s["key"] for s in hist] == ["acc", "loss"]
    loss = hist[1]
    assert loss["step"] == list(range(200)) and loss["total_points"] == 200
    assert loss["value"] == [1 / (s + 1) for s in range(200)] and not loss["downsampled"]
    assert loss["min"] == loss["value"] == loss["max"]
    assert all(b > a for a, b in zip(loss["time_us"], loss["time_us"][1:], strict=False))
    part = q.get_history("ent", "proj", "r1", ["loss", "missing"], 0, 10, 19)
    assert part[0]["step"] == list(range(10, 20)) and part[1]["total_points"] == 0
    assert query_pb2.Series(**part[0]).total_points == 10
    assert q.run_keys("ent", "proj", "r1") == {"numeric": ["acc", "loss"], "other": ["note"]}


def test_deleted_runs_are_hidden(store):
    fold_and_write(store, workspace_log())
    q = Queries(store, DB)
    with pytest.raises(NotFoundError):
        q.get_run("ent", "proj", "r5")
    with pytest.raises(NotFoundError):
        q.get_history("ent", "proj", "r5", [], 0, 0, 0)
    assert "r5" not in [r["run_id"] for r in q.list_runs("ent", "proj", {}, "", False, 0, 0)[0]]
    assert StoreWriter(store, DB).load_states(["r5"])[RunKey("ent", "proj", "r5")].deleted


def test_runs_missing_the_sort_key_sort_last(store):
    log = Log()
    for rid, loss in (("a", 0.5), ("b", None), ("c", math.nan), ("d", 0.1)):
        log.add(rid, "run_start", E.RunStart(config={"k": E.JsonValue(json="1")} if loss else {}))
        if loss is not None:
            log.add(rid, "log", E.Log(step=0, numbers={"loss": loss}))
    fold_and_write(store, log)
    q = Queries(store, DB)
    for desc, expected in ((False, ["d", "a", "b", "c"]), (True, ["a", "d", "b", "c"])):
        rows, _ = q.list_runs("ent", "proj", {}, "summary.loss", desc, 0, 0)
        assert [r["run_id"] for r in rows] == expected
    rows, _ = q.list_runs("ent", "proj", {}, "config.k", True, 0, 0)
    assert [r["run_id"] for r in rows][-1] == "b"


def test_list_runs_pages_unmerged_versions_duplicates_and_ties(store):
    """The page's rows are the latest versions that were filtered and sorted, however the
    row versions lie in parts: older versions in other parts, a batch written twice, a run
    whose latest version no longer matches the filter, ties broken by run id. Both plans:
    two phases (narrow filter and sort: tag, name) and one query (config, summary)."""
    store.command(f"SYSTEM STOP MERGES {DB}.runs")
    log = Log()
    for i in range(12):                                            # names, loss: ties in pairs
        log.add(f"r{i:02d}", "run_start", E.RunStart(
            name=f"n{i // 2}", tags=["a"] if i % 3 else ["s"],
            config={"opt": E.JsonValue(json='"adam"' if i % 3 else '"sgd"')}))
    for i in range(12):
        log.add(f"r{i:02d}", "log", E.Log(step=0, numbers={"loss": float(i // 2)}))
    log.add("r01", "config_update", E.ConfigUpdate(set={"opt": E.JsonValue(json='"sgd"')}))
    log.add("r01", "run_patch", E.RunPatch(tags=["s"], set_tags=True), seq=0)
    log.add("r04", "delete", E.Delete(), seq=0)
    states: dict = {}
    for lo, hi in ((0, 12), (12, 27)):                             # versions in 4 parts:
        batch = RowBatch()                                         # each batch twice
        fold_records(states, log.positions()[lo:hi], batch)
        for token in ("first", "again"):
            StoreWriter(store, DB).write(batch, f"{lo}:{token}")
    assert store.query(f"SELECT count() FROM {DB}.runs").result_rows[0][0] == 48
    q = Queries(store, DB)
    adam = [f"r{i:02d}" for i in range(12) if i % 3 and i not in (1, 4)]
    for flt, sort in (({"tags": ["a"]}, "name"), ({"config": [("opt", '"adam"')]}, "summary.loss")):
        for desc in (False, True):
            want = sorted(adam, key=lambda r: (-(int(r[1:]) // 2) if desc else int(r[1:]) // 2, r))
            pages = []
            for offset in range(0, len(want) + 2, 3):
                rows, total = q.list_runs("ent", "proj", flt, sort, desc, 3, offset)
                assert total == len(want)
                pages += rows
            assert [r["run_id"] for r in pages] == want, (flt, desc)
            assert all(r["summary"] == {"loss": float(int(r["run_id"][1:]) // 2)}
                       and r["config"] == {"opt": '"adam"'} and r["tags"] == ["a"]
                       for r in pages)
            assert pages[0] == q.get_run("ent", "proj", pages[0]["run_id"])
    # Versions merged away between the two phases: those runs are read with FINAL (a
    # deleted one drops out); a version still stored is read as it is.
    rows = q._page_rows("ent", "proj", [("r02", 1), ("r04", 99), ("r05", 99)])
    assert [(r["run_id"], r["summary"]) for r in rows] == [("r02", {}), ("r05", {"loss": 2.0})]


def test_list_runs_validation(store):
    q = Queries(store, DB)
    for sort, limit, offset in (("bogus", 0, 0), ("summary.", 0, 0), ("name", 1001, 0),
                                ("name", 10, -1), ("name; DROP", 0, 0)):
        with pytest.raises(PermanentError):
            q.list_runs("ent", "proj", {}, sort, False, limit, offset)
    with pytest.raises(PermanentError):
        q.get_history("ent", "proj", "r1", [], -1, 0, 0)


# --- invariant 2: duplicates never change a projection -------------------------------------

@pytest.mark.parametrize("second_token", ["p0:all", "p0:other", None])
def test_inserting_the_same_batch_twice_changes_no_answer(store, second_token):
    log = workspace_log()
    states, batch = fold_and_write(store, log)
    q = Queries(store, DB)
    before = normalized(answers(q))
    StoreWriter(store, DB).write(batch, second_token)
    assert normalized(answers(q)) == before
    raw = store.query(f"SELECT count() FROM {DB}.history_numeric").result_rows[0][0]
    assert raw == (1200 if second_token == "p0:all" else 2400)   # FINAL hides the copies


def test_replaying_the_log_over_stored_states_writes_nothing(store):
    log = workspace_log()
    states, _ = fold_and_write(store, log)
    q = Queries(store, DB)
    before = normalized(answers(q))
    loaded = StoreWriter(store, DB).load_states({k.run_id for k in states})
    assert loaded == states
    batch = RowBatch()
    fold_records(loaded, log.positions(), batch)
    assert batch.total_rows() == 0
    # A client re-send of the whole log at new offsets is skipped too.
    batch = RowBatch()
    fold_records(loaded, [(0, 10_000 + i, r) for i, r in enumerate(log.records)], batch)
    assert batch.rows()["history_numeric"] == 0 and batch.rows()["history_other"] == 0
    StoreWriter(store, DB).write(batch, "p0:resend")
    assert normalized(answers(q)) == before


# --- invariant 3: replay rebuilds everything ------------------------------------------------

def test_drop_and_replay_gives_identical_answers(store):
    log = workspace_log()
    fold_and_write(store, log, token="first")
    q = Queries(store, DB)
    before = normalized(answers(q))
    dropped = drop_projections(store, DB)
    assert set(dropped) == {"history_numeric", "history_other", "runs", "schema_migrations",
                            "workspaces", "history_series", "history_series_mv",
                      "history_rollup", "history_rollup_mv"}
    assert apply_migrations(store, DB) == [p.name for p in migration_files()]
    # Rebuild in several batches with other boundaries than the first time.
    states: dict = {}
    positions = log.positions()
    for i in range(0, len(positions), 250):
        batch = RowBatch()
        fold_records(states, positions[i:i + 250], batch)
        StoreWriter(store, DB).write(batch, f"p0:{i}")
    assert normalized(answers(q)) == before


# --- values ----------------------------------------------------------------------------------

def test_special_floats_come_back_bit_exact(store):
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0123))[0]
    values = [math.nan, math.inf, -math.inf, -0.0, payload_nan, 5e-324, 1.7976931348623157e308]
    log = Log()
    log.add("f", "run_start", E.RunStart())
    for step, v in enumerate(values):
        log.add("f", "log", E.Log(step=step, numbers={"x": v, f"k{step}": v}))
    fold_and_write(store, log)
    q = Queries(store, DB)
    (series,) = q.get_history("ent", "proj", "f", ["x"], 0, 0, 0)
    assert [bits(v) for v in series["value"]] == [bits(v) for v in values]
    summary = q.get_run("ent", "proj", "f")["summary"]
    assert {k: bits(v) for k, v in summary.items() if k != "x"} == {
        f"k{i}": bits(v) for i, v in enumerate(values)}


def test_injection_looking_keys_and_values_are_data(store):
    log = Log()
    log.add("r-1", "run_start", E.RunStart(name=EVIL, tags=[EVIL],
                                           config={EVIL: E.JsonValue(json=f'"{EVIL[:5]}"')}),
            project=EVIL_NAME, entity=EVIL_NAME)
    log.add("r-1", "log", E.Log(step=1, numbers={EVIL: 1.5}, others={EVIL + "o": E.JsonValue(
        json='"' + EVIL.replace("\\", "\\\\").replace('"', '\\"') + '"')}),
        project=EVIL_NAME, entity=EVIL_NAME)
    fold_and_write(store, log)
    q = Queries(store, DB)
    assert q.list_projects(EVIL_NAME)[0]["name"] == EVIL_NAME
    rows, total = q.list_runs(EVIL_NAME, EVIL_NAME, {"tags": [EVIL], "name_contains": EVIL,
                                           "config": [(EVIL, f'"{EVIL[:5]}"')]},
                              f"summary.{EVIL}", True, 0, 0)
    assert total == 1 and rows[0]["name"] == EVIL and rows[0]["summary"] == {EVIL: 1.5}
    rows, _ = q.list_runs(EVIL_NAME, EVIL_NAME, {}, f"config.{EVIL}", False, 0, 0)
    assert len(rows) == 1
    (s,) = q.get_history(EVIL_NAME, EVIL_NAME, "r-1", [EVIL], 0, 0, 0)
    assert s["value"] == [1.5]
    assert q.run_keys(EVIL_NAME, EVIL_NAME, "r-1") == {"numeric": [EVIL], "other": [EVIL + "o"]}
    tables = store.query("SELECT count() FROM system.tables WHERE database = {db:String}",
                         parameters={"db": DB}).result_rows[0][0]
    assert tables == 9   # the migrations' tables and views: nothing dropped


# --- downsampling ----------------------------------------------------------------------------

def test_downsampling_in_the_database(store):
    n = 10_000
    log = Log()
    log.add("d", "run_start", E.RunStart())
    values = [math.sin(i / 50) * (i % 7) for i in range(n)]
    values[1234] = math.nan
    for lo in range(0, n, 1000):   # big Log events: 1000 steps of one key each would be slow
        for i in range(lo, lo + 1000):
            log.add("d", "log", E.Log(step=i * 3, numbers={"y": values[i]}))
    fold_and_write(store, log)
    q = Queries(store, DB)
    blk = ROLLUP_BLOCK

    def grid(a: int, b: int) -> int:        # bucket width cutting a..b into ≤ buckets
        return 1 if b - a + 1 <= buckets else -(-(b - a + 1) // buckets)

    for buckets, min_step, max_step in ((100, 0, 0), (1500, 0, 0), (37, 3000, 9000),
                                        (7, 0, 30), (37, 3001, 9000), (200, 1, 2000),
                                        (4000, 1, 0)):
        (s,) = q.get_history("ent", "proj", "d", ["y"], buckets, min_step, max_step)
        hi_step = max_step or 3 * (n - 1)
        pts = [(i * 3, values[i]) for i in range(n) if min_step <= i * 3 <= hi_step]
        assert s["total_points"] == len(pts)
        if len(pts) <= buckets:
            assert not s["downsampled"] and s["step"] == [p[0] for p in pts]
            continue
        assert s["downsampled"] and 0 < len(s["step"]) <= buckets
        # The grid spans the series' steps (0 … 3(n-1)) clipped to the range; buckets at
        # least 3 blocks wide are cut at 16-step blocks instead (docs/api.md).
        lo, hi = max(0, min_step), min(3 * (n - 1), hi_step)
        width = grid(lo, hi)
        if width >= ROLLUP_MIN_BLOCKS * blk:
            lo_b, w_b = lo // blk, grid(lo // blk, hi // blk)
            assert w_b * blk >= width

            def bucket(st: int, lo_b=lo_b, w_b=w_b) -> int:
                return (st // blk - lo_b) // w_b
        else:
            def bucket(st: int, lo=lo, width=width) -> int:
                return (st - lo) // width
        expect: dict[int, list] = {}
        for st, v in pts:
            expect.setdefault(bucket(st), []).append((st, v))
        assert len(s["step"]) == len(expect)
        for j, b in enumerate(sorted(expect)):
            group = expect[b]
            finite = [v for _, v in group if not math.isnan(v)]
            assert s["step"][j] == group[-1][0]
            assert bits(s["value"][j]) == bits(group[-1][1])
            assert s["min"][j] == min(finite) and s["max"][j] == max(finite)
        assert s["time_us"] == sorted(s["time_us"])


# --- writer errors ---------------------------------------------------------------------------

def test_writing_before_migration_is_retryable(client):
    log = Log()
    log.add("w", "run_start", E.RunStart())
    log.add("w", "log", E.Log(step=0, numbers={"a": 1.0}))
    client.command(f"CREATE DATABASE IF NOT EXISTS {DB}")
    with pytest.raises(RetryableError):
        fold_and_write(client, log)
