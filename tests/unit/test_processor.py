"""The pure fold (projector/processor.py): every dedup, order and state rule, no infrastructure."""

from __future__ import annotations

import json
import math
import struct

import pyarrow as pa
import pytest
from runstream.v1 import events_pb2 as E
from runstream_server.projector.processor import (
    HISTORY_NUMERIC,
    HISTORY_OTHER,
    MAX_TIME_US,
    RUNS,
    RowBatch,
    RunKey,
    RunState,
    canonical_json,
    fold_record,
    fold_records,
)

T0 = 1_700_000_000_000_000
KEY = RunKey("ent", "proj", "run-1")


def ev(seq: int, run_id: str = "run-1", client_us: int | None = None, server_us: int = 0,
       **body) -> E.Event:
    e = E.Event(run_id=run_id, project="proj", entity="ent", seq=seq,
                client_time_us=T0 + seq * 1000 if client_us is None else client_us,
                server_time_us=server_us)
    ((name, msg),) = body.items()
    getattr(e, name).CopyFrom(msg)
    return e


def rec(*events: E.Event, server_us: int = T0 + 5) -> bytes:
    return E.LogRecord(events=list(events), server_time_us=server_us,
                       gateway="gw-1").SerializeToString()


def start(seq: int = 1, **kw) -> E.Event:
    return ev(seq, run_start=E.RunStart(**kw))


def log(seq: int, step: int, numbers=None, others=None, **kw) -> E.Event:
    return ev(seq, log=E.Log(step=step, numbers=numbers or {},
                             others={k: E.JsonValue(json=v) for k, v in (others or {}).items()}),
              **kw)


def hb(seq: int, **kw) -> E.Event:
    return ev(seq, heartbeat=E.Heartbeat(), **kw)


def crashed(after_seq: int, last_seen_us: int = T0, reason: str = "",
            detector: str = "reaper-0") -> E.Event:
    return ev(0, crashed=E.Crashed(after_seq=after_seq, last_seen_us=last_seen_us, reason=reason,
                                   detector=detector))


def fold(records, states=None, partition: int = 0, first_offset: int = 0):
    """Fold ``records`` at consecutive offsets; return (states, batch)."""
    states = {} if states is None else states
    batch = RowBatch()
    fold_records(states, [(partition, first_offset + i, r) for i, r in enumerate(records)], batch)
    return states, batch


def numeric_rows(batch: RowBatch) -> list[dict]:
    return batch.to_arrow(HISTORY_NUMERIC).to_pylist()


def bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def snapshot(states) -> dict:
    return {k: s.to_row() for k, s in states.items()}


def log_fixture() -> list[bytes]:
    """A typical run: start, logs, a config change, a summary override, heartbeats, finish."""
    out = [rec(start(1, name="first", tags=["a", "b"],
                     config={"lr": E.JsonValue(json="0.01"),
                             "net": E.JsonValue(json='{"depth": 3, "act": "relu"}')},
                     metadata=E.RunMetadata(hostname="h1", python_version="3.11")))]
    seq = 2
    for step in range(5):
        out.append(rec(log(seq, step, {"loss": 1.0 / (step + 1), "acc": step / 10},
                           {"sample": '{"img": [1, 2]}'})))
        seq += 1
    out.append(rec(ev(seq, config_update=E.ConfigUpdate(set={"bs": E.JsonValue(json="32")}))))
    seq += 1
    out.append(rec(ev(seq, summary_update=E.SummaryUpdate(numbers={"best": 0.5}))))
    seq += 1
    out.append(rec(hb(seq)))
    seq += 1
    out.append(rec(ev(seq, finish=E.Finish(exit_code=0)), server_us=T0 + 10_000_000))
    return out


# --- run start -----------------------------------------------------------------------------

def test_run_start_sets_every_field():
    meta = E.RunMetadata(hostname="h", os="Linux", args=["train.py", "--lr", "1"], cpu_count=8)
    st, b = fold([rec(start(1, name="n", notes="hello", tags=["x"], group="g", job_type="train",
                            sweep_id="sw", privacy=E.PRIVACY_PUBLIC, metadata=meta,
                            config={"lr": E.JsonValue(json=" 0.5 "),
                                    "opt": E.JsonValue(json='{"b": 1, "a": [1, 2]}')}),
                      server_us=T0 + 7)])
    s = st[KEY]
    assert (s.name, s.notes, s.tags, s.group, s.job_type, s.sweep_id, s.privacy) == (
        "n", "hello", ["x"], "g", "train", "sw", "public")
    assert s.state == "running" and s.state_cause == "started"
    assert s.config == {"lr": "0.5", "opt": '{"a":[1,2],"b":1}'}
    assert json.loads(s.metadata_json) == {"hostname": "h", "os": "Linux",
                                           "args": ["train.py", "--lr", "1"], "cpu_count": 8}
    assert s.start_time == T0 + 7 and s.last_event_time == T0 + 7
    assert s.last_seq == 1 and s.version == 1 and (s.applied_partition, s.applied_offset) == (0, 0)
    assert b.rows() == {HISTORY_NUMERIC: 0, HISTORY_OTHER: 0, "workspaces": 0, RUNS: 1}


