"""System metrics: what the machine and the training process use, as ``system/*`` keys.

One daemon thread per process samples every ``Settings.system_metrics_interval_s``
(default 10 s; ``RUNSTREAM_SYSTEM_METRICS_INTERVAL``) for each live run, and logs

- ``system/cpu_percent``: the machine's CPU use since the run's previous sample
  (``/proc/stat``; iowait counts as idle);
- ``system/memory_percent``, ``system/memory_used_bytes``: the machine's memory in use
  (``/proc/meminfo``: MemTotal − MemAvailable);
- ``system/proc_rss_bytes``: this process's resident memory (``/proc/self/statm``);
- ``system/proc_cpu_percent``: this process's CPU time (user + system, every thread,
  not its children) per wall time since the previous sample; above 100 when several
  cores are busy (as psutil and ``top``);
- ``system/disk_percent``: use of the filesystem that holds the run's ``dir``
  (``os.statvfs``; used / (used + available to users), as ``df``);
- per GPU i, when ``nvidia-smi`` is on the PATH: ``system/gpu/<i>/utilization_percent``,
  ``system/gpu/<i>/memory_used_bytes``, ``system/gpu/<i>/memory_percent``
  (``nvidia-smi --query-gpu=utilization.gpu,memory.used,memory.total
  --format=csv,noheader,nounits``, killed when slower than ``GPU_TIMEOUT_S``).

What a platform lacks (no ``/proc`` outside Linux, a field nvidia-smi reports as
``[N/A]``) is left out; a sample with no key at all is not logged. Nothing here ever
raises into the run: a failing reader only loses its keys.

The first sample comes one interval after the run starts (CPU percentages need two
readings). A sample is one ``Log`` event of the run at its **current step**, holding
only ``system/*`` keys (``Run._log_system``): the step does not move and what the user
accumulated with ``commit=False`` stays pending, so the user's steps are exactly what
they would be without system metrics. History keeps one value per (key, step), so when a
step lasts longer than the interval the later samples of that step replace the earlier
ones. ``Settings.system_metrics=False`` (``RUNSTREAM_SYSTEM_METRICS=0``) turns it off.

``start_for(run, settings=None)`` / ``stop_for(run)`` register a run with the sampler
(``Run._start`` / ``Run.finish`` call them); without ``settings`` the run's sender's
settings are used. A forked child starts with no registered run and no thread.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("runstream")

GPU_TIMEOUT_S = 2.0
MIN_INTERVAL_S = 0.05
_NVIDIA_SMI_ARGS = ["--query-gpu=utilization.gpu,memory.used,memory.total",
                    "--format=csv,noheader,nounits"]


# -- parsers (pure, tested with canned text) ---------------------------------------

def parse_cpu_times(stat_text: str) -> tuple[int, int] | None:
    """(total, idle) jiffies of the ``cpu`` line of ``/proc/stat``; idle includes iowait.
    guest/guest_nice are already counted in user/nice, so only the first 8 fields add up."""
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            try:
                vals = [int(x) for x in parts[1:9]]
            except ValueError:
                return None
            if len(vals) < 4:
                return None
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            return sum(vals), idle
    return None


def cpu_percent(prev: tuple[int, int] | None, cur: tuple[int, int] | None) -> float | None:
    """Busy share of the jiffies between two ``parse_cpu_times`` readings, in percent."""
    if prev is None or cur is None:
        return None
    total = cur[0] - prev[0]
    idle = cur[1] - prev[1]
    if total <= 0:
        return None
    return min(100.0, max(0.0, 100.0 * (total - idle) / total))


def parse_meminfo(text: str) -> tuple[int, int] | None:
    """(total, available) bytes from ``/proc/meminfo`` (kB lines). Kernels older than
    3.14 lack MemAvailable: free + buffers + cached is used instead."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            try:
                kb[name.strip()] = int(parts[0])
            except ValueError:
                continue
    total = kb.get("MemTotal")
    if not total:
        return None
    avail = kb.get("MemAvailable")
    if avail is None:
        avail = kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0)
    return total * 1024, min(avail, total) * 1024


