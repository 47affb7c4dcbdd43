"""Uploading from a forked child: through a helper process, since gRPC cannot be used there.

gRPC does not survive ``fork()``: a child forked while the parent's sender (a gRPC
channel served by gRPC's own threads) was alive hangs or crashes in its first gRPC
call. So in such a child (``multiprocessing`` with the ``fork`` start method, or a plain
``os.fork()``), ``runstream.init`` gets a ``PipeSender`` instead of a ``Sender``: it
keeps the same journal and heartbeat duties in the child, and hands every event to a
fresh helper process (``python -m runstream._uploader``, started with fork + exec, so
its gRPC is clean) over a pipe; the helper runs an ordinary ``Sender`` and reports
acknowledgements back, so ``finish()`` still waits for the server. When the child
ends, the helper sees end-of-file, uploads what is left (up to the finish timeout)
and exits.

Frames, little-endian: child → helper ``<H run-id-length> <Q seq> <I data-length>
run-id data``; helper → child ``<H run-id-length> <Q acked-seq> run-id``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ._journal import Journal
from ._settings import Settings

log = logging.getLogger("runstream")

_EVENT = struct.Struct("<HQI")
_ACK = struct.Struct("<HQ")
_ENV = "RUNSTREAM_UPLOADER_SETTINGS"
_SIMPLE = (str, int, float, bool)


def _settings_json(s: Settings) -> str:
    return json.dumps({f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                       if isinstance(getattr(s, f.name), _SIMPLE)})


def _read_exact(f, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class PipeSender:
    """The ``Sender`` interface of a forked child, backed by a helper process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.journal = Journal()
        self.connected = False
        self.reconnects = 0
        self._heartbeats: dict[str, Callable[[], None]] = {}
        self._last_activity: dict[str, float] = {}
        self._lock = threading.Lock()
        # Frames; an Event asks for a flush (set once written); None closes the pipe.
        self._queue: queue.SimpleQueue[bytes | threading.Event | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        env = {**os.environ, _ENV: _settings_json(settings)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "runstream._uploader"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, close_fds=True, start_new_session=True)
        for target, name in ((self._write_loop, "writer"), (self._read_loop, "reader"),
                             (self._heartbeat_loop, "heartbeat")):
            threading.Thread(target=target, name=f"runstream-pipe-{name}", daemon=True).start()
        # A multiprocessing child (fork) ends with os._exit: no atexit. Its finalizers
        # still run, so hand the queued events to the helper then (a run not finished
        # there ends crashed, with every event logged).
        import multiprocessing
        if multiprocessing.parent_process() is not None:
            from multiprocessing import util
            util.Finalize(None, self.flush, kwargs={"timeout": 2.0}, exitpriority=100)

    # -- the Sender interface -------------------------------------------------------
    def publish(self, run_id: str, seq: int, data: bytes) -> None:
        self.journal.append(run_id, seq, data)
        self._last_activity[run_id] = time.monotonic()
        rid = run_id.encode()
        self._queue.put(_EVENT.pack(len(rid), seq, len(data)) + rid + data)

    def deliver(self, run_id: str, seq: int, timeout: float) -> bool:
        return self.journal.wait_acked(run_id, seq, timeout)

    def register_heartbeat(self, run_id: str, beat: Callable[[], None]) -> None:
        with self._lock:
            self._heartbeats[run_id] = beat
            self._last_activity[run_id] = time.monotonic()

    def unregister_heartbeat(self, run_id: str) -> None:
        with self._lock:
            self._heartbeats.pop(run_id, None)

    def flush(self, timeout: float) -> bool:
        """Wait until every event published so far was written to the helper."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Hand everything to the helper and let it finish on its own."""
        self._stop.set()
        self.flush(timeout)
        self._queue.put(None)

    # -- threads ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        out = self._proc.stdin
        flushes: list[threading.Event] = []
        try:
            while True:
                item = self._queue.get()
                parts = []
                while True:
                    if isinstance(item, bytes):
                        parts.append(item)
                    elif item is not None:
                        flushes.append(item)
                    if item is None:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = b""
                        break
                if parts:
                    out.write(b"".join(parts))
                    out.flush()
                for ev in flushes:
                    ev.set()
                flushes.clear()
                if item is None:
                    break
        except (OSError, ValueError) as e:
            log.warning("runstream: the upload helper process is gone: %s", e)
        finally:
            for ev in flushes:
                ev.set()
            try:
                out.close()
            except OSError:
                pass

    def _read_loop(self) -> None:
        f = self._proc.stdout
        while True:
            head = _read_exact(f, _ACK.size)
            if head is None:
                return
            n, seq = _ACK.unpack(head)
            rid = _read_exact(f, n)
            if rid is None:
                return
            self.connected = True
            self.journal.ack(rid.decode(), seq)

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        while not self._stop.wait(min(interval / 4, 1.0)):
            now = time.monotonic()
            with self._lock:
                due = [beat for rid, beat in self._heartbeats.items()
                       if now - self._last_activity.get(rid, 0) >= interval]
            for beat in due:
                beat()


# -- the helper process ---------------------------------------------------------------

def _helper_main() -> int:
    from ._sender import Sender
    raw = json.loads(os.environ.pop(_ENV, "{}"))
    known = {f.name for f in dataclasses.fields(Settings)}
    settings = Settings(**{k: v for k, v in raw.items() if k in known})
    sender = Sender(settings)
    out = sys.stdout.buffer
    inp = sys.stdin.buffer
    out_lock = threading.Lock()
    reported: dict[str, int] = {}
    done = threading.Event()

    def report() -> None:
        j = sender.journal
        with j._cond:
            acked = dict(j._acked)
        frames = []
        for rid, seq in acked.items():
            if reported.get(rid, 0) < seq:
                reported[rid] = seq
                b = rid.encode()
                frames.append(_ACK.pack(len(b), seq) + b)
        if frames:
            with out_lock:
                try:
                    out.write(b"".join(frames))
                    out.flush()
                except (OSError, ValueError):
                    pass    # the child is gone; keep uploading

    def report_loop() -> None:
        while not done.wait(0.02):
            report()

    threading.Thread(target=report_loop, daemon=True).start()
    while True:
        head = _read_exact(inp, _EVENT.size)
        if head is None:
            break
        n, seq, size = _EVENT.unpack(head)
        rid = _read_exact(inp, n)
        data = _read_exact(inp, size)
        if rid is None or data is None:
            break
        sender.publish(rid.decode(), seq, data)
    # The child is done (or died): upload what is left, bounded.
    deadline = time.monotonic() + settings.finish_timeout_s
    while sender.journal.unacked() and time.monotonic() < deadline:
        time.sleep(0.05)
    report()
    done.set()
    left = sender.journal.unacked()
    if left:
        log.warning("runstream upload helper: %d event(s) not acknowledged by %s", left,
                    settings.url)
    sender.close(timeout=2.0)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.exit(_helper_main())
