"""Fault injection: kill parts of a deployment while real clients log, then count what
was lost, duplicated or reordered, and how long the clients took to resume.

Reduced sizes in ``make test``; ``make faults`` runs the full sizes (RUNSTREAM_FAULTS=full)
and writes the figures into docs/reliability.md (``python -m tests.faults.report``).
Targets: 0 lost, 0 duplicated, 0 out of order in every scenario (asserted); resume
p99 ≤ 5 s (recorded, not asserted: a timing on a shared machine).
"""

from __future__ import annotations

import random
import time

import pytest

from tests.e2e.conftest import ENTITY, embedded_args
from tests.e2e.procs import QueryClient, ServerProcess, free_port
from tests.e2e.test_distributed_kafka import Cluster

from .harness import FULL, Figures, Workload

pytestmark = [pytest.mark.e2e]

# (runs, steps, pace per step, kills): the stream lasts runs' steps × pace; kills are
# spread over it. Full: 20 kills over about 4 minutes.
SIZE = (12, 8000, 0.03, 20) if FULL else (4, 600, 0.02, 3)


def _check(fig: Figures) -> None:
    path = fig.save()
    print(f"{fig.scenario}: lost {fig.lost}, duplicated {fig.duplicated}, out of order "
          f"{fig.out_of_order}, resume p99 {fig.resume_p99_s:.2f} s ({path})")
    assert (fig.lost, fig.duplicated, fig.out_of_order, fig.unfinished) == (0, 0, 0, 0), fig


def _kill_loop(workload: Workload, kills: int, duration_s: float, kill, restart, q_of,
               fig: Figures) -> None:
    gap = duration_s / (kills + 1)
    rng = random.Random(6)
    for _ in range(kills):
        time.sleep(gap * rng.uniform(0.5, 1.0))
        kill()
        restart()
        fig.resume_s += workload.resume_times(q_of(), time.monotonic())


def test_embedded_server_kill_9(tmp_path):
    runs, steps, pace, kills = SIZE
    grpc_port, http_port = free_port(), free_port()
    args = embedded_args(tmp_path / "data", "--heartbeat-timeout", "600")
    args[args.index("--grpc-port") + 1] = str(grpc_port)
    args[args.index("--http-port") + 1] = str(http_port)
    srv = ServerProcess(args, log_path=tmp_path / "server.log").start()
    state = {"q": QueryClient(srv.grpc, srv.http, ENTITY)}
    fig = Figures("embedded-server-kill-9", runs, runs * steps, kills)
    w = Workload(srv.grpc, "faults", runs, steps, pace, tmp_path)

    def restart():
        state["q"].close()
        srv.start()
        state["q"] = QueryClient(srv.grpc, srv.http, ENTITY)
    try:
        _kill_loop(w, kills, steps * pace, srv.kill, restart, lambda: state["q"], fig)
        fig.unfinished = w.wait()
        w.account(state["q"], fig)
    finally:
        w.kill()
        state["q"].close()
        srv.stop()
    _check(fig)


@pytest.mark.kafka
@pytest.mark.parametrize("victim", ["gateway", "projector"])
def test_distributed_kill_9(kafka_bootstrap, tmp_path, victim):
    runs, steps, pace, kills = SIZE
    c = Cluster(kafka_bootstrap, tmp_path)
    # the reaper's 3 s timeout of the e2e cluster would crash runs across a restart
    c.reaper.args[c.reaper.args.index("--heartbeat-timeout") + 1] = "600"
    c.start()
    fig = Figures(f"kafka-{victim}-kill-9", runs, runs * steps, kills)
    w = Workload(c.url, "faults", runs, steps, pace, tmp_path)
    proc = c.gateway if victim == "gateway" else c.store

    def restart():
        if victim == "gateway":
            c.gateway.start()
        else:
            c.restart_store()
    try:
        _kill_loop(w, kills, steps * pace, proc.kill, restart, lambda: c.q, fig)
        fig.unfinished = w.wait()
        w.account(c.q, fig)
    finally:
        w.kill()
        c.stop()
    _check(fig)


# (outage, reaper timeout): the outage is several timeouts long. The timeout must exceed
# the client's silence across the gateway's return: 3 beacon intervals (1 s here) + a
# reconnect backoff (up to 5 s) + the first request.
OUTAGE = (60.0, 20.0) if FULL else (25.0, 10.0)


