"""Faults of the Kafka deployment's event log, while real clients log: the broker
restarted (SIGKILL and clean stops), and the network between gateway and broker cut.

Each scenario runs the harness's ``Workload`` (real client processes) against the
distributed deployment (``Cluster``: gateway, reaper, projector + api) on a broker of
its own (never the session's, which other tests share), then asserts 0 lost, 0
duplicated, 0 out of order and every client's ``finish()`` acknowledged in full.

Recovery (``Figures.resume_s``): per fault and run, seconds from the moment the broker
serves again (restart) or the link is healed (cut) until an event the client logged
after that moment is queryable. Stricter than the harness's "last_seq grows": the
backlog journaled during the outage must have been delivered and projected first.
Recorded, not asserted (a timing on a shared machine).

The reaper runs with a 600 s heartbeat timeout here: across an outage every run goes
quiet at once, and what the reaper makes of that is not what these scenarios measure.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import grpc
import pytest
from runstream.v1 import events_pb2, ingest_pb2, query_pb2

from tests.e2e.conftest import ENTITY
from tests.e2e.procs import free_port
from tests.e2e.test_distributed_kafka import Cluster
from tests.fixtures.identity import auth_metadata
from tests.fixtures.tcpproxy import TcpProxy

from .harness import FULL, Figures, Workload

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PROJECT = "faults"
PROBE_PROJECT = "faults-probe"
# (runs, steps, pace per step, restarts, seconds before the first, seconds between
# them). Restarts alternate SIGKILL and a clean stop, beginning with SIGKILL. The stream
# (steps × pace: full 4 min, reduced 26 s) outlasts the last restart.
RESTART_SIZE = (12, 8000, 0.03, 5, 10.0, 15.0) if FULL else (4, 1300, 0.02, 1, 4.0, 0.0)
# After a SIGKILL the restarted broker's controller refuses the new incarnation's
# registration until the old one's session expires (broker.session.timeout.ms, 9 s by
# default): 10-25 s of outage on this machine, long enough to outlast the reduced
# stream. 4 s (heartbeats every 1 s, the default's ratio) shortens that wait and still
# survives the 3 s stalls a loaded machine gives the broker.
RESTART_BROKER = {"broker.session.timeout.ms": "4000", "broker.heartbeat.interval.ms": "1000"}
# (runs, steps, pace per step, cut seconds, seconds of streaming before the cut). The
# stream outlasts the cut by as long again, so that the recovery is measured while
# clients still log.
CUT_SIZE = (12, 6000, 0.03, 60.0, 30.0) if FULL else (4, 1000, 0.02, 8.0, 4.0)
POLL_S = 0.1          # progress polls: recovery times are measured to this resolution
PROBE_EVERY_S = 1.0   # one probe request per second: enough to see each phase
# A probe waits this long for its answer: longer than any hold the gateway may apply
# (its event-log append gives up after 30 s), so every probe ends with an answer.
PROBE_DEADLINE_S = 90.0


# -- observers ------------------------------------------------------------------------

class Progress:
    """Polls the projected ``last_step`` of every run of a project (ListRuns) every
    POLL_S in a thread: ``samples`` is ``[(monotonic time, {run: last_step})]``."""

    def __init__(self, cluster: Cluster, project: str) -> None:
        self._cluster, self._project = cluster, project
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                runs = self._cluster.q.stub.ListRuns(query_pb2.ListRunsRequest(
                    entity=ENTITY, project=self._project, limit=1000), timeout=5).runs
            except grpc.RpcError:
                continue            # the api may be busy or restarting: no sample
            self.samples.append((time.monotonic(), {r.run_id: r.last_step for r in runs}))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def recovery(self, cluster: Cluster, runs: list[str], since_mono: float,
                 since_wall: float) -> list[float]:
        """Per run: seconds from ``since`` until the projection held the first step the
        client logged at or after ``since`` (client time of the stored points). Call
        after the workload was accounted (every step is stored by then)."""
        out = []
        for r in runs:
            s = cluster.q.history(PROJECT, r, keys=["v"])["v"]
            later = [st for st, t in zip(s.step, s.time_us, strict=True)
                     if t >= since_wall * 1e6]
            if not later:
                continue                  # the run had ended before: nothing to wait for
            first = min(later)
            seen = next((t for t, steps in self.samples
                         if t >= since_mono and steps.get(r, -1) >= first), None)
            assert seen is not None, f"run {r}: step {first} never seen by the progress polls"
            out.append(round(seen - since_mono, 2))
        return out


@dataclass
class ProbeResult:
    started: float          # monotonic
    seconds: float          # until the answer
    outcome: str            # "ack", "rejected", or the gRPC status code's name


class Probe:
    """A client of the Ingest protocol in this process that records what the gateway
    answers: every PROBE_EVERY_S a fresh stream sends one ``Log`` event of run
    ``probe`` (project PROBE_PROJECT) and waits up to PROBE_DEADLINE_S for the answer.
    """

    def __init__(self, url: str) -> None:
        self.channel = grpc.insecure_channel(url)
        self._call = self.channel.stream_stream(
            "/runstream.v1.Ingest/Stream",
            request_serializer=ingest_pb2.IngestRequest.SerializeToString,
            response_deserializer=ingest_pb2.IngestResponse.FromString)
        self.results: list[ProbeResult] = []
        self._seq = itertools.count(1)
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            t = threading.Thread(target=self._one, args=(next(self._seq),), daemon=True)
            t.start()
            self._workers.append(t)

    def _one(self, seq: int) -> None:
        ev = events_pb2.Event(run_id="probe", project=PROBE_PROJECT, entity=ENTITY, seq=seq,
                              client_time_us=int(time.time() * 1e6),
                              log=events_pb2.Log(step=seq, numbers={"p": float(seq)}))
        request = ingest_pb2.IngestRequest(events=[ev], batch_id=seq)
        t0 = time.monotonic()
        call = self._call(iter([request]), metadata=auth_metadata(), timeout=PROBE_DEADLINE_S)
        outcome = "no answer"
        try:
            for resp in call:
                outcome = resp.WhichOneof("kind")
                break
        except grpc.RpcError as e:
            outcome = e.code().name
        finally:
            call.cancel()
        self.results.append(ProbeResult(t0, time.monotonic() - t0, outcome))

    def stop(self) -> None:
        """Stop sending; wait for the answers of the probes already sent."""
        self._stop.set()
        self._thread.join(10)
        for t in self._workers:
            t.join(PROBE_DEADLINE_S + 5)
        self.channel.close()

    def between(self, start: float, end: float) -> list[ProbeResult]:
        return [p for p in self.results if start <= p.started < end]


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Resident memory of one process every 0.5 s: ``[(monotonic time, MiB)]``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic(), _rss_mb(self.pid)))
            except OSError:
                return
            if self._stop.wait(0.5):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def last_before(self, t0: float) -> float:
        return max(((t, mb) for t, mb in self.samples if t < t0), default=(0, 0.0))[1]


# -- scenarios ------------------------------------------------------------------------

# After a stop or kill the broker stays down this long before it is started again: a
# window in which no request can be made durable, so none may be acknowledged.
DOWN_S = 2.0


class Observers:
    """What a scenario watches while it runs: progress polls, probes, gateway memory.
    ``faults`` holds the (start, end) monotonic times of each fault, in which nothing
    can become durable."""

    def __init__(self, cluster: Cluster) -> None:
        self.progress = Progress(cluster, PROJECT)
        self.probe = Probe(cluster.url)
        self.rss = RssSampler(cluster.gateway.proc.pid)
        self.faults: list[tuple[float, float]] = []
        self.started = time.monotonic()
        self.ended: float | None = None

    def stop(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()
        self.probe.stop()
        self.progress.stop()
        self.rss.stop()

    def in_faults(self) -> list[ProbeResult]:
        return [p for a, b in self.faults for p in self.probe.between(a, b)]

    def fill(self, fig: Figures) -> None:
        """The probe and memory figures."""
        during = self.in_faults()
        codes = sorted({p.outcome for p in during})
        fig.probe_codes = {k: sum(1 for p in during if p.outcome == k) for k in codes}
        fig.probe_held_max_s = round(max((p.seconds for p in during), default=0.0), 2)
        first, last = self.faults[0][0], self.faults[-1][1]
        fig.gateway_rss_mb = {
            "before": round(self.rss.peak(self.started, first), 1),
            "peak_during": round(max(self.rss.peak(a, b) for a, b in self.faults), 1),
            "peak_after": round(self.rss.peak(last, self.ended), 1)}
        print(f"{fig.scenario}: probes sent during the faults {fig.probe_codes}, longest "
              f"wait {fig.probe_held_max_s} s; gateway RSS {fig.gateway_rss_mb} MiB")

    def check(self, fig: Figures) -> None:
        """The gateway's contract during the faults: each probe sent in one is answered
        UNAVAILABLE or, once the log is back, acknowledged; none is acknowledged before
        its fault ended; the probes sent once the clients recovered are acknowledged."""
        assert self.in_faults(), "probes ran during the faults"
        assert set(fig.probe_codes) <= {"ack", "UNAVAILABLE"}, fig.probe_codes
        early = [(p, a, b) for a, b in self.faults for p in self.probe.between(a, b)
                 if p.outcome == "ack" and p.started + p.seconds < b]
        assert not early, f"acknowledged while the event log was away: {early}"
        settled = self.faults[-1][1] + max(fig.resume_s, default=0.0)
        after = self.probe.between(settled, self.ended)
        assert after and all(p.outcome == "ack" for p in after), after


def _cluster(bootstrap: str, tmp_path, gateway_bootstrap: str | None = None) -> Cluster:
    c = Cluster(bootstrap, tmp_path)
    # Across an outage every run is silent at once: not what is measured here.
    c.reaper.args[c.reaper.args.index("--heartbeat-timeout") + 1] = "600"
    if gateway_bootstrap is not None:
        c.gateway.args[c.gateway.args.index("--kafka") + 1] = gateway_bootstrap
    return c


def _check(fig: Figures) -> None:
    path = fig.save()
    print(f"{fig.scenario}: lost {fig.lost}, duplicated {fig.duplicated}, out of order "
          f"{fig.out_of_order}, unfinished {fig.unfinished}, outage {fig.outage_s} s, "
          f"recovery p99 {fig.resume_p99_s:.2f} s {fig.resume_s} ({path})")
    assert (fig.lost, fig.duplicated, fig.out_of_order, fig.unfinished) == (0, 0, 0, 0), fig


def test_broker_restart_mid_stream(dedicated_kafka, tmp_path):
    """The broker is stopped and, after DOWN_S, started again on the same port and
    data, ``restarts`` times while clients stream: first with SIGKILL, then clean stops
    (SIGTERM) and kills in turn. Every component reconnects by itself (nothing is
    restarted but the broker); nothing acknowledged is lost or applied twice; while
    the broker is away the gateway acknowledges nothing."""
    runs, steps, pace, restarts, first_s, between_s = RESTART_SIZE
    broker = dedicated_kafka(settings=RESTART_BROKER)
    c = _cluster(broker.bootstrap, tmp_path).start()
    fig = Figures("kafka-broker-restart", runs, runs * steps, restarts)
    w = Workload(c.url, PROJECT, runs, steps, pace, tmp_path)
    obs = Observers(c)
    back: list[tuple[float, float]] = []        # (monotonic, wall) of each broker return
    try:
        for i in range(restarts):
            time.sleep(first_s if i == 0 else between_s)
            t_down = time.monotonic()
            if i % 2 == 0:
                assert broker.kill() == -9
            else:
                assert broker.stop() == 143         # 128 + SIGTERM: a clean shutdown
            t_gone = time.monotonic()
            time.sleep(DOWN_S)
            obs.faults.append((t_gone, time.monotonic()))
            broker.restart()
            back.append((time.monotonic(), time.time()))
            fig.outage_s.append(round(back[-1][0] - t_down, 2))
        fig.unfinished = w.wait()
        w.account(c.q, fig)
        obs.stop()
        per_restart = [obs.progress.recovery(c, w.run_ids, mono, wall) for mono, wall in back]
        fig.resume_s = [t for ts in per_restart for t in ts]
    finally:
        obs.stop()
        w.kill()
        c.stop()
    obs.fill(fig)
    _check(fig)
    obs.check(fig)
    assert [len(ts) for ts in per_restart] == [runs] * restarts, "all logged after each"


@pytest.mark.parametrize("mode", ["blackhole", "reset"])
def test_network_cut_between_gateway_and_broker(dedicated_kafka, tmp_path, mode):
    """The gateway reaches the broker only through a proxy (a listener advertised at
    the proxy's port); the projector, reaper and api connect directly. The proxy cuts
    the gateway's link for ``cut_s`` while clients stream, then heals it.

    During the cut the gateway acknowledges nothing (nothing can be durable): a request
    is held while the event log retries, and answered UNAVAILABLE when its append gives
    up (or acknowledged once the link is back); the clients keep journaling and
    re-send. After the heal every event arrives once, in order."""
    runs, steps, pace, cut_s, before_s = CUT_SIZE
    proxy_port = free_port()
    broker = dedicated_kafka(listeners={"GATEWAY": proxy_port})
    proxy = TcpProxy(broker.listener_ports["GATEWAY"], port=proxy_port).start()
    c = _cluster(broker.bootstrap, tmp_path, gateway_bootstrap=proxy.address).start()
    scenario = "kafka-network-cut" + ("" if mode == "blackhole" else f"-{mode}")
    fig = Figures(scenario, runs, runs * steps, 1)
    w = Workload(c.url, PROJECT, runs, steps, pace, tmp_path)
    obs = Observers(c)
    try:
        time.sleep(before_s)
        t_cut = time.monotonic()
        proxy.cut(mode)
        time.sleep(cut_s)
        proxy.heal()
        t_heal, wall_heal = time.monotonic(), time.time()
        obs.faults.append((t_cut, t_heal))
        fig.outage_s.append(round(t_heal - t_cut, 2))
        fig.unfinished = w.wait()
        w.account(c.q, fig)
        obs.stop()
        fig.resume_s = obs.progress.recovery(c, w.run_ids, t_heal, wall_heal)
    finally:
        obs.stop()
        w.kill()
        c.stop()
        proxy.stop()
    print(f"{scenario}: proxy {proxy.stats}")
    obs.fill(fig)
    _check(fig)
    obs.check(fig)
    assert len(fig.resume_s) == runs, "every run logged after the heal"
