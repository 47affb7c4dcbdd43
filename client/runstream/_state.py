"""Process-wide client state: the sender and the active run, plus exit hooks."""

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
_active: Run | None = None
_exit_code: int | None = None
_hooks_installed = False


def sender(settings) -> Sender:
    global _sender
    from ._sender import Sender
    with _lock:
        if _sender is None:
            _sender = Sender(settings)
        return _sender


def set_active(run: Run | None) -> None:
    global _active
    import runstream
    with _lock:
        _active = run
        runstream.run = run


def active() -> Run | None:
    return _active


def forget(run: Run) -> None:
    with _lock:
        if _active is run:
            set_active(None)


def _excepthook(exc_type, exc, tb):
    global _exit_code
    _exit_code = 255 if issubclass(exc_type, KeyboardInterrupt) else 1
    _prev_excepthook(exc_type, exc, tb)


_prev_excepthook = sys.excepthook
_real_exit = sys.exit


def _exit(code=0):
    global _exit_code
    _exit_code = code if isinstance(code, int) else (0 if code is None else 1)
    _real_exit(code)


def _at_exit() -> None:
    run = _active
    if run is not None:
        run.finish(exit_code=_exit_code or 0)
    if _sender is not None:
        _sender.close(timeout=2.0)


def _after_fork_in_child() -> None:
    # A forked child does not inherit the parent's run or its connection.
    global _sender, _active
    _sender = None
    _active = None
    try:
        import runstream
        runstream.run = None
    except ImportError:
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
