"""The run lifecycle end to end: real training scripts (tests/e2e/lifecycle_script.py) →
one embedded `runstream server`; every outcome read back through the query API.

All scripts start at once against one server (module fixture) to keep this quick; each
test then checks one scenario: normal end, sys.exit(n), an exception, Ctrl-C, `with`
blocks, fork, multiprocessing children, reinit="create_new" with auto-finish at exit, a
SIGKILL (summary modes still folded by the server), and resume across two processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .conftest import ENTITY, embedded_args
from .procs import REPO, QueryClient, ServerProcess

pytestmark = [pytest.mark.e2e]

SCRIPT = Path(__file__).with_name("lifecycle_script.py")
PROJECT = "life"
ENV = {"RUNSTREAM_ENTITY": ENTITY, "RUNSTREAM_HEARTBEAT_INTERVAL": "0.5",
       "RUNSTREAM_FINISH_TIMEOUT": "20", "PYTHONUNBUFFERED": "1",
       # the test asserts the git fields; ten scripts start at once on a loaded machine
       "RUNSTREAM_METADATA_TIMEOUT": "30"}
SCENARIOS = {"normal": "n", "exit3": "e3", "raise": "rz", "sigint": "si", "with": "w",
             "fork": "fk", "mp": "mp", "reinit": "ri", "killed": "kl", "resume-1": "rs"}


def script(srv, scenario: str, run_id: str) -> subprocess.Popen:
    env = {**os.environ, **ENV, "RUNSTREAM_URL": srv.grpc}
    return subprocess.Popen([sys.executable, str(SCRIPT), scenario, run_id], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle")
    srv = ServerProcess(embedded_args(d / "data", "--heartbeat-timeout", "3",
                                      "--reaper-tick", "0.2"),
                        log_path=d / "server.log").start()
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    try:
        yield srv, q
    finally:
        q.close()
        srv.stop()


@pytest.fixture(scope="module")
def outcomes(server):
    """Run every scenario at once; (exit status, output) per scenario."""
    srv, _ = server
    procs = {sc: script(srv, sc, rid) for sc, rid in SCENARIOS.items()}
    # Ctrl-C: SIGINT once the script is in its training loop.
    p = procs["sigint"]
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in p.stdout:
            lines.append(line)
            if "READY" in line:
                ready.set()
        ready.set()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    assert ready.wait(60), "".join(lines)
    p.send_signal(signal.SIGINT)
    out = {}
    for sc, proc in procs.items():
        if sc == "sigint":
            proc.wait(60)
            t.join(10)
            out[sc] = (proc.returncode, "".join(lines))
        else:
            text, _ = proc.communicate(timeout=120)
            out[sc] = (proc.returncode, text)
    return out


def final(q, run_id: str, states=("finished", "failed", "crashed"), timeout: float = 30):
    """The run once it reached one of ``states``."""
    def check():
        r = q.run(PROJECT, run_id)
        return r if r.state in states else None
    return q.wait_for(check, timeout, f"{run_id} in {states}")


def check_trained(run) -> None:
    """The summary of lifecycle_script.train(): loss min, val/* max, the rest last."""
    assert run.summary["loss"] == 1.0
    assert run.summary["val/acc"] == 2.0
    assert run.summary["nested/x"] == 4.0
    assert run.last_step == 4


def test_normal_end_is_finished_with_config_summary_and_metadata(server, outcomes):
    _, q = server
    code, text = outcomes["normal"]
    assert code == 0, text
    run = final(q, "n")
    assert (run.state, run.exit_code) == ("finished", 0)
    check_trained(run)
    assert run.summary["best_epoch"] == 3.0
    assert run.summary_other["config_error"] == '"refused"'
    assert dict(run.config) == {"lr": "0.02", "arch": '"mlp"', "batch": "64"}
    md = json.loads(run.metadata_json)
    assert md["cwd"] == str(REPO) and md["git_root"] == str(REPO)
    assert len(md["git_commit"]) == 40 and md["git_branch"]
    assert md["args"][1:] == ["normal", "n"] and md["client_version"]
    hist = q.history(PROJECT, "n", keys=["loss"])["loss"]
    assert list(hist.step) == [0, 1, 2, 3, 4] and list(hist.value) == [3, 1, 2, 4, 5]


@pytest.mark.parametrize("scenario, run_id, exit_status, exit_code", [
    ("exit3", "e3", 3, 3),                    # sys.exit(3)
    ("raise", "rz", 1, 1),                    # an uncaught exception
    ("sigint", "si", -signal.SIGINT, 255),    # Ctrl-C: Python dies by SIGINT
])
def test_failed_exits(server, outcomes, scenario, run_id, exit_status, exit_code):
    _, q = server
    code, text = outcomes[scenario]
    assert code == exit_status, text
    run = final(q, run_id)
    assert (run.state, run.exit_code) == ("failed", exit_code)
    assert run.state_cause == f"exit code {exit_code}"
    check_trained(run)


def test_with_blocks(server, outcomes):
    _, q = server
    code, text = outcomes["with"]
    assert code == 1 and "escapes the with block" in text, text
    assert (final(q, "w").state, final(q, "w").exit_code) == ("finished", 0)
    run = final(q, "w-b")
    assert (run.state, run.exit_code) == ("failed", 1)


def test_a_forked_child_does_not_inherit_the_run_and_can_start_its_own(server, outcomes):
    _, q = server
    code, text = outcomes["fork"]
    assert code == 0, text
    parent = final(q, "fk")
    assert (parent.state, parent.exit_code) == ("finished", 0)
    assert "after_fork" in parent.summary and "from_child" not in parent.summary
    assert "from_child" not in q.history(PROJECT, "fk")
    child = final(q, "fk-child")
    assert (child.state, child.exit_code) == ("finished", 0)
    check_trained(child)


def test_multiprocessing_children_finish_their_runs_there(server, outcomes):
    _, q = server
    code, text = outcomes["mp"]
    assert code == 0, text
    assert final(q, "mp").state == "finished"
    for rid in ("mp-fork-finish", "mp-spawn-finish"):
        run = final(q, rid)
        assert (run.state, run.exit_code) == ("finished", 0), rid
        check_trained(run)
    # A child that ends without finish() (fork: no exit hooks) is crashed, with its data.
    run = final(q, "mp-fork-nofinish", timeout=60)
    assert run.state == "crashed"
    check_trained(run)


def test_create_new_runs_are_all_finished_at_exit(server, outcomes):
    _, q = server
    code, text = outcomes["reinit"]
    assert code == 2, text
    for rid in ("ri-a", "ri-b"):
        run = final(q, rid)
        assert (run.state, run.exit_code) == ("failed", 2), rid
    assert final(q, "ri-c").state == "finished"
    assert final(q, "ri-b").summary["x"] == 2.0


def test_a_killed_client_still_gets_its_summary_modes(server, outcomes):
    _, q = server
    code, text = outcomes["killed"]
    assert code == -signal.SIGKILL, text
    run = final(q, "kl", timeout=60)
    assert run.state == "crashed"
    check_trained(run)                          # min/max folded by the server
    assert run.summary["override"] == 1.5


def test_resume_continues_steps_seqs_config_and_summary(server, outcomes):
    srv, q = server
    code, text = outcomes["resume-1"]
    assert code == 0, text
    first = final(q, "rs")
    assert first.state == "finished" and first.last_step == 4
    p = script(srv, "resume-2", "rs")
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 0, text
    assert "RESUMED step=5 lr=0.01 loss=1.0" in text

    def resumed():
        r = q.run(PROJECT, "rs")
        return r if r.state == "finished" and r.last_step == 10 else None
    run = q.wait_for(resumed, 30, "the resumed run finished")
    assert run.last_seq > first.last_seq
    assert run.summary["loss"] == 0.5           # min over both sessions
    assert run.summary["val/acc"] == 2.0
    assert dict(run.config) == {"lr": "0.01", "arch": '"mlp"', "batch": "32"}
    assert run.start_time_us == first.start_time_us and run.state_cause.startswith("finish")
    hist = q.history(PROJECT, "rs", keys=["loss"])["loss"]
    assert list(hist.step) == list(range(11))
    assert list(hist.value) == [3, 1, 2, 4, 5, 3, 1, 2, 4, 5, 0.5]

    p = script(srv, "resume-never", "rs")
    text, _ = p.communicate(timeout=60)
    assert p.returncode == 1 and "ResumeError" in text and "already exists" in text, text
    assert q.run(PROJECT, "rs").last_seq == run.last_seq
