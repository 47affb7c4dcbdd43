"""The fold's summary rules: define_metric modes, globs, overrides, last_step, resume seqs."""

from __future__ import annotations

import math

import pytest
from runstream.v1 import events_pb2 as E
from runstream_server.projector.processor import (
    RowBatch,
    RunKey,
    RunState,
    fold_record,
)

T0 = 1_700_000_000_000_000
KEY = RunKey("ent", "proj", "run-1")
NAN = float("nan")


class Run:
    """Folds one run's events one record at a time, numbering seqs like a client."""

    def __init__(self) -> None:
        self.states: dict[RunKey, RunState] = {}
        self.seq = 0
        self.offset = 0
        self.fold(run_start=E.RunStart(name="r"))

    def fold(self, seq: int | None = None, **body) -> RowBatch:
        if seq is None:
            seq = self.seq + 1
        self.seq = max(self.seq, seq)
        e = E.Event(run_id="run-1", project="proj", entity="ent", seq=seq,
                    client_time_us=T0 + seq)
        ((name, msg),) = body.items()
        getattr(e, name).CopyFrom(msg)
        batch = RowBatch()
        rec = E.LogRecord(events=[e], server_time_us=T0 + seq).SerializeToString()
        fold_record(self.states, rec, 0, self.offset, batch)
        self.offset += 1
        return batch

    def define(self, name: str, summary: str = "", step_metric: str = "") -> None:
        self.fold(define_metric=E.DefineMetric(name=name, summary=summary,
                                               step_metric=step_metric))

    def log(self, step: int | None = None, others=None, **numbers) -> None:
        self.fold(log=E.Log(step=self.st.last_step + 1 if step is None else step,
                            numbers=numbers,
                            others={k: E.JsonValue(json=v) for k, v in (others or {}).items()}))

    def override(self, removed=(), others=None, **numbers) -> None:
        self.fold(summary_update=E.SummaryUpdate(
            numbers=numbers, removed=list(removed),
            others={k: E.JsonValue(json=v) for k, v in (others or {}).items()}))

    @property
    def st(self) -> RunState:
        return self.states[KEY]


def test_default_is_last_and_last_step_is_the_highest_step():
    r = Run()
    assert r.st.last_step == -1
    for v in (3.0, 1.0, 2.0):
        r.log(loss=v)
    assert r.st.summary == {"loss": 2.0} and r.st.last_step == 2
    r.log(step=1, loss=9.0)               # a past step: last (in log order) wins, step stays
    assert r.st.summary == {"loss": 9.0} and r.st.last_step == 2
    assert r.st.summary_modes == {} and r.st.summary_count == {} and r.st.summary_agg == {}


@pytest.mark.parametrize("mode, values, expected", [
    ("min", [3.0, 1.0, 2.0], 1.0),
    ("max", [3.0, 1.0, 5.0, 2.0], 5.0),
    ("mean", [1.0, 2.0, 6.0], 3.0),
    ("first", [3.0, 1.0, 2.0], 3.0),
    ("last", [3.0, 1.0, 2.0], 2.0),
    ("min", [NAN, 2.0, NAN, 1.0, NAN], 1.0),        # NaN is skipped
    ("max", [-math.inf, NAN, 4.0, math.inf], math.inf),
    ("mean", [NAN, 1.0, NAN, 3.0], 2.0),
    ("first", [NAN, 1.0], NAN),                     # first keeps NaN too
    ("unknown-mode", [3.0, 1.0], 1.0),              # counts as last
])
def test_modes(mode, values, expected):
    r = Run()
    r.define("loss", mode)
    for v in values:
        r.log(loss=v)
    got = r.st.summary["loss"]
    assert got == expected or (math.isnan(expected) and math.isnan(got))