def test_run_start_defaults():
    st, _ = fold([rec(start(1, start_time_us=T0 - 99))])
    s = st[KEY]
    assert s.name == "run-1" and s.privacy == "private" and s.start_time == T0 - 99
    assert s.metadata_json == ""


def test_resume_reopens_a_finished_run_and_keeps_first_start():
    records = [rec(start(1, start_time_us=T0)), rec(ev(2, finish=E.Finish(exit_code=1))),
               rec(start(3, resumed=True, start_time_us=T0 + 50, config={"x": E.JsonValue(
                   json="1")}))]
    s = fold(records)[0][KEY]
    assert s.state == "running" and s.state_cause == "resumed"
    assert s.start_time == T0 and s.end_time == 0 and s.exit_code == 0
    assert s.config == {"x": "1"}


# --- history rows and summary --------------------------------------------------------------

def test_log_rows_and_summary_last_value():
    st, b = fold([rec(start(1)),
                  rec(log(2, 0, {"loss": 2.0, "acc": 0.1}, client_us=T0 + 111)),
                  rec(log(3, 1, {"loss": 1.0})),
                  rec(log(4, 2, {"loss": 0.5}, {"pred": '"cat"'}))])
    rows = numeric_rows(b)
    assert len(rows) == 4
    first = [r for r in rows if r["step"] == 0 and r["key"] == "loss"][0]
    assert first["entity"] == "ent" and first["project"] == "proj" and first["run_id"] == "run-1"
    assert first["seq"] == 2 and first["value"] == 2.0
    assert first["ts"] == pa.scalar(T0 + 111, pa.timestamp("us", tz="UTC")).as_py()
    assert st[KEY].summary == {"loss": 0.5, "acc": 0.1}
    assert st[KEY].summary_other == {"pred": '"cat"'}
    other = b.to_arrow(HISTORY_OTHER).to_pylist()
    assert [(r["key"], r["step"], r["value_json"], r["seq"]) for r in other] == [
        ("pred", 2, '"cat"', 4)]
    assert st[KEY].dropped_points == 0


def test_summary_key_moves_between_numeric_and_other():
    records = [rec(start(1)), rec(log(2, 0, {"x": 1.0})), rec(log(3, 1, others={"x": "[1]"}))]
    s = fold(records)[0][KEY]
    assert s.summary == {} and s.summary_other == {"x": "[1]"}
    s = fold(records + [rec(log(4, 2, {"x": 3.0}))])[0][KEY]
    assert s.summary == {"x": 3.0} and s.summary_other == {}


def test_special_floats_are_bit_exact_in_rows_and_summary():
    payload_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8_0000_0000_0123))[0]
    values = {"nan": math.nan, "pinf": math.inf, "ninf": -math.inf, "negzero": -0.0,
              "pnan": payload_nan, "tiny": 5e-324, "big": 1.7976931348623157e308}
    st, b = fold([rec(start(1)), rec(log(2, 7, values))])
    got = {r["key"]: r["value"] for r in numeric_rows(b)}
    assert {k: bits(v) for k, v in got.items()} == {k: bits(v) for k, v in values.items()}
    assert {k: bits(v) for k, v in st[KEY].summary.items()} == {
        k: bits(v) for k, v in values.items()}
    col = b.to_arrow(HISTORY_NUMERIC).column("value")
    assert col.type == pa.float64()


def test_nested_values_stay_json():
    nested = '{"a": {"b": [1, 2.5, null, true]}, "s": "x\\"y"}'
    st, b = fold([rec(start(1, config={"c": E.JsonValue(json=nested)})),
                  rec(log(2, 0, others={"o": nested})),
                  rec(ev(3, summary_update=E.SummaryUpdate(
                      others={"so": E.JsonValue(json=nested)})))])
    s = st[KEY]
    assert json.loads(s.config["c"]) == json.loads(nested)
    assert b.to_arrow(HISTORY_OTHER).column("value_json").to_pylist() == [nested]
    assert s.summary_other == {"o": nested, "so": nested}


