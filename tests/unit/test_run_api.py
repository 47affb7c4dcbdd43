"""The run API of the client SDK against an in-process gateway (Ingest over a local event
log) plus a fake Query service for resume look-ups: init's arguments, module-level
names, reinit, steps, config, summary, define_metric, resume and metadata."""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import struct
import subprocess
import time

import grpc
import pytest
import runstream
from runstream import _state
from runstream._metadata import capture, strip_credentials
from runstream._values import unflatten
from runstream._wal import WalReader
from runstream.v1 import events_pb2, query_pb2, query_pb2_grpc

from tests.fixtures.gateway import BackgroundGateway

ENTITY = "unit"


class FakeQuery(query_pb2_grpc.QueryServicer):
    """GetRun answers from ``views`` (run id → RunView); anything else is NOT_FOUND."""

    def __init__(self) -> None:
        self.views: dict[str, query_pb2.RunView] = {}
        self.calls: list[str] = []

    async def GetRun(self, request, context):
        self.calls.append(request.run_id)
        view = self.views.get(request.run_id)
        if view is None or (view.entity, view.project) != (request.entity, request.project):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such run")
        return view


class Gateway(BackgroundGateway):
    """Ingest (LocalEventLog) + FakeQuery on one grpc.aio server in a background loop."""

    def __init__(self, directory) -> None:
        self.query = FakeQuery()
        super().__init__(directory, "gw-unit",
                         lambda server: query_pb2_grpc.add_QueryServicer_to_server(self.query,
                                                                                  server))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = Gateway(tmp_path_factory.mktemp("run-api-gw"))
    yield gw
    gw.close()


@pytest.fixture
def rs(gateway, monkeypatch, tmp_path):
    """A fresh process-wide client state pointed at the gateway; exit hooks not installed;
    the working directory (where journals go) is tmp_path."""
    for name in ("RUNSTREAM_URL", "RUNSTREAM_ENTITY", "RUNSTREAM_HEARTBEAT_INTERVAL",
                 "RUNSTREAM_FINISH_TIMEOUT", "RUNSTREAM_MODE", "RUNSTREAM_DIR",
                 "RUNSTREAM_API_URL", "RUNSTREAM_UPLOADER", "RUNSTREAM_DRAIN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNSTREAM_URL", gateway.address)
    monkeypatch.setenv("RUNSTREAM_ENTITY", ENTITY)
    monkeypatch.setattr(_state, "install_hooks", lambda: None)
    _state.set_active(None)
    _state._sender = None
    gateway.query.views.clear()
    yield gateway
    for r in reversed(_state.live()):
        r.finish(timeout=2)
    _state.set_active(None)
    if _state._sender is not None:
        _state._sender.close(timeout=0.3)
        _state._sender = None


FAST = {"heartbeat_interval_s": 3600.0, "linger_s": 0.005, "finish_timeout_s": 10.0}


def kinds(events) -> list[str]:
    return [e.WhichOneof("body") for e in events]


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


# ------------------------------------------------------------------------ the API surface


def test_init_takes_every_argument_and_the_run_has_every_attribute(rs, tmp_path):
    r = runstream.init(project="proj", entity="ent", name="nice name", notes="why",
                       tags=["a", "b"], config={"lr": 0.1, "net": {"depth": 2}}, group="g",
                       job_type="train", id="api-all", resume=None, reinit=None,
                       mode="online", dir=str(tmp_path), settings=FAST)
    assert (r.id, r.name, r.project, r.entity, r.notes, r.tags) == (
        "api-all", "nice name", "proj", "ent", "why", ("a", "b"))
    assert (r.group, r.job_type, r.mode, r.dir, r.resumed) == ("g", "train", "online",
                                                                str(tmp_path), False)
    assert r.path == "ent/proj/api-all" and r.url.endswith("/ent/proj/runs/api-all")
    assert r.config == {"lr": 0.1, "net": {"depth": 2}} and r.config.lr == 0.1
    assert dict(r.summary) == {} and r.step == 0 and r.out_of_order_steps == 0
    for name in ("log", "finish", "define_metric"):
        assert callable(getattr(r, name))
    assert r.finish() is True and r.exit_code == 0
    (start,) = rs.events("api-all", "run_start")
    rs_ = start.run_start
    assert (rs_.name, rs_.notes, list(rs_.tags), rs_.group, rs_.job_type, rs_.resumed) == (
        "nice name", "why", ["a", "b"], "g", "train", False)
    assert {k: v.json for k, v in rs_.config.items()} == {"lr": "0.1", "net/depth": "2"}
    assert rs_.metadata.cwd == os.getcwd() and rs_.metadata.python_version


