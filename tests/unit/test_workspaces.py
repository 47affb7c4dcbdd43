"""Saved workspaces without a store: the pure fold, the checks, the api's event in a real
local event log, and how the gateway, the reaper and the lean view treat WorkspaceSaved."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
import pytest
from runstream.v1 import events_pb2 as E
from runstream.v1 import ingest_pb2, views_pb2
from runstream_server.api.mutations import Mutations
from runstream_server.api.workspaces import (
    MAX_STATE_BYTES,
    state_to_json,
    validate_user,
    workspace_from_json,
    workspace_key,
)
from runstream_server.common.errors import PermanentError
from runstream_server.common.partitioning import partition_for
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.gateway.validation import InvalidEvent, validate_request
from runstream_server.projector.processor import (
    RUNS,
    WORKSPACES,
    WORKSPACES_SCHEMA,
    RowBatch,
    WorkspaceKey,
    WorkspaceRow,
    fold_records,
)
from runstream_server.reaper.liveness import RUNNING, LivenessTable

from tests.fixtures.fold import KEY, T0, fold, rec, start
from tests.fixtures.fold import ev as run_ev
from tests.fixtures.identity import admin

STATE = {"hidden": ["r1"], "colors": {"r2": "#ff0000"}, "sort": {"key": "name", "desc": True},
         "group_by": "config.lr", "filters": [{"key": "state", "op": "=", "value": "running"}],
         "visualized": 10, "columns": ["name", "summary.loss"]}


def saved(user: str = "alice", state=None, *, entity: str = "ent", project: str = "proj",
          run_id: str = "", seq: int = 0, server_us: int = 0, state_json: str | None = None
          ) -> E.Event:
    text = json.dumps(STATE if state is None else state) if state_json is None else state_json
    return E.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                   server_time_us=server_us,
                   workspace_saved=E.WorkspaceSaved(user=user, state_json=text))


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


# --- the fold ---------------------------------------------------------------------------

def test_a_save_is_one_workspace_row_and_no_run():
    states, b = fold([rec(saved(server_us=T0 + 9))], first_offset=41)
    assert states == {} and b.runs == {}
    assert b.rows() == {"history_numeric": 0, "history_other": 0, WORKSPACES: 1, RUNS: 0}
    assert b.workspaces == {WorkspaceKey("ent", "proj", "alice"): WorkspaceRow(
        "ent", "proj", "alice", json.dumps(STATE), T0 + 9, 0, 41)}
    assert b.stats.applied == 1 and b.stats.invalid == 0 and b.total_rows() == 1


def test_the_record_time_applies_when_the_event_has_none():
    _, b = fold([rec(saved(), server_us=T0 + 123)])
    assert b.workspaces[WorkspaceKey("ent", "proj", "alice")].updated_time == T0 + 123


def test_the_latest_save_in_the_log_wins_per_user_and_project():
    records = [rec(saved("alice", {"v": 1})), rec(saved("bob", {"v": 2})),
               rec(saved("alice", {"v": 3})),
               rec(saved("alice", {"v": 4}, project="other"))]
    _, b = fold(records, first_offset=10)
    got = {k: (json.loads(r.state_json), r.log_offset) for k, r in b.workspaces.items()}
    assert got == {WorkspaceKey("ent", "proj", "alice"): ({"v": 3}, 12),
                   WorkspaceKey("ent", "proj", "bob"): ({"v": 2}, 11),
                   WorkspaceKey("ent", "other", "alice"): ({"v": 4}, 13)}


def test_folding_the_same_log_again_gives_the_same_rows():
    records = [rec(saved("alice", {"v": 1})), rec(saved("alice", {"v": 2}))]
    _, first = fold(records)
    _, again = fold(records)
    assert first.workspaces == again.workspaces


def test_a_save_touches_no_run_even_in_a_record_with_run_events():
    states, b = fold([rec(start(), run_ev(2, heartbeat=E.Heartbeat()))])
    before = (states[KEY].version, states[KEY].last_seq, states[KEY].applied_offset)
    fold([rec(saved(), run_ev(3, heartbeat=E.Heartbeat()))], states, first_offset=1)
    st = states[KEY]
    assert (st.version, st.last_seq, st.applied_offset) == (before[0] + 1, 3, 1)
    assert list(states) == [KEY]


@pytest.mark.parametrize("event", [
    saved(seq=1),                          # only the server makes it: seq 0
    saved(run_id="run-1"),                 # it belongs to no run
    saved(run_id="run-1", seq=3),          # ... nor as a client event of a run
    saved(user=""),
    saved(entity=""),
    saved(project=""),
    saved(state_json="[1, 2]"),            # an object, nothing else
    saved(state_json="not json"),
    saved(state_json=""),
])
def test_malformed_saves_are_skipped_as_invalid(event):
    states, _ = fold([rec(start())])
    v = states[KEY].version
    b = RowBatch()
    fold_records(states, [(0, 1, rec(event))], b)
    assert b.workspaces == {} and b.runs == {}
    assert b.stats.invalid == 1 and b.stats.applied == 0
    assert states[KEY].version == v and states[KEY].last_seq == 1 and list(states) == [KEY]


def test_workspace_rows_convert_to_arrow():
    _, b = fold([rec(saved("alice", server_us=T0)), rec(saved("bob", {"x": "ü"}))],
                first_offset=2**40)
    t = b.to_arrow(WORKSPACES)
    assert t.schema == WORKSPACES_SCHEMA and t.num_rows == 2
    rows = sorted(t.to_pylist(), key=lambda r: r["user"])
    assert [r["user"] for r in rows] == ["alice", "bob"]
    assert rows[1]["state_json"] == '{"x": "\\u00fc"}' and rows[1]["log_offset"] == 2**40 + 1
    assert rows[0]["updated_time"] == pa.scalar(T0, pa.timestamp("us", tz="UTC")).as_py()


# --- the checks ---------------------------------------------------------------------------

def test_validate_user():
    assert validate_user("alice@example.com") == "alice@example.com"
    assert validate_user("x" * 128) == "x" * 128
    assert validate_user("Ünïcode user/with slash") == "Ünïcode user/with slash"
    for bad in (None, "", " ", "x" * 129, "a\nb", "a\tb", "a\x00", "a\x7f", "a\x85", 7,
                "\ud800"):
        with pytest.raises(PermanentError):
            validate_user(bad)


def test_state_to_json_limits():
    assert json.loads(state_to_json(STATE)) == STATE
    assert state_to_json({"b": 1, "a": "ü"}) == '{"b":1,"a":"ü"}'   # compact, order kept
    assert state_to_json({}) == "{}"
    # The limit counts UTF-8 bytes of the compact form: exactly 256 KiB passes.
    pad = MAX_STATE_BYTES - len('{"k":""}')
    assert len(state_to_json({"k": "x" * pad}).encode()) == MAX_STATE_BYTES
    for bad in ([], "x", 1, None, {"k": "x" * (pad + 1)}, {"k": "é" * (pad // 2 + 1)},
                {"n": float("nan")}, {"n": float("inf")}, {"s": "\udc00"}, {"o": object()}):
        with pytest.raises(PermanentError):
            state_to_json(bad)


def test_workspace_from_json_checks_the_shape():
    assert workspace_from_json({"user": "u", "state": {"a": 1}}) == ("u", {"a": 1})
    for bad in ([], "x", None, {"state": {}}, {"user": "u"},
                {"user": "u", "state": {}, "extra": 1}):
        with pytest.raises(PermanentError):
            workspace_from_json(bad)


def test_workspace_key_is_never_a_run_id():
    assert workspace_key("ent", "proj") == "ent/proj/workspace"


# --- the api's event in a real local log ------------------------------------------------

class _NoStore:
    async def call(self, fn, *args):
        raise AssertionError("a workspace save does not read the store")


async def _records(log: LocalEventLog):
    c = log.consumer("reader")
    await c.start()
    out = []
    while batch := await c.poll(0.05, 1000):
        out += batch
    await c.close()
    return out


P = admin()


def test_save_appends_one_server_event_keyed_by_project(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=4)
        await log.start()
        m = Mutations(log, None, _NoStore(), None, "inst-1")
        try:
            first = await m.save_workspace(P, "ent", "proj", "alice", STATE)
            await m.save_workspace(P, "ent", "proj", "", {})     # "": the caller's own
            for args in (("ent", "proj", "a\nb", {}),
                         ("ent", "proj", "u", []), ("ent", "proj", "u", {"x": float("nan")}),
                         ("ent", "p/q", "u", {}), ("", "proj", "u", {}),
                         ("ent", "proj", "u", {"k": "x" * MAX_STATE_BYTES})):
                with pytest.raises(PermanentError):
                    await m.save_workspace(P, *args)
            return first, await _records(log)
        finally:
            await log.close()

    first, records = arun(main())
    assert [r.key for r in records] == [b"ent/proj/workspace"] * 2
    assert {r.partition for r in records} == {partition_for("ent/proj/workspace", 4)}
    evs = [E.LogRecord.FromString(r.value).events[0] for r in records]
    assert [(e.run_id, e.entity, e.project, e.seq, e.workspace_saved.user) for e in evs] == [
        ("", "ent", "proj", 0, "alice"), ("", "ent", "proj", 0, "admin")]
    assert json.loads(evs[0].workspace_saved.state_json) == STATE
    assert evs[0] == first and first.server_time_us > 0
    assert evs[1].workspace_saved.state_json == "{}"
    assert all(E.LogRecord.FromString(r.value).gateway == "api:inst-1" for r in records)
    # The projector folds exactly what the api appended.
    b = RowBatch()
    fold_records({}, [(r.partition, r.offset, r.value) for r in records], b)
    assert sorted(k.user for k in b.workspaces) == ["admin", "alice"] and b.runs == {}


# --- gateway, reaper, lean view -----------------------------------------------------------

def test_the_gateway_refuses_workspace_saved_from_clients():
    bad = saved(run_id="run-1", seq=1)
    with pytest.raises(InvalidEvent, match="workspace_saved events are made by the server only"):
        validate_request(ingest_pb2.IngestRequest(events=[bad]))
    validate_request(ingest_pb2.IngestRequest(events=[run_ev(1, heartbeat=E.Heartbeat())]))


def test_the_reaper_ignores_workspace_saves():
    table = LivenessTable()
    table.observe(rec(saved(server_us=T0)), partition=0)
    assert table.runs == {}
    table.observe(rec(start(), server_us=T0), partition=0)
    # Even one that (wrongly) names a run changes nothing of its liveness.
    table.observe(rec(saved(run_id="run-1", seq=5), server_us=T0 + 10**9), partition=0)
    table.observe(rec(saved(run_id="run-1"), server_us=T0 + 10**9), partition=0)
    lv = table.runs[KEY]
    assert (lv.state, lv.last_seq, lv.last_seen_us) == (RUNNING, 1, T0)
    assert list(table.runs) == [KEY]


def test_a_save_reads_through_the_lean_view():
    view = views_pb2.LogRecordView.FromString(rec(saved(server_us=T0)))
    (v,) = view.events
    assert (v.run_id, v.entity, v.project, v.seq, v.WhichOneof("body")) == (
        "", "ent", "proj", 0, "workspace_saved")
