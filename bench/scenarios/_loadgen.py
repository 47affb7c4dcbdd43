"""A lean protocol-level load generator for the Ingest service (not the client library).

    python -m bench.scenarios._loadgen '<JSON config>'

Opens ``streams`` bidirectional ``runstream.v1.Ingest/Stream`` calls to ``target`` and
drives ``runs`` concurrent runs over them (run i on stream i mod streams). Every request
holds **one run** (the gateway forwards such a request as its own bytes) and many of its
events: the run's ``RunStart`` in its first request, then ``Log`` events of ``metrics``
numbers each, a ``Heartbeat`` whenever ``heartbeat_s`` has passed since the run's last
one, and (unless ``finish`` is false) one ``Finish`` per run at the end.

Event bytes are pre-encoded: per run, one ``struct`` that writes a whole
``IngestRequest.events`` entry (the run's identity and numbers are constant bytes; only
seq, client time and step change), so a step costs one ``pack`` call here and the
generator is not the bottleneck. Runs log constant values (drawn once per run).

Modes (``rate``): ``"max"`` — as fast as allowed: each stream keeps up to ``window``
requests of ``batch_points`` points in flight (a request is one run's next steps; runs
of a stream take turns); ``<points/s>`` — a fixed offered rate: every run logs
``rate / (runs × metrics)`` steps/s, phases spread evenly over the runs, and every
``linger_s`` each run sends the steps that came due (as the client's uploader sends at
most one request per linger interval). Both stop starting new steps after
``duration_s``; flow control is the same: at most ``window`` unacked requests per
stream (new requests wait for acks), ``Control.retry_after`` pauses a stream's
sending, and a stream ended by the server (``UNAVAILABLE``, ``RESOURCE_EXHAUSTED`` with
its retry-after hint) or cancelled (``CANCELLED``, counted as ``cancelled``) is re-opened
and every unacked request re-sent.

Output (stdout, one JSON object per line): ``{"event": "started", "t": …}`` once every
stream is open; with ``hold`` true, ``{"event": "loaded", …stats}`` once every log event
is acked, after which only heartbeats are sent until a line arrives on stdin; finally
``{"event": "done", …stats}``. Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the
same clock as ``perf_counter`` in any process of this machine). Stats: events, points,
heartbeats and requests sent/acked, rejected batches, reconnects, retry-after pauses,
the generator's own CPU seconds (``cpu_s``, since it started) and peak RSS (``maxrss_mib``),
``t_start``, ``t_load_end`` (the last log event sent), ``t_logs_acked`` (the last log
event acked), and for the first ``probe_runs`` runs the ack timeline
``probe_acks = {run_id: [[last step of the request, ack time], …]}``, and ``steps =
{run_id: steps logged}``. Exit status 0
only if every sent event was acked and nothing was rejected.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import grpc
from runstream.v1 import events_pb2, ingest_pb2


def auth_metadata() -> tuple[tuple[str, str], ...]:
    """The bench's API key (RUNSTREAM_API_KEY, set by the harness) as gRPC metadata."""
    key = os.environ.get("RUNSTREAM_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


METHOD = "/runstream.v1.Ingest/Stream"
# As large as the gateway accepts by default (GatewayConfig.max_message_bytes = 16 MiB):
# the generator's requests stay far below it, acks are tiny.
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 16 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                    # one TCP connection per channel (no shared subchannel pool)
                    ("grpc.use_local_subchannel_pool", 1)]