def test_defaults_project_entity_name_and_id(rs):
    r = runstream.init(settings=FAST)
    assert r.project == "Uncategorized" and r.entity == ENTITY and r.name == r.id
    assert len(r.id) == 12 and r.id.isalnum()
    assert rs.query.calls.count(r.id) == 0       # a made-up id is never looked up
    assert r.dir == os.getcwd()


@pytest.mark.parametrize("kw, match", [
    ({"id": "bad/id"}, "id"), ({"id": "x" * 129}, "id"), ({"project": "a/b"}, "project"),
    ({"entity": "a:b"}, "entity"), ({"project": "p" * 129}, "project"),
    ({"reinit": "sometimes"}, "reinit"), ({"resume": "maybe"}, "resume"),
    ({"resume": "must"}, "needs the id"), ({"mode": "cloud"}, "mode"),
])
def test_bad_arguments_fail_init_loudly(rs, kw, match):
    with pytest.raises(ValueError, match=match):
        runstream.init(settings=FAST, **kw)
    assert runstream.run is None


def test_offline_mode_journals_only_and_disabled_records_nothing(rs, monkeypatch, caplog,
                                                                  tmp_path):
    base = tmp_path / "elsewhere"
    monkeypatch.setenv("RUNSTREAM_MODE", "offline")
    monkeypatch.setenv("RUNSTREAM_DIR", str(base))
    with caplog.at_level(logging.WARNING, "runstream"):
        r = runstream.init(config={"lr": 0.1}, settings=FAST)
        assert r.mode == "offline" and r.dir == str(base)
        assert r.journal_dir == str(base / "runstream-runs" / f"run-{r.id}")
        r.log({"x": 1.0})
        r.summary["best"] = 2
        assert r.finish() is True
    assert _state._sender is None                 # no uploader, no network at all
    assert f"runstream sync {base}" in caplog.text
    reader = WalReader(r.journal_dir)
    events = [events_pb2.Event.FromString(d) for _s, d in reader.read(0)]
    reader.close()
    assert kinds(events) == ["run_start", "log", "summary_update", "finish"]
    assert [e.seq for e in events] == [1, 2, 3, 4] and events[1].log.numbers["x"] == 1.0
    assert rs.events(r.id) == []

    r = runstream.init(mode="disabled", dir=str(tmp_path / "somewhere"), config={"a": 1},
                       settings=FAST)
    assert (r.mode, r.dir, r.journal_dir) == ("disabled", str(tmp_path / "somewhere"), "")
    assert runstream.run is r and r.config.a == 1
    r.log({"x": 3.0})
    r.config.b = 2
    assert r.summary["x"] == 3.0 and r.step == 1
    assert r.finish() is True and runstream.run is None
    assert not (tmp_path / "somewhere").exists() and rs.events(r.id) == []
    assert _state._sender is None


