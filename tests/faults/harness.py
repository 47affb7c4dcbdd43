"""The fault suite's workload and its accounting.

A workload is ``runs`` real client processes (``writer.py``), each logging ``steps``
steps of ``{"v": step}`` paced over the scenario, while the scenario kills parts of the
deployment. At the end every run's stored history is compared with what the clients'
``log()`` calls returned:

- lost: steps logged but not stored;
- duplicated: stored points beyond one per step (the raw history read);
- out of order: stored values that are not their step, plus runs whose summary (the
  last value in seq order) is not the last step;
- resume: after each restart, per run, seconds until the run's newly logged events are
  queryable again (an upper bound on the client's resume: it includes the projector);
- dropped: events a documented policy dropped and counted (``test_journal_full.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runstream.v1 import query_pb2

from tests.e2e.conftest import ENTITY

WRITER = Path(__file__).with_name("writer.py")
OUT = Path(__file__).resolve().parents[2] / "test-output" / "faults"
FULL = os.environ.get("RUNSTREAM_FAULTS") == "full"


@dataclass
class Figures:
    scenario: str
    runs: int
    events: int
    kills: int
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    resume_s: list[float] = field(default_factory=list)
    unfinished: int = 0          # client processes whose finish() did not see every ack
    # Event-log faults (tests/faults/test_kafka_faults.py); empty for the others.
    outage_s: list[float] = field(default_factory=list)   # per fault: seconds without the log
    probe_codes: dict[str, int] = field(default_factory=dict)  # answers to probes in the fault
    probe_held_max_s: float = 0.0     # the longest a probe request waited for its answer
    gateway_rss_mb: dict[str, float] = field(default_factory=dict)  # before/during/after
    # Scenarios where a documented policy drops events (the client's full-disk bound):
    # events dropped and counted (on the client and on the run), never part of ``lost``;
    # points stored; the scenario's wall time.
    dropped: int = 0
    stored: int = 0
    duration_s: float = 0.0
    # The reaper across an outage: Crashed events for live runs (target 0), and per true
    # crash the seconds from the kill until the run showed crashed (target: the timeout).
    false_crashes: int = 0
    detect_s: list[float] = field(default_factory=list)
    outage_of_s: float = 0.0
    heartbeat_timeout_s: float = 0.0
    # A client offline, then back: events/s logged live and drained from the journal
    # after the first reconnect (target: drain >= 5 x live).
    live_per_s: float = 0.0
    drain_per_s: float = 0.0
    # A run offering 10x its project's rate limit (tests/e2e/test_rate_limits.py).
    offer_s: float = 0.0
    limit_per_s: float = 0.0
    accepted_per_s: float = 0.0
    rss_growth_mb: float = 0.0          # while offered 10x
    rss_growth_drain_mb: float = 0.0    # until the client's journal drained
    # Reconnect storm (tests/faults/test_reconnect_storm.py): client streams per process;
    # seconds the gateway was gone; per 100 ms window from the first, the streams whose
    # successful reconnect attempt was planned by their backoff for it, began in it (its
    # connection request reached the gateway) and was connected in it (the gateway
    # answered); the busiest window's share of the planned attempts and the bound
    # asserted on it; resume percentiles; per stream the wait on its new connection for
    # the first acknowledgement; the longest stall of a client process's event loop.
    streams_per_process: int = 0
    down_s: float = 0.0
    planned_per_100ms: list[int] = field(default_factory=list)
    arrivals_per_100ms: list[int] = field(default_factory=list)
    connected_per_100ms: list[int] = field(default_factory=list)
    arrival_peak_share: float = 0.0
    arrival_peak_limit: float = 0.0
    resume_p50_s: float = 0.0
    resume_max_s: float = 0.0
    first_ack_wait_p50_s: float = 0.0
    first_ack_wait_p99_s: float = 0.0
    client_loop_lag_max_s: float = 0.0
    # ... and the resume of the streams in a process of their own each (``resume_s``:
    # the streams sharing a process).
    probe_resume_s: list[float] = field(default_factory=list)

    @property
    def resume_p99_s(self) -> float:
        return _p99(self.resume_s)

    @property
    def probe_resume_p99_s(self) -> float:
        return _p99(self.probe_resume_s)

    def save(self) -> Path:
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{self.scenario}{'' if FULL else '-reduced'}.json"
        d = asdict(self) | {"resume_p99_s": self.resume_p99_s,
                            "probe_resume_p99_s": self.probe_resume_p99_s, "full": FULL,
                            "date": time.strftime("%Y-%m-%d")}
        path.write_text(json.dumps(d, indent=1))
        return path


def _p99(xs: list[float]) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.99 * len(xs)))]


class Workload:
    def __init__(self, url: str, project: str, runs: int, steps: int, pace_s: float,
                 tmp: Path, env: dict[str, str] | None = None) -> None:
        self.project, self.steps = project, steps
        self.run_ids = [f"w{i}" for i in range(runs)]
        env = {**os.environ, "RUNSTREAM_URL": url, "RUNSTREAM_ENTITY": ENTITY,
               "RUNSTREAM_FINISH_TIMEOUT": "300", "RUNSTREAM_DRAIN_TIMEOUT": "300",
               "RUNSTREAM_DIR": str(tmp / "journals"), **(env or {})}
        self.procs = [subprocess.Popen([sys.executable, str(WRITER), r, project, str(steps),
                                        str(pace_s)], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
                      for r in self.run_ids]

    def wait(self, timeout_s: float = 600) -> int:
        """Wait for every writer; return how many did not finish with every event acked."""
        bad = 0
        for p in self.procs:
            out, _ = p.communicate(timeout=timeout_s)
            if p.returncode != 0 or "finished True" not in out:
                bad += 1
                print(f"writer exited {p.returncode}: {out[-2000:]}")
        return bad

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def total_seq(self, q) -> int:
        return sum(self.last_seqs(q).values())

    def last_seqs(self, q) -> dict[str, int]:
        out = {}
        for r in self.run_ids:
            try:
                out[r] = q.stub.GetRun(query_pb2.GetRunRequest(
                    entity=ENTITY, project=self.project, run_id=r), timeout=10).last_seq
            except Exception:
                out[r] = 0
        return out

    def resume_times(self, q, since: float, timeout_s: float = 60) -> list[float]:
        """Per still-running writer: seconds from ``since`` until its last_seq grows."""
        live = {r for r, p in zip(self.run_ids, self.procs, strict=True) if p.poll() is None}
        base = self.last_seqs(q)
        out: dict[str, float] = {}
        deadline = time.monotonic() + timeout_s
        while len(out) < len(live) and time.monotonic() < deadline:
            now = self.last_seqs(q)
            t = time.monotonic() - since
            for r in live - set(out):
                if now[r] > base[r]:
                    out[r] = t
            time.sleep(0.1)
        return list(out.values()) + [timeout_s] * (len(live) - len(out))

    def account(self, q, fig: Figures) -> Figures:
        """Fill lost / duplicated / out of order from the stored history (waits for the
        projection to settle first)."""
        def settled():
            states = []
            for r in self.run_ids:
                try:
                    states.append(q.stub.GetRun(query_pb2.GetRunRequest(
                        entity=ENTITY, project=self.project, run_id=r), timeout=10).state)
                except Exception:
                    return False
            return all(st == "finished" for st in states)
        q.wait_for(settled, 120, "every run's Finish to be projected")
        for r in self.run_ids:
            s = q.history(self.project, r, keys=["v"])["v"]
            steps = list(s.step)
            distinct = set(steps)
            fig.lost += self.steps - len(distinct & set(range(self.steps)))
            fig.duplicated += len(steps) - len(distinct)
            fig.out_of_order += sum(1 for st, v in zip(steps, s.value, strict=True)
                                    if float(st) != v)
            run = q.stub.GetRun(query_pb2.GetRunRequest(entity=ENTITY, project=self.project,
                                                        run_id=r))
            if run.summary.get("v") != float(self.steps - 1):
                fig.out_of_order += 1
        return fig