@pytest.mark.kafka
def test_reaper_across_a_gateway_outage(kafka_bootstrap, tmp_path):
    """Every gateway is gone for several heartbeat timeouts while clients keep logging to
    their journals: the reaper crashes none of them (no gateway beacons, so the outage is
    not silence); a client killed afterwards (no upload helper to report it) is found
    crashed within the timeout."""
    runs, steps, pace, _ = SIZE
    outage_s, timeout_s = OUTAGE
    steps = int((outage_s + 25) / pace)          # the stream outlasts the outage
    c = Cluster(kafka_bootstrap, tmp_path)
    r = c.reaper.args
    r[r.index("--heartbeat-timeout") + 1] = str(timeout_s)
    c.reaper.env["RUNSTREAM_LOG_LEVEL"] = "INFO"       # one line per Crashed it emits
    c.gateway.args += ["--beacon-interval", "1"]
    c.start()
    fig = Figures("reaper-gateway-outage", runs, runs * steps, 1, outage_of_s=outage_s,
                  heartbeat_timeout_s=timeout_s)
    w = Workload(c.url, "faults", runs, steps, pace, tmp_path)
    victim = None
    try:
        c.q.wait_for(lambda: all(c.q.run("faults", r).state == "running"
                                 for r in w.run_ids), 60, "every run to start")
        c.gateway.kill()
        time.sleep(outage_s)
        c.gateway.start()
        fig.resume_s += w.resume_times(c.q, time.monotonic())
        # A true crash: the training process dies with its uploader (in-process).
        victim = Workload(c.url, "faults-victim", 1, 100_000, pace, tmp_path / "v",
                          env={"RUNSTREAM_UPLOADER": "thread"})
        c.q.wait_for(lambda: c.q.run("faults-victim", "w0").state == "running", 60,
                     "the victim to start")
        time.sleep(1.0)
        victim.kill()
        killed = time.monotonic()
        c.q.wait_states("faults-victim", {"w0": "crashed"}, timeout=3 * timeout_s)
        fig.detect_s.append(time.monotonic() - killed)
        fig.unfinished = w.wait()
        w.account(c.q, fig)
    finally:
        w.kill()
        if victim is not None:
            victim.kill()
        c.stop()
    crashed = [line for line in c.reaper.log_path.read_text().splitlines()
               if " crashed (silent" in line]
    fig.false_crashes = sum(1 for line in crashed if "/faults/" in line)
    assert len(crashed) == fig.false_crashes + 1, crashed     # the victim, once
    print(f"reaper: {fig.false_crashes} false crashes across a {outage_s:g} s outage "
          f"(timeout {timeout_s:g} s); true crash found in {fig.detect_s[0]:.1f} s")
    assert fig.false_crashes == 0, crashed
    _check(fig)


OFFLINE_S = 600.0 if FULL else 20.0


def test_client_offline_then_back(tmp_path):
    """The clients lose the network (every connection reset, none possible) for
    OFFLINE_S while they keep logging, then get it back: their journals drain, and all
    of it arrives once. The drain rate (from the first event stored after the network is
    back until the clients are caught up) is recorded against the live rate."""
    from tests.fixtures.tcpproxy import TcpProxy
    runs, _, pace, _ = SIZE
    steps = int((OFFLINE_S + 25) / pace)
    srv = ServerProcess(embedded_args(tmp_path / "data"),
                        log_path=tmp_path / "server.log").start()
    proxy = TcpProxy(int(srv.grpc.rsplit(":", 1)[1])).start()
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    fig = Figures("client-offline", runs, runs * steps, 1, outage_of_s=OFFLINE_S)
    w = Workload(proxy.address, "faults", runs, steps, pace, tmp_path)
    try:
        q.wait_for(lambda: w.total_seq(q) > runs * 2 / pace, 60, "2 s of events")
        before, t0 = w.total_seq(q), time.monotonic()
        time.sleep(2.0)
        fig.live_per_s = (w.total_seq(q) - before) / (time.monotonic() - t0)
        proxy.cut("reset")
        cut = time.monotonic()
        time.sleep(OFFLINE_S)
        at_heal = w.total_seq(q)
        proxy.heal()
        healed = time.monotonic()
        backlog = fig.live_per_s * (healed - cut)     # logged while offline
        # Sample the stored total as fast as the api answers: the drain starts after the
        # last sample still at ``at_heal`` and ends at the first holding the backlog (a
        # lower bound of the rate: the samples are some 10 ms apart).
        samples = [(healed, at_heal)]
        while samples[-1][1] < at_heal + backlog:
            assert time.monotonic() - healed < 300, "the journals never drained"
            samples.append((time.monotonic(), w.total_seq(q)))
        t_start = max(t for t, n in samples if n == at_heal)
        t_end, n_end = samples[-1]
        fig.resume_s.append(t_start - healed)
        fig.drain_per_s = (n_end - at_heal) / (t_end - t_start)
        fig.unfinished = w.wait()
        w.account(q, fig)
    finally:
        w.kill()
        proxy.stop()
        q.close()
        srv.stop()
    print(f"offline {OFFLINE_S:g} s: live {fig.live_per_s:,.0f} events/s, drained at "
          f"{fig.drain_per_s:,.0f} events/s ({fig.drain_per_s / fig.live_per_s:.1f}x), "
          f"drained from {fig.resume_s[0]:.2f} s after the network came back")
    _check(fig)


@pytest.mark.kafka
def test_clients_fail_over_to_a_second_gateway(kafka_bootstrap, tmp_path):
    """Two gateways; the clients' URL names both (``ipv4:A,B``: gRPC tries them in
    order). The gateway they are on is killed, in turn: they move to the other one
    without waiting for a restart."""
    runs, steps, pace, kills = SIZE
    c = Cluster(kafka_bootstrap, tmp_path)
    c.reaper.args[c.reaper.args.index("--heartbeat-timeout") + 1] = "600"
    second_port = free_port()
    second = ServerProcess(["gateway", *c.log_args, "--grpc-port", str(second_port)],
                           log_path=tmp_path / "gateway-2.log")
    c.start()
    second.start()
    gateways = [c.gateway, second]
    fig = Figures("kafka-gateway-failover", runs, runs * steps, kills)
    w = Workload(f"ipv4:{c.url},127.0.0.1:{second_port}", "faults", runs, steps, pace,
                 tmp_path)
    try:
        gap = steps * pace / (kills + 1)
        for n in range(kills):
            time.sleep(gap * 0.5)
            victim = gateways[n % 2]
            victim.kill()
            resumed = w.resume_times(c.q, time.monotonic(), timeout_s=60)
            # every client resumed while its gateway was still down: on the other one
            assert max(resumed, default=0) < 60, resumed
            fig.resume_s += resumed
            victim.start()          # back only after the clients resumed on the other
        fig.unfinished = w.wait()
        w.account(c.q, fig)
    finally:
        w.kill()
        second.stop()
        second.kill()
        c.stop()
    _check(fig)
