"""Process-wide client state: the sender, the live runs, and the exit hooks.

``runstream.run`` / ``runstream.config`` / ``runstream.summary`` follow the newest live
run (a run made with ``reinit="create_new"`` is live beside the older ones); when it
finishes they fall back to the next newest, and to the pre-init placeholders when none
is left.

Exit codes (used when the interpreter exits with runs still live): ``sys.exit(n)`` →
n (``sys.exit`` is wrapped; ``None`` → 0, any other non-int → 1), an uncaught exception
→ 1, an uncaught ``KeyboardInterrupt`` (Ctrl-C) → 255, otherwise 0. A ``SystemExit``
raised directly (not through ``sys.exit``) is not seen and counts as 0.

The sender uploads the journals of this process's online runs: a ``HelperSender``
(``_helper.py``, a helper process; the default) or a ``ThreadSender`` (``_sender.py``;
``uploader="thread"``, or when no helper can be started). One **keeper** thread per
process does the periodic work of the runs (``Run._tick``: journal upkeep, heartbeats of
idle runs) and watches the sender (a dead helper is started again).

A forked child does not inherit the parent's runs or sender: after ``fork`` the child's
copies of the parent's runs are detached (their ``log``/``finish`` do nothing), their
journals refuse writes, and the child starts with no run, no sender and no keeper.
gRPC cannot be used in a child forked after the parent used it; a run started there
uploads through a helper process of its own (fork + exec, so its gRPC is clean), and
``init`` cannot look a run up there (see ``init``: resume).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._run import Run

log = logging.getLogger("runstream")

_lock = threading.RLock()
_sender: Any = None            # HelperSender | ThreadSender | NullSender
# Senders for runs whose url differs from ``_sender``'s (rare: one process logging to
# two servers), by url.
_other_senders: dict[str, Any] = {}
_keeper: threading.Thread | None = None
_runs: list[Run] = []          # live runs, oldest first
_active: Run | None = None     # the newest live run
_exit_code: int | None = None
_hooks_installed = False
_grpc_used = False             # this process made a gRPC channel (sender or run lookup)
_forked_after_grpc = False     # ... or it is a child forked from one that did


def grpc_usable() -> bool:
    """False in a child forked after gRPC was used: gRPC hangs or crashes there."""
    return not _forked_after_grpc


def note_grpc_use() -> None:
    global _grpc_used
    _grpc_used = True


def sender(settings, log_dir: str = ""):
    """The process's sender for ``settings.url``: one per server, made by the first online
    run that uploads there, with that run's settings."""
    global _sender
    with _lock:
        if _sender is None:
            _sender = _make_sender(settings, log_dir)
            return _sender
        if _sender.settings.url == settings.url:
            return _sender
        other = _other_senders.get(settings.url)
        if other is None:
            other = _other_senders[settings.url] = _make_sender(settings, log_dir)
        return other


def all_senders() -> list:
    """Every sender of this process (the first one first). Takes no lock: the keeper
    thread calls it every tick, and a lock held at a fork would hang the child's init;
    ``list(dict.values())`` is one step under the GIL."""
    first = _sender
    return ([first] if first is not None else []) + list(_other_senders.values())


def _make_sender(settings, log_dir: str):
    from ._sender import NullSender, ThreadSender
    helper_error = None
    if settings.uploader == "process" or not grpc_usable():
        from ._helper import HelperSender
        path = os.path.join(log_dir, f"helper-{os.getpid()}.log") if log_dir else ""
        try:
            return HelperSender(settings, log_path=path)
        except Exception as e:  # noqa: BLE001 - e.g. no executable, fork refused
            helper_error = e
    if grpc_usable():
        if helper_error is not None:
            log.warning("runstream: cannot start the upload helper process (%s); uploading "
                        "from a thread of this process (what is journaled right before a "
                        "kill of this process is then uploaded by `runstream sync` only)",
                        helper_error)
        note_grpc_use()
        return ThreadSender(settings)
    log.warning("runstream: cannot start the upload helper process (%s) and this forked "
                "child cannot use gRPC; runs stay in their journals for `runstream sync`",
                helper_error)
    return NullSender(settings)


