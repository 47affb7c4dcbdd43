"""The distributed deployment over the real Kafka broker.

Separate processes: ``runstream gateway``, ``runstream reaper``, and one process holding
chDB that runs the projector and the api (chDB allows one process per data directory).
"""

from __future__ import annotations

import signal
import subprocess
import time
import uuid

import pytest

from .conftest import ENTITY
from .procs import BIN, QueryClient, ServerProcess, free_port, run_client
from .test_embedded import METRICS, STEPS, check_project

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]
CLIENT_ENV = {"RUNSTREAM_ENTITY": ENTITY}
TIMEOUT_S = 3


class Cluster:
    def __init__(self, bootstrap: str, tmp) -> None:
        self.topic = f"runstream-e2e-{uuid.uuid4().hex[:10]}"
        self.log_args = ["--kafka", bootstrap, "--topic", self.topic, "--partitions", "4"]
        self.tmp = tmp
        self.gateway_port = free_port()
        self.data_dir = tmp / "projector-data"
        self.store = ServerProcess(
            ["server", "--roles", "projector,api", *self.log_args, "--data-dir",
             str(self.data_dir), "--grpc-port", "0", "--http-port", "0"],
            log_path=tmp / "projector-api.log")
        self.gateway = ServerProcess(
            ["gateway", *self.log_args, "--grpc-port", str(self.gateway_port)],
            log_path=tmp / "gateway.log")
        self.reaper = ServerProcess(
            ["reaper", *self.log_args, "--heartbeat-timeout", str(TIMEOUT_S),
             "--reaper-tick", "0.2"], log_path=tmp / "reaper.log")
        self.q: QueryClient | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    def start(self) -> Cluster:
        for p in (self.store, self.gateway, self.reaper):
            p.start()
        self.q = QueryClient(self.store.grpc, self.store.http, ENTITY)
        return self

    def restart_store(self) -> None:
        self.q.close()
        self.store.start()
        self.q = QueryClient(self.store.grpc, self.store.http, ENTITY)

    def stop(self) -> None:
        if self.q:
            self.q.close()
        for p in (self.gateway, self.reaper, self.store):
            try:
                p.stop()
            finally:
                p.kill()


@pytest.fixture(scope="module")
def cluster(kafka_bootstrap, tmp_path_factory):
    c = Cluster(kafka_bootstrap, tmp_path_factory.mktemp("cluster")).start()
    try:
        yield c
    finally:
        c.stop()


def test_three_runs_through_kafka(cluster):
    procs = {rid: run_client(cluster.url, run_id=rid, project="kafka-spine", steps=STEPS,
                             metrics=METRICS, exit_code=code, env=CLIENT_ENV, wait=False)
             for rid, code in (("k-a", 0), ("k-b", 0), ("k-c", 2))}
    for rid, p in procs.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == (2 if rid == "k-c" else 0), out
    check_project(cluster.q, "kafka-spine", {"k-a": 0, "k-b": 0, "k-c": 2})


def test_gateway_kill_9_mid_stream(cluster):
    client = run_client(cluster.url, run_id="k-resend", project="kafka-kill", steps=STEPS,
                        metrics=METRICS, env=CLIENT_ENV, wait=False,
                        extra=["--sleep-per-step", "0.002"])
    time.sleep(1.0)
    cluster.gateway.kill()
    time.sleep(0.5)
    cluster.gateway.start()   # same port
    out, _ = client.communicate(timeout=120)
    assert client.returncode == 0, out
    check_project(cluster.q, "kafka-kill", {"k-resend": 0})


def _hanging_client(cluster, run_id: str, project: str):
    p = run_client(cluster.url, run_id=run_id, project=project, steps=5, metrics=2,
                   env={**CLIENT_ENV, "RUNSTREAM_HEARTBEAT_INTERVAL": "0.5"}, wait=False,
                   extra=["--hang"])
    cluster.q.wait_states(project, {run_id: "running"}, timeout=60)
    return p


def _backlog_is_not_silence(cluster, stalled: ServerProcess, run_id: str, project: str,
                            settle_s: float) -> None:
    """Stop ``stalled`` longer than the timeout while the run heartbeats: no false crash;
    after the client dies the true crash is still found."""
    p = _hanging_client(cluster, run_id, project)
    try:
        stalled.signal(signal.SIGSTOP)
        time.sleep(TIMEOUT_S + 2)
        stalled.signal(signal.SIGCONT)
        time.sleep(settle_s)
        run = cluster.q.run(project, run_id)
        assert run.state == "running" and run.state_cause == "started", run.state_cause
    finally:
        stalled.signal(signal.SIGCONT)
        p.kill()
        p.wait(10)
    cluster.q.wait_states(project, {run_id: "crashed"}, timeout=TIMEOUT_S + 2)


def test_projector_backlog_is_not_silence(cluster):
    # Events queue up in Kafka while the projector (+ api) process is stopped.
    _backlog_is_not_silence(cluster, cluster.store, "k-backlog", "kafka-backlog", 1.5)


def test_reaper_backlog_is_not_silence(cluster):
    # The reaper falls behind the heartbeats while it is stopped.
    _backlog_is_not_silence(cluster, cluster.reaper, "k-slow-reaper", "kafka-reaper", 2.0)


def test_stop_reaches_the_script_through_the_kafka_control_topic(cluster):
    """Api (api process) → control topic → the gateway process → the script, within 2 s."""
    import runstream

    from .test_api_and_stop import STOP_LATENCY_S, Script

    s = Script(cluster.url, "k-stop", "kafka-stop", "raise", sleep_per_step=5.0)
    api = runstream.Api(url=cluster.store.grpc)
    try:
        s.wait_line("READY", 60)
        cluster.q.wait_states("kafka-stop", {"k-stop": "running"}, timeout=60)
        t_stop = time.time()
        api.run(f"{ENTITY}/kafka-stop/k-stop").stop(requested_by="kafka-tester")
        got = s.stamp("INTERRUPTED", 10)
        assert got - t_stop < STOP_LATENCY_S, f"stop took {got - t_stop:.2f}s"
        assert s.wait(30) != 0
    finally:
        s.kill()
        api.close()
    cluster.q.wait_states("kafka-stop", {"k-stop": "killed"}, timeout=30)
    run = cluster.q.run("kafka-stop", "k-stop")
    assert run.state_cause.startswith("stopped by kafka-tester at ") and run.exit_code == 255


def test_replay_from_kafka_gives_identical_answers(cluster):
    projects = ["kafka-spine", "kafka-kill", "kafka-backlog"]
    before = {p: cluster.q.snapshot(p) for p in projects}
    assert all(before.values())
    cluster.store.stop()
    out = subprocess.run([str(BIN / "runstream"), "replay", *cluster.log_args, "--data-dir",
                          str(cluster.data_dir)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    # Read the rebuilt tables through the api role alone (`runstream api`).
    api = ServerProcess(["api", "--data-dir", str(cluster.data_dir), "--grpc-port", "0",
                         "--http-port", "0"], log_path=cluster.tmp / "api.log").start()
    q = QueryClient(api.grpc, api.http, ENTITY)
    try:
        assert {p: q.snapshot(p) for p in projects} == before
    finally:
        q.close()
        api.stop()
    cluster.restart_store()
    assert {p: cluster.q.snapshot(p) for p in projects} == before
