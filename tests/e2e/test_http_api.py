"""The workspace read API of a real embedded server: runs sent over gRPC ingest, read back
over HTTP (project search, run filters, choosers, many-run history, group bands, run
keys) once the projector wrote them; bad input → 400, unknown project → 404."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

import pytest
from runstream.v1 import events_pb2

from .conftest import ENTITY, embedded_args
from .procs import ServerProcess, auth_headers, send_events

pytestmark = [pytest.mark.e2e]

PROJECT = "Vision-E2E"
T0_US = 1_700_000_000_000_000
STEPS = 200
# run id → (user, optimizer, exit code, loss scale)
RUNS = {"a1": ("alice", "adam", 0, 1.0), "a2": ("alice", "sgd", 1, 2.0),
        "b1": ("bob", "adam", 0, 3.0)}


def loss(run_id: str, step: int) -> float:
    return RUNS[run_id][3] / (step + 1)


def events(run_id: str) -> list:
    user, opt, code, _ = RUNS[run_id]
    out = []

    def ev(**body):
        e = events_pb2.Event(run_id=run_id, project=PROJECT, entity=ENTITY, seq=len(out) + 1,
                             client_time_us=T0_US + (len(out) + 1) * 1000)
        ((name, msg),) = body.items()
        getattr(e, name).CopyFrom(msg)
        out.append(e)

    ev(run_start=events_pb2.RunStart(
        name=f"run-{run_id}", tags=["e2e"], metadata=events_pb2.RunMetadata(username=user),
        config={"opt": events_pb2.JsonValue(json=f'"{opt}"')}))
    for s in range(STEPS):
        ev(log=events_pb2.Log(step=s, numbers={"loss": loss(run_id, s), "acc": s / STEPS}))
    ev(finish=events_pb2.Finish(exit_code=code))
    return out


def get(srv, path: str, params=None) -> tuple[int, dict]:
    url = srv.http + path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=auth_headers()),
                                    timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An embedded server holding the three runs, projected."""
    tmp = tmp_path_factory.mktemp("http-api")
    srv = ServerProcess(embedded_args(tmp / "data"), log_path=tmp / "server.log").start()
    try:
        for run_id in RUNS:
            send_events(srv.grpc, events(run_id), batch=50)
        from .procs import QueryClient
        q = QueryClient(srv.grpc, srv.http, ENTITY)
        try:
            q.wait_for(lambda: len([r for r in q.runs(PROJECT) if r.end_time_us
                                    and r.last_step == STEPS - 1]) == len(RUNS),
                       60, "the runs projected")
        finally:
            q.close()
        yield srv
    finally:
        srv.stop()


def test_projects_runs_and_choosers(server):
    base = f"/api/v1/projects/{ENTITY}/{PROJECT}"
    status, body = get(server, "/api/v1/projects", {"q": "vision-e2"})
    assert status == 200 and [(p["name"], p["run_count"]) for p in body["projects"]] == [
        (PROJECT, 3)]

    def ids(params) -> list[str]:
        status, body = get(server, base + "/runs", params)
        assert status == 200, body
        return [r["run_id"] for r in body["runs"]]

    assert ids({"user": "alice", "sort": "name"}) == ["a1", "a2"]
    assert ids({"state": "finished", "config.opt": '"adam"'}) == ["a1", "b1"]
    assert ids({"summary.loss": "0.012..", "sort": "summary.loss"}) == ["b1"]  # 3/200
    assert ids({"name_regex": "-a[0-9]$", "sort": "user", "desc": "1"}) == ["a1", "a2"]
    assert ids({"hidden": "1"}) == []
    _, body = get(server, base + "/runs", {"sort": "user"})
    assert [(r["run_id"], r["user"]) for r in body["runs"]] == [
        ("a1", "alice"), ("a2", "alice"), ("b1", "bob")]
    assert all(r["duration_us"] == r["end_time_us"] - r["start_time_us"] for r in body["runs"])

    assert get(server, base + "/columns") == (200, {"config": ["opt"],
                                                    "summary": ["acc", "loss"],
                                                    "truncated": False})
    assert get(server, base + "/keys", {"prefix": "l"}) == (200, {"keys": ["loss"],
                                                                  "truncated": False})
    assert get(server, f"/api/v1/runs/{ENTITY}/{PROJECT}/a1/keys") == (
        200, {"numeric": ["acc", "loss"], "other": []})


def test_history_and_bands(server):
    base = f"/api/v1/projects/{ENTITY}/{PROJECT}"
    status, body = get(server, base + "/history", {"runs": "b1,a1,zz", "keys": "loss",
                                                   "buckets": "50"})
    assert status == 200
    assert [(s["run_id"], s["key"]) for s in body["series"]] == [("b1", "loss"),
                                                                  ("a1", "loss")]
    for s in body["series"]:
        # 200 steps in 50 buckets of 4: each bucket's last step and its value.
        assert s["downsampled"] and s["total_points"] == STEPS
        assert s["step"] == list(range(3, STEPS, 4))
        assert s["value"] == [loss(s["run_id"], st) for st in s["step"]]
        assert s["min"] == s["value"]                                   # loss falls
        assert s["max"] == [loss(s["run_id"], st - 3) for st in s["step"]]

    status, body = get(server, base + "/bands", {"key": "loss", "group_by": "config.opt",
                                                 "buckets": "20", "state": "finished"})
    assert status == 200 and body["buckets"] == 20
    adam, = body["groups"]                       # a2 (sgd) failed: filtered out
    assert adam["group"] == '"adam"' and adam["count"] == 2
    assert adam["step"] == list(range(9, STEPS, 10))
    for i, st in enumerate(adam["step"]):
        vals = [loss("a1", st), loss("b1", st)]
        mean = sum(vals) / 2
        assert adam["mean"][i] == pytest.approx(mean, rel=1e-12)
        assert adam["std"][i] == pytest.approx(
            math.sqrt(sum((v - mean) ** 2 for v in vals) / 2), rel=1e-9)
        assert (adam["min"][i], adam["max"][i]) == (min(vals), max(vals))


def test_bad_input_and_unknown_project(server):
    base = f"/api/v1/projects/{ENTITY}/{PROJECT}"
    for path, params, fragment in (
            ("/runs", {"limit": "5000"}, "0..1000"),
            ("/runs", {"name_regex": "(x"}, "RE2"),
            ("/runs", {"summary.loss": "low..high"}, "<lo>..<hi>"),
            ("/runs", {"stat": "running"}, "unknown query parameters"),
            ("/history", {"runs": "a1", "keys": "loss", "buckets": "100000"}, "1..10000"),
            ("/bands", {"key": "loss", "group_by": "opt"}, "config.<key>"),
            ("/columns", {"limit": "100000"}, "1..5000")):
        status, body = get(server, base + path, params)
        assert status == 400 and body["error"]["code"] == "INVALID_ARGUMENT", (path, body)
        assert fragment in body["error"]["message"]
    for path, params in (("/runs", None), ("/columns", None), ("/keys", None),
                         ("/history", {"runs": "a1", "keys": "loss"}),
                         ("/bands", {"key": "loss"})):
        status, body = get(server, f"/api/v1/projects/{ENTITY}/nope" + path, params)
        assert status == 404 and body["error"]["code"] == "NOT_FOUND", (path, body)
        assert f"{ENTITY}/nope" in body["error"]["message"]
