"""``runstream.Api`` and stopping a run, end to end against one embedded server.

Stop: the test calls ``Api().run(path).stop()`` while tests/e2e/stop_script.py logs; the
script prints the time it got KeyboardInterrupt (or its stop_fn was called), which must
be within 2 s; the run ends ``killed`` with the cause; a script that swallows the
interrupt is finished and SIGTERMed after the grace period.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import runstream
from runstream import errors
from runstream.v1 import events_pb2

from .conftest import ENTITY, embedded_args
from .procs import QueryClient, ServerProcess, http, send_events

pytestmark = [pytest.mark.e2e]

STOP_SCRIPT = Path(__file__).with_name("stop_script.py")
STOP_LATENCY_S = 2.0
T0_US = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One embedded server for the module (the api tests build on separate projects)."""
    tmp = tmp_path_factory.mktemp("api")
    srv = ServerProcess(embedded_args(tmp / "data", "--heartbeat-timeout", "3",
                                      "--reaper-tick", "0.2"),
                        log_path=tmp / "server.log").start()
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    api = runstream.Api(url=srv.grpc)
    try:
        yield srv, q, api
    finally:
        api.close()
        q.close()
        srv.stop()


# -- scripts that get stopped -------------------------------------------------------

class Script:
    """tests/e2e/stop_script.py as a child process; its output lines with arrival times."""

    def __init__(self, url: str, run_id: str, project: str, mode: str,
                 sleep_per_step: float = 0.05, env: dict | None = None) -> None:
        cmd = [sys.executable, str(STOP_SCRIPT), "--run-id", run_id, "--project", project,
               "--mode", mode, "--sleep-per-step", str(sleep_per_step)]
        # Heartbeats well inside the servers' 3 s crash timeout: long sleeps are not silence.
        e = {**os.environ, "RUNSTREAM_URL": url, "RUNSTREAM_ENTITY": ENTITY,
             "RUNSTREAM_HEARTBEAT_INTERVAL": "0.5", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line within {timeout}s:\n{''.join(self.output)}")

    def stamp(self, prefix: str, timeout: float) -> float:
        return float(self.wait_line(prefix, timeout).split()[1])

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"script still running:\n{''.join(self.output)}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_script(srv, q, run_id: str, project: str, mode: str, **kw) -> Script:
    s = Script(srv.grpc, run_id, project, mode, **kw)
    s.wait_line("READY", 60)
    q.wait_states(project, {run_id: "running"}, timeout=30)
    return s


def wait_run(q, project: str, run_id: str, state: str, timeout: float = 30):
    return q.wait_for(lambda: (r := q.run(project, run_id)).state == state and r,
                      timeout, f"{run_id} {state}")


def stop_and_check_latency(api, s: Script, path: str, prefix: str) -> float:
    t_stop = time.time()
    api.run(path).stop(requested_by="tester")
    got = s.stamp(prefix, 10)
    assert got - t_stop < STOP_LATENCY_S, f"stop reached the script after {got - t_stop:.2f}s"
    return t_stop


def test_stop_raises_keyboard_interrupt_within_2s_and_the_run_ends_killed(server):
    srv, q, api = server
    # 5 s sleeps between steps: the interrupt must cut a blocking call short.
    s = start_script(srv, q, "stop-raise", "stops", "raise", sleep_per_step=5.0)
    try:
        stop_and_check_latency(api, s, f"{ENTITY}/stops/stop-raise", "INTERRUPTED")
        assert s.wait(30) != 0
    finally:
        s.kill()
    run = wait_run(q, "stops", "stop-raise", "killed")
    assert run.state_cause.startswith("stopped by tester at "), run.state_cause
    assert run.state_cause.endswith(", exit code 255") and run.exit_code == 255
    r = api.run(f"{ENTITY}/stops/stop-raise")
    assert r.state == "killed" and r.ended_at is not None


def test_stop_fn_is_called_instead_and_a_clean_exit_is_still_killed(server):
    srv, q, api = server
    s = start_script(srv, q, "stop-fn", "stops", "stop_fn")
    try:
        stop_and_check_latency(api, s, f"{ENTITY}/stops/stop-fn", "STOP_FN")
        assert s.wait(30) == 0
        assert any("STOPPED GRACEFULLY" in line for line in s.output)
    finally:
        s.kill()
    run = wait_run(q, "stops", "stop-fn", "killed")
    assert run.state_cause.startswith("stopped by tester at ") and run.exit_code == 0


def test_ignored_stop_is_escalated_to_sigterm_after_the_grace_period(server):
    srv, q, api = server
    grace = 1.5
    s = start_script(srv, q, "stop-ignore", "stops", "ignore",
                     env={"RUNSTREAM_STOP_GRACE": str(grace)})
    try:
        t_stop = stop_and_check_latency(api, s, f"{ENTITY}/stops/stop-ignore", "INTERRUPTED")
        code = s.wait(30)
        t_end = time.time()
    finally:
        s.kill()
    assert code == -signal.SIGTERM, "".join(s.output)
    assert t_end - t_stop >= grace
    assert any("sending SIGTERM" in line for line in s.output)
    run = wait_run(q, "stops", "stop-ignore", "killed")
    assert run.exit_code == 143 and run.state_cause.startswith("stopped by tester at ")


def test_stop_errors(server):
    srv, q, api = server
    send_events(srv.grpc, run_events("done-1", name="done", exit_code=0), batch=50)
    wait_run(q, "stop-errors", "done-1", "finished")
    with pytest.raises(errors.Conflict, match="only a running run can be stopped"):
        api.run(f"{ENTITY}/stop-errors/done-1").stop()
    with pytest.raises(errors.NotFound):
        api.run(f"{ENTITY}/stop-errors/nope")
    code, body = http(srv, "POST", "/api/v1/runs/e2e/stop-errors/done-1/stop")
    assert code == 409 and body["error"]["code"] == "FAILED_PRECONDITION"
    code, body = http(srv, "POST", "/api/v1/runs/e2e/stop-errors/nope/stop")
    assert code == 404


# -- the read API -------------------------------------------------------------------

def run_events(run_id: str, *, project: str = "stop-errors", name: str = "",
               tags=(), config: dict | None = None, steps: int = 0, metrics: int = 1,
               exit_code: int | None = None, start_us: int = T0_US, notes: str = "",
               loss: float | None = None) -> list:
    """A run's events as a client makes them (one seq per event)."""
    evs = []

    def ev(seq):
        return events_pb2.Event(run_id=run_id, project=project, entity=ENTITY, seq=seq,
                                client_time_us=start_us + seq * 1000)

    e = ev(1)
    e.run_start.name = name or run_id
    e.run_start.notes = notes
    e.run_start.tags.extend(tags)
    e.run_start.start_time_us = start_us
    e.run_start.metadata.hostname = "host-1"
    e.run_start.metadata.python_version = "3.11.7"
    for k, v in (config or {}).items():
        e.run_start.config[k].json = json.dumps(v)
    evs.append(e)
    for step in range(steps):
        e = ev(len(evs) + 1)
        e.log.step = step
        for k in range(metrics):
            e.log.numbers[f"m{k}"] = step * 10.0 + k
        evs.append(e)
    if loss is not None:
        e = ev(len(evs) + 1)
        e.log.step = steps
        e.log.numbers["loss"] = loss
        evs.append(e)
    if exit_code is not None:
        e = ev(len(evs) + 1)
        e.finish.exit_code = exit_code
        evs.append(e)
    return evs


# (run id, name, tags, lr, loss, exit code or None for running)
LISTED = [
    ("r0", "alpha", ["base"], 0.1, 0.9, 0),
    ("r1", "beta", ["base", "x"], 0.01, 0.5, 0),
    ("r2", "gamma", ["x"], 0.1, 0.7, 1),
    ("r3", "delta", [], 0.001, None, None),
    ("r4", "alpha-2", ["base"], 0.1, 0.2, 0),
    ("r5", "epsilon", ["x"], 0.01, 0.3, None),
    ("r6", "zeta", ["base"], 0.001, 0.6, 0),
]


@pytest.fixture(scope="module")
def listed(server):
    srv, q, api = server
    events = []
    for i, (rid, name, tags, lr, loss, code) in enumerate(LISTED):
        events += run_events(rid, project="listed", name=name, tags=tags,
                             config={"lr": lr, "arch": "mlp"}, loss=loss, exit_code=code,
                             start_us=T0_US + i * 1_000_000)
    send_events(srv.grpc, events, batch=7)
    q.wait_for(lambda: len(q.runs("listed")) == len(LISTED), 30, "listed runs")
    return api


def ids(runs) -> list[str]:
    return [r.id for r in runs]


def test_runs_len_iteration_and_paging(listed):
    api = listed
    runs = api.runs(f"{ENTITY}/listed", per_page=3)
    assert len(runs) == 7 and runs.pages_fetched == 1
    assert ids(runs) == ["r6", "r5", "r4", "r3", "r2", "r1", "r0"]   # newest first
    assert runs.pages_fetched == 3
    assert ids(runs) == ids(runs)                                   # cached, no refetch
    assert runs.pages_fetched == 3
    again = api.runs(f"{ENTITY}/listed", order="+created_at", per_page=2)
    assert again[5].id == "r5" and again[-1].id == "r6" and ids(again[1:3]) == ["r1", "r2"]
    with pytest.raises(IndexError):
        again[7]
    # "project" alone uses RUNSTREAM_ENTITY.
    os.environ["RUNSTREAM_ENTITY"] = ENTITY
    try:
        assert len(runstream.Api(url=api.url).runs("listed")) == 7
    finally:
        del os.environ["RUNSTREAM_ENTITY"]
    assert len(api.runs(f"{ENTITY}/empty-project")) == 0
    assert list(api.runs(f"{ENTITY}/empty-project")) == []


def test_runs_filters(listed):
    api = listed
    path = f"{ENTITY}/listed"
    assert set(ids(api.runs(path, filters={"state": "running"}))) == {"r3", "r5"}
    assert set(ids(api.runs(path, filters={"state": ["failed", "running"]}))) == {"r2", "r3",
                                                                                   "r5"}
    assert set(ids(api.runs(path, filters={"tags": ["base", "x"]}))) == {"r1"}
    assert set(ids(api.runs(path, filters={"tags": "x"}))) == {"r1", "r2", "r5"}
    assert set(ids(api.runs(path, filters={"config.lr": 0.1}))) == {"r0", "r2", "r4"}
    assert set(ids(api.runs(path, filters={"name": "ALPHA"}))) == {"r0", "r4"}
    both = api.runs(path, filters={"config.lr": 0.1, "state": "finished"})
    assert len(both) == 2 and set(ids(both)) == {"r0", "r4"}
    with pytest.raises(errors.InvalidInput):
        api.runs(path, filters={"colour": "red"})


def test_runs_order(listed):
    api = listed
    path = f"{ENTITY}/listed"
    assert ids(api.runs(path, order="+summary.loss")) == ["r4", "r5", "r1", "r6", "r2", "r0",
                                                          "r3"]
    assert ids(api.runs(path, order="-summary_metrics.loss"))[:2] == ["r0", "r2"]
    assert ids(api.runs(path, order="name"))[:3] == ["r0", "r4", "r1"]
    assert ids(api.runs(path, order="-config.lr", per_page=1))[:3] == ["r0", "r2", "r4"]
    with pytest.raises(errors.InvalidInput):
        api.runs(path, order="-loss")


def test_run_fields_history_and_scan(server):
    srv, q, api = server
    steps = 3000
    send_events(srv.grpc, run_events("hist", project="hist", name="the run", tags=["t1"],
                                     config={"lr": 0.5, "opt": {"name": "adam"}},
                                     notes="some notes", steps=steps, metrics=2,
                                     exit_code=0, start_us=T0_US), batch=500)
    wait_run(q, "hist", "hist", "finished")
    r = api.run(f"{ENTITY}/hist/hist")
    assert (r.id, r.name, r.state, r.notes, r.tags) == ("hist", "the run", "finished",
                                                        "some notes", ["t1"])
    assert r.config == {"lr": 0.5, "opt": {"name": "adam"}}
    assert r.summary == {"m0": (steps - 1) * 10.0, "m1": (steps - 1) * 10.0 + 1}
    assert r.metadata["hostname"] == "host-1" and r.metadata["python_version"] == "3.11.7"
    assert isinstance(r.created_at, datetime) and r.created_at.timestamp() == T0_US / 1e6
    assert r.duration > 0 and r.path == f"{ENTITY}/hist/hist"
    assert api.run("e2e/hist/runs/hist").id == "hist"       # web-URL form

    rows = r.history(samples=100)
    assert 0 < len(rows) <= 100
    assert rows[-1]["_step"] == steps - 1 and rows[-1]["m1"] == (steps - 1) * 10.0 + 1
    assert all(set(row) == {"_step", "_timestamp", "m0", "m1"} for row in rows)
    assert [row["_step"] for row in rows] == sorted(row["_step"] for row in rows)
    one = r.history(keys=["m1"], samples=10)
    assert len(one) <= 10 and all("m0" not in row for row in one)
    raw = r.history(keys=["m0"], samples=5000)
    assert len(raw) == steps and raw[7] == {"_step": 7, "_timestamp": raw[7]["_timestamp"],
                                            "m0": 70.0}

    scanned = list(r.scan_history(page_size=777))
    assert [row["_step"] for row in scanned] == list(range(steps))
    assert all(row["m0"] == row["_step"] * 10.0 and row["m1"] == row["_step"] * 10.0 + 1
               for row in scanned)
    small = list(r.scan_history(keys=["m1"], page_size=1, min_step=10, max_step=20))
    assert [row["_step"] for row in small] == list(range(10, 21))
    assert all(set(row) == {"_step", "_timestamp", "m1"} for row in small)
    assert list(r.scan_history(keys=["nope"])) == []


def test_update_then_read_back(server):
    srv, q, api = server
    send_events(srv.grpc, run_events("upd", project="upd", name="before", tags=["a"]))
    wait_run(q, "upd", "upd", "running")
    r = api.run(f"{ENTITY}/upd/upd")
    r.name = "after"
    r.notes = "new notes"
    r.tags.append("b")
    r.color = "#FF8800"
    r.hidden = True
    r.update()
    assert r.color == "#ff8800"
    got = q.wait_for(lambda: (v := api.run(f"{ENTITY}/upd/upd")).name == "after" and v,
                     5, "the update")
    assert (got.notes, got.tags, got.color, got.hidden, got.privacy) == (
        "new notes", ["a", "b"], "#ff8800", True, "private")
    r.update()                                   # nothing changed: no call
    bad = api.run(f"{ENTITY}/upd/upd")
    bad.color = "red"
    with pytest.raises(errors.InvalidInput, match="color"):
        bad.update()
    bad = api.run(f"{ENTITY}/upd/upd")
    bad.name = "  "
    with pytest.raises(errors.InvalidInput):
        bad.update()
    # The same over HTTP.
    code, body = http(srv, "PATCH", "/api/v1/runs/e2e/upd/upd",
                      {"privacy": "public", "tags": [], "name": "via http"})
    assert code == 202 and body["accepted"]["run_patch"]["name"] == "via http"
    q.wait_for(lambda: api.run("e2e/upd/upd").name == "via http", 5, "the HTTP update")
    v = api.run("e2e/upd/upd")
    assert v.privacy == "public" and v.tags == [] and v.notes == "new notes"
    for body, status in (({"color": 3}, 400), ({"bogus": 1}, 400), ({}, 400), ([], 400)):
        assert http(srv, "PATCH", "/api/v1/runs/e2e/upd/upd", body)[0] == status, body
    assert http(srv, "PATCH", "/api/v1/runs/e2e/upd/nope", {"name": "x"})[0] == 404


def test_delete_then_not_found_and_gone_from_runs(server):
    srv, q, api = server
    send_events(srv.grpc, run_events("del-1", project="del", exit_code=0)
                + run_events("del-2", project="del", exit_code=0))
    q.wait_for(lambda: len(api.runs(f"{ENTITY}/del")) == 2, 10, "two runs")
    api.run(f"{ENTITY}/del/del-1").delete()
    q.wait_for(lambda: ids(api.runs(f"{ENTITY}/del")) == ["del-2"], 5, "del-1 gone")
    with pytest.raises(errors.NotFound):
        api.run(f"{ENTITY}/del/del-1")
    code, _ = http(srv, "DELETE", "/api/v1/runs/e2e/del/del-2")
    assert code == 202
    q.wait_for(lambda: len(api.runs(f"{ENTITY}/del")) == 0, 5, "del-2 gone")
    assert http(srv, "DELETE", "/api/v1/runs/e2e/del/del-2")[0] == 404
    with pytest.raises(errors.NotFound):
        api.run(f"{ENTITY}/del/del-2").delete()


def test_unreachable_server_is_unavailable():
    from .procs import free_port
    with runstream.Api(url=f"127.0.0.1:{free_port()}", timeout=2) as api:
        with pytest.raises(errors.Unavailable):
            api.run("e/p/r")