def test_canonical_json():
    assert canonical_json('{ "b": 1, "a": [1, 2] }') == '{"a":[1,2],"b":1}'
    assert canonical_json("not json") == '"not json"'
    assert canonical_json("NaN") == "NaN"
    assert canonical_json('"é"') == '"é"'


def test_config_and_summary_updates():
    records = [rec(start(1, config={"a": E.JsonValue(json="1"), "b": E.JsonValue(json="2")})),
               rec(log(2, 0, {"m": 1.0, "n": 2.0}, {"o": "[]"})),
               rec(ev(3, config_update=E.ConfigUpdate(set={"c": E.JsonValue(json='"z"')},
                                                      removed=["a"]))),
               rec(ev(4, summary_update=E.SummaryUpdate(numbers={"o": 9.0},
                                                        others={"m": E.JsonValue(json="{}")},
                                                        removed=["n"])))]
    s = fold(records)[0][KEY]
    assert s.config == {"b": "2", "c": '"z"'}
    assert s.summary == {"o": 9.0} and s.summary_other == {"m": "{}"}


def test_client_time_is_clamped_and_defaults_to_server_time():
    _, b = fold([rec(start(1)), rec(log(2, 0, {"a": 1.0}, client_us=-5)),
                 rec(log(3, 1, {"a": 1.0}, client_us=2**62)),
                 rec(log(4, 2, {"a": 1.0}, client_us=0), server_us=T0 + 42)])
    ts = b.numeric.to_arrow().column("ts").cast(pa.int64()).to_pylist()
    assert ts == [0, MAX_TIME_US, T0 + 42]


# --- dedup and order -----------------------------------------------------------------------

def test_same_record_twice_at_a_new_offset_changes_nothing():
    records = log_fixture()
    states, _ = fold(records)
    before = snapshot(states)
    _, again = fold(records, states, first_offset=len(records))
    assert again.total_rows() == 0
    assert again.stats.duplicates == sum(len(E.LogRecord.FromString(r).events) for r in records)
    assert snapshot(states) == before


def test_replaying_the_log_over_stored_states_changes_nothing():
    records = log_fixture() + [rec(ev(0, run_patch=E.RunPatch(name="renamed")))]
    states, _ = fold(records)
    stored = {k: RunState.from_row(s.to_row()) for k, s in states.items()}
    assert stored == states
    _, again = fold(records, stored)
    assert again.total_rows() == 0 and again.stats.replayed == len(records)
    assert snapshot(stored) == snapshot(states)


def test_replay_from_the_middle_continues_exactly():
    records = log_fixture()
    full_states, full = fold(records)
    head_states, head = fold(records[:4])
    stored = {k: RunState.from_row(s.to_row()) for k, s in head_states.items()}
    _, rest = fold(records, stored)            # replays 0..3 (skipped), applies 4..
    assert snapshot(stored) == snapshot(full_states)
    assert len(head.numeric) + len(rest.numeric) == len(full.numeric)


def test_fold_is_deterministic():
    a_states, a = fold(log_fixture())
    b_states, b = fold(log_fixture())
    for table in (HISTORY_NUMERIC, HISTORY_OTHER, RUNS):
        assert a.to_arrow(table).equals(b.to_arrow(table))
    assert snapshot(a_states) == snapshot(b_states)


def test_gap_is_applied_and_the_late_event_skipped():
    states, b = fold([rec(start(1)), rec(log(2, 0, {"a": 1.0})), rec(log(5, 3, {"a": 4.0}))])
    s = states[KEY]
    assert s.last_seq == 5 and s.seq_gaps == 2 and b.stats.gaps == 1
    assert s.summary == {"a": 4.0}
    _, late = fold([rec(log(3, 1, {"a": 2.0}))], states, first_offset=3)
    assert late.total_rows() == 0 and late.stats.duplicates == 1
    assert s.summary == {"a": 4.0} and s.last_seq == 5


def test_version_strictly_increases_and_skips_do_not_bump_it():
    states: dict = {}
    versions = []
    for i, r in enumerate(log_fixture()):
        fold_record(states, r, 0, i, RowBatch())
        versions.append(states[KEY].version)
    assert versions == sorted(set(versions)) and versions[0] == 1
    fold_record(states, log_fixture()[3], 0, 100, RowBatch())
    assert states[KEY].version == versions[-1]


def test_several_events_of_one_record_all_apply_and_the_record_is_one_position():
    r = rec(start(1), log(2, 0, {"a": 1.0}), hb(3), server_us=T0 + 9)
    states, b = fold([r])
    s = states[KEY]
    assert s.last_seq == 3 and s.version == 3 and s.applied_offset == 0
    assert len(b.numeric) == 1
    _, again = fold([r], states)               # same position: whole record skipped
    assert again.total_rows() == 0 and again.stats.replayed == 3


