"""Training scripts for tests/e2e/test_client_lifecycle.py: one scenario per run.

    python lifecycle_script.py <scenario> <run-id>

The server address and entity come from RUNSTREAM_URL / RUNSTREAM_ENTITY; every run
goes to project "life". Each scenario ends the way its name says; the test reads the
outcome back through the query API.
"""

import multiprocessing
import os
import signal
import sys
import time

import runstream

PROJECT = "life"


def start(run_id, config=None, **kw):
    return runstream.init(project=PROJECT, id=run_id,
                          config=config or {"lr": 0.01, "arch": "mlp"}, **kw)


def train(run, steps=5):
    run.define_metric("loss", summary="min")
    run.define_metric("val/*", summary="max")
    for i in range(steps):
        run.log({"loss": [3.0, 1.0, 2.0, 4.0, 5.0][i % 5], "val/acc": i % 3,
                 "nested": {"x": i}})


def child(run_id, finish):
    assert runstream.run is None, "a child process must not inherit the parent's run"
    run = start(run_id)
    train(run)
    if finish:
        run.finish()


def main(scenario, run_id):
    if scenario == "normal":
        run = start(run_id)
        train(run)
        run.config.update({"batch": 64})
        run.config.update({"lr": 0.02}, allow_val_change=True)
        try:
            run.config.lr = 0.03
        except runstream.ConfigError:
            run.summary["config_error"] = "refused"
        run.summary["best_epoch"] = 3
        # ends normally: the exit hook finishes the run (0 → finished)

    elif scenario == "exit3":
        train(start(run_id))
        sys.exit(3)

    elif scenario == "raise":
        train(start(run_id))
        raise RuntimeError("training diverged")

    elif scenario == "sigint":
        train(start(run_id))
        print("READY", flush=True)
        while True:
            time.sleep(0.05)

    elif scenario == "with":
        with start(run_id) as run:
            train(run)
        assert runstream.run is None
        with start(run_id + "-b") as run:
            train(run)
            raise ValueError("escapes the with block and the script")

    elif scenario == "fork":
        parent = start(run_id)
        train(parent)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                assert runstream.run is None
                parent.log({"from_child": 1.0})            # ignored: not the child's run
                parent.finish()                            # ignored too
                child(run_id + "-child", finish=True)
            except BaseException as e:
                print("child failed:", repr(e), flush=True)
                code = 1
            sys.exit(code)                                 # atexit runs in the child
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        parent.log({"after_fork": 1.0})

    elif scenario == "mp":
        parent = start(run_id)
        train(parent)
        procs = [multiprocessing.get_context("fork").Process(
                     target=child, args=(run_id + "-fork-finish", True)),
                 multiprocessing.get_context("fork").Process(
                     target=child, args=(run_id + "-fork-nofinish", False)),
                 multiprocessing.get_context("spawn").Process(
                     target=child, args=(run_id + "-spawn-finish", True))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0, p.exitcode
        parent.log({"children_done": 1.0})

    elif scenario == "reinit":
        a = start(run_id + "-a")
        a.log({"x": 1.0})
        b = start(run_id + "-b", reinit="create_new")
        assert runstream.run is b
        b.log({"x": 2.0})
        c = start(run_id + "-c", reinit="create_new")
        c.finish()
        assert runstream.run is b
        sys.exit(2)             # a and b are still live: both end failed with exit code 2

    elif scenario == "killed":
        run = start(run_id)
        train(run)
        run.summary["override"] = 1.5
        time.sleep(1.0)         # let the sender deliver, then die without finishing
        os.kill(os.getpid(), signal.SIGKILL)

    elif scenario == "resume-1":
        train(start(run_id))

    elif scenario == "resume-2":
        run = start(run_id, resume="must", config={"batch": 32})
        print(f"RESUMED step={run.step} lr={run.config.lr} loss={run.summary['loss']}",
              flush=True)
        train(run)
        run.log({"loss": 0.5})

    elif scenario == "resume-never":
        start(run_id, resume="never")

    else:
        raise SystemExit(f"unknown scenario {scenario}")


if __name__ == "__main__":      # multiprocessing's spawn re-imports this file
    main(sys.argv[1], sys.argv[2])
