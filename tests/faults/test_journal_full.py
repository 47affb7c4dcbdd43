"""Fault injection: the client journal's disk is full while the server is down.

The documented policy (docs/client.md "Journal", ``client/runstream/_wal.py``): a disk
that fails sends the journal's events to a bounded memory overflow (16 MiB); beyond it
the oldest log events are dropped and counted, never the start/config/finish events; an
online run keeps delivering from memory (its upload runs in the training process, since
no helper process can read that memory) and the journal goes back to disk once the disk
works again.

One real client process (``journal_full_writer.py``) journals onto a real tmpfs that a
filler file leaves with less room than one 8 MiB segment, while the embedded server is
not running. Then the server starts, the disk is freed, the script logs more and
finishes. Asserted: points stored + events dropped = ``log()`` calls; the dropped ones
are exactly the oldest log events and everything else is stored once, with its value;
the config (at init and changed while the disk was full) and the finish survived; the
memory bound held; the dropped count is on the run (``seq_gaps``: gRPC ``GetRun``, the
HTTP API and ``runstream.Api``) and equals the client's count; the journal is back on
disk after the disk was freed.

Reduced size in ``make test``; ``RUNSTREAM_FAULTS=full`` (``make faults``) logs the
smallest events a training loop sends, many more of them. Needs root (``mount``): it
fails, never skips, without.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
import runstream
from runstream._encode import LogEncoder
from runstream._wal import DEFAULT_MEMORY_LIMIT, DEFAULT_SEGMENT_BYTES

from tests.e2e.conftest import ENTITY, embedded_args
from tests.e2e.procs import QueryClient, ServerProcess, free_port

from .harness import FULL, Figures

pytestmark = [pytest.mark.e2e]

SCRIPT = Path(__file__).with_name("journal_full_writer.py")
PROJECT = "faults-journal"

# (steps logged while the disk is full, steps after it is freed, note characters per
# event). The memory bound is 16 MiB of event bytes. Reduced: a 2,000-character note
# makes each event 2,094 bytes, so ~8,000 fit and 12,000 drop ~4,000 (a few seconds
# end to end). Full: {"v": step} alone, 76 bytes, the smallest event a training loop
# logs: ~220,000 fit and 400,000 drop ~180,000.
SIZE = (400_000, 50_000, 0) if FULL else (12_000, 1_000, 2_000)
DISK_MIB = 48       # the tmpfs: once freed, room for the 8 MiB segments and their spare
FREE_MIB = 4        # left free while "full": the LOCK and acked files fit, a segment not
# Pinned events kept in the overflow besides the log events: the RunStart (metadata:
# host, Python, git...) and one config change, a few KiB; this bounds them generously.
PINNED_MAX_BYTES = 64 << 10


@contextlib.contextmanager
def tmpfs(path: Path, size_mib: int):
    """A real tmpfs of ``size_mib`` MiB mounted at ``path`` (root only), unmounted after."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"cannot mount a tmpfs (this scenario needs root): {r.stderr}"
    try:
        yield path
    finally:
        for _ in range(50):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)     # a process that had files open there is still exiting
        else:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Writer:
    """``journal_full_writer.py`` as a child process; its JSON lines, read with a timeout."""

    def __init__(self, args: list[str], env: dict, log_path: Path) -> None:
        self._log = open(log_path, "w")     # runstream's warnings
        self.proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def expect(self, phase: str, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {phase!r} line from the writer in {timeout} s") from None
        assert line is not None, f"the writer exited (code {self.proc.poll()}) before {phase!r}"
        d = json.loads(line)
        assert d["phase"] == phase, d
        return d

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._log.close()


def test_journal_disk_full_drops_are_counted_and_on_the_run(tmp_path):
    full_steps, freed_steps, pad = SIZE
    total = full_steps + freed_steps
    t_start = time.monotonic()
    grpc_port, http_port = free_port(), free_port()
    args = embedded_args(tmp_path / "data", "--heartbeat-timeout", "600")
    args[args.index("--grpc-port") + 1] = str(grpc_port)
    args[args.index("--http-port") + 1] = str(http_port)
    # Cleaned up in reverse: the query client, the writer, the tmpfs, the server.
    with contextlib.ExitStack() as cleanup:
        srv = ServerProcess(args, log_path=tmp_path / "server.log")
        cleanup.callback(srv.stop)
        disk = cleanup.enter_context(tmpfs(tmp_path / "disk", DISK_MIB))
        filler = disk / "filler"
        fd = os.open(filler, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, (DISK_MIB - FREE_MIB) << 20)
        finally:
            os.close(fd)
        st = os.statvfs(disk)
        assert 0 < st.f_bavail * st.f_frsize < DEFAULT_SEGMENT_BYTES
        env = {**os.environ, "RUNSTREAM_URL": f"127.0.0.1:{grpc_port}",
               "RUNSTREAM_ENTITY": ENTITY, "RUNSTREAM_DIR": str(disk),
               "RUNSTREAM_FINISH_TIMEOUT": "120", "PYTHONUNBUFFERED": "1",
               # No heartbeats: they are events too (and droppable), but not log()
               # calls, which the accounting below compares with.
               "RUNSTREAM_HEARTBEAT_INTERVAL": "3600"}
        w = Writer([PROJECT, str(full_steps), str(freed_steps), str(pad)], env,
                   tmp_path / "writer.log")
        cleanup.callback(w.close)

        # 1. Disk full, server down: everything is in the memory overflow.
        full = w.expect("full", timeout=120)
        run_id = full["run_id"]
        assert Path(full["journal_dir"]).is_relative_to(disk), full
        assert not full["on_disk"] and full["segments"] == [], full
        assert full["errno"] == errno.ENOSPC and full["disk_errors"] >= 1, full
        dropped = full["dropped"]
        assert dropped > 0, f"the scenario did not reach the memory bound: {full}"
        # The bound held: the log events kept fill 16 MiB but for the pinned events.
        size = len(LogEncoder(run_id, PROJECT, ENTITY).encode(
            1, 0, 0, {"v": 0.0, "note": "x" * pad} if pad else {"v": 0.0})[0])
        kept = (full_steps - dropped) * size
        assert DEFAULT_MEMORY_LIMIT - PINNED_MAX_BYTES < kept <= DEFAULT_MEMORY_LIMIT, (
            kept, size, full)

        # 2. The server comes back: the in-process uploader delivers the overflow while
        # the disk is still full.
        srv.start()
        t_up = time.monotonic()
        q = QueryClient(srv.grpc, srv.http, ENTITY)
        cleanup.callback(q.close)
        resume_s = None
        view = None
        while view is None or view.last_seq != full["last_seq"]:
            assert time.monotonic() < t_up + 120, f"the overflow was not delivered: {view}"
            time.sleep(0.05)
            with contextlib.suppress(grpc.RpcError):        # NOT_FOUND until it arrives
                view = q.run(PROJECT, run_id)
                if resume_s is None:
                    resume_s = time.monotonic() - t_up
        assert view.state == "running" and view.seq_gaps == dropped, view

        # 3. The disk is freed; the journal goes back to disk; more steps; finish.
        filler.unlink()
        w.go()
        freed = w.expect("freed", timeout=60)
        assert freed["on_disk"] and freed["segments"], freed
        assert freed["dropped"] == dropped, freed
        done = w.expect("done", timeout=180)
        assert w.proc.wait(60) == 0

        q.wait_for(lambda: q.run(PROJECT, run_id).state == "finished", 60, "the finish")
        view = q.run(PROJECT, run_id)
        series = q.history(PROJECT, run_id, keys=["v"])["v"]
        steps = list(series.step)
        http_view = q.http_get(f"/api/v1/runs/{ENTITY}/{PROJECT}/{run_id}")
        with runstream.Api(srv.grpc) as api:
            api_run = api.run(f"{ENTITY}/{PROJECT}/{run_id}")

    expected = list(range(dropped, total))      # the oldest log events were the dropped ones
    fig = Figures("journal-disk-full", runs=1, events=total, kills=0,
                  lost=len(set(expected) - set(steps)),
                  duplicated=len(steps) - len(set(steps)),
                  out_of_order=sum(1 for s, v in zip(steps, series.value, strict=True)
                                   if float(s) != v),
                  resume_s=[resume_s], unfinished=0 if done["finished"] else 1,
                  dropped=dropped, stored=len(steps),
                  duration_s=time.monotonic() - t_start)
    path = fig.save()
    print(f"{fig.scenario}: logged {total}, dropped (counted) {dropped}, stored {len(steps)}, "
          f"lost {fig.lost}, duplicated {fig.duplicated}, resume {resume_s:.2f} s, "
          f"disk back {freed['disk_back_s']:.2f} s, {fig.duration_s:.1f} s ({path})")

    assert len(steps) + dropped == total, (len(steps), dropped, total)
    assert steps == expected, "stored steps are not exactly the ones not dropped"
    assert (fig.lost, fig.duplicated, fig.out_of_order, fig.unfinished) == (0, 0, 0, 0), fig
    assert done["dropped"] == dropped, done
    # Start, config and finish survived the drops.
    assert view.state == "finished" and view.exit_code == 0, view
    assert dict(view.config) == {"lr": "0.01", "phase": '"disk-full"'}, view.config
    # The dropped count is on the run, in every read API.
    assert view.seq_gaps == dropped
    assert http_view["seq_gaps"] == dropped
    assert api_run.seq_gaps == dropped and api_run.config["phase"] == "disk-full"
