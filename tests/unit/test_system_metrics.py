"""System metrics (client/runstream/_system.py): the /proc and nvidia-smi parsers on
canned text, the sampler's timing and keys, the setting that turns it off, and a real
run's samples landing at the current step without moving it."""

from __future__ import annotations

import os
import stat
import threading
import time
from itertools import pairwise

import pytest
import runstream
from runstream import _state, _system, _values
from runstream._settings import Settings

PROC_STAT = """\
cpu  1000 10 500 8000 400 0 90 0 30 0
cpu0 500 5 250 4000 200 0 45 0 15 0
intr 12345
"""
PROC_STAT_LATER = """\
cpu  1600 10 700 8800 500 0 90 0 60 0
"""
MEMINFO = """\
MemTotal:       16000000 kB
MemFree:         2000000 kB
MemAvailable:    6000000 kB
Buffers:          500000 kB
Cached:          3000000 kB
"""
NVIDIA_SMI = """\
87, 10240, 40960
0, 512, 16384
[N/A], [N/A], 24576
"""
BASE_KEYS = {"system/cpu_percent", "system/memory_percent", "system/memory_used_bytes",
             "system/proc_rss_bytes", "system/proc_cpu_percent", "system/disk_percent"}
LINUX = os.path.exists("/proc/stat") and os.path.exists("/proc/self/statm")


# ------------------------------------------------------------------------- parsers


def test_cpu_times_and_percent():
    a = _system.parse_cpu_times(PROC_STAT)
    assert a == (1000 + 10 + 500 + 8000 + 400 + 0 + 90 + 0, 8000 + 400)   # guest not added
    b = _system.parse_cpu_times(PROC_STAT_LATER)
    # 1700 jiffies passed, 900 of them idle or iowait: 800 busy.
    assert b[0] - a[0] == 1700 and b[1] - a[1] == 900
    assert _system.cpu_percent(a, b) == pytest.approx(100 * 800 / 1700)
    assert _system.cpu_percent(a, a) is None                 # no time passed
    assert _system.cpu_percent(None, b) is None
    assert _system.parse_cpu_times("intr 1\n") is None
    assert _system.parse_cpu_times("cpu  x y z w\n") is None


def test_meminfo_uses_memavailable_else_free_buffers_cached():
    assert _system.parse_meminfo(MEMINFO) == (16_000_000 * 1024, 6_000_000 * 1024)
    old_kernel = "\n".join(line for line in MEMINFO.splitlines() if "MemAvailable" not in line)
    assert _system.parse_meminfo(old_kernel) == (16_000_000 * 1024, 5_500_000 * 1024)
    assert _system.parse_meminfo("garbage\n") is None


def test_statm_rss():
    assert _system.parse_statm_rss("12345 678 90 1 0 400 0\n", 4096) == 678 * 4096
    assert _system.parse_statm_rss("", 4096) is None
    assert _system.parse_statm_rss("1 x", 4096) is None


def test_nvidia_smi_parser_per_gpu_with_missing_fields():
    gpus = _system.parse_nvidia_smi(NVIDIA_SMI + "\nnot, enough\n")
    assert gpus == [
        {"utilization_percent": 87.0, "memory_used_bytes": 10240 * 1024 * 1024,
         "memory_percent": 25.0},
        {"utilization_percent": 0.0, "memory_used_bytes": 512 * 1024 * 1024,
         "memory_percent": 512 / 16384 * 100},
        {},                                               # "[N/A]": nothing known, index kept
    ]
    assert _system.parse_nvidia_smi("") == []


def test_disk_percent(tmp_path):
    pct = _system.disk_percent(str(tmp_path))
    assert pct is not None and 0.0 <= pct <= 100.0
    assert _system.disk_percent(str(tmp_path / "missing")) is None


# ------------------------------------------------------------------------- the sampler


class FakeRun:
    """What the sampler needs of a run: ``dir`` and ``_log_system``."""

    def __init__(self, dir: str) -> None:
        self.dir = dir
        self.samples: list[tuple[float, dict]] = []
        self.event = threading.Event()

    def _log_system(self, data: dict) -> None:
        self.samples.append((time.monotonic(), dict(data)))
        self.event.set()


def fake_nvidia_smi(tmp_path) -> str:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\ncat <<'EOF'\n" + NVIDIA_SMI + "EOF\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_sampler_emits_every_key_at_the_interval_and_stops(tmp_path):
    sampler = _system.Sampler(nvidia_smi=fake_nvidia_smi(tmp_path))
    run = FakeRun(str(tmp_path))
    t0 = time.monotonic()
    sampler.add(run, 0.2)
    deadline = t0 + 10
    while len(run.samples) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    sampler.remove(run)
    n = len(run.samples)
    assert n >= 4, run.samples
    times = [t for t, _ in run.samples]
    assert times[0] - t0 >= 0.19                          # first sample after one interval
    gaps = [b - a for a, b in pairwise(times)]
    assert all(0.1 <= g <= 1.0 for g in gaps), gaps
    assert sum(gaps) / len(gaps) == pytest.approx(0.2, abs=0.08)
    for _, data in run.samples:
        assert BASE_KEYS <= set(data)
        assert 0.0 <= data["system/cpu_percent"] <= 100.0
        assert 0.0 < data["system/memory_percent"] < 100.0
        assert data["system/proc_rss_bytes"] > 1_000_000
        assert data["system/proc_cpu_percent"] >= 0.0
        assert data["system/gpu/0/utilization_percent"] == 87.0
        assert data["system/gpu/0/memory_used_bytes"] == 10240 * 1024 * 1024
        assert data["system/gpu/1/memory_percent"] == pytest.approx(512 / 16384 * 100)
        assert not any(k.startswith("system/gpu/2/") for k in data)
        assert all(isinstance(v, float) for v in data.values())
    time.sleep(0.5)
    assert len(run.samples) == n                          # removed: nothing more
    assert sampler._thread is None                        # the idle thread ended


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_runs_have_their_own_intervals_and_a_failing_run_does_not_stop_the_others(tmp_path):
    sampler = _system.Sampler(nvidia_smi=False)
    fast, slow = FakeRun(str(tmp_path)), FakeRun(str(tmp_path))

    class Broken(FakeRun):
        def _log_system(self, data):
            raise RuntimeError("boom")

    sampler.add(Broken(str(tmp_path)), 0.05)
    sampler.add(fast, 0.1)
    sampler.add(slow, 0.5)
    time.sleep(1.1)
    for r in (fast, slow):
        sampler.remove(r)
    assert 7 <= len(fast.samples) <= 12
    assert 1 <= len(slow.samples) <= 3
    assert not any(k.startswith("system/gpu") for _, d in fast.samples for k in d)


