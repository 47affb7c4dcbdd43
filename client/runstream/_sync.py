"""``runstream sync [DIR]``: upload run journals left on disk.

Offline runs (``mode="offline"``) leave their journal in ``<dir>/runstream-runs/run-<id>/``;
so does an online run whose events could not all be delivered (the server was down
until the end, longer than the helper's ``drain_timeout_s``). ``sync`` uploads every
journal found in DIR (a journal directory itself, or ``DIR/run-*``, or
``DIR/runstream-runs/run-*``) in the foreground, with the same uploader as a live run
(``_sender.Uploader``), until the server acknowledged everything (or ``timeout``).

Each journal's acknowledged watermark is persisted as it moves, so syncing again sends
only what is new (nothing, for a finished run) and an interrupted sync resumes where it
stopped; the server ignores anything sent twice. A journal still being written by a
live process (its lock is held) is skipped: that process uploads it. Journals are kept
after a sync unless ``clean`` is set (then the ones delivered in full are deleted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._run import JOURNAL_SUBDIR
from ._settings import Settings
from ._wal import SUFFIX, WalReader, read_acked

WAIT_NOTICE_S = 5.0


@dataclass
class SyncResult:
    path: str
    sent: int = 0            # events acknowledged by this sync (refused ones included)
    rejected: int = 0        # events the server refused for good
    acked_seq: int = 0       # the journal's watermark afterwards
    status: str = ""         # "synced", "up to date", "incomplete", "in use", "removed"


def is_journal(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return False
    return any(n.endswith(SUFFIX) for n in names) or "acked" in names or "LOCK" in names


def find_journals(directory: str) -> list[str]:
    """The journal directories in ``directory`` (see the module docstring)."""
    d = os.path.abspath(directory)
    if is_journal(d) and os.path.basename(d).startswith("run-"):
        return [d]
    out: list[str] = []
    for root in (d, os.path.join(d, JOURNAL_SUBDIR)):
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for n in names:
            p = os.path.join(root, n)
            if n.startswith("run-") and os.path.isdir(p) and is_journal(p) and p not in out:
                out.append(p)
    return out


def _try_lock(path: str) -> int:
    """The journal's lock fd (held while syncing), or -1 when a live writer has it."""
    fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return -1
    return fd


def _pending(path: str) -> bool:
    r = WalReader(path)
    try:
        return bool(r.read(r.acked, max_events=1, max_bytes=1))
    finally:
        r.close()


async def _upload(settings: Settings, paths: list[str], limit_s: float | None,
                  echo: Callable[[str], None]):
    from ._sender import Uploader
    up = Uploader(settings)
    for p in paths:
        up.add(p)
    task = asyncio.ensure_future(up.run())
    t0 = time.monotonic()
    noticed = False
    try:
        while up.pending() and not task.done():
            now = time.monotonic()
            if limit_s is not None and now - t0 >= limit_s:
                break
            if not up.connected and not noticed and now - t0 >= WAIT_NOTICE_S:
                noticed = True
                echo(f"runstream sync: cannot reach {settings.url} yet "
                     f"({up.last_error or 'connecting'}); retrying"
                     + ("" if limit_s is None else f" for up to {limit_s:.0f} s"))
            await asyncio.wait({task}, timeout=0.05)
    finally:
        up.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
    return up


def sync(directory: str = ".", url: str | None = None, *, timeout: float | None = None,
         clean: bool = False, settings: Settings | None = None,
         echo: Callable[[str], None] | None = None) -> list[SyncResult]:
    """Upload every journal in ``directory`` to ``url`` (default ``RUNSTREAM_URL``);
    returns one result per journal found. Never raises for network errors: what could
    not be delivered is reported ``incomplete`` and stays for the next sync."""
    echo = echo or (lambda _m: None)
    s = settings or Settings.from_env(**({"url": url} if url else {}))
    results: list[SyncResult] = []
    locks: dict[str, int] = {}
    todo: list[str] = []
    try:
        for p in find_journals(directory):
            res = SyncResult(p, acked_seq=read_acked(p))
            results.append(res)
            fd = _try_lock(p)
            if fd < 0:
                res.status = "in use"
                continue
            locks[p] = fd
            if _pending(p):
                todo.append(p)
            else:
                res.status = "up to date"
        up = asyncio.run(_upload(s, todo, timeout, echo)) if todo else None
        for res in results:
            if res.path not in todo:
                continue
            src = up.source(res.path)
            if src is not None:
                res.sent, res.rejected = src.acked_events, src.rejected_events
                res.acked_seq = src.reader.acked
            res.status = "incomplete" if _pending(res.path) else "synced"
            if up is not None:
                up.remove(res.path)
    finally:
        for fd in locks.values():
            os.close(fd)
    if clean:
        from ._helper import remove_journal
        for res in results:
            if res.status in ("synced", "up to date") and remove_journal(res.path):
                res.status += ", removed"
    for res in results:
        extra = f", {res.rejected} refused by the server" if res.rejected else ""
        echo(f"{res.path}: {res.status} ({res.sent} event(s) sent{extra}; "
             f"acknowledged up to seq {res.acked_seq})")
    if not results:
        echo(f"runstream sync: no run journals in {os.path.abspath(directory)}")
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".",
                   help="a run journal, or a directory holding run-*/ or runstream-runs/run-*/ "
                        "(default: .)")
    p.add_argument("--url", default="", help="the gateway (default RUNSTREAM_URL, else "
                                             f"{Settings.url})")
    p.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds (default: until delivered)")
    p.add_argument("--clean", action="store_true",
                   help="delete the journals that were delivered in full")


def run_cli(args: argparse.Namespace) -> int:
    """``runstream sync``; exit status 1 if anything was left undelivered or in use."""
    results = sync(args.dir, args.url or None, timeout=args.timeout, clean=args.clean,
                   echo=print)
    return 1 if any(r.status in ("incomplete", "in use") for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runstream sync",
                                description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_cli(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