def test_event_server_time_overrides_the_record_time():
    states, _ = fold([rec(start(1), hb(2, server_us=T0 + 777), server_us=T0 + 1)])
    s = states[KEY]
    assert s.start_time == T0 + 1 and s.last_event_time == T0 + 777


def test_positions_of_another_partition_are_not_compared():
    states, _ = fold([rec(start(1))], partition=3, first_offset=50)
    _, b = fold([rec(ev(0, run_patch=E.RunPatch(name="x")))], states, partition=4, first_offset=1)
    assert states[KEY].name == "x" and states[KEY].applied_partition == 4


def test_two_runs_in_one_record():
    r = rec(start(1), ev(1, run_id="run-2", run_start=E.RunStart(name="two")),
            log(2, 0, {"a": 1.0}), ev(2, run_id="run-2", log=E.Log(step=0, numbers={"b": 2.0})))
    states, b = fold([r])
    assert set(states) == {KEY, RunKey("ent", "proj", "run-2")}
    assert states[RunKey("ent", "proj", "run-2")].summary == {"b": 2.0}
    assert sorted(row["run_id"] for row in numeric_rows(b)) == ["run-1", "run-2"]


# --- states --------------------------------------------------------------------------------

def test_first_event_without_run_start_creates_a_running_run():
    states, b = fold([rec(log(4, 10, {"a": 1.0}), server_us=T0 + 3)])
    s = states[KEY]
    assert s.state == "running" and s.name == "run-1" and s.start_time == T0 + 3
    assert s.state_cause == "first event was log seq 4 (no RunStart seen)"
    assert s.seq_gaps == 3 and s.last_seq == 4
    assert len(b.numeric) == 1


@pytest.mark.parametrize("code,state,cause", [
    (0, "finished", "finish() called, exit code 0"),
    (1, "failed", "exit code 1"),
    (-9, "failed", "exit code -9"),
])
def test_finish_exit_codes(code, state, cause):
    records = [rec(start(1)), rec(ev(2, finish=E.Finish(exit_code=code)), server_us=T0 + 99)]
    s = fold(records)[0][KEY]
    assert (s.state, s.state_cause, s.exit_code, s.end_time) == (state, cause, code, T0 + 99)


def test_heartbeat_after_finish_does_not_revive():
    s = fold([rec(start(1)), rec(ev(2, finish=E.Finish())), rec(hb(3), server_us=T0 + 50)])[0][KEY]
    assert s.state == "finished" and s.last_seq == 3 and s.last_event_time == T0 + 50


def test_crashed_then_activity_is_running_again():
    states, _ = fold([rec(start(1)), rec(hb(2), server_us=T0 + 1_000_000),
                      rec(crashed(2, last_seen_us=T0 + 1_000_000), server_us=T0 + 61_000_000)])
    s = states[KEY]
    assert s.state == "crashed" and s.end_time == T0 + 1_000_000
    assert s.state_cause == ("no event for 60.0 s since 2023-11-14T22:13:21Z, "
                             "detected by reaper-0")
    fold([rec(hb(3), server_us=T0 + 70_000_000)], states, first_offset=3)
    assert s.state == "running" and s.state_cause == "sent heartbeat seq 3 after crash"
    assert s.end_time == 0 and s.last_event_time == T0 + 70_000_000


def test_crashed_reason_is_used_when_given():
    s = fold([rec(start(1)), rec(crashed(1, reason="node lost"))])[0][KEY]
    assert s.state_cause == "node lost, detected by reaper-0"


def test_stale_crashed_is_ignored():
    # The reaper saw seq 1, but seq 2 arrived before its Crashed landed in the log.
    states, b = fold([rec(start(1)), rec(hb(2)), rec(crashed(1))])
    assert states[KEY].state == "running" and b.stats.stale == 1
    assert states[KEY].version == 2
    # Crashed after finish is stale too, and a duplicate Crashed does nothing.
    states, b = fold([rec(start(1)), rec(ev(2, finish=E.Finish())), rec(crashed(2))])
    assert states[KEY].state == "finished" and b.stats.stale == 1
    states, b = fold([rec(start(1)), rec(crashed(1)), rec(crashed(1))])
    assert states[KEY].state == "crashed" and b.stats.stale == 1 and states[KEY].version == 2


def test_server_events_never_create_runs():
    states, b = fold([rec(crashed(0)), rec(ev(0, run_patch=E.RunPatch(name="x"))),
                      rec(ev(0, delete=E.Delete()))])
    assert states == {} and b.total_rows() == 0 and b.stats.orphans == 3