def parse_statm_rss(text: str, page_size: int) -> int | None:
    """Resident bytes from ``/proc/<pid>/statm`` (its second field, in pages)."""
    parts = text.split()
    if len(parts) < 2:
        return None
    try:
        return int(parts[1]) * page_size
    except ValueError:
        return None


def _num(s: str) -> float | None:
    try:
        return float(s.strip())
    except ValueError:
        return None            # "[N/A]", "[Not Supported]", ""


def parse_nvidia_smi(text: str) -> list[dict[str, float]]:
    """One dict per GPU (in nvidia-smi's order) from ``--query-gpu=utilization.gpu,
    memory.used,memory.total --format=csv,noheader,nounits``: ``utilization_percent``,
    ``memory_used_bytes`` and ``memory_percent``, each only when reported (MiB → bytes)."""
    gpus: list[dict[str, float]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) < 3:
            continue
        util, used, total = (_num(f) for f in fields[:3])
        g: dict[str, float] = {}
        if util is not None:
            g["utilization_percent"] = util
        if used is not None:
            g["memory_used_bytes"] = used * 1024 * 1024
            if total:
                g["memory_percent"] = 100.0 * used / total
        gpus.append(g)
    return gpus


def disk_percent(path: str) -> float | None:
    """Use of the filesystem holding ``path``, in percent, as ``df`` shows it."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError, TypeError, ValueError):
        return None
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    if used + avail <= 0:
        return None
    return 100.0 * used / (used + avail)


# -- readers -------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _page_size() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4096


def read_cpu_times() -> tuple[int, int] | None:
    text = _read("/proc/stat")
    return parse_cpu_times(text) if text else None


def read_proc_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def query_gpus(exe: str, timeout: float = GPU_TIMEOUT_S) -> list[dict[str, float]]:
    """Ask nvidia-smi (killed when later than ``timeout``); [] when it fails."""
    try:
        p = subprocess.run([exe, *_NVIDIA_SMI_ARGS], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(p.stdout) if p.returncode == 0 else []


@dataclass
class MachineSample:
    """What one wake-up of the sampler reads once for every run due."""

    cpu_times: tuple[int, int] | None
    proc_cpu_s: float
    monotonic: float
    memory: tuple[int, int] | None
    rss: int | None
    gpus: list[dict[str, float]] = field(default_factory=list)


def read_machine(nvidia_smi: str | None) -> MachineSample:
    meminfo = _read("/proc/meminfo")
    statm = _read("/proc/self/statm")
    return MachineSample(
        cpu_times=read_cpu_times(),
        proc_cpu_s=read_proc_cpu_s(),
        monotonic=time.monotonic(),
        memory=parse_meminfo(meminfo) if meminfo else None,
        rss=parse_statm_rss(statm, _page_size()) if statm else None,
        gpus=query_gpus(nvidia_smi) if nvidia_smi else [],
    )


# -- the sampler ---------------------------------------------------------------------

class _Entry:
    """One registered run: its interval, when it is due, and its previous readings."""

    def __init__(self, run: Any, interval: float) -> None:
        self.run = run
        self.interval = interval
        now = time.monotonic()
        self.next_due = now + interval
        self.prev_cpu = read_cpu_times()
        self.prev_proc = (read_proc_cpu_s(), now)

    def sample(self, m: MachineSample) -> dict[str, float]:
        data: dict[str, float] = {}
        pct = cpu_percent(self.prev_cpu, m.cpu_times)
        if pct is not None:
            data["system/cpu_percent"] = pct
        if m.cpu_times is not None:
            self.prev_cpu = m.cpu_times
        if m.memory is not None:
            total, avail = m.memory
            data["system/memory_percent"] = 100.0 * (total - avail) / total
            data["system/memory_used_bytes"] = float(total - avail)
        if m.rss is not None:
            data["system/proc_rss_bytes"] = float(m.rss)
        cpu_s, t = self.prev_proc
        if m.monotonic > t:
            data["system/proc_cpu_percent"] = max(0.0, 100.0 * (m.proc_cpu_s - cpu_s)
                                                   / (m.monotonic - t))
        self.prev_proc = (m.proc_cpu_s, m.monotonic)
        disk = disk_percent(getattr(self.run, "dir", None) or ".")
        if disk is not None:
            data["system/disk_percent"] = disk
        for i, g in enumerate(m.gpus):
            for k, v in g.items():
                data[f"system/gpu/{i}/{k}"] = v
        return data


class Sampler:
    """The process's sampler thread: started with the first run, ends with the last."""

    def __init__(self, nvidia_smi: str | None | bool = True) -> None:
        # True: look nvidia-smi up on the PATH when the thread starts; a str: use it.
        self._nvidia_smi = nvidia_smi
        self._cond = threading.Condition()
        self._entries: dict[int, _Entry] = {}      # id(run) → entry
        self._thread: threading.Thread | None = None

    def add(self, run: Any, interval: float) -> None:
        interval = max(MIN_INTERVAL_S, float(interval))
        entry = _Entry(run, interval)
        with self._cond:
            self._entries[id(run)] = entry
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="runstream-system",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def remove(self, run: Any) -> None:
        with self._cond:
            e = self._entries.get(id(run))
            if e is not None and e.run is run:
                del self._entries[id(run)]
                self._cond.notify_all()

    def registered(self, run: Any) -> bool:
        with self._cond:
            e = self._entries.get(id(run))
            return e is not None and e.run is run

    def _gpu_exe(self) -> str | None:
        if self._nvidia_smi is True:
            self._nvidia_smi = shutil.which("nvidia-smi") or False
        return self._nvidia_smi or None

    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._entries:
                    self._thread = None
                    return
                now = time.monotonic()
                due = [e for e in self._entries.values() if e.next_due <= now]
                if not due:
                    self._cond.wait(min(e.next_due for e in self._entries.values()) - now)
                    continue
                for e in due:
                    e.next_due += e.interval
                    if e.next_due <= now:          # fell behind (suspended): skip ahead
                        e.next_due = now + e.interval
            try:
                m = read_machine(self._gpu_exe())
            except Exception:  # system metrics must never hurt the run
                log.debug("runstream: reading system metrics failed", exc_info=True)
                continue
            for e in due:
                if not self.registered(e.run):
                    continue
                try:
                    data = e.sample(m)
                    if data:
                        e.run._log_system(data)
                except Exception:  # system metrics must never hurt the run
                    log.debug("runstream: logging system metrics failed", exc_info=True)


