"""The client's durability end to end (issue 3, items 5, 6, 8): real training scripts
(tests/e2e/durability_script.py) against a real embedded server.

- SIGKILL at a random moment: every step whose ``log()`` returned (the script printed
  it) reaches the projection, and the run is ``crashed`` within 5 s of the kill, with
  the server's heartbeat timeout at 60 s: the upload helper's ``ProcessExited``, not
  the reaper.
- Server stopped before ``init`` and back 30 s later: ``init`` returns within 2 s, no
  ``log()`` takes 2 s, the server comes back on the script's address while it is still
  logging and everything arrives.
- Offline: the run writes its journal only; ``runstream sync`` uploads it; a second
  sync changes nothing.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import ENTITY, start_embedded
from .procs import BIN, ServerProcess, free_port

pytestmark = [pytest.mark.e2e]

SCRIPT = Path(__file__).with_name("durability_script.py")
CRASH_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An embedded server whose reaper would wait 60 s: a crash seen sooner is the
    client's doing."""
    srv, q = start_embedded(tmp_path_factory.mktemp("durability"), heartbeat_timeout=60)
    try:
        yield srv, q
    finally:
        q.close()
        srv.stop()


class Script:
    """durability_script.py as a child process; its output lines as they come."""

    def __init__(self, url: str, run_id: str, project: str, *args: str,
                 env: dict | None = None) -> None:
        e = {**os.environ, "RUNSTREAM_URL": url, "RUNSTREAM_ENTITY": ENTITY,
             "RUNSTREAM_SYSTEM_METRICS": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), run_id, project, *args],
                                     env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.last_step = -1
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("STEP "):
                self.last_step = int(line.split()[1])
            else:
                self.output.append(line)
                self.lines.put(line)

    def wait_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line within {timeout}s:\n{''.join(self.output)}")

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"script still running:\n{''.join(self.output)}") from None
        self._pump.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def steps_of(q, project: str, run_id: str) -> list[int]:
    hist = q.history(project, run_id, keys=["x"])
    return list(hist["x"].step) if "x" in hist else []


@pytest.mark.parametrize("pace", ["flat-out", "paced"])
def test_sigkill_loses_nothing_log_returned_and_the_run_is_crashed_within_5s(server, tmp_path,
                                                                            pace):
    srv, q = server
    rng = random.Random()
    run_id = f"kill-{pace}"
    jdir = tmp_path / "journals"
    s = Script(srv.grpc, run_id, "durability", "--sleep", "0" if pace == "flat-out" else "0.002",
               env={"RUNSTREAM_DIR": str(jdir)})
    try:
        deadline = time.monotonic() + 60
        while s.last_step < 0 and time.monotonic() < deadline and s.proc.poll() is None:
            time.sleep(0.01)
        assert s.last_step >= 0, "".join(s.output)
        time.sleep(rng.uniform(0.2, 1.5))           # a random moment in the training loop
        s.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert s.wait(10) == -signal.SIGKILL
    finally:
        s.kill()
    printed = s.last_step + 1                        # steps 0 .. last_step were returned

    def crashed():
        r = q.run("durability", run_id)
        return r if r.state == "crashed" else None
    run = q.wait_for(crashed, CRASH_WITHIN_S + 5, f"{run_id} crashed")
    elapsed = time.monotonic() - killed
    assert elapsed <= CRASH_WITHIN_S, f"crashed {elapsed:.2f}s after the kill"
    assert run.state_cause.startswith("process exited without finish (pid "), run.state_cause
    assert "seen by the uploader" in run.state_cause
    steps = q.wait_for(lambda: (st := steps_of(q, "durability", run_id)) and
                       len(st) >= printed and st, 30, "the history")
    # Every step printed is there (one more may be: logged, then killed before printing).
    assert steps[:printed] == list(range(printed)) and len(steps) <= printed + 1
    assert run.last_step >= printed - 1 > 0
    # The helper deleted the journal once it was delivered in full.
    q.wait_for(lambda: not any(jdir.glob("runstream-runs/run-*")), 10, "the journal removed")


OUTAGE_S = 30.0


def test_server_down_at_init_then_up_30s_later_loses_nothing(tmp_path):
    port, http_port = free_port(), free_port()
    url = f"127.0.0.1:{port}"
    args = ["server", "--data-dir", str(tmp_path / "data"), "--grpc-port", str(port),
            "--http-port", str(http_port), "--heartbeat-timeout", "60", "--reaper-tick", "0.2"]
    # The server was up, and is stopped before the script's init().
    ServerProcess(args, log_path=tmp_path / "server-before.log").start().stop()
    stopped_at = time.monotonic()
    steps = 800      # 0.05 s apart: still logging when the server comes back after 30 s
    s = Script(url, "late-server", "down", "--steps", str(steps), "--sleep", "0.05", "--timed",
               env={"RUNSTREAM_FINISH_TIMEOUT": "120", "RUNSTREAM_DIR": str(tmp_path / "j")})
    srv = None
    try:
        init_s = float(s.wait_line("INIT", 30).split()[1])
        assert init_s < 2.0, f"init took {init_s:.2f}s with the server down"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
        assert s.proc.poll() is None, "".join(s.output)
        srv = ServerProcess(args, log_path=tmp_path / "server.log").start()
        assert srv.grpc.endswith(f":{port}")
        assert s.wait(180) == 0, "".join(s.output)
    finally:
        s.kill()
    try:
        max_log = float(s.wait_line("MAXLOG", 5).split()[1])
        assert max_log < 2.0, f"a log() call took {max_log:.2f}s"
        assert s.wait_line("FINISH", 5).split()[1] == "True", "".join(s.output)
        from .procs import QueryClient
        q = QueryClient(srv.grpc, srv.http, ENTITY)
        try:
            q.wait_states("down", {"late-server": "finished"}, timeout=30)
            assert steps_of(q, "down", "late-server") == list(range(steps))
        finally:
            q.close()
    finally:
        srv.stop()


def _sync(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    cmd = ([sys.executable, "-m", "runstream", "sync"] if module else
           [str(BIN / "runstream"), "sync"])
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def test_offline_run_writes_its_journal_only_and_syncing_twice_changes_nothing(server,
                                                                              tmp_path):
    srv, q = server
    base = tmp_path / "offline"
    dead = f"127.0.0.1:{free_port()}"
    s = Script(dead, "offline-1", "offline", "--steps", "200",
               env={"RUNSTREAM_MODE": "offline", "RUNSTREAM_DIR": str(base)})
    assert s.wait(60) == 0, "".join(s.output)
    assert "FINISH True" in "".join(s.output)
    assert "runstream sync" in "".join(s.output)
    journal = base / "runstream-runs" / "run-offline-1"
    assert journal.is_dir() and any(journal.glob("*.wal"))
    assert q.runs("offline") == []                  # nothing was sent

    first = _sync(str(base), "--url", srv.grpc)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "synced (202 event(s) sent" in first.stdout, first.stdout
    q.wait_states("offline", {"offline-1": "finished"}, timeout=30)
    q.wait_for(lambda: steps_of(q, "offline", "offline-1") == list(range(200)), 30,
               "the history")
    before = q.snapshot("offline")

    again = _sync(str(journal), "--url", srv.grpc, module=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "up to date (0 event(s) sent" in again.stdout, again.stdout
    time.sleep(1.0)                                  # a projector batch
    assert q.snapshot("offline") == before
    assert journal.is_dir()                          # kept (the watermark says: synced)