def test_module_level_names_follow_the_active_run(rs):
    assert runstream.run is None
    for use in (lambda: runstream.config["lr"], lambda: runstream.config.lr,
                lambda: runstream.config.update({"a": 1}),
                lambda: runstream.config.__setitem__("a", 1),
                lambda: setattr(runstream.config, "a", 1), lambda: runstream.summary["x"],
                lambda: runstream.summary.update({"x": 1}), lambda: list(runstream.config)):
        with pytest.raises(runstream.PreInitError, match="before runstream.init"):
            use()
    assert "init" in repr(runstream.config) and not runstream.summary
    with pytest.raises(RuntimeError):
        runstream.log({"x": 1})
    with pytest.raises(RuntimeError):
        runstream.define_metric("x", "min")
    runstream.finish()                                # no run: nothing to do

    r = runstream.init(id="api-module", config={"lr": 0.5}, settings=FAST)
    assert runstream.run is r and runstream.config is r.config
    assert runstream.summary is r.summary and runstream.config.lr == 0.5
    runstream.config.batch = 8
    runstream.define_metric("loss", "min")
    runstream.log({"loss": 2.0})
    runstream.log({"loss": 1.0})
    runstream.log({"loss": 3.0})
    runstream.summary["best"] = "epoch 2"
    assert runstream.summary["loss"] == 1.0 and r.summary.best == "epoch 2"
    runstream.finish()
    assert runstream.run is None
    with pytest.raises(runstream.PreInitError):
        _ = runstream.config.lr
    evs = rs.events("api-module")
    assert kinds(evs) == ["run_start", "config_update", "define_metric", "log", "log", "log",
                          "summary_update", "finish"]


# ------------------------------------------------------------------------------ reinit


def test_reinit_default_returns_the_active_run(rs):
    r = runstream.init(id="re-default", settings=FAST)
    for reinit in (None, "default", "return_previous", False):
        assert runstream.init(project="other", id="re-x", reinit=reinit) is r
    assert _state.live() == [r] and runstream.run is r


def test_reinit_finish_previous(rs):
    a = runstream.init(id="re-fp-a", settings=FAST)
    b = runstream.init(id="re-fp-b", reinit="finish_previous", settings=FAST)
    assert b is not a and runstream.run is b and _state.live() == [b]
    assert kinds(rs.events("re-fp-a")) == ["run_start", "finish"]
    c = runstream.init(id="re-fp-c", reinit=True, settings=FAST)
    assert runstream.run is c and b.exit_code == 0


def test_reinit_create_new_keeps_concurrent_runs(rs):
    a = runstream.init(id="re-cn-a", settings=FAST)
    b = runstream.init(id="re-cn-b", reinit="create_new", settings=FAST)
    assert _state.live() == [a, b] and runstream.run is b and runstream.config is b.config
    runstream.log({"x": 1.0})              # the newest
    a.log({"y": 2.0})
    b.finish()
    assert runstream.run is a and runstream.summary is a.summary
    runstream.log({"y": 3.0})
    runstream.finish()
    assert runstream.run is None
    assert kinds(rs.events("re-cn-a")) == ["run_start", "log", "log", "finish"]
    assert kinds(rs.events("re-cn-b")) == ["run_start", "log", "finish"]


def test_with_block_finishes_and_records_the_exit_code(rs):
    with runstream.init(id="with-ok", settings=FAST) as r:
        r.log({"a": 1})
    assert r.exit_code == 0 and runstream.run is None
    with pytest.raises(KeyboardInterrupt), runstream.init(id="with-int", settings=FAST) as r:
        raise KeyboardInterrupt
    assert r.exit_code == 255
    with pytest.raises(SystemExit), runstream.init(id="with-exit", settings=FAST) as r:
        raise SystemExit(4)
    assert r.exit_code == 4
    assert rs.events("with-exit", "finish")[0].finish.exit_code == 4


