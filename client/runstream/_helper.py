"""The upload helper process: uploads the journals of one training process, and outlives it.

Why a process (measured, see docs/architecture.md "The client"): a run's events are in
its journal (``_wal.py``, a shared file mapping) before ``log()`` returns, so they
survive a SIGKILL of the training process, but only something still alive afterwards
can deliver them and say that the process died. The helper notices its parent's death
within a few milliseconds (end of file on its stdin, and ``getppid()`` polling), appends
a ``ProcessExited`` event to every run the parent did not finish, uploads what is left
(measured: delivered 104-123 ms after the kill, nothing lost) and exits; the server then
marks the run crashed at once instead of after the reaper's heartbeat timeout.

Training process side: ``HelperSender`` (the sender ``runstream.init`` uses by default)
starts ``python -m runstream._helper`` (fork + exec, own session, so a Ctrl-C in the
terminal or a SIGKILL of the training process does not reach it) with two pipes, both
newline-delimited JSON:

    parent → helper (its stdin, also the lifeline: end of file = the parent is gone)
        {"op": "add", "path": DIR}        upload the journal in DIR (a live run)
        {"op": "watch", "path": DIR}      report DIR's watermark (finish() is waiting)
        {"op": "forget", "path": DIR}     the run finished and everything was acked
    helper → parent (its stdout)
        {"op": "acked", "path": DIR, "seq": N}   the watermark of a watched DIR is N
        {"op": "control", "data": HEX}          a Control message (stop) from the server
        {"op": "status", "connected": BOOL}
        {"op": "log", "level": N, "msg": TEXT}   the helper's warnings, logged by the parent

While the training process trains, nothing comes back: no thread of it wakes up for
the upload (the watermark is in each journal's ``acked`` file anyway). The parent's
keeper thread watches the helper: a helper that died is started again (it
resumes from the persisted watermarks); after ``MAX_RESTARTS`` failures, or when no
process can be started at all, the runs are uploaded by a thread instead.

When the parent is gone (normal exit or death) the helper appends ``ProcessExited`` to
every registered journal that does not end with ``Finish``, uploads for at most
``drain_timeout_s`` (300 s by default), deletes the journals that were delivered in full
and leaves the rest for ``runstream sync``. Its warnings go to the parent while it is
alive, then to ``<dir>/runstream-runs/helper-<parent pid>.log`` (created only if needed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

from ._settings import Settings

log = logging.getLogger("runstream")

_ENV_SETTINGS = "RUNSTREAM_HELPER_SETTINGS"
_ENV_LOG = "RUNSTREAM_HELPER_LOG"
_CLIENT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SIMPLE = (str, int, float, bool)
MAX_RESTARTS = 5
PARENT_POLL_S = 0.02


def settings_json(s: Settings) -> str:
    return json.dumps({f.name: getattr(s, f.name) for f in dataclasses.fields(s)
                       if isinstance(getattr(s, f.name), _SIMPLE)})


def settings_from_json(raw: str) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in json.loads(raw or "{}").items() if k in known})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# -- the training process's side --------------------------------------------------------

_senders: weakref.WeakSet[HelperSender] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for s in list(_senders):
        s._disown_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class HelperSender:
    """The sender of a training process that uploads through a helper process.

    Raises ``OSError`` when the helper cannot be started (the caller then uploads in a
    thread).
    """

    kind = "process"

    def __init__(self, settings: Settings, log_path: str = "") -> None:
        self.settings = settings
        self.log_path = log_path
        self._lock = threading.Lock()          # the pipe and the registry
        self._cond = threading.Condition()     # acknowledgements
        self._acked: dict[str, int] = {}
        self._runs: dict[str, Any] = {}        # path → run, registered and not released
        self._delegates: dict[str, Any] = {}   # path → ThreadSender for that run only
        self._thread_sender = None
        self._fallback = None                  # once no helper can run: for every run
        self._proc: subprocess.Popen | None = None
        self._wfd = -1
        self._rfd = -1
        self._closed = False
        self.restarts = 0
        self.connected = False
        self._spawn()
        _senders.add(self)

    # -- the helper process ---------------------------------------------------------------
    def _spawn(self) -> None:
        env = dict(os.environ)
        env[_ENV_SETTINGS] = settings_json(self.settings)
        env[_ENV_LOG] = self.log_path
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _CLIENT_DIR + (os.pathsep + pp if pp else "")
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        try:
            # cwd: the user's directory must not shadow a module the helper imports.
            proc = subprocess.Popen([sys.executable, "-m", "runstream._helper"],
                                    stdin=r_in, stdout=w_out, stderr=subprocess.DEVNULL,
                                    env=env, cwd=_CLIENT_DIR, close_fds=True,
                                    start_new_session=True)
        except BaseException:
            for fd in (r_in, w_in, r_out, w_out):
                os.close(fd)
            raise
        os.close(r_in)
        os.close(w_out)
        with self._lock:
            old_r = self._rfd
            self._proc, self._wfd, self._rfd = proc, w_in, r_out
            if old_r >= 0:
                with contextlib.suppress(OSError):
                    os.close(old_r)
        threading.Thread(target=self._read_loop, args=(proc, r_out),
                         name="runstream-helper-reader", daemon=True).start()
        for path in list(self._runs):
            if path not in self._delegates:
                self._send({"op": "add", "path": path})

    def _send(self, msg: dict) -> bool:
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            if self._wfd < 0:
                return False
            try:
                _write_all(self._wfd, data)
                return True
            except OSError:
                return False      # the helper is gone; watch() starts another

    def _read_loop(self, proc: subprocess.Popen, fd: int) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                try:
                    self._on_message(msg)
                except Exception:
                    log.exception("runstream: message from the upload helper: %r", msg)
        if self._proc is proc:
            self.connected = False

    def _on_message(self, msg: dict) -> None:
        op = msg.get("op")
        if op == "acked":
            with self._cond:
                path = msg["path"]
                if msg["seq"] > self._acked.get(path, 0):
                    self._acked[path] = msg["seq"]
                    self._cond.notify_all()
        elif op == "control":
            from . import _control
            from .v1 import ingest_pb2
            _control.handle(ingest_pb2.Control.FromString(bytes.fromhex(msg["data"])), self)
        elif op == "status":
            self.connected = bool(msg.get("connected"))
        elif op == "log":
            log.log(int(msg.get("level", logging.WARNING)), "runstream upload helper: %s",
                    msg.get("msg", ""))

    def watch(self) -> None:
        """Called by the keeper thread about once a second: restart a dead helper."""
        if self._closed:
            return
        if self._fallback is not None:
            self._fallback.watch()
            return
        proc = self._proc
        if proc is None or proc.poll() is None:
            return
        self.restarts += 1
        if self.restarts > MAX_RESTARTS:
            log.warning("runstream: the upload helper process keeps exiting (status %s); "
                        "uploading from this process instead", proc.returncode)
            self._use_fallback()
            return
        log.warning("runstream: the upload helper process exited (status %s); starting "
                    "it again", proc.returncode)
        try:
            self._spawn()
        except OSError as e:
            log.warning("runstream: cannot start the upload helper again (%s); uploading "
                        "from this process instead", e)
            self._use_fallback()

    def _thread(self):
        """A ThreadSender (None when this process cannot use gRPC: a forked child)."""
        from . import _state
        if self._thread_sender is None and _state.grpc_usable():
            from ._sender import ThreadSender
            _state.note_grpc_use()
            self._thread_sender = ThreadSender(self.settings)
        return self._thread_sender

    def _use_fallback(self) -> None:
        from ._sender import NullSender
        fb = self._thread() or NullSender(self.settings)
        if fb.kind == "none":
            log.warning("runstream: nothing can upload from this process; the journals stay "
                        "on disk for `runstream sync`")
        with self._lock:
            if self._wfd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._wfd)
                self._wfd = -1
        for path, run in list(self._runs.items()):
            if path not in self._delegates:
                fb.register(run)
        with self._cond:
            self._fallback = fb
            self._cond.notify_all()

    # -- the sender interface ---------------------------------------------------------------
    def _other(self, path: str):
        return self._delegates.get(path) or self._fallback

    def register(self, run) -> None:
        path = run.journal_dir
        self._runs[path] = run
        if self._fallback is not None:
            self._fallback.register(run)
            return
        j = run._journal
        if j is not None and not j.on_disk:
            # The journal could not be written (disk full, no permission): its events are
            # in this process's memory only, where a helper cannot read them.
            t = self._thread()
            if t is not None:
                self._delegates[path] = t
                t.register(run)
                return
        self._send({"op": "add", "path": path})

    def acked(self, run) -> int:
        from ._wal import read_acked
        other = self._other(run.journal_dir)
        if other is not None:
            return other.acked(run)
        with self._cond:
            known = self._acked.get(run.journal_dir, 0)
        return max(known, read_acked(run.journal_dir))

    def wait_acked(self, run, seq: int, timeout: float) -> bool:
        from ._wal import read_acked
        path = run.journal_dir
        deadline = time.monotonic() + max(0.0, timeout)
        if self._other(path) is None:
            self._send({"op": "watch", "path": path})
        with self._cond:
            while True:
                other = self._other(path)
                if other is not None:
                    break
                if self._acked.get(path, 0) >= seq:
                    return True
                # The persisted watermark too: a helper restarted meanwhile may have
                # acknowledged what its predecessor had not reported yet.
                on_disk = read_acked(path)
                if on_disk > self._acked.get(path, 0):
                    self._acked[path] = on_disk
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return other.wait_acked(run, seq, max(0.0, deadline - time.monotonic()))

    def release(self, run) -> None:
        path = run.journal_dir
        self._runs.pop(path, None)
        other = self._delegates.pop(path, None) or self._fallback
        if other is not None:
            other.release(run)
        else:
            self._send({"op": "forget", "path": path})
        with self._cond:
            self._acked.pop(path, None)

    def close(self, timeout: float = 5.0) -> None:
        """End of this process's uploads here: the helper gets end of file, finishes
        on its own (bounded by ``drain_timeout_s``) and exits."""
        self._closed = True
        with self._lock:
            if self._wfd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._wfd)
                self._wfd = -1
        proc = self._proc
        if proc is not None:
            # Reap it when it ends (no zombie in a long-lived process such as a notebook).
            threading.Thread(target=proc.wait, name="runstream-helper-reaper",
                             daemon=True).start()
        for other in {id(o): o for o in (self._thread_sender, self._fallback) if o}.values():
            other.close(timeout)

    def _disown_after_fork(self) -> None:
        """In a forked child: the parent's helper is not ours. Close our copies of the
        pipes (else the helper would not see the parent's end) and never use them."""
        self._closed = True
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        for fd in (self._wfd, self._rfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wfd = self._rfd = -1
        self._proc = None
        self._thread_sender = self._fallback = None
        self._delegates = {}


# -- the helper process -------------------------------------------------------------------

class _Channel:
    """Lines to the parent (fd 1). Dead once a write fails."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.alive = True
        self._lock = threading.Lock()

    def send(self, msg: dict) -> None:
        if not self.alive:
            return
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            try:
                _write_all(self.fd, data)
            except OSError:
                self.alive = False


class _RelayHandler(logging.Handler):
    """The helper's log records: to the parent while it is alive, else to a file."""

    def __init__(self, channel: _Channel, path: str) -> None:
        super().__init__(logging.WARNING)
        self.channel = channel
        self.file = (logging.FileHandler(path, delay=True) if path else None)
        if self.file is not None:
            self.file.setFormatter(logging.Formatter(
                "%(asctime)s %(levelname)s runstream helper %(process)d: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.channel.alive:
            self.channel.send({"op": "log", "level": record.levelno,
                               "msg": record.getMessage()})
            if self.channel.alive:
                return
        if self.file is not None:
            self.file.emit(record)


def mark_exited(path: str, pid: int, hostname: str, reason: str,
                lock_wait_s: float = 2.0) -> bool:
    """Append ``ProcessExited`` to the journal at ``path`` unless it ends with
    ``Finish`` (or already with ``ProcessExited``). True if one was appended."""
    from ._wal import WalLockedError, WalReader, WalWriter
    from .v1 import events_pb2
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            w = WalWriter(path)
            break
        except WalLockedError:
            # Released by the kernel as the process dies; a forked child of it closed
            # its copy at fork. Someone else writing it now: not ours to end.
            if time.monotonic() >= deadline:
                log.warning("journal %s is still being written by another process; "
                            "not marking it", path)
                return False
            time.sleep(0.02)
    r = WalReader(path)
    try:
        last = w.last_seq
        if last == 0:
            return False
        recs = r.read(last - 1, max_events=1)
        if not recs:
            return False
        ev = events_pb2.Event.FromString(recs[-1][1])
        if ev.WhichOneof("body") in ("finish", "process_exited"):
            return False
        pe = events_pb2.Event(run_id=ev.run_id, project=ev.project, entity=ev.entity,
                              seq=last + 1, client_time_us=time.time_ns() // 1000)
        pe.process_exited.pid = pid
        pe.process_exited.hostname = hostname
        pe.process_exited.reason = reason
        pe.process_exited.after_seq = last
        return w.append(last + 1, pe.SerializeToString(), pinned=True)
    finally:
        r.close()
        w.close()


def remove_journal(path: str) -> bool:
    """Delete a journal delivered in full (and ``runstream-runs/`` above it once empty)."""
    from ._wal import remove_if_acked
    if not remove_if_acked(path):
        return False
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))
    return True


async def _serve(settings: Settings, ppid: int, out: _Channel) -> None:
    from ._sender import Uploader
    loop = asyncio.get_running_loop()
    watched: set[str] = set()

    def on_ack(path: str, seq: int) -> None:
        if path in watched:
            out.send({"op": "acked", "path": path, "seq": seq})

    up = Uploader(settings, on_ack=on_ack,
                  on_control=lambda c: out.send({"op": "control",
                                                 "data": c.SerializeToString().hex()}))
    registered: dict[str, None] = {}
    gone = asyncio.Event()
    eof = asyncio.Event()
    why: list[str] = []

    def on_line(line: bytes) -> None:
        try:
            msg = json.loads(line)
            op, path = msg["op"], msg.get("path", "")
        except (ValueError, KeyError, TypeError):
            log.warning("bad line from the training process: %r", line[:200])
            return
        if op == "add":
            registered[path] = None
            try:
                up.add(path)
            except OSError as e:
                log.warning("cannot read journal %s: %s", path, e)
        elif op == "watch":
            watched.add(path)
            out.send({"op": "acked", "path": path, "seq": up.acked(path)})
        elif op == "forget":
            registered.pop(path, None)
            watched.discard(path)
            up.remove(path)

    def parent_gone(reason: str) -> None:
        if not gone.is_set():
            why.append(reason)
            gone.set()

    def on_eof() -> None:
        eof.set()
        parent_gone("")

    def stdin_loop() -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                loop.call_soon_threadsafe(on_line, line)
        loop.call_soon_threadsafe(on_eof)

    threading.Thread(target=stdin_loop, name="stdin", daemon=True).start()
    up_task = asyncio.ensure_future(up.run())
    connected = None
    while not gone.is_set():
        if os.getppid() != ppid:
            parent_gone("its parent process changed")
        if up.connected != connected:
            connected = up.connected
            out.send({"op": "status", "connected": connected})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone.wait(), PARENT_POLL_S)
    # The parent is gone. Lines it wrote before are still queued until end of file
    # (which a grandchild holding the pipe could delay: not for long).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(eof.wait(), 0.5)
    await asyncio.sleep(0)
    hostname = socket.gethostname()
    for path in list(registered):
        try:
            if await asyncio.to_thread(mark_exited, path, ppid, hostname, why[0]):
                log.debug("run in %s: the training process exited without finishing", path)
        except Exception:
            log.exception("marking %s as exited", path)
    deadline = time.monotonic() + settings.drain_timeout_s
    while time.monotonic() < deadline and not up_task.done() and up.pending():
        await asyncio.wait({up_task}, timeout=0.05)
    left = [p for p in registered if up.pending(p)]
    up.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(up_task, 5)
    for path in registered:
        if path not in left:
            up.remove(path)
            remove_journal(path)
    if left:
        log.warning("%d run journal(s) not fully delivered to %s within %.0f s after the "
                    "training process ended; upload them with `runstream sync`: %s",
                    len(left), settings.url, settings.drain_timeout_s, ", ".join(left))


def main() -> int:
    settings = settings_from_json(os.environ.pop(_ENV_SETTINGS, "{}"))
    log_path = os.environ.pop(_ENV_LOG, "")
    ppid = os.getppid()
    out = _Channel(1)
    root = logging.getLogger()
    root.handlers[:] = [_RelayHandler(out, log_path)]
    root.setLevel(logging.WARNING)
    try:
        asyncio.run(_serve(settings, ppid, out))
    except Exception:
        log.exception("the upload helper failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
