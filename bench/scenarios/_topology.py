"""The system under test for the server-side ingest scenarios, in two deployments.

``Embedded(tmp)``: one ``runstream server --data-dir <tmp>/data --grpc-port 0
--http-port 0`` (every role, local event log with ``fsync=always``, chDB in-process).

``Distributed(tmp)``: a single-node KRaft Kafka broker (``scripts/kafka_broker.py``,
data under ``<tmp>/kafka``) and three processes on it, as the distributed deployment
runs them: ``runstream gateway``, ``runstream server --roles projector,api`` (the one
process holding chDB) and ``runstream reaper``, all ``--kafka <broker> --topic <fresh
topic>``.

Both expose ``grpc`` (the gateway's address), ``http`` (the query API's base URL) and
``pids`` (component name → pid, the broker included). Every process binds 127.0.0.1.
``stop()`` stops every process that was started (SIGTERM, then SIGKILL after a grace)
and the broker, whatever failed before; it is safe to call twice and after a failed
``start()``. ``Sampler`` samples CPU and RSS of the components from /proc;
``KafkaLag`` samples the projector's consumer lag (records) on the broker.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from ..harness import REPO

RUNSTREAM = Path(sys.executable).with_name("runstream")
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
START_TIMEOUT_S = 120       # a cold chDB start plus migrations takes a few seconds
STOP_GRACE_S = 60           # the projector flushes its last batch on SIGTERM
PROJECTOR_GROUP = "runstream-projector"   # ProjectorConfig.group


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def proc_mem_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) if it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class Proc:
    """``runstream <args>`` as a child process; its output goes to ``log_path``; the
    addresses it prints are parsed; ``start()`` returns once it printed ``ready``."""

    def __init__(self, name: str, args: list[str], log_path: Path) -> None:
        self.name, self.args, self.log_path = name, args, log_path
        self.grpc = self.http = ""
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._ready = threading.Event()

    def start(self) -> Proc:
        self.proc = subprocess.Popen(
            [str(RUNSTREAM), *self.args], cwd=REPO, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={"RUNSTREAM_METRICS_PORT": "0", **os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._pump, daemon=True, name=f"pump-{self.name}").start()
        if not self._ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            raise RuntimeError(f"runstream {self.name} did not start:\n{self.tail()}")
        return self

    def _pump(self) -> None:
        with open(self.log_path, "a") as f:
            for line in self.proc.stdout:
                f.write(line)
                f.flush()
                self.lines.append(line)
                if m := re.search(r"gRPC listening on (\S+)", line):
                    self.grpc = m.group(1)
                if m := re.search(r"HTTP listening on (\S+)", line):
                    self.http = m.group(1).rstrip("/")
                if "runstream: ready" in line:
                    self._ready.set()
        self._ready.set()

    def tail(self, n: int = 40) -> str:
        return "".join(self.lines[-n:])

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM, SIGKILL after ``STOP_GRACE_S``; the exit code (-9 when killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


class Topology:
    """Base: the processes of one deployment, started in order, stopped in reverse."""

    mode = ""

    def __init__(self, tmp: Path, heartbeat_timeout_s: float = 60.0) -> None:
        self.tmp = tmp
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.procs: list[Proc] = []
        self.grpc = self.http = ""
        self.start_s = 0.0

    def _run(self, name: str, args: list[str]) -> Proc:
        p = Proc(name, [*args, "--host", "127.0.0.1"], self.tmp / f"{name}.log")
        self.procs.append(p)
        return p.start()

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.procs}

    def check_alive(self) -> None:
        """Raise if a component exited."""
        for p in self.procs:
            if not p.alive():
                raise RuntimeError(f"{self.mode}: {p.name} exited "
                                   f"{p.proc.returncode if p.proc else '?'}:\n{p.tail()}")

    def stop(self) -> list[str]:
        """Stop everything; the problems seen (a non-zero exit after SIGTERM)."""
        problems = []
        for p in reversed(self.procs):
            try:
                rc = p.stop()
            except Exception as e:   # keep stopping the others
                problems.append(f"{p.name}: {e}")
                continue
            if rc not in (0, None):
                problems.append(f"{p.name} exited {rc} after SIGTERM:\n{p.tail(20)}")
        self.procs_stopped = True
        return problems


class Embedded(Topology):
    mode = "embedded"

    def start(self) -> Embedded:
        t = time.perf_counter()
        p = self._run("server", ["server", "--data-dir", str(self.tmp / "data"),
                                 "--grpc-port", "0", "--http-port", "0",
                                 "--heartbeat-timeout", str(self.heartbeat_timeout_s)])
        self.grpc, self.http = p.grpc, p.http
        self.start_s = time.perf_counter() - t
        return self


class Distributed(Topology):
    mode = "kafka"

    def __init__(self, tmp: Path, heartbeat_timeout_s: float = 60.0,
                 partitions: int = 12) -> None:
        super().__init__(tmp, heartbeat_timeout_s)
        self.partitions = partitions       # EventLogConfig's default
        self.topic = f"rsbench-{uuid.uuid4().hex[:10]}"
        self.broker = None

    @property
    def pids(self) -> dict[str, int]:
        out = super().pids
        if self.broker is not None and self.broker.pid:
            out["kafka broker"] = self.broker.pid
        return out

    def start(self) -> Distributed:
        sys.path.insert(0, str(REPO / "scripts"))
        from kafka_broker import KafkaBroker, fetch_libs, libs_available

        t = time.perf_counter()
        if not libs_available():
            fetch_libs()
        # 1 GiB heap: the broker takes hundreds of MB/s here; the tests' 512 MiB is for
        # a trickle.
        self.broker = KafkaBroker(self.tmp / "kafka", heap="1g")
        self.broker.start()
        log_args = ["--kafka", self.broker.bootstrap, "--topic", self.topic,
                    "--partitions", str(self.partitions)]
        store = self._run("projector+api", ["server", "--roles", "projector,api", *log_args,
                                            "--data-dir", str(self.tmp / "store"),
                                            "--grpc-port", "0", "--http-port", "0"])
        gateway = self._run("gateway", ["gateway", *log_args, "--grpc-port", "0"])
        self._run("reaper", ["reaper", *log_args, "--heartbeat-timeout",
                             str(self.heartbeat_timeout_s)])
        self.grpc, self.http = gateway.grpc, store.http
        self.start_s = time.perf_counter() - t
        return self

    def check_alive(self) -> None:
        super().check_alive()
        if self.broker is not None and not self.broker.running():
            raise RuntimeError("kafka: the broker exited")

    def stop(self) -> list[str]:
        try:
            problems = super().stop()
        finally:
            if self.broker is not None:
                self.broker.stop()
        return problems


def make(mode: str, tmp: Path, heartbeat_timeout_s: float = 60.0) -> Topology:
    """A started topology; on a failed start everything started is stopped again."""
    topo = (Embedded if mode == "embedded" else Distributed)(tmp, heartbeat_timeout_s)
    try:
        return topo.start()
    except BaseException:
        topo.stop()
        raise


# --- measurements -------------------------------------------------------------------------

class Sampler:
    """Samples CPU and memory of named pids every ``interval_s`` in a thread.

    ``stop()`` returns, per name: ``cpu_cores`` (CPU seconds ÷ wall seconds between
    start and stop), ``cpu_s``, ``rss_mib`` (largest VmRSS sampled), ``hwm_mib`` (VmHWM
    at stop: the process's peak since it started)."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.5) -> None:
        self.pids = dict(pids)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self.peak_kib = dict.fromkeys(self.pids, 0)
        self.cpu0 = {n: proc_cpu_s(p) for n, p in self.pids.items()}
        self.t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            for name, pid in self.pids.items():
                rss, _ = proc_mem_kib(pid)
                self.peak_kib[name] = max(self.peak_kib[name], rss)
            if self._stop.wait(self.interval_s):
                return

    def stop(self) -> dict[str, dict[str, float]]:
        self._stop.set()
        self._thread.join(5)
        wall = time.perf_counter() - self.t0
        out = {}
        for name, pid in self.pids.items():
            cpu = proc_cpu_s(pid) - self.cpu0[name]
            rss, hwm = proc_mem_kib(pid)
            out[name] = {"cpu_s": cpu, "cpu_cores": cpu / wall if wall > 0 else 0.0,
                         "rss_mib": max(self.peak_kib[name], rss) / 1024,
                         "hwm_mib": hwm / 1024}
        return out


class KafkaLag:
    """The projector group's lag (end offsets − committed offsets, summed over the
    topic's partitions, in records), sampled every ``interval_s`` by a thread with its
    own event loop and Kafka clients. ``stop()`` → (max lag, last lag)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int,
                 interval_s: float = 1.0) -> None:
        self.bootstrap, self.topic, self.interval_s = bootstrap, topic, interval_s
        self.partitions = partitions
        self.samples: list[tuple[float, int]] = []
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        daemon=True, name="kafka-lag")
        self._thread.start()

    async def _main(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            await admin.start()
            await consumer.start()
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            while not self._stop.is_set():
                end = await consumer.end_offsets(tps)
                committed = await admin.list_consumer_group_offsets(PROJECTOR_GROUP)
                lag = sum(max(0, end[tp] - (committed[tp].offset if tp in committed
                                            and committed[tp].offset >= 0 else 0))
                          for tp in tps)
                self.samples.append((time.perf_counter(), lag))
                await asyncio.sleep(self.interval_s)
        except Exception as e:   # reported by the scenario as a note; lag is optional
            self.error = f"{type(e).__name__}: {e}"
        finally:
            await consumer.stop()
            await admin.close()

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join(15)
        lags = [lag for _, lag in self.samples]
        return (max(lags, default=-1), lags[-1] if lags else -1)


# --- the load generator process -------------------------------------------------------------

class LoadGen:
    """``python -m bench.scenarios._loadgen <cfg>`` as a child process (see there).

    ``wait(event)`` returns the next JSON line of that ``event`` (raises if the process
    ends first or ``timeout_s`` passes); ``release()`` ends a hold; ``finish()`` waits
    for the exit and raises unless it exited 0."""

    def __init__(self, cfg: dict, log_path: Path) -> None:
        import json
        self._json = json
        self.log_path = log_path
        self._err = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.scenarios._loadgen", json.dumps(cfg)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True, name="loadgen-out").start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")                         # end of output

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, event: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            msg = self._json.loads(line)
            if msg.get("event") == event:
                return msg
        self.kill()
        raise RuntimeError(f"load generator: no {event!r} (exit {self.proc.poll()}):\n"
                           + self.log_path.read_text()[-3000:])

    def release(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self, done: dict, timeout_s: float = 60) -> None:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = -9
        self._err.close()
        if rc != 0 or done.get("errors"):
            raise RuntimeError(f"load generator exited {rc}; errors {done.get('errors')}; "
                               f"sent {done.get('events_sent')}, acked "
                               f"{done.get('events_acked')}, rejected {done.get('rejected')}:\n"
                               + self.log_path.read_text()[-3000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class LoadGenGroup:
    """``processes`` load generators sharing one load: generator k drives runs
    ``<run_prefix><k>-…`` (its share of ``runs``, ``streams`` and ``rate``), so one
    generator process is not the limit of a scenario with many runs.

    Same interface as ``LoadGen``; ``wait(event)`` waits for that event from every
    generator and merges the reports: counters and CPU seconds summed, ``t`` /
    ``t_start`` the earliest (the load began with the first), ``t_load_end`` /
    ``t_logs_acked`` the latest, ``maxrss_mib`` the largest, ``steps`` /
    ``probe_acks`` / ``errors`` joined."""

    _EARLIEST = ("t", "t_start")
    _LATEST = ("t_load_end", "t_logs_acked")

    def __init__(self, cfg: dict, processes: int, log_path: Path) -> None:
        n = max(1, min(processes, cfg["runs"], cfg.get("streams", processes)))
        self.gens: list[LoadGen] = []
        try:
            for k in range(n):
                share = dict(cfg)
                share["runs"] = cfg["runs"] // n + (k < cfg["runs"] % n)
                if "streams" in cfg:
                    share["streams"] = max(1, cfg["streams"] // n + (k < cfg["streams"] % n))
                if isinstance(cfg.get("rate"), (int, float)):
                    share["rate"] = cfg["rate"] * share["runs"] / cfg["runs"]
                share["run_prefix"] = f"{cfg.get('run_prefix', 'lg')}{k}"
                share["seed"] = cfg.get("seed", 1) * 1000 + k
                self.gens.append(LoadGen(share, log_path.with_suffix(f".{k}.log")))
        except BaseException:
            self.kill()
            raise

    @property
    def pids(self) -> list[int]:
        return [g.pid for g in self.gens]

    def wait(self, event: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        try:
            msgs = [g.wait(event, max(0.0, deadline - time.monotonic())) for g in self.gens]
        except BaseException:
            self.kill()
            raise
        out: dict = {}
        for m in msgs:
            for key, v in m.items():
                if key not in out:
                    out[key] = dict(v) if isinstance(v, dict) else (
                        list(v) if isinstance(v, list) else v)
                elif key in self._EARLIEST:
                    out[key] = min(out[key], v)
                elif key in self._LATEST or key == "maxrss_mib":
                    out[key] = max(out[key], v)
                elif isinstance(v, dict):
                    out[key].update(v)
                elif isinstance(v, list):
                    out[key].extend(v)
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[key] += v
        return out

    def release(self) -> None:
        for g in self.gens:
            g.release()

    def finish(self, done: dict, timeout_s: float = 60) -> None:
        errors = []
        for g in self.gens:
            try:
                g.finish(done if len(self.gens) == 1 else {}, timeout_s)
            except RuntimeError as e:
                errors.append(str(e))
        if errors or done.get("errors"):
            raise RuntimeError(f"load generators failed; errors {done.get('errors')}; "
                               f"sent {done.get('events_sent')}, acked "
                               f"{done.get('events_acked')}:\n" + "\n".join(errors))

    def kill(self) -> None:
        for g in self.gens:
            g.kill()


# --- the query API ----------------------------------------------------------------------------

def auth_headers() -> dict[str, str]:
    """The bench's API key (``bench.harness.ensure_api_key``) as an HTTP header."""
    key = os.environ.get("RUNSTREAM_API_KEY", "")
    return {"Authorization": f"Bearer {key}"} if key else {}


def http_json(url: str, timeout_s: float = 60) -> dict:
    """GET ``url`` → parsed JSON (raises on any HTTP error)."""
    import json
    import urllib.request
    req = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.load(resp)


def count_runs(http: str, entity: str, project: str, state: str) -> int:
    """Runs of the project in ``state`` (one query: the page's window count); 0 while
    the project has no projected run yet (the API answers 404 for it)."""
    import urllib.error
    try:
        return http_json(f"{http}/api/v1/projects/{entity}/{project}/runs?state={state}"
                         f"&limit=1")["total"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return 0
        raise


def list_runs(http: str, entity: str, project: str) -> list[dict]:
    """Every run of the project (pages of 1,000, the API's limit)."""
    out: list[dict] = []
    while True:
        page = http_json(f"{http}/api/v1/projects/{entity}/{project}/runs?limit=1000"
                         f"&offset={len(out)}")
        out += page["runs"]
        if len(out) >= page["total"] or not page["runs"]:
            return out


def wait_runs(http: str, entity: str, project: str, state: str, n: int, timeout_s: float,
              poll_s: float = 0.1) -> float:
    """Poll until ``n`` runs are in ``state``; the ``time.monotonic()`` of that answer
    (the load generator's clock)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = count_runs(http, entity, project, state)
        t = time.monotonic()
        if got >= n:
            return t
        if t > deadline:
            raise RuntimeError(f"{entity}/{project}: {got} of {n} runs {state} after "
                               f"{timeout_s:g} s")
        time.sleep(poll_s)


# MAX_CHART_RUNS and MAX_CHART_KEYS of api/chart_queries.py: one history request's limits.
_HISTORY_RUNS, _HISTORY_KEYS = 200, 50


def missing_points(http: str, entity: str, project: str, steps: dict[str, int],
                   metrics: int) -> tuple[int, list[str]]:
    """Points logged (``steps[run]`` steps × ``metrics`` keys m0…) that the query API does
    not return: ``GET …/projects/<e>/<p>/history?runs=…&keys=…&buckets=1`` gives each
    line's ``total_points``. Returns (missing count, a few examples)."""
    runs = sorted(r for r, n in steps.items() if n)
    keys = [f"m{j}" for j in range(metrics)]
    missing, examples = 0, []
    for i in range(0, len(runs), _HISTORY_RUNS):
        chunk = runs[i:i + _HISTORY_RUNS]
        for k in range(0, len(keys), _HISTORY_KEYS):
            kk = keys[k:k + _HISTORY_KEYS]
            got = http_json(f"{http}/api/v1/projects/{entity}/{project}/history?runs="
                            f"{','.join(chunk)}&keys={','.join(kk)}&buckets=1")["series"]
            totals = {(s["run_id"], s["key"]): s["total_points"] for s in got}
            for r in chunk:
                for key in kk:
                    short = steps[r] - totals.get((r, key), 0)
                    if short:                     # fewer (or, wrongly, more) than logged
                        missing += abs(short)
                        if len(examples) < 5:
                            examples.append(f"{r}/{key}: {totals.get((r, key), 0)} of "
                                            f"{steps[r]}")
    return missing, examples
