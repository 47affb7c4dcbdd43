"""scripts/kafka_broker.py and scripts/kafka.py without starting Java."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.kafka import ENV_BOOTSTRAP, REPO_ROOT, load_broker_module

kb = load_broker_module()


def test_cluster_id_is_22_chars_of_base64url():
    ids = {kb.new_cluster_id() for _ in range(50)}
    assert len(ids) == 50
    for cid in ids:
        assert len(cid) == 22
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_cluster_id_never_begins_with_a_dash():
    # one uuid in 64 encodes to "-..."; kafka-storage's parser then reads it as an option
    assert not any(kb.new_cluster_id().startswith("-") for _ in range(2000))


def test_format_passes_the_cluster_id_joined_to_its_flag(tmp_path, monkeypatch):
    broker = kb.KafkaBroker(tmp_path / "b")
    broker.work_dir.mkdir(parents=True)
    broker.logs_dir.mkdir(parents=True, exist_ok=True)
    broker.cluster_id = "-leadingDashIdAAAAAAAA"
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(kb.subprocess, "run", fake_run)
    broker._format_storage()
    assert "--cluster-id=-leadingDashIdAAAAAAAA" in seen["cmd"]


def test_free_ports_are_distinct_loopback_ports():
    ports = kb.free_ports(3)
    assert len(set(ports)) == 3
    assert all(1024 <= p <= 65535 for p in ports)


def test_config_is_single_node_kraft_on_loopback(tmp_path):
    broker = kb.KafkaBroker(tmp_path / "b", settings={"log.retention.hours": "1"})
    broker.work_dir.mkdir()
    broker.broker_port, broker.controller_port = 19092, 19093
    broker._write_config()
    props = dict(
        line.split("=", 1)
        for line in broker.config_path.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(broker.data_dir)
    for key, value in kb.TEST_SETTINGS.items():
        assert props[key] == value
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.retention.hours"] == "1"
    assert broker.bootstrap == "127.0.0.1:19092"


def test_extra_listener_is_advertised_at_the_given_port(tmp_path):
    # A proxy at 19999 in front of the GATEWAY listener: clients that bootstrap through
    # it are told to connect to 19999 again; PLAINTEXT keeps its own address.
    broker = kb.KafkaBroker(tmp_path / "b", listeners={"GATEWAY": 19999, "OTHER": None})
    broker.work_dir.mkdir()
    broker.broker_port, broker.controller_port = 19092, 19093
    broker.listener_ports = {"GATEWAY": 19094, "OTHER": 19095}
    broker._write_config()
    props = dict(
        line.split("=", 1)
        for line in broker.config_path.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093,"
        "GATEWAY://127.0.0.1:19094,OTHER://127.0.0.1:19095"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,GATEWAY://127.0.0.1:19999,OTHER://127.0.0.1:19095"
    )
    assert props["listener.security.protocol.map"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,GATEWAY:PLAINTEXT,OTHER:PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"


@pytest.mark.parametrize("name", ["PLAINTEXT", "CONTROLLER", "gateway", "A-B", ""])
def test_extra_listener_names_are_checked(tmp_path, name):
    with pytest.raises(ValueError):
        kb.KafkaBroker(tmp_path / "b", listeners={name: None})


def test_restart_needs_a_broker_that_was_started(tmp_path):
    broker = kb.KafkaBroker(tmp_path / "b")
    with pytest.raises(kb.KafkaBrokerError, match="never started"):
        broker.restart()
    assert broker.kill() is None  # never started: nothing to kill


def test_restart_keeps_ports_and_data_and_formats_nothing(tmp_path, monkeypatch):
    broker = kb.KafkaBroker(tmp_path / "b")
    broker.work_dir.mkdir()
    broker.broker_port, broker.controller_port = 19092, 19093
    broker._write_config()
    (broker.data_dir / "t-0").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(broker, "_format_storage", lambda: calls.append("format"))
    monkeypatch.setattr(broker, "_launch", lambda: calls.append("launch"))
    monkeypatch.setattr(broker, "_wait_ready", lambda deadline: calls.append("ready"))
    assert broker.restart() is broker
    assert calls == ["launch", "ready"]
    assert (broker.broker_port, broker.controller_port) == (19092, 19093)
    assert (broker.data_dir / "t-0").is_dir()
    assert broker.restart_seconds is not None


def test_java_command_logs_to_a_file_through_log4j2(tmp_path):
    broker = kb.KafkaBroker(tmp_path, heap="384m")
    cmd = broker._java_cmd("kafka.Kafka", "server.properties", heap=broker.heap)
    assert "-Xmx384m" in cmd and "-Xms384m" in cmd
    assert f"-Dlog4j2.configurationFile={kb.LOG4J_CONFIG}" in cmd
    assert f"-Dkafka.logs.dir={broker.logs_dir}" in cmd
    assert cmd[-2:] == ["kafka.Kafka", "server.properties"]
    config = kb.LOG4J_CONFIG.read_text()
    assert '<Root level="warn">' in config and "<Console" not in config


def test_pom_uses_the_slf4j_1_binding():
    pom = (REPO_ROOT / "deploy" / "kafka" / "pom.xml").read_text()
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom
    assert "log4j-slf4j2-impl</artifactId>" not in pom


def test_start_without_jars_fails_clearly(tmp_path):
    broker = kb.KafkaBroker(tmp_path / "b", libs_dir=tmp_path / "empty")
    with pytest.raises(kb.KafkaBrokerError, match="fetch-kafka.sh"):
        broker.start()
    assert broker.stop() is None  # never started: nothing to stop
    with pytest.raises(kb.KafkaBrokerError):
        _ = broker.bootstrap


def test_relative_libs_dir_is_taken_from_the_repo_root(tmp_path):
    assert kb.KafkaBroker(tmp_path).libs_dir == REPO_ROOT / ".cache" / "kafka-libs"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "kafka.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_down_and_status_without_a_broker(tmp_path):
    down = _cli("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0 and "not running" in down.stderr
    status = _cli("status", "--state-dir", str(tmp_path))
    assert status.returncode == 1


def test_cli_down_ignores_a_stale_pid(tmp_path):
    # Our own pid is alive but is not a Kafka broker: `down` must not signal it.
    (tmp_path / "state.json").write_text(
        json.dumps({"pid": os.getpid(), "bootstrap": "127.0.0.1:1"})
    )
    down = _cli("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert "no longer running" in down.stderr
    assert not (tmp_path / "state.json").exists()


@pytest.mark.kafka
def test_cli_up_status_down(tmp_path, kafka_bootstrap):
    # kafka_bootstrap: fetches the jars, or skips/fails like every Kafka test.
    if not kb.libs_available():
        pytest.skip(f"no Kafka jars (external broker via {ENV_BOOTSTRAP})")
    up = _cli("up", "--state-dir", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        line = up.stdout.strip().splitlines()[-1]
        assert line.startswith("KAFKA_BOOTSTRAP=127.0.0.1:")
        state = json.loads((tmp_path / "state.json").read_text())
        assert line == f"KAFKA_BOOTSTRAP={state['bootstrap']}"
        assert Path(state["work_dir"]) == tmp_path / "run"
        again = _cli("up", "--state-dir", str(tmp_path))
        assert again.returncode == 0 and "already running" in again.stderr
        assert again.stdout.strip() == line
        assert _cli("status", "--state-dir", str(tmp_path)).stdout.strip() == line
    finally:
        down = _cli("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert "stopped pid" in down.stderr
    assert not (tmp_path / "state.json").exists()
