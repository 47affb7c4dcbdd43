"""Many client streams in one process, for the reconnect-storm scenario.

Each stream is what one training process's upload helper is: a ``runstream.Run`` whose
journal is uploaded by a ``runstream._sender.Uploader`` of its own, over a gRPC
connection of its own (``grpc.use_local_subchannel_pool``: without it gRPC would carry
every stream of this process over one shared TCP connection, and one reconnect would
stand for hundreds). All uploaders share this process's one event loop (a thread); the
main thread logs. Nothing of the uploader is re-implemented here: ``StormUploader``
only records when the client's own code planned and began a connection attempt, got
connected and got its first acknowledgement on that connection.

Protocol (newline-delimited JSON): the test writes a config line to stdin; the worker
starts every stream, waits until every stream's ``RunStart`` is acknowledged and prints
``{"ready": true}``; the test writes ``{"t0": WALL}``; from then on stream ``i`` logs
``{"v": step}`` for step 0, 1, ... at ``t0 + (step + phase_i) * pace_s`` (phases spread
the streams evenly over a pace interval). After the test wrote ``{"killed": WALL}`` the
worker prints ``{"resumed": true}`` once every one of its streams got an acknowledgement
later than that. When the test writes ``{"stop": true}`` every run is finished
(``Run.finish``), one result line per stream is printed, then ``{"done": true,
"errors": [...], "loop_lags": [...]}`` (the log records of level ERROR or above; the
uploaders' loop running a timer more than 50 ms late, by how much). Times are wall-clock
seconds (``time.time()``), comparable across the processes of one machine.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from runstream._run import Run
from runstream._sender import Uploader
from runstream._settings import Settings
from runstream._wal import WalWriter
from runstream.v1 import events_pb2

# One segment holds a whole stream here (a few hundred ~60-byte events); the client's
# default of 8 MiB preallocated per journal would be 16 GB of disk for 2,000 streams.
SEGMENT_BYTES = 256 << 10
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class StormUploader(Uploader):
    """The client's ``Uploader``, observed: ``planned`` (when each backoff wait was to
    end: the time it began plus the wait ``Uploader.run`` drew), ``attempts`` (a
    connection attempt began: ``Uploader._connection`` was entered), ``connects`` (the
    channel became ready and the stream was opened) and ``first_acks`` (the first
    watermark move on each connection; ``None`` for a connection that never got one)."""

    def __init__(self, settings: Settings) -> None:
        self.planned: list[float] = []
        self.attempts: list[float] = []
        self.connects: list[float] = []
        self.first_acks: list[float | None] = []
        self._connected = False
        super().__init__(settings, on_ack=self._acked, channel_options=OWN_CONNECTION)

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, value: bool) -> None:
        if value and not self._connected:
            self.connects.append(time.time())
            self.first_acks.append(None)
        self._connected = value

    def _acked(self, path: str, seq: int) -> None:
        if self.first_acks and self.first_acks[-1] is None:
            self.first_acks[-1] = time.time()

    async def _connection(self) -> bool:
        self.attempts.append(time.time())
        return await super()._connection()

    async def _sleep(self, seconds: float) -> None:
        self.planned.append(time.time() + seconds)
        await super()._sleep(seconds)


async def watch_lag(lags: list[float]) -> None:
    """How late this loop runs a 50 ms timer, whenever it is more than 50 ms late: the
    uploaders of this process share the loop, so a stall delays every stream's timers
    at once (and bunches their attempts, as no real client's would be)."""
    while True:
        due = time.monotonic() + 0.05
        await asyncio.sleep(0.05)
        late = time.monotonic() - due
        if late > 0.05:
            lags.append(late)


class StreamSender:
    """``Run``'s sender interface over one uploader (what ``ThreadSender`` does for a
    training process, without a thread per stream: the uploaders share one loop)."""

    kind = "thread"

    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader
        self.settings = uploader.settings

    def register(self, run: Run) -> None:
        self.uploader.add(run.journal_dir, writer=run._journal)

    def acked(self, run: Run) -> int:
        return self.uploader.acked(run.journal_dir)

    def wait_acked(self, run: Run, seq: int, timeout: float) -> bool:
        return self.uploader.wait_acked(run.journal_dir, seq, timeout)

    def release(self, run: Run) -> None:
        self.uploader.remove(run.journal_dir)


class ErrorLog(logging.Handler):
    """Keeps the client's (and asyncio's) records of level ERROR and above: a gateway
    restart is an expected event, never an error in the client's log."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}"[:500])


def _out(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _line() -> dict:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit("stdin closed")
    return json.loads(line)


def main() -> int:
    cfg = _line()
    n = len(cfg["run_ids"])
    # Each stream holds a socket and a few journal files open: several per stream.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    settings = Settings.from_env(url=cfg["url"], system_metrics=False, uploader="thread",
                                 linger_s=cfg["linger_s"])
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="uploaders", daemon=True).start()
    ups = [StormUploader(settings) for _ in range(n)]
    tasks = [asyncio.run_coroutine_threadsafe(u.run(), loop) for u in ups]
    runs: list[Run] = []
    for run_id, up in zip(cfg["run_ids"], ups, strict=True):
        path = os.path.join(cfg["dir"], f"run-{run_id}")
        journal = WalWriter(path, segment_bytes=SEGMENT_BYTES)
        run = Run(sender=StreamSender(up), run_id=run_id, project=cfg["project"],
                  entity=cfg["entity"], name=run_id, config={"stream": run_id}, url="",
                  journal=journal, journal_dir=path)
        run._start(metadata=events_pb2.RunMetadata())
        runs.append(run)
    lags: list[float] = []
    asyncio.run_coroutine_threadsafe(watch_lag(lags), loop)
    # What exists now lives to the end: keep it out of the collector's full passes,
    # which would stall the loop for every stream at once.
    gc.collect()
    gc.freeze()
    deadline = time.monotonic() + cfg["ready_timeout_s"]
    for run in runs:
        if not run._sender.wait_acked(run, 1, max(0.0, deadline - time.monotonic())):
            _out({"ready": False, "run": run.id})
            return 1
    _out({"ready": True})

    t0 = _line()["t0"]
    stop = threading.Event()
    killed_at: list[float] = []

    def commands() -> None:
        while True:
            msg = _line()
            if "killed" in msg:
                killed_at.append(msg["killed"])
            if msg.get("stop"):
                stop.set()
                return
    threading.Thread(target=commands, daemon=True).start()
    pace = cfg["pace_s"]
    phases = cfg["phases"]
    logged = [0] * n
    resumed = False
    while not stop.is_set():
        # The due steps of every stream; then sleep to the next one (or 0.1 s, to look
        # at the streams' acknowledgements again).
        now = time.time()
        nxt = now + 0.1
        for i, run in enumerate(runs):
            while t0 + (logged[i] + phases[i]) * pace <= now:
                run.log({"v": float(logged[i])})
                logged[i] += 1
            nxt = min(nxt, t0 + (logged[i] + phases[i]) * pace)
        if killed_at and not resumed:
            resumed = all(any(a is not None and a > killed_at[0] for a in up.first_acks)
                          for up in ups)
            if resumed:
                _out({"resumed": True})
        stop.wait(max(0.0, nxt - time.time()))

    finish_by = time.monotonic() + cfg["finish_timeout_s"]
    with ThreadPoolExecutor(max_workers=n) as pool:
        finished = list(pool.map(
            lambda r: r.finish(timeout=max(0.0, finish_by - time.monotonic())), runs))
    for up in ups:
        up.stop()
    for t in tasks:
        try:
            t.result(10)
        except Exception as e:
            errors.messages.append(f"an uploader ended with {e!r}")
    for run, up, count, ok in zip(runs, ups, logged, finished, strict=True):
        _out({"run": run.id, "logged": count, "finished": ok, "planned": up.planned,
              "attempts": up.attempts,
              "connects": up.connects, "first_acks": up.first_acks,
              "reconnects": up.reconnects, "last_error": up.last_error})
    _out({"done": True, "errors": errors.messages, "loop_lags": lags})
    loop.call_soon_threadsafe(loop.stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
