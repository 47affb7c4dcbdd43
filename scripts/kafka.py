"""Run a local single-node Kafka broker in the background (``make kafka-up|kafka-down``).

    python scripts/kafka.py up       start it (or report the running one); prints
                                     KAFKA_BOOTSTRAP=127.0.0.1:PORT and returns
    python scripts/kafka.py status   print KAFKA_BOOTSTRAP=... if running (exit 1 if not)
    python scripts/kafka.py down     stop it

The broker's files live in ``<state dir>/run`` (default ``.cache/kafka``, from the
repository root; its data is formatted afresh by every ``up``), and
``<state dir>/state.json`` holds ``{pid, bootstrap, ...}``. The broker itself is
``scripts/kafka_broker.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka_broker import (
    REPO_ROOT,
    KafkaBroker,
    KafkaBrokerError,
    fetch_libs,
    libs_available,
)

DEFAULT_STATE_DIR = REPO_ROOT / ".cache" / "kafka"


def _alive_broker(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) Kafka broker JVM."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and b"kafka.Kafka" in cmdline


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cmd_up(state_dir: Path, heap: str) -> int:
    state_path = state_dir / "state.json"
    state = _read_state(state_path)
    if state and _alive_broker(int(state["pid"])):
        print(f"kafka: already running (pid {state['pid']})", file=sys.stderr)
        print(f"KAFKA_BOOTSTRAP={state['bootstrap']}")
        return 0
    state_path.unlink(missing_ok=True)
    try:
        fetch_libs()  # instant when the jars match deploy/kafka/pom.xml
    except KafkaBrokerError as exc:
        if not libs_available():
            print(f"kafka: {exc}", file=sys.stderr)
            return 1
        print(f"kafka: using the jars already present ({exc})", file=sys.stderr)
    broker = KafkaBroker(state_dir / "run", heap=heap)
    try:
        broker.start()
    except KafkaBrokerError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    pid = broker.detach()
    state = {
        "pid": pid,
        "bootstrap": broker.bootstrap,
        "work_dir": str(broker.work_dir),
        "log": str(broker.log_path),
        "startup_seconds": round(broker.startup_seconds or 0.0, 3),
        "started_at": time.time(),
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_path)
    print(
        f"kafka: started pid {pid} in {broker.startup_seconds:.1f} s; log {broker.log_path}",
        file=sys.stderr,
    )
    print(f"KAFKA_BOOTSTRAP={broker.bootstrap}")
    return 0


def cmd_status(state_dir: Path) -> int:
    state = _read_state(state_dir / "state.json")
    if state and _alive_broker(int(state["pid"])):
        print(f"KAFKA_BOOTSTRAP={state['bootstrap']}")
        return 0
    print("kafka: not running", file=sys.stderr)
    return 1


def cmd_down(state_dir: Path, grace_s: float) -> int:
    state_path = state_dir / "state.json"
    state = _read_state(state_path)
    if not state:
        print("kafka: not running", file=sys.stderr)
        return 0
    pid = int(state["pid"])
    if _alive_broker(pid):
        # The broker leads its own process group (started with a new session).
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive_broker(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive_broker(pid):
            os.killpg(pid, signal.SIGKILL)
            print(f"kafka: pid {pid} ignored SIGTERM for {grace_s:.0f} s; killed", file=sys.stderr)
        else:
            print(f"kafka: stopped pid {pid}", file=sys.stderr)
    else:
        print(f"kafka: pid {pid} was no longer running", file=sys.stderr)
    state_path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    parser.add_argument("--heap", default="512m", help="JVM heap (-Xms/-Xmx), default 512m")
    parser.add_argument("--grace", type=float, default=20.0, help="seconds before SIGKILL")
    args = parser.parse_args(argv)
    state_dir = args.state_dir if args.state_dir.is_absolute() else REPO_ROOT / args.state_dir
    if args.command == "up":
        return cmd_up(state_dir, args.heap)
    if args.command == "status":
        return cmd_status(state_dir)
    return cmd_down(state_dir, args.grace)


if __name__ == "__main__":
    sys.exit(main())
