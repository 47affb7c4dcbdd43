"""Control messages pushed by the server on the ingest stream (``Control`` in ingest.proto).

Stop (``Control.stop_run``, sent when someone calls ``Api().run(path).stop()`` or
stops the run in the UI), for the active run of this process:

1. ``settings.stop_fn()`` is called if set (in a runstream thread: set a flag that the
   training loop checks, for example); otherwise ``KeyboardInterrupt`` is raised in the
   main thread, exactly as Ctrl-C would (SIGINT to the main thread, so a blocking
   ``sleep`` or I/O call is interrupted too). A script that lets it propagate ends the
   run through the exit hooks; a ``with runstream.init()`` block finishes it.
2. If the run has not begun finishing ``stop_grace_s`` later (default 10 s, env
   ``RUNSTREAM_STOP_GRACE``), runstream finishes it itself (exit code 143, waiting at
   most 5 s for the upload) and sends SIGTERM to its own process; if the process is
   still alive another ``stop_grace_s`` later, SIGKILL.

The server records who asked and when: whatever exit code the run's Finish carries, the
projector ends it ``killed`` with cause ``stopped by <who> at <time>``. Stop messages
for runs that are not the active run here (already finished, or another process) are
ignored, and a run is stopped once however often the message comes.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger("runstream")

EXIT_CODE_TERMINATED = 128 + signal.SIGTERM    # what a shell reports for SIGTERM
FINISH_WAIT_S = 5.0

_lock = threading.Lock()
_stopped: set[str] = set()          # run ids whose stop was already acted upon
stoppers: list[threading.Thread] = []


def handle(control: Any, sender: Any) -> None:
    """Act on one ``Control`` message; called on the sender's loop, so never blocks."""
    kind = control.WhichOneof("kind")
    if kind == "stop_run":
        _on_stop(control.stop_run.run_id, control.stop_run.requested_by, sender)
    else:
        log.info("runstream: control message %s", control)


def _settings_of(run: Any, sender: Any):
    return getattr(run, "settings", None) or getattr(run, "_settings", None) or sender.settings


def _on_stop(run_id: str, requested_by: str, sender: Any) -> None:
    from . import _state
    run = _state.active()
    if run is None or run.id != run_id or _finishing(run):
        log.info("runstream: stop requested for run %s, which is not running here", run_id)
        return
    with _lock:
        if run_id in _stopped:
            return
        _stopped.add(run_id)
    t = threading.Thread(target=_stop, args=(run, requested_by or "unknown",
                                             _settings_of(run, sender)),
                         name="runstream-stop", daemon=True)
    stoppers.append(t)
    t.start()


def _finishing(run: Any) -> bool:
    """True once ``finish`` has begun (it may still be uploading: never interrupt that)."""
    from . import _state
    return bool(getattr(run, "_finished", False)) or _state.active() is not run


def _interrupt_main() -> bool:
    """Ctrl-C for the main thread. False when SIGINT is not handled by Python."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        log.warning("runstream: SIGINT is ignored or left to the OS here; not interrupting")
        return False
    try:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    except (AttributeError, OSError, ValueError):
        _thread.interrupt_main()
    return True


def _wait_finishing(run: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _finishing(run):
            return True
        time.sleep(0.05)
    return _finishing(run)


def _stop(run: Any, requested_by: str, settings: Any) -> None:
    grace = max(0.0, float(settings.stop_grace_s))
    stop_fn = settings.stop_fn
    how = "calling stop_fn" if stop_fn is not None else "raising KeyboardInterrupt"
    log.warning("runstream: run %s was stopped by %s; %s (the process is terminated if the "
                "run is not finished within %g s)", run.id, requested_by, how, grace)
    if stop_fn is not None:
        try:
            stop_fn()
        except Exception:
            log.exception("runstream: stop_fn raised")
    else:
        _interrupt_main()
    if _wait_finishing(run, grace):
        return
    log.warning("runstream: run %s is still running %g s after the stop request: "
                "finishing it and sending SIGTERM to process %d", run.id, grace, os.getpid())
    wait = min(FINISH_WAIT_S, settings.finish_timeout_s)
    # In its own thread, bounded: a main thread stuck while holding the run's lock must
    # not keep the SIGTERM from coming.
    finisher = threading.Thread(target=_finish_killed, args=(run, wait),
                                name="runstream-stop-finish", daemon=True)
    finisher.start()
    finisher.join(wait + 1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(max(grace, 1.0))
    log.warning("runstream: process %d survived SIGTERM; sending SIGKILL", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


def _finish_killed(run: Any, wait: float) -> None:
    try:
        try:
            run.finish(exit_code=EXIT_CODE_TERMINATED, timeout=wait)
        except TypeError:   # a Run.finish without the timeout argument
            run.finish(exit_code=EXIT_CODE_TERMINATED)
    except Exception:
        log.exception("runstream: finishing the stopped run failed")


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _stopped.clear()
    stoppers.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
