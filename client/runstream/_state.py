"""Process-wide client state: the sender, the live runs, and the exit hooks.

``runstream.run`` / ``runstream.config`` / ``runstream.summary`` follow the newest live
run (a run made with ``reinit="create_new"`` is live beside the older ones); when it
finishes they fall back to the next newest, and to the pre-init placeholders when none
is left.

Exit codes (used when the interpreter exits with runs still live): ``sys.exit(n)`` →
n (``sys.exit`` is wrapped; ``None`` → 0, any other non-int → 1), an uncaught exception
→ 1, an uncaught ``KeyboardInterrupt`` (Ctrl-C) → 255, otherwise 0. A ``SystemExit``
raised directly (not through ``sys.exit``) is not seen and counts as 0.

A forked child does not inherit the parent's runs or connection: after ``fork`` the
child's copies of the parent's runs are detached (their ``log``/``finish`` do nothing)
and the child starts with no run and no sender. gRPC cannot be used in a child forked
after the parent used it, so a run started there uploads through a helper process
(``_uploader.py``), and ``init`` cannot look a run up there (see ``init``: resume).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._run import Run
    from ._sender import Sender

_lock = threading.RLock()
_sender: Sender | None = None
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


def sender(settings) -> Sender:
    global _sender
    with _lock:
        if _sender is None:
            if grpc_usable():
                from ._sender import Sender
                note_grpc_use()
                _sender = Sender(settings)
            else:
                from ._uploader import PipeSender
                _sender = PipeSender(settings)
        return _sender


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
    if _sender is not None:
        _sender.close(timeout=2.0)


def _keep_forever(obj) -> None:
    """Never deallocate ``obj`` in this process (one leaked reference)."""
    import ctypes
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


def _after_fork_in_child() -> None:
    # A forked child does not inherit the parent's runs or its connection. The parent's
    # sender (gRPC channel, event loop) must not even be deallocated here: destroying
    # gRPC objects copied from another process crashes the child (SIGSEGV).
    global _sender, _exit_code, _forked_after_grpc
    _forked_after_grpc = _forked_after_grpc or _grpc_used
    for run in _runs:
        run._detach_after_fork()
    if _sender is not None:
        _keep_forever(_sender)
    _runs.clear()
    _sender = None
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
