"""The client SDK: value conversion, request encoding, settings, and a run's life against
an in-process gateway (grpc.aio + IngestService + LocalEventLog). The journal is tested
in test_wal.py, the uploader in test_uploader.py."""

from __future__ import annotations

import math
import os
import socket
import time

import pytest
import runstream
from runstream import _state
from runstream._sender import encode_request
from runstream._settings import Settings
from runstream._values import as_number, flatten, split, to_json
from runstream._wal import WalReader, read_acked
from runstream.v1 import events_pb2, ingest_pb2

from tests.fixtures.gateway import BackgroundGateway

# ---------------------------------------------------------------------------- _values


def test_flatten_nested_dicts():
    data = {"a": {"b": 1, "c": {"d": 2}}, "e": 3, "empty": {}}
    assert flatten(data) == {"a/b": 1, "a/c/d": 2, "e": 3, "empty": {}}
    assert flatten({"x": {"y": 1}}, prefix="p/") == {"p/x/y": 1}


def test_as_number():
    assert as_number(1.5) == 1.5
    assert as_number(3) == 3.0 and isinstance(as_number(3), float)
    assert as_number(True) == 1.0 and as_number(False) == 0.0
    assert math.isnan(as_number(float("nan")))
    assert as_number(float("inf")) == math.inf and as_number(-math.inf) == -math.inf
    assert as_number(10**400) is None          # does not fit a float64
    for v in ("1", None, [1], {"a": 1}, b"1", 1j):
        assert as_number(v) is None


def test_as_number_numpy_scalars():
    np = pytest.importorskip("numpy")
    assert as_number(np.float32(1.5)) == 1.5
    assert as_number(np.float16(0.5)) == 0.5
    assert as_number(np.int64(-3)) == -3.0
    assert as_number(np.uint8(7)) == 7.0
    assert math.isnan(as_number(np.float64("nan")))
    assert as_number(np.bool_(True)) == 1.0 and as_number(np.bool_(False)) == 0.0
    assert as_number(np.array([1.0, 2.0])) is None


def test_split_numbers_and_json_others():
    nums, others = split({"loss": 0.25, "step_count": 4, "ok": True, "nan": float("nan"),
                          "inf": float("-inf"), "name": "x", "none": None, "list": [1, "a"],
                          "nested": {"lr": 0.1, "opt": "adam"}, "obj": object()})
    assert set(nums) == {"loss", "step_count", "ok", "nan", "inf", "nested/lr"}
    assert nums["loss"] == 0.25 and nums["step_count"] == 4.0 and nums["ok"] == 1.0
    assert math.isnan(nums["nan"]) and nums["inf"] == -math.inf and nums["nested/lr"] == 0.1
    assert others["name"] == '"x"' and others["none"] == "null"
    assert others["list"] == '[1, "a"]' and others["nested/opt"] == '"adam"'
    assert others["obj"].startswith('"<object object')
    assert to_json(float("nan")) == "NaN"


# ---------------------------------------------------------------------------- _sender


def test_encode_request_parses_as_ingest_request():
    events = []
    for seq in range(1, 4):
        e = events_pb2.Event(run_id="r", project="p", entity="e", seq=seq)
        e.log.numbers["x"] = seq * 1.5
        e.log.others["big"].json = "y" * 300       # a length needing a 2-byte varint
        events.append(e)
    raw = encode_request([e.SerializeToString() for e in events], 2**40 + 3)
    req = ingest_pb2.IngestRequest.FromString(raw)
    assert list(req.events) == events
    assert req.batch_id == 2**40 + 3
    assert ingest_pb2.IngestRequest.FromString(encode_request([], 1)).batch_id == 1


# ---------------------------------------------------------------------------- _settings


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RUNSTREAM_URL", "RUNSTREAM_ENTITY", "RUNSTREAM_HEARTBEAT_INTERVAL",
                 "RUNSTREAM_FINISH_TIMEOUT", "RUNSTREAM_UPLOADER", "RUNSTREAM_DRAIN_TIMEOUT",
                 "RUNSTREAM_MODE", "RUNSTREAM_METADATA_TIMEOUT", "RUNSTREAM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_settings_defaults(clean_env):
    assert Settings.from_env() == Settings()


def test_settings_from_env(clean_env):
    clean_env.setenv("RUNSTREAM_URL", "gw.example:7000")
    clean_env.setenv("RUNSTREAM_HEARTBEAT_INTERVAL", "2.5")
    s = Settings.from_env()
    assert s.url == "gw.example:7000" and s.heartbeat_interval_s == 2.5
    s = Settings.from_env(url="other:1", heartbeat_interval_s=None)
    assert s.url == "other:1" and s.heartbeat_interval_s == 2.5   # None leaves the env value
    clean_env.setenv("RUNSTREAM_URL", "")
    assert Settings.from_env().url == Settings.url
    clean_env.setenv("RUNSTREAM_METADATA_TIMEOUT", "7")
    assert Settings.from_env().metadata_timeout_s == 7.0


def test_settings_rejects_bad_values(clean_env):
    with pytest.raises(TypeError, match="unknown settings"):
        Settings.from_env(urll="x")
    clean_env.setenv("RUNSTREAM_HEARTBEAT_INTERVAL", "soon")
    with pytest.raises(ValueError, match="RUNSTREAM_HEARTBEAT_INTERVAL"):
        Settings.from_env()
    clean_env.delenv("RUNSTREAM_HEARTBEAT_INTERVAL")
    clean_env.setenv("RUNSTREAM_UPLOADER", "Thread")
    assert Settings.from_env().uploader == "thread"
    clean_env.setenv("RUNSTREAM_UPLOADER", "carrier-pigeon")
    with pytest.raises(ValueError, match="RUNSTREAM_UPLOADER"):
        Settings.from_env()


