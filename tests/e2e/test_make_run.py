"""`make run` — the README's first command — starts the server and prints its addresses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from .procs import BIN, REPO

pytestmark = [pytest.mark.e2e]


def test_make_run_prints_addresses_and_stops_on_ctrl_c(tmp_path):
    env = {**os.environ, "RUNSTREAM_GRPC_PORT": "0", "RUNSTREAM_HTTP_PORT": "0"}
    p = subprocess.Popen(["make", "-s", "run", f"DATA_DIR={tmp_path / 'data'}"], cwd=REPO,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "runstream: ready" in line:
                break
        out = "".join(lines)
        grpc_addr = re.search(r"gRPC listening on 127\.0\.0\.1:(\d+)", out)
        http_addr = re.search(r"HTTP listening on (http://127\.0\.0\.1:\d+)", out)
        assert grpc_addr and http_addr, out
        with urllib.request.urlopen(http_addr.group(1) + "/healthz", timeout=10) as r:
            assert r.status == 200
        os.killpg(p.pid, signal.SIGINT)   # Ctrl-C in the terminal
        rest, _ = p.communicate(timeout=60)
        assert "runstream: stopped" in rest, out + rest
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_invalid_configuration_fails_the_boot(tmp_path):
    r = subprocess.run([str(BIN / "runstream"), "server", "--data-dir", str(tmp_path),
                        "--fsync", "sometimes"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "fsync must be one of" in r.stderr
    r = subprocess.run([str(BIN / "runstream"), "server", "--roles", "gateway,oracle"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown roles" in r.stderr


def test_migrate_is_idempotent(tmp_path):
    cmd = [str(BIN / "runstream"), "migrate", "--data-dir", str(tmp_path), "--database", "mig"]
    for _ in range(2):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "migrations applied to mig" in r.stdout
    import clickhouse_connect
    client = clickhouse_connect.get_client(dsn=f"chdb:///{tmp_path / 'clickhouse'}")
    try:
        tables = {row[0] for row in client.query("SHOW TABLES FROM mig").result_rows}
        applied = client.query("SELECT count() FROM mig.schema_migrations").result_rows
    finally:
        client.close()
    assert {"history_numeric", "history_other", "runs"} <= tables
    assert applied == [(len(list((REPO / "services/runstream_server/store/migrations")
                                 .glob("*.sql"))),)]