def test_a_forked_child_gets_no_run_simulated(rs, monkeypatch):
    # The real fork is in tests/e2e/test_client_lifecycle.py; here the at-fork handler
    # runs in this process (then the state is reset) to see what it does to the runs.
    a = runstream.init(id="fork-sim", settings=FAST)
    sender = _state._sender
    monkeypatch.setattr(_state, "_keep_forever", lambda obj: None)
    _state._after_fork_in_child()
    try:
        assert runstream.run is None and _state.live() == [] and _state._sender is None
        assert not _state.grpc_usable()
        before = a._journal.last_seq
        a.log({"x": 1})                    # the parent's run: ignored in the child
        a.config.update({"y": 1})
        assert a.finish() is False
        assert a._journal.last_seq == before
    finally:
        _state._forked_after_grpc = False
        _state._sender = sender


# ------------------------------------------------------------------------------- steps


def test_steps_commit_and_explicit_steps(rs, caplog):
    r = runstream.init(id="steps", settings=FAST)
    r.log({"a": 1})                                   # step 0
    r.log({"b": 2}, commit=False)                     # step 1, pending
    r.log({"c": 3})                                   # step 1 with b
    assert r.step == 2
    r.log({"d": 4}, commit=False)                     # pending at 2
    r.log({"e": 5}, step=10)                          # flushes d at 2, then 10
    assert r.step == 11
    r.log({"f": 6}, step=11, commit=False)
    r.log({"g": 7}, step=11)                          # same step: merged
    with caplog.at_level(logging.WARNING, "runstream"):
        r.log({"a": 9}, step=5)                       # lower: an update of step 5
        r.log({"h": 1}, step=0, commit=False)         # lower: written at once
    assert r.step == 12 and r.out_of_order_steps == 2
    assert caplog.text.count("lower than the current step") == 1
    r.log({"i": 1})
    r.finish()
    logs = [(e.log.step, sorted(list(e.log.numbers))) for e in rs.events("steps", "log")]
    assert logs == [(0, ["a"]), (1, ["b", "c"]), (2, ["d"]), (10, ["e"]), (11, ["f", "g"]),
                    (5, ["a"]), (0, ["h"]), (12, ["i"])]
    assert r.summary["a"] == 9                        # last logged, whatever the step
    with pytest.raises(ValueError):
        runstream.init(id="steps-2", settings=FAST).log({"x": 1}, step=-1)


def test_values_numpy_nan_inf_nested_and_json(rs):
    np = pytest.importorskip("numpy")
    r = runstream.init(id="values", settings=FAST)
    weird_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8DEADBEEF0001))[0]
    r.log({"f32": np.float32(0.5), "i64": np.int64(-3), "b": np.bool_(True), "nan": weird_nan,
           "inf": math.inf, "ninf": -math.inf, "neg0": -0.0, "nested": {"x": {"y": 1}},
           "text": "hi", "list": [1, 2], "none": None, "py_bool": False})
    r.finish()
    (e,) = rs.events("values", "log")
    n = e.log.numbers
    assert (n["f32"], n["i64"], n["b"], n["py_bool"], n["nested/x/y"]) == (0.5, -3, 1, 0, 1)
    assert bits(n["nan"]) == bits(weird_nan) and bits(n["neg0"]) == bits(-0.0)
    assert n["inf"] == math.inf and n["ninf"] == -math.inf
    assert {k: v.json for k, v in e.log.others.items()} == {
        "text": '"hi"', "list": "[1, 2]", "none": "null"}


# ------------------------------------------------------------------------------ config


