"""Events a failed disk made the client drop: counted by the client (``Run.dropped_events``)
and, exactly, by the server's fold (``seq_gaps``), which every read API shows on the run.

The journal here is really unwritable (its directory is a file), so every event goes to
the bounded memory overflow; the end-to-end scenario on a full tmpfs against a real
server is ``tests/faults/test_journal_full.py``.
"""

from __future__ import annotations

import re

from runstream import api as A
from runstream._run import Run
from runstream._sender import NullSender
from runstream._settings import Settings
from runstream._wal import WalWriter
from runstream.v1 import events_pb2 as E
from runstream.v1 import query_pb2
from runstream_server.api import convert
from runstream_server.api.queries import _RUN_VIEW_COLUMNS
from runstream_server.projector.processor import RowBatch, RunKey, fold_record

T0 = 1_700_000_000_000_000
STEPS = 200
# A few KB: about a hundred of these ~40-byte log events fit, so STEPS drop about half.
LIMIT = 4000


def unwritable_run(tmp_path) -> tuple[Run, WalWriter]:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = str(blocker / "run")
    # retry_interval_s: an hour, so the disk is not tried again during the test.
    w = WalWriter(path, memory_limit_bytes=LIMIT, retry_interval_s=3600)
    run = Run(sender=NullSender(Settings(system_metrics=False)), run_id="r1", project="proj",
              entity="ent", name="", config={"lr": 0.1}, url="", journal=w,
              journal_dir=path)
    run._start(metadata=E.RunMetadata())
    return run, w


def test_dropped_log_events_are_counted_by_the_run_and_by_the_fold(tmp_path):
    run, w = unwritable_run(tmp_path)
    try:
        for step in range(STEPS):
            run.log({"v": float(step)})
            if step == STEPS // 2:
                run.config.update({"phase": "full"})
        run.summary["best"] = 1.0          # a pinned event after the drops, as a finish is
        assert not w.on_disk
        dropped = run.dropped_events
        assert dropped == w.dropped_events and 0 < dropped < STEPS
        kept = [E.Event.FromString(d) for _s, d in w.overflow_after(0, 10**6, 1 << 30)]
        kinds = [e.WhichOneof("body") for e in kept]
        assert kinds[0] == "run_start" and kinds[-1] == "summary_update"
        assert "config_update" in kinds               # pinned, though older than drops
        # The oldest log events went first; the rest is there, in order.
        assert [e.log.step for e in kept if e.HasField("log")] == list(range(dropped, STEPS))

        # What the server would receive: its fold counts exactly the missing events.
        states: dict = {}
        batch = RowBatch()
        for offset, e in enumerate(kept):
            rec = E.LogRecord(events=[e], server_time_us=T0, gateway="gw").SerializeToString()
            fold_record(states, rec, 0, offset, batch)
        st = states[RunKey("ent", "proj", "r1")]
        assert st.seq_gaps == dropped
        assert len(batch.numeric) + st.seq_gaps == STEPS
        assert st.config == {"lr": "0.1", "phase": '"full"'}
    finally:
        w.close()


def test_a_run_whose_journal_works_drops_nothing(tmp_path):
    w = WalWriter(str(tmp_path / "run"))
    run = Run(sender=NullSender(Settings(system_metrics=False)), run_id="r2", project="proj",
              entity="ent", name="", config=None, url="", journal=w,
              journal_dir=str(tmp_path / "run"))
    try:
        for step in range(STEPS):
            run.log({"v": float(step)})
        assert w.on_disk and run.dropped_events == 0
    finally:
        w.close()


def test_seq_gaps_reaches_the_run_view_and_the_api():
    # Every RunView field is selected from the runs table (a field left out would read 0).
    for name in query_pb2.RunView.DESCRIPTOR.fields_by_name:
        assert re.search(rf"\b{name}\b", _RUN_VIEW_COLUMNS), name
    view = convert.run_view({"entity": "ent", "project": "proj", "run_id": "r1",
                             "seq_gaps": 3996, "last_seq": 13003})
    assert view.seq_gaps == 3996
    assert A.ApiRun(None, view).seq_gaps == 3996
    assert A.ApiRun(None, query_pb2.RunView(run_id="r2")).seq_gaps == 0