def test_only_nan_so_far_shows_nan_then_the_first_real_value():
    r = Run()
    r.define("loss", "min")
    r.log(loss=NAN)
    assert math.isnan(r.st.summary["loss"]) and r.st.summary_count.get("loss", 0) == 0
    r.log(loss=5.0)
    assert r.st.summary["loss"] == 5.0
    r.define("acc", "mean")
    r.log(acc=NAN)
    assert math.isnan(r.st.summary["acc"])


def test_none_keeps_a_key_out_of_the_summary():
    r = Run()
    r.log(noise=1.0, others={"blob": '"x"'})
    r.define("noise", "none")
    r.define("blob", "none")
    assert "noise" not in r.st.summary and "blob" not in r.st.summary_other
    r.log(noise=2.0, others={"blob": '"y"'})
    assert "noise" not in r.st.summary and "blob" not in r.st.summary_other
    r.override(noise=7.0)                  # an explicit value is still shown
    assert r.st.summary["noise"] == 7.0
    r.log(noise=3.0)                       # ... until the key is logged again
    assert "noise" not in r.st.summary


def test_override_lasts_until_the_key_is_logged_again_and_spares_the_aggregate():
    r = Run()
    r.define("loss", "min")
    for v in (3.0, 1.0, 2.0):
        r.log(loss=v)
    r.override(loss=100.0, others={"best": '"epoch 3"'})
    assert r.st.summary["loss"] == 100.0 and r.st.summary_other["best"] == '"epoch 3"'
    r.log(loss=1.5)
    assert r.st.summary["loss"] == 1.0     # the min of the logged values, not of the override
    r.override(removed=["loss"])
    assert "loss" not in r.st.summary
    r.log(loss=0.5)
    assert r.st.summary["loss"] == 0.5
    r.define("acc", "mean")
    r.log(acc=1.0)
    r.override(acc=50.0)
    r.log(acc=3.0)
    assert r.st.summary["acc"] == 2.0


def test_non_numbers_follow_last_whatever_the_mode():
    r = Run()
    r.define("x", "min")
    r.log(x=1.0)
    r.log(others={"x": '"text"'})
    assert r.st.summary_other == {"x": '"text"'} and "x" not in r.st.summary
    r.log(x=5.0)                           # back to numbers: the aggregate went on
    assert r.st.summary == {"x": 1.0} and r.st.summary_other == {}


def test_globs_exact_names_win_then_the_longest_glob():
    r = Run()
    r.define("val/*", "max")
    r.define("val/loss*", "min")
    r.define("val/loss_b", "last")
    r.define("*", "first")
    for a, b, c, d in ((1.0, 5.0, 5.0, 5.0), (3.0, 2.0, 2.0, 2.0), (2.0, 4.0, 4.0, 4.0)):
        r.log(**{"val/acc": a, "val/loss_a": b, "val/loss_b": c, "train/x": d})
    assert r.st.summary == {"val/acc": 3.0, "val/loss_a": 2.0, "val/loss_b": 4.0,
                            "train/x": 5.0}
    assert r.st.summary_modes == {"val/*": "max", "val/loss*": "min", "val/loss_b": "last",
                                  "*": "first"}


def test_equal_length_globs_tie_break_on_pattern_text():
    r = Run()
    r.define("a?", "max")
    r.define("?b", "min")                 # "?b" < "a?": it wins for "ab"
    for v in (1.0, 3.0, 2.0):
        r.log(ab=v)
    assert r.st.summary["ab"] == 1.0


def test_define_after_logging_seeds_with_the_current_value():
    r = Run()
    for v in (1.0, 5.0, 3.0):
        r.log(loss=v)
    r.define("loss", "max")                # aggregates from the last value (3) on
    assert r.st.summary_count == {"loss": 1} and r.st.summary_agg == {"loss": 3.0}
    r.log(loss=2.0)
    assert r.st.summary["loss"] == 3.0
    r.log(loss=4.0)
    assert r.st.summary["loss"] == 4.0


