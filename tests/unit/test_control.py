"""The client's handling of Control.stop_run (runstream/_control.py), without a server."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from runstream import _control, _state
from runstream._settings import Settings
from runstream.v1 import ingest_pb2


class _Run:
    def __init__(self, run_id: str = "r1") -> None:
        self.id = run_id
        self._finished = False
        self.finished_with: list[tuple] = []

    def finish(self, exit_code=None, timeout=None):
        self._finished = True
        self.finished_with.append((exit_code, timeout))
        return True


class _Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def _stop(run_id: str = "r1", who: str = "alice") -> ingest_pb2.Control:
    return ingest_pb2.Control(stop_run=ingest_pb2.StopRun(run_id=run_id, requested_by=who))


@pytest.fixture
def active(monkeypatch):
    run = _Run()
    monkeypatch.setattr(_state, "active", lambda: run)
    monkeypatch.setattr(_control, "_stopped", set())
    monkeypatch.setattr(_control, "stoppers", [])
    kills: list[int] = []
    monkeypatch.setattr(_control.os, "kill", lambda pid, sig: kills.append(sig))
    run.kills = kills
    return run


def _join():
    for t in list(_control.stoppers):
        t.join(10)


def test_stop_fn_is_called_once_and_a_finished_run_is_not_escalated(active):
    calls = []

    def stop_fn():
        calls.append(time.monotonic())
        active.finish(exit_code=0)

    sender = _Sender(Settings(stop_fn=stop_fn, stop_grace_s=5))
    _control.handle(_stop(), sender)
    _control.handle(_stop(), sender)            # the same stop again: ignored
    _join()
    assert len(calls) == 1 and active.kills == []
    assert active.finished_with == [(0, None)]


def test_stops_for_other_runs_are_ignored(active):
    called = []
    sender = _Sender(Settings(stop_fn=lambda: called.append(1), stop_grace_s=0.1))
    _control.handle(_stop("other-run"), sender)
    _join()
    assert called == [] and _control.stoppers == []


def test_an_ignored_stop_finishes_the_run_then_sigterm_then_sigkill(active):
    sender = _Sender(Settings(stop_fn=lambda: None, stop_grace_s=0.2, finish_timeout_s=3))
    t0 = time.monotonic()
    _control.handle(_stop(), sender)
    _join()
    assert time.monotonic() - t0 >= 0.2
    assert active.finished_with == [(143, 3)]
    assert active.kills == [signal.SIGTERM, signal.SIGKILL]


def test_other_control_messages_are_only_logged(active):
    _control.handle(ingest_pb2.Control(retry_after=ingest_pb2.RetryAfter(millis=5)),
                    _Sender(Settings()))
    assert _control.stoppers == []


def test_stop_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNSTREAM_STOP_GRACE", "2.5")
    assert Settings.from_env().stop_grace_s == 2.5
    assert Settings.from_env(stop_grace_s=1).stop_grace_s == 1


def test_interrupt_main_cuts_a_blocking_sleep_short():
    code = textwrap.dedent("""
        import threading, time
        from runstream import _control
        threading.Timer(0.2, _control._interrupt_main).start()
        t0 = time.monotonic()
        try:
            time.sleep(30)
        except KeyboardInterrupt:
            print(f"interrupted after {time.monotonic() - t0:.2f}")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20)
    assert out.stdout.startswith("interrupted after"), out.stdout + out.stderr
    assert float(out.stdout.split()[-1]) < 2


def test_interrupt_main_is_skipped_when_sigint_is_ignored():
    code = textwrap.dedent("""
        import signal
        from runstream import _control
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(_control._interrupt_main())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=20)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_stopper_threads_are_daemons(active):
    sender = _Sender(Settings(stop_fn=lambda: active.finish(0), stop_grace_s=1))
    _control.handle(_stop(), sender)
    assert all(t.daemon for t in _control.stoppers)
    _join()
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "runstream-stop")