# HTTP/2 streams per TCP connection: gRPC servers commonly cap concurrent streams at
# 100 per connection, so channels are opened in groups of this many streams.
STREAMS_PER_CHANNEL = 100
# Re-open delay after a stream failure without a retry-after hint.
RECONNECT_DELAY_S = 0.2
DEFAULTS = {
    "target": "127.0.0.1:50051",
    "entity": "bench",
    "project": "ingest",
    "run_prefix": "lg",
    "runs": 100,
    "metrics": 10,
    "streams": 8,
    "rate": "max",
    "duration_s": 5.0,
    "heartbeat_s": 10.0,
    "batch_points": 2000,
    "window": 4,
    "linger_s": 0.05,
    "probe_runs": 0,
    "finish": True,
    "hold": False,
    "seed": 1,
    "progress_s": 0.0,
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ldelim(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(payload)) + payload


def _now_us() -> int:
    return time.time_ns() // 1000


class RunEncoder:
    """Pre-encoded bytes of one run's events, each as an ``IngestRequest.events`` entry.

    ``log(seq, t_us, step)`` is one ``struct.pack``: the wire layout is that of the
    client's ``_encode.LogEncoder`` (fixed-width seq, time and step)."""

    def __init__(self, run_id: str, project: str, entity: str, metrics: int,
                 rnd: random.Random) -> None:
        self.run_id, self.project, self.entity = run_id, project, entity
        head = (_ldelim(0x0A, run_id.encode()) + _ldelim(0x12, project.encode())
                + _ldelim(0x1A, entity.encode()) + b"\x21")        # Event 1-3, 4 seq tag
        entries = b"".join(
            _ldelim(0x12, _ldelim(0x0A, f"m{j}".encode()) + b"\x11"
                    + struct.pack("<d", rnd.random()))             # Log.numbers entries
            for j in range(metrics))
        log_head = b"\x5a" + _varint(9 + len(entries)) + b"\x09"  # Event.log, Log.step tag
        size = len(head) + 8 + 1 + 8 + len(log_head) + 8 + len(entries)
        wrap = b"\x0a" + _varint(size)                             # IngestRequest.events
        st = struct.Struct(f"<{len(wrap) + len(head)}sQBq{len(log_head)}sQ{len(entries)}s")
        pack, pre = st.pack, wrap + head

        def log(seq: int, t_us: int, step: int) -> bytes:
            return pack(pre, seq, 0x29, t_us, log_head, step, entries)
        self.log = log

    def _event(self, seq: int, **body) -> bytes:
        ev = events_pb2.Event(run_id=self.run_id, project=self.project, entity=self.entity,
                              seq=seq, client_time_us=_now_us(), **body)
        return _ldelim(0x0A, ev.SerializeToString())

    def start(self, seq: int) -> bytes:
        return self._event(seq, run_start=events_pb2.RunStart(
            name=self.run_id, tags=["loadgen"], start_time_us=_now_us()))

    def heartbeat(self, seq: int) -> bytes:
        return self._event(seq, heartbeat=events_pb2.Heartbeat())

    def finish(self, seq: int) -> bytes:
        return self._event(seq, finish=events_pb2.Finish(exit_code=0))


@dataclass
class Run:
    enc: RunEncoder
    probe: bool
    phase: float = 0.0        # fraction of a step period this run lags the others
    seq: int = 0              # last seq used
    step: int = 0             # next step to log
    started: bool = False
    finished: bool = False
    last_hb: float = 0.0
    acks: list = field(default_factory=list)


@dataclass
class Pending:
    """One sent, not yet acked request."""

    data: bytes
    run: Run
    events: int
    points: int
    heartbeats: int
    last_step: int            # -1: no log event in it


class Stats:
    def __init__(self) -> None:
        self.c = dict.fromkeys(
            ("events_sent", "events_acked", "points_sent", "points_acked", "heartbeats_sent",
             "heartbeats_acked", "requests_sent", "requests_acked", "rejected", "reconnects",
             "retry_after_pauses", "finish_acked", "cancelled"), 0)
        self.t_start = self.t_load_end = self.t_logs_acked = 0.0
        self.errors: list[str] = []
        self.log_requests_unacked = 0     # sent requests holding log events, not acked
        self.logs_acked = asyncio.Event()


class Conn:
    """One Ingest stream: a window of unacked requests, re-sent after a reconnect."""

    def __init__(self, channel: grpc.aio.Channel, cfg: dict, stats: Stats) -> None:
        self.channel = channel
        self.stats = stats
        self.window = asyncio.Semaphore(cfg["window"])
        self.inflight: OrderedDict[int, Pending] = OrderedDict()
        self.next_id = 1
        self.pause_until = 0.0
        self.call = None
        self.lock = asyncio.Lock()         # writes and re-opens, one at a time
        self.drained = asyncio.Event()
        self.drained.set()
        self.closing = False
        self.reader: asyncio.Task | None = None

    def _open(self) -> None:
        self.call = self.channel.stream_stream(
            METHOD, request_serializer=None,
            response_deserializer=ingest_pb2.IngestResponse.FromString)(
                metadata=auth_metadata())
        self.reader = asyncio.create_task(self._read(self.call))

    async def open(self) -> None:
        self._open()
        await self.call.wait_for_connection()

    async def send(self, body: bytes, p: Pending) -> None:
        """Write one request (``body`` = its events) once the window has room."""
        await self.window.acquire()
        delay = self.pause_until - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        bid = self.next_id
        self.next_id += 1
        p.data = body + b"\x78" + _varint(bid)          # IngestRequest.batch_id (field 15)
        self.inflight[bid] = p
        self.drained.clear()
        if p.points:
            self.stats.log_requests_unacked += 1
            self.stats.logs_acked.clear()
        s = self.stats.c
        s["requests_sent"] += 1
        s["events_sent"] += p.events
        s["points_sent"] += p.points
        s["heartbeats_sent"] += p.heartbeats
        async with self.lock:
            call = self.call
            try:
                await call.write(p.data)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass                      # the reader sees the failure and re-sends it

    async def _read(self, call) -> None:
        delay = RECONNECT_DELAY_S
        try:
            async for resp in call:
                self._handle(resp)
            if self.closing:
                return
            self.stats.errors.append("the server ended a stream")
        except grpc.aio.AioRpcError as e:
            if self.closing:
                return
            delay = _retry_after(e) or RECONNECT_DELAY_S
            if e.code() == grpc.StatusCode.CANCELLED:
                # As the client library's uploader does: re-open and re-send. A server
                # whose event loop is saturated accepts new streams late, and gRPC
                # cancels a stream the server has not taken up within 30 s.
                self.stats.c["cancelled"] += 1
            elif e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED):
                self.stats.errors.append(f"stream failed: {e.code().name} {e.details()}")
        except asyncio.CancelledError:
            return
        asyncio.create_task(self._reopen(call, delay))

    async def _reopen(self, failed, delay: float) -> None:
        async with self.lock:
            if self.call is not failed or self.closing:
                return
            self.stats.c["reconnects"] += 1
            await asyncio.sleep(delay)
            self._open()
            for p in list(self.inflight.values()):
                try:
                    await self.call.write(p.data)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                    return                # the new reader re-opens again

    def _handle(self, resp: ingest_pb2.IngestResponse) -> None:
        kind = resp.WhichOneof("kind")
        if kind == "control":
            if resp.control.WhichOneof("kind") == "retry_after":
                self.stats.c["retry_after_pauses"] += 1
                self.pause_until = time.monotonic() + resp.control.retry_after.millis / 1e3
            return
        bid = resp.ack.batch_id if kind == "ack" else resp.rejected.batch_id
        p = self.inflight.pop(bid, None)
        if p is None:
            return                        # a duplicate answer after a re-send
        self.window.release()
        if not self.inflight:
            self.drained.set()
        if p.points:
            self.stats.log_requests_unacked -= 1
            if not self.stats.log_requests_unacked:
                self.stats.logs_acked.set()
        s = self.stats.c
        if kind == "rejected":
            s["rejected"] += 1
            self.stats.errors.append(f"batch rejected: {resp.rejected.message[:300]}")
            return
        now = time.monotonic()
        s["requests_acked"] += 1
        s["events_acked"] += p.events
        s["points_acked"] += p.points
        s["heartbeats_acked"] += p.heartbeats
        if p.points:
            self.stats.t_logs_acked = now
        if p.run.finished and p.last_step < 0 and not p.heartbeats:
            s["finish_acked"] += 1
        if p.run.probe and p.last_step >= 0:
            p.run.acks.append([p.last_step, round(now, 6)])

    async def close(self) -> None:
        self.closing = True
        if self.call is not None:
            try:
                await self.call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass
        if self.reader is not None:
            self.reader.cancel()


