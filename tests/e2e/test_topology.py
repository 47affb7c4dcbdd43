"""The distributed topology as processes, with kills: every role scaled out on one Kafka
topic of 4 partitions and one store.

2 gateways, 2 projectors (one consumer group), 2 reapers (one consumer group) and 1 api,
each a ``runstream <role>`` process; the store is one process holding chDB and serving
ClickHouse's HTTP interface (``tests/fixtures/chdb_http.py``), so the projectors and the
api use the production code path (clickhouse-connect over HTTP). Gateways and reapers get
no store at all. Clients are spread over both gateways (each knows both, in a different
order). During the run one gateway, one projector and one reaper are killed (SIGKILL);
then two runs lose their process (and its in-process uploader), so only a reaper can
find them.

Asserted: both gateways carried clients before the kills; every run that finished has
every point exactly once and its final state;
each lost run is crashed, by exactly one ``Crashed`` event in the log, and no other run
got one; the surviving projector and reaper log that they took over all 4 partitions;
neither gateways nor reapers opened a store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from runstream.v1 import events_pb2

from tests.fixtures.chdb_http import ChdbHttpServer

from .conftest import ENTITY
from .procs import QueryClient, ServerProcess, free_port, run_client
from .test_embedded import METRICS, STEPS, check_project
from .test_metrics import scrape, value

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PARTITIONS = 4
PROJECT = "topology"
LOST_PROJECT = "topology-lost"   # check_project wants PROJECT to hold its runs only
RUNS = 8                      # finished normally, 4 per gateway first
LOST = 2                      # killed with their uploader: crashed by a reaper
# The reaper's timeout: above the client's heartbeat interval (0.5 s here) + 3 beacon
# intervals (1 s here) + a reconnect to the other gateway (backoff cap 2.5 s).
HEARTBEAT_TIMEOUT_S = 8.0
# Each client logs STEPS steps over about this long, so that every kill lands mid-run.
RUN_S = 20.0
# aiokafka's default session timeout (10 s) decides when a killed member's partitions
# move to the survivor; the settle times below leave room for it.
SESSION_TIMEOUT_S = 10.0


class Topology:
    def __init__(self, bootstrap: str, tmp) -> None:
        self.bootstrap = bootstrap
        self.topic = f"runstream-topology-{uuid.uuid4().hex[:10]}"
        self.log_args = ["--kafka", bootstrap, "--topic", self.topic,
                         "--partitions", str(PARTITIONS)]
        self.tmp = tmp
        self.store = ChdbHttpServer(tmp / "chdb", tmp / "chdb-http.log")
        self.ports = [free_port(), free_port()]
        info = {"RUNSTREAM_LOG_LEVEL": "INFO"}
        self.gateways = [self._proc(f"gateway-{i}", ["gateway", "--grpc-port", str(port),
                                                     "--beacon-interval", "1"])
                         for i, port in enumerate(self.ports)]
        self.reapers = [self._proc(f"reaper-{i}", [
            "reaper", "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT_S), "--reaper-tick", "0.2"],
            env=info) for i in range(2)]
        self.projectors: list[ServerProcess] = []
        self.api: ServerProcess | None = None
        self.q: QueryClient | None = None

    def _proc(self, name: str, args: list[str], env: dict | None = None) -> ServerProcess:
        p = ServerProcess([*args, *self.log_args, "--data-dir", str(self.tmp / name),
                           "--instance", f"{name}-{uuid.uuid4().hex[:6]}"],
                          log_path=self.tmp / f"{name}.log", env=env)
        p.name, p.instance = name, p.args[-1]
        return p

    def start(self) -> Topology:
        self.store.start()
        store = ["--clickhouse", self.store.url]
        self.projectors = [self._proc(f"projector-{i}", ["projector", *store],
                                      env={"RUNSTREAM_LOG_LEVEL": "INFO"}) for i in range(2)]
        self.api = self._proc("api", ["api", *store, "--grpc-port", "0", "--http-port", "0"])
        for p in (*self.gateways, *self.reapers, *self.projectors, self.api):
            p.start()
        self.q = QueryClient(self.api.grpc, self.api.http, ENTITY)
        return self

    def url(self, first: int) -> str:
        """Both gateways, ``first`` tried first (gRPC pick_first over the list)."""
        a, b = self.ports[first], self.ports[1 - first]
        return f"ipv4:127.0.0.1:{a},127.0.0.1:{b}"

    def stop(self) -> None:
        if self.q is not None:
            self.q.close()
        for p in (*self.gateways, *self.reapers, *self.projectors,
                  *([self.api] if self.api else [])):
            try:
                p.stop()
            finally:
                p.kill()
        self.store.stop()


@pytest.fixture
def topology(kafka_bootstrap, tmp_path):
    t = Topology(kafka_bootstrap, tmp_path)
    try:
        yield t.start()
    finally:
        t.stop()


async def _crashed_events(bootstrap: str, topic: str) -> Counter:
    """``Crashed`` events per run id in the whole topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, isolation_level="read_committed")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        counts: Counter = Counter()
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for msgs in batches.values():
                for m in msgs:
                    for ev in events_pb2.LogRecord.FromString(m.value).events:
                        if ev.WhichOneof("body") == "crashed":
                            counts[ev.run_id] += 1
        return counts
    finally:
        await consumer.stop()


