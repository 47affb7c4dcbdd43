"""A single-node Apache Kafka broker for tests and local development.

KRaft combined mode (one JVM is both broker and controller), listening on 127.0.0.1
only, on free ports picked at start. The jars come from Maven Central via
``scripts/fetch-kafka.sh`` (``deploy/kafka/pom.xml`` -> ``.cache/kafka-libs``); no Kafka
tarball and no Docker are needed. See ``/work/shared/reference/infra-facts.md`` §1.

Used as a module (``KafkaBroker``, by the pytest fixtures in ``tests/fixtures/kafka.py``)
and through the CLI ``scripts/kafka.py up|down|status``.

Relative ``libs_dir`` paths are taken from the repository root; ``work_dir`` is taken
as given. Layout of ``work_dir``::

    server.properties   the broker configuration written by start()
    data/               log.dirs (formatted afresh by every start(); kept by restart())
    logs/server.log     the broker's own log (WARN and above, deploy/kafka/log4j2.xml)
    logs/broker.out     the JVM's stdout/stderr (crashes, GC errors)
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIBS_DIR = ".cache/kafka-libs"
LOG4J_CONFIG = REPO_ROOT / "deploy" / "kafka" / "log4j2.xml"
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"

#: Settings for a fast single-node test broker (infra-facts §1.4).
TEST_SETTINGS: dict[str, str] = {
    "num.partitions": "1",
    "offsets.topic.num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "false",
}


class KafkaBrokerError(RuntimeError):
    """The broker could not be prepared, started or stopped."""


def libs_available(libs_dir: str | os.PathLike[str] = DEFAULT_LIBS_DIR) -> bool:
    """Whether ``libs_dir`` holds the broker jars."""
    return any(_resolve_libs(libs_dir).glob("kafka_2.13-*.jar"))


def fetch_libs(timeout_s: float = 900.0) -> None:
    """Run ``scripts/fetch-kafka.sh`` (instant when the jars are current)."""
    try:
        proc = subprocess.run(
            ["bash", str(FETCH_SCRIPT)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaBrokerError(f"scripts/fetch-kafka.sh failed: {exc}") from exc
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()[-3000:]
        raise KafkaBrokerError(f"scripts/fetch-kafka.sh exited {proc.returncode}:\n{out}")


def new_cluster_id() -> str:
    """A random cluster id in Kafka's form (22 characters of base64url, no padding).

    Like Kafka's ``Uuid.randomUuid``, never one that begins with "-": command-line
    parsers read such an id as an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bind to port 0, then release)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_coro(coro_factory, timeout_s: float | None = None):
    """Run ``coro_factory()`` to completion from synchronous code.

    Uses a worker thread when the calling thread already runs an event loop.
    """

    async def main():
        return await asyncio.wait_for(coro_factory(), timeout_s)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def cluster_ready(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True once an admin client can bootstrap and the metadata lists a broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="runstream-kafka-probe",
        request_timeout_ms=max(1000, int(timeout_s * 1000)),
    )
    try:
        await admin.start()
        info = await admin.describe_cluster()
        return bool(info.get("brokers"))
    finally:
        await admin.close()