def _retry_after(e: grpc.aio.AioRpcError) -> float | None:
    for k, v in e.trailing_metadata() or ():
        try:
            if k == "retry-after-ms":
                return float(v) / 1e3
            if k == "retry-after":
                return float(v)
        except (TypeError, ValueError):
            continue
    return None


class LoadGen:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.stats = Stats()
        rnd = random.Random(cfg["seed"])
        n = cfg["runs"]
        self.runs = [Run(RunEncoder(f"{cfg['run_prefix']}-{i:05d}", cfg["project"],
                                    cfg["entity"], cfg["metrics"], rnd),
                         probe=i < cfg["probe_runs"], phase=i / n) for i in range(n)]
        self.conns: list[Conn] = []
        self.channels: list[grpc.aio.Channel] = []
        self.holding = bool(cfg["hold"])
        self.past_end = 0              # rate-mode streams that have sent every due step
        self.all_past_end = asyncio.Event()
        self.released = asyncio.Event()
        if self.holding and cfg["rate"] == "max":
            raise SystemExit("hold needs a fixed rate (heartbeats are sent by the rate loop)")

    def _request(self, run: Run, steps: int, now: float) -> tuple[bytes, Pending]:
        """The events of ``run``'s next request: RunStart if new, ``steps`` logs, and a
        heartbeat when one is due."""
        parts, events, hbs = [], 0, 0
        if not run.started:
            run.seq += 1
            parts.append(run.enc.start(run.seq))
            run.started, run.last_hb, events = True, now, 1
        if steps:
            t_us, log, seq0, step0 = _now_us(), run.enc.log, run.seq + 1, run.step
            parts.extend([log(seq0 + i, t_us, step0 + i) for i in range(steps)])
            run.seq += steps
            run.step += steps
            events += steps
        if now - run.last_hb >= self.cfg["heartbeat_s"]:
            run.seq += 1
            parts.append(run.enc.heartbeat(run.seq))
            run.last_hb, hbs = now, 1
            events += 1
        p = Pending(b"", run, events, steps * self.cfg["metrics"], hbs,
                    run.step - 1 if steps else -1)
        return b"".join(parts), p

    async def _max_stream(self, conn: Conn, runs: list[Run], end: float) -> None:
        steps = max(1, self.cfg["batch_points"] // self.cfg["metrics"])
        i = 0
        while time.monotonic() < end:
            run = runs[i % len(runs)]
            i += 1
            body, p = self._request(run, steps, time.monotonic())
            await conn.send(body, p)

    async def _rate_stream(self, conn: Conn, runs: list[Run], end: float,
                           steps_per_s: float) -> None:
        """Each run sends the steps due by now (never past ``end``) and a heartbeat when
        one is due, at most once per ``linger_s``; the stream sleeps until its next due
        step or heartbeat. After ``end``: heartbeats only, while holding."""
        t0, linger, hb_s = self.stats.t_start, self.cfg["linger_s"], self.cfg["heartbeat_s"]
        counted = False
        while True:
            now = time.monotonic()
            t_due = min(now, end) - t0
            wake = now + hb_s
            for run in runs:
                due = max(0, int(t_due * steps_per_s + run.phase) - run.step)
                if due or not run.started or now - run.last_hb >= hb_s:
                    body, p = self._request(run, due, now)
                    await conn.send(body, p)
                wake = min(wake, run.last_hb + hb_s,
                           t0 + (run.step + 1 - run.phase) / steps_per_s)
            if now >= end:
                if not counted:
                    counted = True
                    self.past_end += 1
                    if self.past_end == len(self.conns):
                        self.all_past_end.set()
                if not self.holding:
                    return
                try:                                # heartbeats until the hold ends
                    await asyncio.wait_for(self.released.wait(), wake - time.monotonic())
                    return
                except TimeoutError:
                    continue
            await asyncio.sleep(max(linger, wake - time.monotonic()))

    async def _finish(self) -> None:
        for k, conn in enumerate(self.conns):
            for run in self.runs[k::len(self.conns)]:
                run.seq += 1
                run.finished = True
                await conn.send(run.enc.finish(run.seq), Pending(b"", run, 1, 0, 0, -1))
        await self._drain()

    async def _drain(self) -> None:
        for conn in self.conns:
            await conn.drained.wait()

    async def _progress(self, every_s: float) -> None:
        """A line of counters on stderr every ``every_s``: what a stuck run was doing."""
        while True:
            await asyncio.sleep(every_s)
            c = self.stats.c
            sys.stderr.write(json.dumps({
                "t": round(time.monotonic() - self.stats.t_start, 1),
                "inflight": sum(len(k.inflight) for k in self.conns),
                **{k: c[k] for k in ("requests_sent", "requests_acked", "points_sent",
                                     "points_acked", "reconnects", "retry_after_pauses",
                                     "rejected", "cancelled")},
                "errors": self.stats.errors[-3:]}) + "\n")
            sys.stderr.flush()

    async def run(self) -> dict:
        cfg = self.cfg
        n_streams = max(1, min(cfg["streams"], len(self.runs)))
        for k in range(n_streams):
            if k % STREAMS_PER_CHANNEL == 0:
                self.channels.append(grpc.aio.insecure_channel(
                    cfg["target"], options=[*_CHANNEL_OPTIONS, ("rs.loadgen.channel", k)]))
            self.conns.append(Conn(self.channels[-1], cfg, self.stats))
        await asyncio.gather(*(c.open() for c in self.conns))
        self.stats.t_start = time.monotonic()
        progress = (asyncio.create_task(self._progress(cfg["progress_s"]))
                    if cfg["progress_s"] > 0 else None)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        _emit({"event": "started", "t": self.stats.t_start, "cpu_s": ru.ru_utime + ru.ru_stime})
        end = self.stats.t_start + cfg["duration_s"]
        if cfg["rate"] == "max":
            tasks = [self._max_stream(c, self.runs[k::n_streams], end)
                     for k, c in enumerate(self.conns)]
        else:
            steps_per_s = float(cfg["rate"]) / (len(self.runs) * cfg["metrics"])
            tasks = [asyncio.create_task(
                self._rate_stream(c, self.runs[k::n_streams], end, steps_per_s))
                for k, c in enumerate(self.conns)]
        if cfg["rate"] == "max":
            await asyncio.gather(*tasks)
        else:
            waiter = asyncio.create_task(self.all_past_end.wait())
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()
        self.stats.t_load_end = time.monotonic()
        if cfg["hold"]:
            # Every log acked (heartbeats keep flowing while holding, so streams need
            # not be empty).
            if self.stats.log_requests_unacked:
                await self.stats.logs_acked.wait()
        else:
            await self._drain()
        if cfg["hold"]:
            _emit({"event": "loaded", **self._report()})
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            self.holding = False
            self.released.set()
        if cfg["rate"] != "max":
            await asyncio.gather(*tasks)
        if cfg["finish"]:
            await self._finish()
        await self._drain()
        for conn in self.conns:
            await conn.close()
        for ch in self.channels:
            await ch.close()
        if progress is not None:
            progress.cancel()
        return self._report()

    def _report(self) -> dict:
        s = self.stats
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {**s.c, "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024,
                "t_start": s.t_start, "t_load_end": s.t_load_end,
                "t_logs_acked": s.t_logs_acked, "steps_logged": sum(r.step for r in self.runs),
                "errors": s.errors[:20],
                "steps": {r.enc.run_id: r.step for r in self.runs},
                "probe_acks": {r.enc.run_id: r.acks for r in self.runs if r.probe}}


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    cfg = {**DEFAULTS, **(json.loads(argv[0]) if argv else {})}
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise SystemExit(f"unknown config keys {sorted(unknown)}")
    result = asyncio.run(LoadGen(cfg).run())
    _emit({"event": "done", **result})
    c = result
    ok = (not c["errors"] and c["events_acked"] == c["events_sent"] and not c["rejected"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