def test_config_is_dict_and_attribute_like_and_every_change_is_an_event(rs):
    r = runstream.init(id="cfg", config={"lr": 0.1, "arch": {"layers": 4, "kind": "mlp"}},
                       settings=FAST)
    c = r.config
    assert c["lr"] == c.lr == c.get("lr") == 0.1 and "lr" in c and len(c) == 2
    assert sorted(c) == ["arch", "lr"] and dict(c.items())["arch"]["kind"] == "mlp"
    c.batch = 32                                      # event 1
    c["epochs"] = 3                                   # event 2
    c.update({"wd": 0.0, "lr": 0.1})                  # event 3 (lr unchanged)
    c.update({"lr": 0.1})                             # nothing changed: no event
    c.lr = 0.1                                        # same value (as 1.0 == 1): no event
    with pytest.raises(runstream.ConfigError, match="'lr' already holds 0.1") as info:
        c.update({"opt": "adam", "lr": 0.2})          # all or nothing
    assert isinstance(info.value, ValueError)
    assert "opt" not in c and c.lr == 0.1
    with pytest.raises(ValueError):
        c.lr = 0.3
    with pytest.raises(runstream.ConfigError):
        c["arch"] = {"layers": 5}
    c.update({"lr": 0.2, "arch": {"layers": 5}}, allow_val_change=True)   # event 4
    del c["wd"]                                                             # event 5
    c.update(argparse.Namespace(seed=7), allow_val_change=False)            # event 6
    c.setdefaults({"seed": 8, "extra": True})                               # event 7
    with pytest.raises(AttributeError):
        _ = c.missing
    assert c.as_dict() == {"lr": 0.2, "arch": {"layers": 5}, "batch": 32, "epochs": 3,
                           "seed": 7, "extra": True}
    r.finish()
    ups = [e.config_update for e in rs.events("cfg", "config_update")]
    got = [({k: v.json for k, v in u.set.items()}, sorted(u.removed)) for u in ups]
    assert got == [({"batch": "32"}, []), ({"epochs": "3"}, []), ({"wd": "0.0"}, []),
                   ({"lr": "0.2", "arch/layers": "5"}, ["arch/kind"]), ({}, ["wd"]),
                   ({"seed": "7"}, []), ({"extra": "true"}, [])]


def test_config_after_finish_is_local_only(rs, caplog):
    r = runstream.init(id="cfg-late", settings=FAST)
    r.finish()
    with caplog.at_level(logging.WARNING, "runstream"):
        r.config.late = 1
    assert r.config.late == 1 and "after finish" in caplog.text
    assert kinds(rs.events("cfg-late")) == ["run_start", "finish"]


# ----------------------------------------------------------------------------- summary


def test_summary_defaults_to_last_and_overrides_are_events(rs):
    r = runstream.init(id="sum", settings=FAST)
    r.log({"loss": 3.0, "acc": {"top1": 0.5}, "phase": "train"})
    r.log({"loss": 2.0})
    s = r.summary
    assert dict(s) == {"loss": 2.0, "acc/top1": 0.5, "phase": "train"}
    s["loss"] = 0.1                                   # override: one event
    s.update({"best": {"epoch": 3}, "note": "ok"})    # one event, flattened
    s.extra = 1.5
    assert s.loss == 0.1 and s["best/epoch"] == 3
    r.log({"loss": 5.0})                              # logged again: the override ends
    assert s["loss"] == 5.0
    del s["phase"]
    with pytest.raises(KeyError):
        del s["never"]
    assert "phase" not in s and len(s) == 5
    r.finish()
    ups = [e.summary_update for e in rs.events("sum", "summary_update")]
    assert [(dict(u.numbers), {k: v.json for k, v in u.others.items()}, list(u.removed))
            for u in ups] == [({"loss": 0.1}, {}, []), ({"best/epoch": 3.0}, {"note": '"ok"'}, []),
                              ({"extra": 1.5}, {}, []), ({}, {}, ["phase"])]


