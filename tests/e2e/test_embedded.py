"""The embedded deployment end to end: real client processes → one `runstream server`."""

from __future__ import annotations

import math

import pytest

from .conftest import ENTITY
from .procs import expected_value, run_client

pytestmark = [pytest.mark.e2e]

STEPS, METRICS = 1000, 10
CLIENT_ENV = {"RUNSTREAM_ENTITY": ENTITY}


def check_project(q, project: str, runs: dict[str, int]) -> None:
    """Every point, summary, config and state of ``runs`` (run id → exit code), both APIs."""
    states = {rid: ("finished" if code == 0 else "failed") for rid, code in runs.items()}
    q.wait_states(project, states)
    for rid, code in runs.items():
        def complete(rid=rid):
            h = q.history(project, rid)
            return h if all(len(h.get(f"m{k}", ()).step if f"m{k}" in h else ()) == STEPS
                            for k in range(METRICS)) else None
        hist = q.wait_for(complete, 60, f"complete history of {rid}")
        assert set(hist) == {f"m{k}" for k in range(METRICS)}
        for k in range(METRICS):
            s = hist[f"m{k}"]
            assert list(s.step) == list(range(STEPS))
            assert list(s.value) == [expected_value(st, k) for st in range(STEPS)]
            assert s.total_points == STEPS and not s.downsampled
        run = q.run(project, rid)
        assert run.state == states[rid]
        assert run.exit_code == code
        assert run.name == f"name-{rid}"
        assert list(run.tags) == ["e2e"]
        for k in range(METRICS):
            assert run.summary[f"m{k}"] == expected_value(STEPS - 1, k)
        assert run.summary_other["phase"] == '"train"'
        assert run.config["lr"] == "0.001"
        assert run.config["arch/layers"] == "4"
        assert run.config["arch/kind"] == '"mlp"'
        assert run.end_time_us >= run.start_time_us > 0
        # The same through HTTP/JSON.
        j = q.http_get(f"/api/v1/runs/{ENTITY}/{project}/{rid}")
        assert j["state"] == states[rid] and j["exit_code"] == code
        assert j["summary"]["m0"] == expected_value(STEPS - 1, 0)
        hj = q.http_get(f"/api/v1/runs/{ENTITY}/{project}/{rid}/history?keys=m3")
        (series,) = hj["series"]
        assert series["key"] == "m3" and series["value"] == [expected_value(s, 3)
                                                            for s in range(STEPS)]
    listed = q.http_get(f"/api/v1/projects/{ENTITY}/{project}/runs?limit=1000")
    assert listed["total"] == len(runs)
    assert {r["run_id"]: r["state"] for r in listed["runs"]} == states


def test_three_runs_end_to_end(embedded):
    srv, q = embedded
    procs = {rid: run_client(srv.grpc, run_id=rid, project="spine", steps=STEPS,
                             metrics=METRICS, exit_code=code, env=CLIENT_ENV, wait=False)
             for rid, code in (("run-a", 0), ("run-b", 0), ("run-c", 3))}
    for rid, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == (3 if rid == "run-c" else 0), out
    check_project(q, "spine", {"run-a": 0, "run-b": 0, "run-c": 3})
    # Downsampling in the database: at most 100 buckets, min <= last <= max.
    h = q.history("spine", "run-a", keys=["m0"], buckets=100)["m0"]
    assert h.downsampled and 0 < len(h.step) <= 100 and h.total_points == STEPS
    assert all(lo <= v <= hi for lo, v, hi in zip(h.min, h.value, h.max, strict=True))
    assert not any(math.isnan(v) for v in h.value)
    projects = q.http_get("/api/v1/projects")["projects"]
    assert {"entity": ENTITY, "name": "spine"}.items() <= next(
        p for p in projects if p["name"] == "spine").items()