def start_keeper() -> None:
    """Start the keeper thread if it is not running."""
    global _keeper
    with _lock:
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keep, name="runstream-keeper", daemon=True)
            _keeper.start()


def _keep() -> None:
    while True:
        tick = 1.0
        now = time.monotonic()
        for run in live():
            try:
                run._tick(now)
                if run.mode == "online":
                    tick = min(tick, run._sender.settings.heartbeat_interval_s / 4)
            except Exception:
                log.debug("runstream keeper: run %s", getattr(run, "id", "?"), exc_info=True)
        for s in all_senders():
            try:
                s.watch()
            except Exception:
                log.debug("runstream keeper: watching the sender", exc_info=True)
        time.sleep(max(0.05, tick))


def _publish_globals() -> None:
    """Point the module-level names at the newest live run (or the placeholders)."""
    global _active
    import runstream
    _active = _runs[-1] if _runs else None
    runstream.run = _active
    if _active is None:
        runstream.config = runstream._PRE_INIT_CONFIG
        runstream.summary = runstream._PRE_INIT_SUMMARY
    else:
        runstream.config = _active.config
        runstream.summary = _active.summary


def add(run: Run) -> None:
    """``run`` is live and becomes the active run."""
    with _lock:
        if run not in _runs:
            _runs.append(run)
        _publish_globals()


def set_active(run: Run | None) -> None:
    """Make ``run`` the only live run (``None``: no run). For tests and old callers."""
    with _lock:
        _runs.clear()
        if run is not None:
            _runs.append(run)
        _publish_globals()


def active() -> Run | None:
    return _active


def live() -> list[Run]:
    """The live runs, oldest first."""
    return list(_runs)


def forget(run: Run) -> None:
    with _lock:
        if run in _runs:
            _runs.remove(run)
            _publish_globals()


def _excepthook(exc_type, exc, tb):
    global _exit_code
    _exit_code = 255 if issubclass(exc_type, KeyboardInterrupt) else 1
    _prev_excepthook(exc_type, exc, tb)


_prev_excepthook = sys.excepthook
_real_exit = sys.exit


def exit_code_of(code) -> int:
    """The process exit status ``sys.exit(code)`` gives."""
    if code is None:
        return 0
    if isinstance(code, bool):
        return int(code)
    return code if isinstance(code, int) else 1


def _exit(code=0):
    global _exit_code
    _exit_code = exit_code_of(code)
    _real_exit(code)


def _at_exit() -> None:
    code = _exit_code or 0
    for run in reversed(live()):
        try:
            run.finish(exit_code=code)
        except Exception:  # noqa: BLE001 - never fail the interpreter's exit
            pass
    for s in all_senders():
        s.close(timeout=2.0)


def _keep_forever(obj) -> None:
    """Never deallocate ``obj`` in this process (one leaked reference)."""
    import ctypes
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _after_fork_in_child() -> None:
    # A forked child does not inherit the parent's runs or its connection. The parent's
    # sender (gRPC channel, event loop) must not even be deallocated here: destroying
    # gRPC objects copied from another process crashes the child (SIGSEGV).
    global _sender, _exit_code, _forked_after_grpc, _keeper
    _forked_after_grpc = _forked_after_grpc or _grpc_used
    for run in _runs:
        run._detach_after_fork()
    for s in all_senders():
        _keep_forever(s)
    _runs.clear()
    _sender = None
    _other_senders.clear()
    _keeper = None
    _exit_code = None
    try:
        _publish_globals()
    except (ImportError, AttributeError):
        pass


def install_hooks() -> None:
    global _hooks_installed
    with _lock:
        if _hooks_installed:
            return
        _hooks_installed = True
        sys.excepthook = _excepthook
        sys.exit = _exit
        atexit.register(_at_exit)
        os.register_at_fork(after_in_child=_after_fork_in_child)
