"""The client's ``log()`` against a real embedded server: caller cost, drain, queryable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..harness import Metric
from ._topology import auth_headers

ORDER = 30
TITLE = "Client `run.log()` → embedded server → queryable"
ABOUT = """\
A real embedded server, started once per scenario as a subprocess:
`runstream server --data-dir <tmp> --grpc-port 0 --http-port 0` (defaults: local event
log with `fsync=always`, chDB under the data dir). The benchmark process is the client:
`runstream.init(project="bench", entity="bench", settings={"url": <gRPC address>})`,
then N × `run.log(d)` where `d` is a fresh dict of M floats built before each call (not
timed), each call timed with `perf_counter_ns`; then `run.finish()`, which waits for the
server's ack of every event. **log() µs** is the caller-thread time inside `log()`
(mean and p99 within a repetition). **ack points/s** = N×M ÷ (first `log()` → `finish()`
returned). **queryable points/s** = N×M ÷ (first `log()` → the first HTTP poll of
`GET /api/v1/runs/bench/bench/<run>/history?keys=m0&buckets=1` that reports all N steps
of `m0`; polled every 50 ms, so up to ~50 ms late; the projector inserts all keys of an
event together). **client CPU µs/call** is the whole client process's CPU (caller +
sender thread) from the first `log()` to `finish()` ÷ N; **server CPU µs/point** is the
server process's CPU from the first `log()` until queryable ÷ (N×M), polls included.
One run per case and repetition, all on the same server; client, server and poller
share the 2 cores."""
METRICS = [
    Metric("log_us_mean", "log() µs mean", lower_is_better=True),
    Metric("log_us_p99", "log() µs p99", lower_is_better=True),
    Metric("finish_s", "finish() s", lower_is_better=True),
    Metric("ack_pts_s", "ack points/s"),
    Metric("queryable_pts_s", "queryable points/s"),
    Metric("client_cpu_us_call", "client CPU µs/call", lower_is_better=True),
    Metric("server_cpu_us_pt", "server CPU µs/point", lower_is_better=True),
]
REPS = 5
SMOKE = {"calls_10_metrics": 1_000, "calls_100_metrics": 200}
POLL_S = 0.05
QUERYABLE_TIMEOUT_S = 180
RUNSTREAM = Path(sys.executable).with_name("runstream")
_TICKS = os.sysconf("SC_CLK_TCK")


def params(quick: bool) -> dict:
    return {"calls_10_metrics": 5_000 if quick else 100_000,
            "calls_100_metrics": 500 if quick else 10_000}


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class _Server:
    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self.grpc = self.http = ""
        self.lines: list[str] = []
        self._ready = threading.Event()
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(RUNSTREAM), "server", "--data-dir", str(data_dir), "--grpc-port", "0",
             "--http-port", "0", "--metrics-port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(120) or self.proc.poll() is not None or not self.grpc:
            self.stop()
            raise RuntimeError("runstream server did not start:\n" + "".join(self.lines[-40:]))
        self.start_s = time.perf_counter() - t

    def _pump(self) -> None:
        with open(self.log_path, "a") as f:
            for line in self.proc.stdout:
                f.write(line)
                self.lines.append(line)
                if m := re.search(r"gRPC listening on (\S+)", line):
                    self.grpc = m.group(1)
                if m := re.search(r"HTTP listening on (\S+)", line):
                    self.http = m.group(1).rstrip("/")
                if "runstream: ready" in line:
                    self._ready.set()
        self._ready.set()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                raise RuntimeError("runstream server ignored SIGTERM") from None
        return self.proc.returncode


def setup(ctx):
    server = _Server(ctx.tmp / "data", ctx.tmp / "server.log")
    ctx.log(f"server ready in {server.start_s:.1f} s: gRPC {server.grpc}, HTTP {server.http}")
    ctx.note(f"Server start (spawn → `runstream: ready`, fresh data dir): "
             f"{server.start_s:.1f} s.")
    import runstream  # the sender thread starts with the first init()
    return {"server": server, "runstream": runstream}


def teardown(ctx, state) -> None:
    from runstream import _state
    sender = _state._sender
    if sender is not None:   # stop reconnecting before the server goes away
        sender.close(timeout=5)
    rc = state["server"].stop()
    if rc != 0:
        raise RuntimeError(f"runstream server exited {rc} after SIGTERM:\n"
                           + "".join(state["server"].lines[-40:]))


def _queryable(http: str, run_id: str, steps: int, deadline: float) -> float:
    """Poll until ``m0`` of ``run_id`` has ``steps`` points; return that moment."""
    url = f"{http}/api/v1/runs/bench/bench/{run_id}/history?keys=m0&buckets=1"
    while True:
        try:
            req = urllib.request.Request(url, headers=auth_headers())
            with urllib.request.urlopen(req, timeout=30) as resp:
                series = json.load(resp)["series"]
            if series and series[0]["total_points"] >= steps:
                last = max(series[0]["step"])
                if series[0]["total_points"] != steps or last != steps - 1:
                    raise RuntimeError(f"{run_id}: m0 has {series[0]['total_points']} points, "
                                       f"last step {last}; expected {steps}, {steps - 1}")
                return time.perf_counter()
        except urllib.error.HTTPError as e:
            if e.code != 404:   # 404: the projector has not created the run yet
                raise
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{run_id}: not queryable within {QUERYABLE_TIMEOUT_S} s")
        time.sleep(POLL_S)


def _case(ctx, state, metrics: int, calls: int) -> dict:
    runstream, server = state["runstream"], state["server"]
    run_id = f"r{ctx.rep}-m{metrics}-{os.getpid()}"
    run = runstream.init(project="bench", entity="bench", id=run_id,
                         settings={"url": server.grpc})
    keys = [f"m{i}" for i in range(metrics)]
    lat = [0] * calls
    clock = time.perf_counter_ns
    log = run.log
    server_cpu0 = _proc_cpu_s(server.proc.pid)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for step in range(calls):
        d = {k: (i + 1) / (step + 1) for i, k in enumerate(keys)}
        t = clock()
        log(d)
        lat[step] = clock() - t
    t_logged = time.perf_counter()
    ok = run.finish()
    t_acked = time.perf_counter()
    cpu = time.process_time() - cpu0
    if not ok:
        raise RuntimeError(f"{run_id}: finish() was not acknowledged")
    t_query = _queryable(server.http, run_id, calls, t_acked + QUERYABLE_TIMEOUT_S)
    server_cpu = _proc_cpu_s(server.proc.pid) - server_cpu0
    points = calls * metrics
    lat.sort()
    return {
        "log_us_mean": sum(lat) / calls / 1e3,
        "log_us_p99": lat[min(calls - 1, int(calls * 0.99))] / 1e3,
        "loop_s": t_logged - t0,
        "finish_s": t_acked - t_logged,
        "ack_pts_s": points / (t_acked - t0),
        "queryable_pts_s": points / (t_query - t0),
        "client_cpu_us_call": cpu / calls * 1e6,
        "server_cpu_us_pt": server_cpu / points * 1e6,
    }


def run_rep(ctx, state) -> dict:
    out = {}
    for metrics, key in ((10, "calls_10_metrics"), (100, "calls_100_metrics")):
        calls = ctx.params[key]
        out[f"{metrics} metrics × {calls:,} calls"] = _case(ctx, state, metrics, calls)
    return out