def _resolve_libs(libs_dir: str | os.PathLike[str]) -> Path:
    path = Path(libs_dir)
    return path if path.is_absolute() else REPO_ROOT / path


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class KafkaBroker:
    """One single-node Kafka (KRaft broker + controller) child process.

    ``start()`` blocks until the broker answers an admin metadata request and sets
    ``startup_seconds`` (formatting included). ``stop()`` sends SIGTERM to the broker's
    process group and SIGKILL after ``stop_grace_s``; ``kill()`` sends SIGKILL at once.
    ``restart()`` starts a stopped or killed broker again on the same ports, cluster id
    and data (what was written before survives) and sets ``restart_seconds``. Usable as
    a context manager.

    ``listeners`` adds PLAINTEXT listeners beside ``PLAINTEXT``: name (upper case) →
    the port advertised for it, or ``None`` for its own port. Each listens on a port of
    its own picked at start (``listener_ports[name]``). A listener advertised at the port
    of a proxy in front of it keeps the clients that bootstrap through that proxy on
    the proxy: Kafka answers metadata with the addresses of the listener asked.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        libs_dir: str | os.PathLike[str] = DEFAULT_LIBS_DIR,
        heap: str = "512m",
        *,
        java: str = "java",
        ready_timeout_s: float = 90.0,
        stop_grace_s: float = 20.0,
        settings: Mapping[str, str] | None = None,
        listeners: Mapping[str, int | None] | None = None,
    ) -> None:
        reserved = {"PLAINTEXT", "CONTROLLER"}
        for name in listeners or {}:
            if not name.isidentifier() or name != name.upper() or name in reserved:
                raise ValueError(f"listener name {name!r}: upper case, not {sorted(reserved)}")
        self.work_dir = Path(work_dir).resolve()
        self.libs_dir = _resolve_libs(libs_dir)
        self.heap = heap
        self.java = java
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.settings = {**TEST_SETTINGS, **(settings or {})}
        self.extra_listeners: dict[str, int | None] = dict(listeners or {})
        self.listener_ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.restart_seconds: float | None = None
        self.broker_port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and addresses ------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.work_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.work_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    @property
    def log_path(self) -> Path:
        """The broker's log (WARN and above)."""
        return self.logs_dir / "server.log"

    @property
    def stdout_path(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.logs_dir / "broker.out"

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the PLAINTEXT listener."""
        if self.broker_port is None:
            raise KafkaBrokerError("the broker has not been started")
        return f"127.0.0.1:{self.broker_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Format fresh storage, start the broker and wait until it serves metadata."""
        if self.running():
            raise KafkaBrokerError(f"the broker is already running (pid {self.pid})")
        if not libs_available(self.libs_dir):
            raise KafkaBrokerError(
                f"no Kafka jars in {self.libs_dir}: run scripts/fetch-kafka.sh (make kafka-libs)"
            )
        if shutil.which(self.java) is None:
            raise KafkaBrokerError(f"java not found ({self.java!r}); Kafka needs Java 17+")

        t0 = time.monotonic()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.broker_port, self.controller_port, *extra = free_ports(2 + len(self.extra_listeners))
        self.listener_ports = dict(zip(self.extra_listeners, extra, strict=True))
        self.cluster_id = new_cluster_id()
        self.returncode = None
        self._write_config()
        self._format_storage()
        self.startup_seconds = self._launch_and_wait(t0)
        return self

    def _launch_and_wait(self, t0: float) -> float:
        """Launch the broker and block until it serves metadata; seconds since ``t0``."""
        self._launch()
        try:
            self._wait_ready(t0 + self.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def restart(self) -> KafkaBroker:
        """Start the broker again after ``stop()`` or ``kill()``: same ports, cluster id,
        configuration and data directory (nothing is formatted); blocks until it serves
        metadata and sets ``restart_seconds`` (log recovery after a kill included)."""
        if self.running():
            raise KafkaBrokerError(f"the broker is already running (pid {self.pid})")
        if self.broker_port is None or not self.config_path.exists():
            raise KafkaBrokerError("the broker was never started: nothing to restart")
        t0 = time.monotonic()
        self.returncode = None
        self.restart_seconds = self._launch_and_wait(t0)
        return self

    def kill(self) -> int | None:
        """SIGKILL the broker's process group (no shutdown of any kind); its exit code."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(30)
            self.returncode = proc.returncode
        return self.returncode

    def stop(self, *, remove: bool = False) -> int | None:
        """Stop the broker (SIGTERM, then SIGKILL after the grace); returns its exit code.

        Deletes ``work_dir`` only when ``remove`` is true.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            self.returncode = proc.returncode
        if remove:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.returncode

    def detach(self) -> int:
        """Leave the broker running after this object (and process) goes away; its pid."""
        if not self.running():
            raise KafkaBrokerError("the broker is not running")
        assert self._proc is not None
        pid = self._proc.pid
        # Drop the handle without waiting: the child lives in its own session and is
        # reaped by init. (A set returncode keeps Popen.__del__ from warning about it.)
        self._proc.returncode = 0
        self._proc = None
        return pid

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- steps ----------------------------------------------------------------------------

    def _write_config(self) -> None:
        bport, cport = self.broker_port, self.controller_port
        listeners = [f"PLAINTEXT://127.0.0.1:{bport}", f"CONTROLLER://127.0.0.1:{cport}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{bport}"]
        protocols = ["CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"]
        for name, shown in self.extra_listeners.items():
            port = self.listener_ports[name]
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{port if shown is None else shown}")
            protocols.append(f"{name}:PLAINTEXT")
        lines = [
            "# Written by scripts/kafka_broker.py: single-node KRaft, loopback only.",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={','.join(protocols)}",
            f"log.dirs={self.data_dir}",
        ]
        lines += [f"{k}={v}" for k, v in self.settings.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _java_cmd(self, main: str, *args: str, heap: str, jvm: Sequence[str] = ()) -> list[str]:
        return [
            self.java,
            *jvm,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp",
            f"{self.libs_dir}/*",
            main,
            *args,
        ]

    def _format_storage(self) -> None:
        assert self.cluster_id is not None
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={self.cluster_id}",  # "=": an id may begin with "-"
            "-c",
            str(self.config_path),
            heap="256m",
            jvm=["-XX:TieredStopAtLevel=1"],  # a one-shot tool: the quick JIT starts faster
        )
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=120, cwd=self.work_dir, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KafkaBrokerError(f"formatting Kafka storage failed: {exc}") from exc
        (self.logs_dir / "format.out").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip()[-3000:]
            raise KafkaBrokerError(f"StorageTool format exited {proc.returncode}:\n{out}")

    def _launch(self) -> None:
        cmd = self._java_cmd("kafka.Kafka", str(self.config_path), heap=self.heap)
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the group
            )

    def _wait_ready(self, deadline: float) -> None:
        assert self._proc is not None and self.broker_port is not None
        last_error = "the broker port never accepted connections"
        while True:
            code = self._proc.poll()
            if code is not None:
                raise KafkaBrokerError(self._failure(f"the broker exited with code {code}"))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaBrokerError(
                    self._failure(
                        f"the broker was not ready after {self.ready_timeout_s:g} s ({last_error})"
                    )
                )
            if _port_open(self.broker_port):
                probe_s = min(5.0, max(remaining, 0.5))
                try:
                    probe = functools.partial(cluster_ready, self.bootstrap, probe_s)
                    if run_coro(probe, probe_s + 1):
                        return
                    last_error = "the metadata listed no broker yet"
                except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                    last_error = f"admin probe: {type(exc).__name__}: {exc}"
            time.sleep(0.1)

    def _failure(self, reason: str) -> str:
        parts = [f"Kafka broker at {self.work_dir}: {reason}"]
        for path in (self.stdout_path, self.log_path):
            tail = _tail(path)
            if tail:
                parts.append(f"--- tail of {path} ---\n{tail}")
        return "\n".join(parts)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