_lock = threading.Lock()
_sampler: Sampler | None = None


def _settings_of(run: Any, settings: Any) -> Any:
    if settings is not None:
        return settings
    s = getattr(getattr(run, "_sender", None), "settings", None)
    if s is None:
        from ._settings import Settings
        s = Settings.from_env()
    return s


def start_for(run: Any, settings: Any = None) -> bool:
    """Sample system metrics for ``run`` (it needs ``_log_system(data)`` and ``dir``)
    unless ``settings.system_metrics`` is false or the run is disabled (``mode``).
    Returns whether it was registered."""
    global _sampler
    try:
        s = _settings_of(run, settings)
        if not getattr(s, "system_metrics", True) or getattr(run, "mode", "") == "disabled":
            return False
        interval = float(getattr(s, "system_metrics_interval_s", 10.0))
        with _lock:
            if _sampler is None:
                _sampler = Sampler()
            sampler = _sampler
        sampler.add(run, interval)
        return True
    except Exception:  # never fail init because of system metrics
        log.warning("runstream: system metrics are off for this run", exc_info=True)
        return False


def stop_for(run: Any) -> None:
    """Stop sampling for ``run`` (nothing if it was not registered)."""
    sampler = _sampler
    if sampler is not None:
        sampler.remove(run)


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its lock may have been held at fork;
    # the child's copies of the parent's runs are detached anyway.
    global _lock, _sampler
    _lock = threading.Lock()
    _sampler = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