def _open_streams(gateway: ServerProcess) -> float:
    """The gateway's ``runstream_gateway_open_streams`` (its /metrics)."""
    return value(scrape(gateway.metrics), "runstream_gateway_open_streams")


def _assignments(p: ServerProcess) -> list[list[int]]:
    """The partition sets ``p`` logged as assigned to it, in order."""
    out = []
    for line in p.log_path.read_text().splitlines():
        if " assigned partitions [" in line:
            inside = line.split(" assigned partitions [", 1)[1].split("]", 1)[0]
            out.append([int(x) for x in inside.split(",") if x.strip()])
    return out


def test_scaled_out_roles_survive_kills(topology):
    t = topology
    env = {"RUNSTREAM_ENTITY": ENTITY, "RUNSTREAM_HEARTBEAT_INTERVAL": "0.5",
           "RUNSTREAM_SYSTEM_METRICS": "0"}
    sleep = RUN_S / STEPS
    runs = {f"t{i}": run_client(t.url(i % 2), run_id=f"t{i}", project=PROJECT, steps=STEPS,
                                metrics=METRICS, env=env, wait=False,
                                extra=["--sleep-per-step", str(sleep)])
            for i in range(RUNS)}
    lost = {f"lost{i}": run_client(t.url(i % 2), run_id=f"lost{i}", project=LOST_PROJECT, steps=5,
                                   metrics=2, env={**env, "RUNSTREAM_UPLOADER": "thread"},
                                   wait=False, extra=["--hang"])
            for i in range(LOST)}
    try:
        t.q.wait_states(PROJECT, dict.fromkeys(runs, "running"), timeout=60)
        t.q.wait_states(LOST_PROJECT, dict.fromkeys(lost, "running"), timeout=60)
        time.sleep(2)
        streams = [_open_streams(g) for g in t.gateways]
        assert all(n >= (RUNS + LOST) // 2 for n in streams), streams   # spread over both
        t.gateways[0].kill()           # its clients move to the other gateway
        time.sleep(2)
        t.projectors[0].kill()         # mid-batch; the other takes its partitions
        time.sleep(2)
        t.reapers[0].kill()            # the other reaper takes over its runs
        for p in lost.values():        # silent from now on: only a reaper can tell
            p.kill()
            p.wait(10)
        for rid, p in runs.items():
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, f"{rid}:\n{out}"
        check_project(t.q, PROJECT, dict.fromkeys(runs, 0))
        t.q.wait_states(LOST_PROJECT, dict.fromkeys(lost, "crashed"),
                        timeout=SESSION_TIMEOUT_S + HEARTBEAT_TIMEOUT_S + 60)
    finally:
        for p in (*runs.values(), *lost.values()):
            p.kill()
    survivor = f"detected by reaper {t.reapers[1].instance}"
    for rid in lost:
        cause = t.q.run(LOST_PROJECT, rid).state_cause
        assert cause.startswith("no heartbeat") and cause.endswith(survivor), cause
    # Let a reaper that might crash a run twice have its chance to, then count.
    time.sleep(3)
    crashed = asyncio.run(_crashed_events(t.bootstrap, t.topic))
    assert crashed == Counter(dict.fromkeys(lost, 1)), crashed
    for survivors in (t.projectors[1], t.reapers[1]):
        sets = _assignments(survivors)
        assert sets and sets[-1] == list(range(PARTITIONS)), (survivors.name, sets)
        assert any(len(s) < PARTITIONS for s in sets), (survivors.name, sets)  # shared first
    for p in (*t.gateways, *t.reapers):
        assert not (t.tmp / p.name / "clickhouse").exists(), f"{p.name} opened a store"
