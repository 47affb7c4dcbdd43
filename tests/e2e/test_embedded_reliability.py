"""Embedded deployment: restart survival, duplicates, replay, and the reaper."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import runstream
from runstream_server.common.partitioning import partition_for

from .conftest import ENTITY, embedded_args
from .procs import BIN, QueryClient, ServerProcess, make_events, run_client, send_events
from .test_embedded import METRICS, STEPS, check_project

pytestmark = [pytest.mark.e2e]
CLIENT_ENV = {"RUNSTREAM_ENTITY": ENTITY}


def restart(srv: ServerProcess, q: QueryClient, how: str) -> tuple[ServerProcess, QueryClient]:
    """Stop (SIGTERM) or kill -9 the server and start it again on the same data dir."""
    if how == "kill":
        srv.kill()
    else:
        srv.stop()
    q.close()
    srv2 = ServerProcess(srv.args, log_path=srv.log_path).start()
    srv2.data_dir = srv.data_dir
    return srv2, QueryClient(srv2.grpc, srv2.http, ENTITY)


def replay(data_dir, *extra: str) -> str:
    out = subprocess.run([str(BIN / "runstream"), "replay", "--data-dir", str(data_dir), *extra],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_acked_data_survives_kill_9_of_the_server(embedded):
    srv, q = embedded
    run_client(srv.grpc, run_id="survivor", project="restart", steps=STEPS, metrics=METRICS,
               env=CLIENT_ENV)   # returns after finish() got every ack
    srv, q = restart(srv, q, "kill")   # no time for the projector to catch up first
    try:
        check_project(q, "restart", {"survivor": 0})
    finally:
        q.close()
        srv.stop()


def test_client_resends_across_a_server_kill_mid_stream(embedded):
    srv, q = embedded
    client = run_client(srv.grpc, run_id="resender", project="midstream", steps=STEPS,
                        metrics=METRICS, env=CLIENT_ENV, wait=False,
                        extra=["--sleep-per-step", "0.002"])
    time.sleep(1.0)
    srv.kill()
    time.sleep(0.5)
    # Same ports: the client's address does not change.
    port = srv.grpc.rsplit(":", 1)[1]
    hport = srv.http.rsplit(":", 1)[1]
    args = embedded_args(srv.data_dir, "--heartbeat-timeout", "3", "--reaper-tick", "0.2")
    args[args.index("--grpc-port") + 1] = port
    args[args.index("--http-port") + 1] = hport
    srv2 = ServerProcess(args, log_path=srv.log_path).start()
    q2 = QueryClient(srv2.grpc, srv2.http, ENTITY)
    try:
        out, _ = client.communicate(timeout=120)
        assert client.returncode == 0, out
        check_project(q2, "midstream", {"resender": 0})
    finally:
        q2.close()
        srv2.stop()


def test_duplicates_and_replays_leave_every_answer_identical(embedded):
    srv, q = embedded
    for rid, code in (("dup-a", 0), ("dup-b", 1)):
        run_client(srv.grpc, run_id=rid, project="dups", steps=300, metrics=METRICS,
                   exit_code=code, env=CLIENT_ENV)
    events = make_events("raw-1", "dups", ENTITY, steps=300, metrics=4)
    send_events(srv.grpc, events)
    q.wait_states("dups", {"dup-a": "finished", "dup-b": "failed", "raw-1": "finished"})
    before = q.snapshot("dups")
    assert len(before) == 3

    # 1. A client re-sends every event (a second stream after a lost ack).
    responses = send_events(srv.grpc, events)
    assert all(r.WhichOneof("kind") == "ack" for r in responses)
    # A sentinel run in the same partition shows when the re-sent events were projected.
    parts = 12
    target = partition_for("raw-1", parts)
    sentinel = next(f"sentinel-{i}" for i in range(10_000)
                    if partition_for(f"sentinel-{i}", parts) == target)
    send_events(srv.grpc, make_events(sentinel, "sentinel", ENTITY, steps=1, metrics=1))
    q.wait_states("sentinel", {sentinel: "finished"})
    assert q.snapshot("dups") == before

    # 2. The projector re-consumes the whole log from offset 0 over the existing tables.
    srv.stop()
    replay(srv.data_dir, "--keep-tables")
    srv, q = restart(srv, q, "stop")
    try:
        assert q.snapshot("dups") == before
        # 3. Drop every table and rebuild from the log.
        srv.stop()
        out = replay(srv.data_dir)
        assert "replayed" in out
        srv, q = restart(srv, q, "stop")
        assert q.snapshot("dups") == before
    finally:
        q.close()
        srv.stop()


def test_killed_client_is_crashed_within_timeout(embedded):
    # The reaper's case: the client dies with nothing left to tell the server (here: it
    # uploads from a thread, so the SIGKILL takes the uploader too; in production: the
    # machine is lost). With the default helper process, see test_client_durability.py.
    srv, q = embedded   # heartbeat timeout 3 s
    p = run_client(srv.grpc, run_id="victim", project="reaper", steps=20, metrics=2,
                   env={**CLIENT_ENV, "RUNSTREAM_HEARTBEAT_INTERVAL": "0.5",
                        "RUNSTREAM_UPLOADER": "thread"}, wait=False,
                   extra=["--hang"])
    q.wait_states("reaper", {"victim": "running"}, timeout=60)
    time.sleep(1.0)   # heartbeats keep it running meanwhile
    assert q.run("reaper", "victim").state == "running"
    p.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    p.wait(10)
    q.wait_states("reaper", {"victim": "crashed"}, timeout=3 + 2)
    elapsed = time.monotonic() - killed
    run = q.run("reaper", "victim")
    assert "detected by reaper" in run.state_cause
    assert elapsed <= 3 + 2, elapsed


def test_quiet_run_stays_running_then_crashes_then_revives(embedded):
    srv, q = embedded   # heartbeat timeout 3 s
    run = runstream.init(project="revive", id="lazarus", entity=ENTITY,
                         settings={"url": srv.grpc, "heartbeat_interval_s": 1000.0})
    try:
        run.log({"x": 1})
        q.wait_states("revive", {"lazarus": "running"}, timeout=30)
        time.sleep(1.5)   # silent for less than the timeout
        assert q.run("revive", "lazarus").state == "running"
        q.wait_states("revive", {"lazarus": "crashed"}, timeout=10)
        run.log({"x": 2})   # sends again
        q.wait_states("revive", {"lazarus": "running"}, timeout=30)
        assert "after crash" in q.run("revive", "lazarus").state_cause
    finally:
        assert run.finish(timeout=30)
    q.wait_states("revive", {"lazarus": "finished"}, timeout=30)
    assert runstream.run is None