def test_redefining_the_same_mode_changes_nothing_a_new_mode_restarts():
    r = Run()
    r.define("loss", "mean")
    for v in (1.0, 2.0, 3.0):
        r.log(loss=v)
    before = (dict(r.st.summary_count), dict(r.st.summary_agg))
    r.define("loss", "mean")               # a resumed script defines its metrics again
    r.define("loss")                       # empty summary: unchanged
    assert (r.st.summary_count, r.st.summary_agg) == before
    r.log(loss=6.0)
    assert r.st.summary["loss"] == 3.0
    r.define("loss", "min")                # restarts from the current summary value (3.0)
    r.log(loss=4.0)
    assert r.st.summary["loss"] == 3.0
    r.define("loss", "last")
    assert "loss" not in r.st.summary_count
    r.log(loss=9.0)
    assert r.st.summary["loss"] == 9.0


def test_a_glob_definition_reseeds_only_keys_whose_mode_changes():
    r = Run()
    r.define("val/acc", "min")
    r.log(**{"val/acc": 2.0, "val/f1": 0.5})
    r.log(**{"val/acc": 1.0, "val/f1": 0.7})
    r.define("val/*", "max")               # val/acc keeps its exact "min" definition
    assert r.st.summary_count == {"val/acc": 2, "val/f1": 1}
    r.log(**{"val/acc": 3.0, "val/f1": 0.6})
    assert r.st.summary == {"val/acc": 1.0, "val/f1": 0.7}


def test_step_metric_is_recorded_and_kept():
    r = Run()
    r.define("val/*", "", step_metric="epoch")
    r.define("val/*", "max")
    assert r.st.step_metrics == {"val/*": "epoch"} and r.st.summary_modes == {"val/*": "max"}
    r.define("", "min")                    # no name: ignored (but applied as an event)
    assert "" not in r.st.summary_modes


def test_define_metric_is_a_client_event_with_seq_rules():
    r = Run()
    r.define("loss", "min")
    v = r.st.version
    r.fold(seq=r.seq, define_metric=E.DefineMetric(name="loss", summary="max"))   # duplicate
    assert r.st.summary_modes == {"loss": "min"} and r.st.version == v


def test_a_run_start_never_counts_a_gap():
    r = Run()
    r.log(loss=1.0)
    resumed_seq = T0                       # a resuming client starts at its clock in µs
    r.fold(seq=resumed_seq, run_start=E.RunStart(resumed=True))
    assert r.st.seq_gaps == 0 and r.st.last_seq == resumed_seq
    assert r.st.state_cause == "resumed"
    r.fold(seq=resumed_seq + 3, heartbeat=E.Heartbeat())
    assert r.st.seq_gaps == 2               # other bodies still count gaps
    fresh: dict = {}
    e = E.Event(run_id="new", project="proj", entity="ent", seq=T0,
                run_start=E.RunStart(resumed=True))
    fold_record(fresh, E.LogRecord(events=[e], server_time_us=T0).SerializeToString(), 0, 0,
                RowBatch())
    assert fresh[RunKey("ent", "proj", "new")].seq_gaps == 0


def test_state_with_modes_survives_the_row_round_trip():
    r = Run()
    r.define("val/*", "mean", step_metric="epoch")
    r.log(**{"val/a": 1.0, "val/b": 2.0})
    r.log(**{"val/a": 3.0})
    st = r.st
    assert RunState.from_row(st.to_row()) == st
    rows = RowBatch()
    rows.runs[st.key] = st
    tbl = rows.to_arrow("runs")
    row = tbl.to_pylist()[0]
    assert dict(row["summary_modes"]) == {"val/*": "mean"}
    assert dict(row["summary_count"]) == {"val/a": 2, "val/b": 1}
    assert dict(row["summary_agg"]) == {"val/a": 4.0, "val/b": 2.0}
    assert dict(row["step_metrics"]) == {"val/*": "epoch"} and row["last_step"] == 1
