"""What the client records about the machine and the process at start.

Cheap facts (host, OS, Python, command line, CPU count, memory, user, working
directory) are read in-process. Git (commit, branch, remote, dirty, root) and GPUs
(``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``) come
from subprocesses that ``start_capture`` launches at once and ``result`` collects with
one shared deadline (``TIMEOUT_S``), so ``init`` pays for the slowest of them, not the
sum, and never more than the deadline: what is absent, fails or is late stays empty.
Credentials in a git remote URL (``https://user:token@host/...``) are removed.
"""

from __future__ import annotations

import getpass
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time

from .v1 import events_pb2

VERSION = "0.1.0"
TIMEOUT_S = 1.0

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
_USERINFO_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^@/]*@")


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return os.environ.get("USER", "unknown")


def strip_credentials(url: str) -> str:
    """A remote URL without its user:password part (scp-style ``git@host:x`` is kept)."""
    return _USERINFO_RE.sub(r"\1", url)


def _spawn(args: list[str], cwd: str | None) -> subprocess.Popen | None:
    exe = shutil.which(args[0])
    if exe is None:
        return None
    try:
        return subprocess.Popen([exe, *args[1:]], cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                env={**os.environ, **_GIT_ENV}, start_new_session=True)
    except OSError:
        return None


def _kill(p: subprocess.Popen) -> None:
    """Kill ``p`` and whatever it started (its own session), without waiting on pipes."""
    try:
        os.killpg(p.pid, 9)
    except OSError:
        p.kill()
    if p.stdout is not None:
        p.stdout.close()
    p.wait()


class PendingMetadata:
    """Metadata being captured; ``result()`` waits (bounded) for the subprocesses."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        try:
            self.cwd = os.getcwd()
        except OSError:
            self.cwd = ""
        cwd = self.cwd or None
        self._procs = {
            "rev": _spawn(["git", "rev-parse", "HEAD", "--abbrev-ref", "HEAD",
                           "--show-toplevel"], cwd),
            "remote": _spawn(["git", "remote", "get-url", "origin"], cwd),
            "status": _spawn(["git", "status", "--porcelain", "--untracked-files=no"], cwd),
            "gpu": _spawn(["nvidia-smi", "--query-gpu=name,memory.total",
                           "--format=csv,noheader,nounits"], None),
        }

    def _output(self, name: str, deadline: float) -> str | None:
        p = self._procs.get(name)
        if p is None:
            return None
        try:
            out, _ = p.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill(p)
            return None
        except OSError:
            return None
        return out if p.returncode == 0 else None

    def result(self, timeout: float = TIMEOUT_S) -> events_pb2.RunMetadata:
        deadline = self._t0 + timeout
        mem = 0
        try:
            mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
        md = events_pb2.RunMetadata(
            hostname=socket.gethostname(),
            os=platform.platform(),
            python_version=platform.python_version(),
            python_executable=sys.executable,
            args=list(sys.argv),
            cpu_count=os.cpu_count() or 0,
            memory_bytes=mem,
            client_version=VERSION,
            username=_username(),
            program=sys.argv[0] if sys.argv else "",
            cwd=self.cwd,
        )
        out = {name: self._output(name, deadline) for name in self._procs}
        lines = (out["rev"] or "").splitlines()
        if len(lines) >= 3:
            md.git_commit, md.git_branch, md.git_root = lines[0], lines[1], lines[2]
            if out["remote"]:
                md.git_remote = strip_credentials(out["remote"].strip())
            if out["status"] is not None:
                md.git_dirty = bool(out["status"].strip())
        for line in (out["gpu"] or "").splitlines():
            name, _, memory = line.rpartition(",")
            if not name.strip():
                continue
            info = md.gpu_info.add(name=name.strip())
            try:
                info.memory_bytes = int(float(memory.strip()) * 1024 * 1024)   # MiB
            except ValueError:
                pass
            md.gpus.append(info.name)
        return md


def start_capture() -> PendingMetadata:
    return PendingMetadata()


def capture(timeout: float = TIMEOUT_S) -> events_pb2.RunMetadata:
    return start_capture().result(timeout)