def test_disabled_by_setting_or_environment(tmp_path, monkeypatch):
    run = FakeRun(str(tmp_path))
    assert _system.start_for(run, Settings(system_metrics=False)) is False
    time.sleep(0.3)
    assert run.samples == []
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS", "0")
    assert Settings.from_env().system_metrics is False
    assert _system.start_for(run, Settings.from_env(system_metrics_interval_s=0.05)) is False
    time.sleep(0.3)
    assert run.samples == []
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS", "1")
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS_INTERVAL", "2.5")
    s = Settings.from_env()
    assert s.system_metrics is True and s.system_metrics_interval_s == 2.5
    assert Settings().system_metrics is True and Settings().system_metrics_interval_s == 10.0


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_start_for_and_stop_for(tmp_path):
    run = FakeRun(str(tmp_path))
    assert _system.start_for(run, Settings(system_metrics_interval_s=0.05)) is True
    assert run.event.wait(5)
    _system.stop_for(run)
    n = len(run.samples)
    time.sleep(0.3)
    assert len(run.samples) == n
    _system.stop_for(run)                                 # twice: nothing


# ------------------------------------------------------------------------- a real run


@pytest.fixture
def offline_client(monkeypatch):
    """Process-wide client state pointed at a port nobody listens on (the run continues
    locally, as with the server down); exit hooks not installed."""
    for name in ("RUNSTREAM_URL", "RUNSTREAM_ENTITY", "RUNSTREAM_MODE", "RUNSTREAM_DIR",
                 "RUNSTREAM_API_URL", "RUNSTREAM_SYSTEM_METRICS",
                 "RUNSTREAM_SYSTEM_METRICS_INTERVAL", "RUNSTREAM_HEARTBEAT_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNSTREAM_URL", "127.0.0.1:9")
    monkeypatch.setenv("RUNSTREAM_FINISH_TIMEOUT", "0.2")
    monkeypatch.setattr(_state, "install_hooks", lambda: None)
    _state.set_active(None)
    _state._sender = None
    yield
    for r in reversed(_state.live()):
        r.finish(timeout=0.2)
    _state.set_active(None)
    if _state._sender is not None:
        _state._sender.close(timeout=0.3)
        _state._sender = None


def spy_logs(run) -> list:
    """(step, flattened values) of every Log event the run encodes from now on (user and
    system values alike go through the run's encoder on their way to the journal)."""
    logs: list = []
    enc = run._enc

    class Spy:
        def encode(self, seq, time_us, step, data):
            logs.append((step, _values.flatten(data)))
            return enc.encode(seq, time_us, step, data)

    run._enc = Spy()
    return logs


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_a_run_logs_system_metrics_at_the_current_step_without_moving_it(offline_client,
                                                                          tmp_path):
    run = runstream.init(project="sys", dir=str(tmp_path),
                         settings={"system_metrics_interval_s": 0.1})
    logs = spy_logs(run)
    run.log({"loss": 1.0})                    # step 0
    run.log({"acc": 0.5}, commit=False)       # pending at step 1
    before = len(logs)
    deadline = time.monotonic() + 10
    while len(logs) < before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert run.step == 1
    run.log({"loss": 0.5})                    # commits acc + loss at step 1
    run.finish(timeout=0.2)
    user = [(s, d) for s, d in logs if not any(k.startswith("system/") for k in d)]
    assert user == [(0, {"loss": 1.0}), (1, {"acc": 0.5, "loss": 0.5})]
    system = [(s, d) for s, d in logs if any(k.startswith("system/") for k in d)]
    assert all(set(d) >= BASE_KEYS and all(k.startswith("system/") for k in d)
               for _, d in system)
    # Samples taken while step 1 was pending are at step 1 (the step did not move and
    # the pending values were neither written nor lost).
    while_pending = [s for s, d in logs[before:] if "system/cpu_percent" in d]
    assert len(while_pending) >= 2 and set(while_pending) == {1}
    assert {s for s, _ in system} <= {0, 1}
    assert run.summary["loss"] == 0.5 and "system/cpu_percent" in run.summary
    n = len(logs)
    time.sleep(0.3)
    assert len(logs) == n                     # finished: no more samples


def test_a_run_without_system_metrics_logs_none(offline_client, monkeypatch, tmp_path):
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS", "0")
    monkeypatch.setenv("RUNSTREAM_SYSTEM_METRICS_INTERVAL", "0.05")
    run = runstream.init(project="sys", dir=str(tmp_path))
    logs = spy_logs(run)
    time.sleep(0.4)
    run.log({"loss": 1.0})
    run.finish(timeout=0.2)
    assert logs == [(0, {"loss": 1.0})]