# ---------------------------------------------------------------------------- lifecycle


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    gw = BackgroundGateway(tmp_path_factory.mktemp("client-gw"))
    yield gw
    gw.close()


@pytest.fixture
def client(clean_env, tmp_path):
    """A fresh process-wide client state (sender, active run); exit hooks not installed;
    journals under tmp_path."""
    clean_env.setattr(_state, "install_hooks", lambda: None)
    clean_env.chdir(tmp_path)
    clean_env.delenv("RUNSTREAM_DIR", raising=False)
    _state.set_active(None)
    _state._sender = None
    _state._other_senders.clear()
    yield
    if _state.active() is not None:
        _state.set_active(None)
    for s in _state.all_senders():
        s.close(timeout=0.3)                # a dead-server sender may linger
    _state._sender = None
    _state._other_senders.clear()


def _settings(address: str) -> dict:
    return {"url": address, "heartbeat_interval_s": 3600.0, "linger_s": 0.005}


def test_run_lifecycle(gateway, client):
    r = runstream.init(project=None, id="life-1", config={"lr": 0.1},
                       settings=_settings(gateway.address))
    assert r.project == "Uncategorized" and r.id == "life-1"
    assert runstream.run is r
    assert runstream.init(project="other", id="life-2") is r
    n = 5
    for i in range(n):
        runstream.log({"loss": 1 / (i + 1), "acc": i, "flag": i % 2 == 0,
                       "opt": {"lr": 0.1 * i, "name": "adam"}, "note": f"s{i}"})
    assert r.finish() is True
    assert runstream.run is None

    r.log({"late": 1.0})                       # ignored, not an error
    assert r._journal._closed and not os.path.exists(r.journal_dir)  # all acked: removed
    with pytest.raises(RuntimeError):
        runstream.log({"late": 1.0})           # no active run any more

    events = gateway.events("life-1")
    kinds = [e.WhichOneof("body") for e in events]
    assert kinds == ["run_start"] + ["log"] * n + ["finish"]
    assert [e.seq for e in events] == list(range(1, n + 3))
    assert all((e.project, e.run_id) == ("Uncategorized", "life-1") for e in events)
    start = events[0].run_start
    assert start.name == "life-1" and start.config["lr"].json == "0.1"
    logs = [e.log for e in events[1:-1]]
    assert [lg.step for lg in logs] == list(range(n))
    for i, lg in enumerate(logs):
        assert dict(lg.numbers) == {"loss": 1 / (i + 1), "acc": float(i),
                                    "flag": float(i % 2 == 0), "opt/lr": 0.1 * i}
        assert {k: v.json for k, v in lg.others.items()} == {"opt/name": '"adam"',
                                                            "note": f'"s{i}"'}
    assert events[-1].finish.exit_code == 0
    assert r.finish() is True                  # a second finish does nothing
    assert len(gateway.events("life-1")) == n + 2


def test_runs_of_one_process_upload_to_their_own_servers(gateway, client, tmp_path):
    other = BackgroundGateway(tmp_path / "gw2", name="gw-2")
    try:
        a = runstream.init(id="url-a", settings=_settings(gateway.address))
        a.log({"x": 1.0})
        b = runstream.init(id="url-b", reinit="create_new", settings=_settings(other.address))
        b.log({"x": 2.0})
        assert a.finish() is True and b.finish() is True
        assert len(_state.all_senders()) == 2
        assert [e.WhichOneof("body") for e in gateway.events("url-a")] == \
            ["run_start", "log", "finish"]
        assert [e.WhichOneof("body") for e in other.events("url-b")] == \
            ["run_start", "log", "finish"]
        assert gateway.events("url-b") == [] and other.events("url-a") == []
    finally:
        other.close()


def test_exception_in_with_block_finishes_with_exit_code_1(gateway, client):
    with pytest.raises(ValueError), runstream.init(id="life-exc",
                                                   settings=_settings(gateway.address)) as run:
        run.log({"x": 1})
        raise ValueError("boom")
    assert runstream.run is None
    assert run.exit_code == 1
    events = gateway.events("life-exc")
    assert [e.WhichOneof("body") for e in events] == ["run_start", "log", "finish"]
    assert events[-1].finish.exit_code == 1


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("uploader", ["process", "thread"])
def test_dead_server_never_blocks_the_training_loop(client, uploader):
    t0 = time.perf_counter()
    r = runstream.init(id="dead-1", settings={**_settings(_dead_address()),
                                              "uploader": uploader, "drain_timeout_s": 1.0})
    assert time.perf_counter() - t0 < 2.0
    assert _state._sender.kind == uploader
    t0 = time.perf_counter()
    for i in range(1000):
        r.log({"loss": 1.0 / (i + 1), "text": "x"})
    assert time.perf_counter() - t0 < 1.0
    t0 = time.perf_counter()
    assert r.finish(timeout=0.5) is False
    assert time.perf_counter() - t0 < 2.0
    assert runstream.run is None
    # Kept in the journal for a later upload (the helper's drain, or runstream sync).
    reader = WalReader(r.journal_dir)
    got = []
    while batch := reader.read(got[-1][0] if got else 0):
        got += batch
    reader.close()
    assert [seq for seq, _ in got] == list(range(1, 1003)) and read_acked(r.journal_dir) == 0
