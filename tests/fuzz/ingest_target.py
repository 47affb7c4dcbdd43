"""Fuzz target: bytes as they arrive on the Ingest stream → the gateway's decode and
validation → the log records it would append → the projector's fold → the Arrow tables
it would insert.

Contract checked on every input (a violation is a crash, which libFuzzer reports with
the input that caused it):
- decoding raises nothing but ``DecodeError``; validation nothing but ``InvalidEvent``;
- an accepted request becomes records holding every one of its events, each record
  keyed by its run id;
- the fold and the Arrow conversion of everything accepted raise nothing.

Run by ``make fuzz`` (1,000,000 inputs) and, reduced, by tests/fuzz/test_fuzz.py:
    python tests/fuzz/ingest_target.py -runs=N [-seed=S] CORPUS_DIR
``--write-seeds DIR`` writes the seed corpus (valid requests of every body) and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris
from google.protobuf.message import DecodeError
from runstream.v1 import events_pb2 as E
from runstream.v1 import ingest_pb2

# Coverage is collected on the server's own code only (the libraries are not the target).
with atheris.instrument_imports(include=["runstream_server"]):
    from runstream_server.gateway.records import build_records, trailer
    from runstream_server.gateway.validation import InvalidEvent, validate_request
    from runstream_server.projector.processor import (
        HISTORY_NUMERIC,
        HISTORY_OTHER,
        RUNS,
        WORKSPACES,
        RowBatch,
        fold_records,
    )

TABLES = (HISTORY_NUMERIC, HISTORY_OTHER, RUNS, WORKSPACES)
TAIL = trailer(1_700_000_000_000_000, b"gw-fuzz")


def check(raw: bytes) -> None:
    try:
        request = ingest_pb2.IngestRequest.FromString(raw)
    except DecodeError:
        return                                     # the gateway: INVALID_ARGUMENT
    try:
        slices = validate_request(request)
    except InvalidEvent:
        return                                     # the gateway: BatchRejected
    if not slices:
        return
    records = build_records(raw, request, slices, TAIL)
    forwarded = 0
    for key, value in records:
        rec = E.LogRecord.FromString(value)
        assert all(ev.run_id.encode() == key for ev in rec.events), "event under another key"
        forwarded += len(rec.events)
    assert forwarded == len(request.events), f"{len(request.events)} events, {forwarded} sent"
    batch = RowBatch()
    fold_records({}, [(0, i, value) for i, (_, value) in enumerate(records)], batch)
    for table in TABLES:
        batch.to_arrow(table)


def seeds() -> list[bytes]:
    """Valid requests covering every client body, a mixed-run request and the edges."""
    def ev(run: str, seq: int, **body) -> E.Event:
        e = E.Event(run_id=run, project="p", entity="e", seq=seq, client_time_us=1_000 + seq)
        ((name, msg),) = body.items()
        getattr(e, name).CopyFrom(msg)
        return e

    js = E.JsonValue
    one_of_each = [
        ev("r1", 1, run_start=E.RunStart(name="n", tags=["a"], config={"lr": js(json="0.1")})),
        ev("r1", 2, log=E.Log(step=0, numbers={"loss": 1.5, "acc": float("nan")},
                              others={"txt": js(json='"hi"')})),
        ev("r1", 3, config_update=E.ConfigUpdate(set={"b": js(json="[1,2]")}, removed=["x"])),
        ev("r1", 4, summary_update=E.SummaryUpdate(numbers={"best": -0.0}, removed=["y"])),
        ev("r1", 5, define_metric=E.DefineMetric(name="val/*", summary="max",
                                                 step_metric="epoch")),
        ev("r1", 6, heartbeat=E.Heartbeat()),
        ev("r1", 7, run_patch=E.RunPatch(name="m")),
        ev("r1", 8, stop_requested=E.StopRequested(requested_by="u")),
        ev("r1", 9, process_exited=E.ProcessExited(pid=1, after_seq=8)),
        ev("r1", 10, finish=E.Finish(exit_code=0)),
        ev("r1", 11, delete=E.Delete()),
    ]
    mixed = [ev("r2", 1, log=E.Log(step=1, numbers={"a": 1.0})),
             ev("r3", 5, log=E.Log(step=2, numbers={"a": float("inf")})),
             ev("r2", 2, finish=E.Finish(exit_code=3))]
    numbers_only = [ev("r4", s, log=E.Log(step=s, numbers={f"k{i}": i * 0.5 for i in range(8)}))
                    for s in range(1, 6)]
    return [ingest_pb2.IngestRequest(events=evs, batch_id=n).SerializeToString()
            for n, evs in enumerate((one_of_each, mixed, numbers_only, []))]


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--write-seeds":
        out = Path(sys.argv[2])
        out.mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(seeds()):
            check(s)                               # the seeds themselves pass the contract
            (out / f"seed-{i}").write_bytes(s)
        return
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