def test_define_metric_events_and_the_local_summary_follow_the_modes(rs):
    r = runstream.init(id="dm", settings=FAST)
    d = r.define_metric("loss", summary="min")
    assert d == runstream.MetricDefinition("loss", "min", "")
    r.define_metric("val/*", "max", step_metric="epoch")
    r.define_metric("acc", summary="mean")
    r.define_metric("first", summary="first")
    r.define_metric("noise", summary="none")
    assert r.define_metric("val/*").summary == "max"          # None leaves it unchanged
    for i, loss in enumerate((3.0, 1.0, float("nan"), 2.0)):
        r.log({"loss": loss, "val/acc": i, "acc": i, "first": i + 10, "noise": i, "x": i})
    assert dict(r.summary) == {"loss": 1.0, "val/acc": 3, "acc": 1.5, "first": 10, "x": 3}
    r.summary["loss"] = 0.0
    r.log({"loss": 1.5})
    assert r.summary["loss"] == 1.0                   # the aggregate of the logged values
    with pytest.raises(ValueError, match="one of"):
        r.define_metric("loss", summary="min,max")
    with pytest.raises(ValueError):
        r.define_metric("")
    with pytest.raises(ValueError):
        r.define_metric("k" * 257)
    r.define_metric("loss", summary="MIN", goal="minimize", hidden=False)   # case, wandb kwargs
    r.finish()
    dms = [(e.define_metric.name, e.define_metric.summary, e.define_metric.step_metric)
           for e in rs.events("dm", "define_metric")]
    assert dms == [("loss", "min", ""), ("val/*", "max", "epoch"), ("acc", "mean", ""),
                   ("first", "first", ""), ("noise", "none", ""), ("val/*", "", ""),
                   ("loss", "min", "")]


# ------------------------------------------------------------------------------ resume


def _view(run_id: str, **kw) -> query_pb2.RunView:
    return query_pb2.RunView(entity=ENTITY, project="Uncategorized", run_id=run_id,
                             state=kw.pop("state", "finished"), **kw)


def test_resume_continues_seq_step_config_and_summary(rs):
    rs.query.views["res-1"] = _view("res-1", last_seq=7, last_step=41,
                                    config={"lr": "0.1", "arch/layers": "4"},
                                    summary={"loss": 0.25}, summary_other={"phase": '"eval"'})
    t0 = time.time_ns() // 1000
    r = runstream.init(id="res-1", resume="allow", config={"lr": 0.2}, settings=FAST)
    assert r.resumed and r.step == 42
    assert r.config.as_dict() == {"lr": 0.2, "arch": {"layers": 4}}
    assert dict(r.summary) == {"loss": 0.25, "phase": "eval"}
    r.log({"loss": 0.5})
    r.finish()
    evs = rs.events("res-1")
    assert kinds(evs) == ["run_start", "log", "finish"]
    assert evs[0].run_start.resumed and evs[0].seq >= t0 > 7
    assert [e.seq for e in evs] == [evs[0].seq + i for i in range(3)]
    assert evs[1].log.step == 42
    assert {k: v.json for k, v in evs[0].run_start.config.items()} == {"lr": "0.2"}


def test_resume_uses_the_stored_seq_when_it_is_ahead_of_the_clock(rs):
    far = time.time_ns() // 1000 + 10**12
    rs.query.views["res-far"] = _view("res-far", last_seq=far, last_step=-1)
    r = runstream.init(id="res-far", resume=True, settings=FAST)
    assert r.step == 0
    r.finish()
    assert rs.events("res-far")[0].seq == far + 1


def test_resume_must_and_never(rs):
    with pytest.raises(runstream.ResumeError, match="does not exist"):
        runstream.init(id="res-missing", resume="must", settings=FAST)
    assert runstream.run is None and rs.events("res-missing") == []
    rs.query.views["res-there"] = _view("res-there", last_seq=3, last_step=2)
    with pytest.raises(runstream.ResumeError, match="already exists"):
        runstream.init(id="res-there", resume="never", settings=FAST)
    r = runstream.init(id="res-new", resume="never", settings=FAST)
    assert not r.resumed and r.step == 0
    r.finish()
    assert rs.events("res-new")[0].seq == 1 and not rs.events("res-new")[0].run_start.resumed
    r = runstream.init(id="res-there", resume="must", settings=FAST)
    assert r.resumed and r.step == 3


