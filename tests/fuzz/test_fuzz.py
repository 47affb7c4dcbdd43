"""The ingest fuzz target (ingest_target.py): a reduced coverage-guided run, its seeds,
the inputs it found so far, and proof that its contract check can fail."""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).with_name("ingest_target.py")
RUNS = 20_000        # about 5 s here; `make fuzz` runs 1,000,000
# An input that broke the contract once (base64, as libFuzzer printed it): top-level
# field 3 with invalid UTF-8. Forwarded unchanged it was LogRecord.gateway, and made the
# acknowledged record undecodable.
RECORD_FIELD = ("CjUKAnIyEgFwGgFlIQEAAAAAAAAAKekDAAAAAAAAWhcJAQAAAAAAAAASDAoBYREAAAAAAAA"
                "kABoMCgFhEQAAAAAAAPB/CiAKAnIyEgFwGgFlIQIAAAAAAAAAKeoDAAAAAAAAegIIA3gB")


def _step_overflow() -> bytes:
    """The other one found: a Log step of 2**64 - 2, which the run state's Int64
    last_step could not hold (the Arrow conversion raised in the projector)."""
    from runstream.v1 import events_pb2 as E
    from runstream.v1 import ingest_pb2
    return ingest_pb2.IngestRequest(events=[
        E.Event(run_id="r3", project="p", entity="e", seq=5, client_time_us=1005,
                log=E.Log(step=2**64 - 2, numbers={"a": 1.0}))]).SerializeToString()


def _target():
    spec = importlib.util.spec_from_file_location("ingest_target", TARGET)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_seeds_and_found_inputs_keep_the_contract():
    t = _target()
    for s in t.seeds():
        t.check(s)
    t.check(base64.b64decode(RECORD_FIELD))
    t.check(_step_overflow())


def test_the_contract_check_fails_when_validation_lets_a_record_field_through(monkeypatch):
    from google.protobuf.message import DecodeError
    from runstream_server.gateway import validation
    t = _target()
    monkeypatch.setattr(validation, "_RECORD_FIELDS", range(0))   # the rule taken out
    with pytest.raises(DecodeError):
        t.check(base64.b64decode(RECORD_FIELD))


def test_coverage_guided_run_finds_no_crash(tmp_path):
    corpus = tmp_path / "corpus"
    py = sys.executable
    subprocess.run([py, str(TARGET), "--write-seeds", str(corpus)], check=True, timeout=60)
    proc = subprocess.run([py, str(TARGET), f"-runs={RUNS}", "-seed=1", str(corpus)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(rf"Done {RUNS} runs", out), out[-2000:]
    assert not list(tmp_path.glob("crash-*"))