def test_run_patch_delete_and_stop():
    states, _ = fold([rec(start(1, name="a", notes="n", tags=["t"]))])
    s = states[KEY]
    fold([rec(ev(0, run_patch=E.RunPatch(name="b", hidden=True, color="#ff0000",
                                         privacy=E.PRIVACY_PUBLIC)))], states, first_offset=1)
    assert (s.name, s.notes, s.tags, s.hidden, s.color, s.privacy) == (
        "b", "n", ["t"], True, "#ff0000", "public")
    fold([rec(ev(0, run_patch=E.RunPatch(set_tags=True, notes="")))], states, first_offset=2)
    assert s.tags == [] and s.notes == "" and s.name == "b"
    v = s.version
    _, b = fold([rec(ev(0, stop_requested=E.StopRequested(requested_by="u")))], states,
                first_offset=3)
    assert s.version == v + 1 and s.state == "running" and b.rows()[RUNS] == 1
    fold([rec(ev(0, delete=E.Delete()))], states, first_offset=4)
    assert s.deleted and s.last_seq == 1
    fold([rec(hb(2))], states, first_offset=5)   # later activity keeps it deleted
    assert s.deleted and s.last_seq == 2


def test_client_sent_patch_counts_as_activity():
    records = [rec(start(1)), rec(ev(2, run_patch=E.RunPatch(name="mine")), server_us=T0 + 8)]
    s = fold(records)[0][KEY]
    assert s.name == "mine" and s.last_seq == 2 and s.last_event_time == T0 + 8


def test_invalid_events_are_skipped():
    bad = [ev(0, heartbeat=E.Heartbeat()),                  # client body with seq 0
           ev(5, crashed=E.Crashed(after_seq=1)),           # crashed from a client
           E.Event(run_id="", project="proj", entity="ent", seq=1, heartbeat=E.Heartbeat())]
    states, b = fold([rec(start(1)), rec(*bad), b"\xff\xff not a record"])
    assert b.stats.invalid == 3 and b.stats.undecodable == 1
    assert states[KEY].last_seq == 1 and states[KEY].state == "running"


def test_artifact_logged_is_liveness_only():
    s = fold([rec(start(1)), rec(ev(2, artifact_logged=E.ArtifactLogged(name="m")))])[0][KEY]
    assert s.last_seq == 2 and s.state == "running"


def test_row_round_trip_and_runs_arrow():
    states, b = fold(log_fixture())
    s = states[KEY]
    assert RunState.from_row(s.to_row()) == s
    t = b.to_arrow(RUNS)
    assert t.num_rows == 1
    row = t.to_pylist()[0]
    assert row["name"] == "first" and row["state"] == "finished" and row["version"] == s.version
    assert dict(row["config"]) == s.config and dict(row["summary"]) == s.summary
    assert row["deleted"] == 0 and row["last_seq"] == s.last_seq


def test_batch_keeps_only_the_latest_state_per_run():
    states, b = fold(log_fixture())
    assert b.rows()[RUNS] == 1
    assert b.runs[KEY].version == len(log_fixture())


def test_a_log_step_above_the_limit_in_the_log_is_skipped_not_fatal():
    # the gateway refuses it; a record written by anything else must not stop the projector
    from runstream_server.common.limits import MAX_STEP
    states, batch = fold([rec(start(1), ev(2, log=E.Log(step=MAX_STEP + 1, numbers={"a": 1.0})),
                              ev(3, log=E.Log(step=MAX_STEP, numbers={"a": 2.0})))])
    assert batch.stats.invalid == 1
    st = states[KEY]
    assert st.last_step == MAX_STEP and st.last_seq == 3 and st.summary["a"] == 2.0
    for table in ("history_numeric", "runs"):
        batch.to_arrow(table)
    # a record of numeric logs only takes the fast decode: the same rule applies
    states, batch = fold([rec(ev(4, log=E.Log(step=MAX_STEP + 1, numbers={"a": 3.0})))],
                         states, first_offset=1)
    assert batch.stats.invalid == 1 and states[KEY].last_seq == 3


def test_a_second_finish_changes_nothing():
    states, _ = fold([rec(start(1), ev(2, finish=E.Finish(exit_code=0)),
                          ev(3, finish=E.Finish(exit_code=7), server_us=T0 + 99))])
    st = states[KEY]
    assert (st.state, st.exit_code, st.state_cause) == ("finished", 0,
                                                        "finish() called, exit code 0")
    assert st.last_seq == 3