def test_an_existing_id_without_resume_is_resumed_with_a_warning(rs, caplog):
    rs.query.views["res-implicit"] = _view("res-implicit", last_seq=5, last_step=9)
    with caplog.at_level(logging.WARNING, "runstream"):
        r = runstream.init(id="res-implicit", settings=FAST)
    assert r.resumed and r.step == 10 and "already exists; resuming" in caplog.text
    r = runstream.init(id="res-fresh", reinit="create_new", settings=FAST)
    assert not r.resumed and rs.query.calls.count("res-fresh") == 1


def _blackhole() -> socket.socket:
    """A TCP port that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_resume_when_the_server_cannot_be_asked(rs, caplog):
    hole = _blackhole()
    try:
        slow = dict(FAST, query_url=f"127.0.0.1:{hole.getsockname()[1]}")
        t0 = time.monotonic()
        clock = time.time_ns() // 1000
        with caplog.at_level(logging.WARNING, "runstream"):
            r = runstream.init(id="res-blind", resume="allow", settings=slow)
        assert time.monotonic() - t0 < 2.0                # init stays within 2 s
        assert r.resumed and r.step == 0 and "resuming it blind" in caplog.text
        r.log({"x": 1})
        r.finish()
        evs = rs.events("res-blind")
        assert evs[0].run_start.resumed and evs[0].seq >= clock
    finally:
        hole.close()
    dead = dict(FAST, query_url=_dead_address())
    r = runstream.init(id="res-dead-never", resume="never", settings=dead)
    assert not r.resumed
    r.finish()
    assert rs.events("res-dead-never")[0].seq == 1
    r = runstream.init(id="res-dead-must", resume="must", settings=dead)
    assert r.resumed


# ---------------------------------------------------------------------------- metadata


def test_metadata_git_and_gpus(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "trunk", str(repo)], check=True)
    (repo / "f.txt").write_text("one")
    subprocess.run([*git, "-C", str(repo), "add", "f.txt"], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "c"], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin",
                    "https://user:secret-token@example.com/team/repo.git"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA A100-SXM4-80GB, 81920'\necho 'Tesla T4, 15360'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(repo / ".")
    md = capture()
    assert md.cwd == str(repo) and md.git_root == str(repo)
    assert (md.git_commit, md.git_branch, md.git_dirty) == (head, "trunk", False)
    assert md.git_remote == "https://example.com/team/repo.git"
    assert list(md.gpus) == ["NVIDIA A100-SXM4-80GB", "Tesla T4"]
    assert [(g.name, g.memory_bytes) for g in md.gpu_info] == [
        ("NVIDIA A100-SXM4-80GB", 81920 * 2**20), ("Tesla T4", 15360 * 2**20)]
    (repo / "f.txt").write_text("two")
    assert capture().git_dirty is True
    sub = repo / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert capture().git_root == str(repo)
    monkeypatch.chdir(tmp_path)                       # not a repository
    md = capture()
    assert (md.git_commit, md.git_branch, md.git_remote, md.git_dirty) == ("", "", "", False)
    monkeypatch.setenv("PATH", "/nonexistent")         # neither git nor nvidia-smi
    md = capture()
    assert md.hostname and list(md.gpus) == [] and md.git_commit == ""


def test_metadata_waits_for_no_subprocess_longer_than_its_deadline(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nsleep 30\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    t0 = time.monotonic()
    md = capture(timeout=0.3)
    assert time.monotonic() - t0 < 2 and list(md.gpus) == []


def test_strip_credentials_and_unflatten():
    assert strip_credentials("https://u:p@h.com/x.git") == "https://h.com/x.git"
    assert strip_credentials("ssh://git@h.com/x.git") == "ssh://h.com/x.git"
    assert strip_credentials("git@github.com:o/r.git") == "git@github.com:o/r.git"
    assert unflatten({"a/b": 1, "a/c/d": 2, "e": 3, "/x": 4, "e/f": 5}) == {
        "a": {"b": 1, "c": {"d": 2}}, "e": 3, "/x": 4, "e/f": 5}
