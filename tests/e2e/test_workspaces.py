"""Saved workspaces on one embedded server: PUT → GET over HTTP, a client cannot send
WorkspaceSaved, the reaper and the projector make no run of it, and ``runstream
replay`` (every table dropped) rebuilds it."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

import pytest
from runstream.v1 import events_pb2

from .conftest import ENTITY
from .procs import http, make_events, send_events
from .test_embedded_reliability import replay, restart

pytestmark = [pytest.mark.e2e]

STATE = {"hidden": ["a"], "colors": {"b": "#123456"}, "sort": {"key": "name", "desc": True},
         "group_by": "config.lr", "filters": [], "visualized": 7, "columns": ["name", "state"],
         "text": "ü ✓"}


def path(project: str, user: str | None = None) -> str:
    p = f"/api/v1/projects/{ENTITY}/{project}/workspace"
    return p if user is None else p + "?" + urllib.parse.urlencode({"user": user})


def test_workspace_round_trip_refusal_and_replay(embedded):
    srv, q = embedded
    assert http(srv, "GET", path("ws", "alice")) == (
        200, {"user": "alice", "state": {}, "updated_us": 0})
    code, body = http(srv, "PUT", path("ws"), {"user": "alice", "state": STATE})
    assert code == 202 and body["accepted"]["workspace_saved"]["user"] == "alice"
    got = q.wait_for(lambda: (w := http(srv, "GET", path("ws", "alice"))[1])["state"] == STATE
                     and w, 10, "the saved workspace")
    assert got["updated_us"] == int(body["accepted"]["server_time_us"])
    assert http(srv, "PUT", path("ws"), {"user": "bob", "state": {"visualized": 3}})[0] == 202
    q.wait_for(lambda: http(srv, "GET", path("ws", "bob"))[1]["state"] == {"visualized": 3},
               10, "bob's workspace")
    assert http(srv, "PUT", path("ws"), {"user": "alice"})[0] == 400
    assert http(srv, "GET", path("ws"))[0] == 400

    # A client cannot send the server's body: the gateway rejects the whole batch.
    ev = events_pb2.Event(run_id="sneaky", project="ws", entity=ENTITY, seq=1,
                          client_time_us=1_700_000_000_000_000)
    ev.workspace_saved.user = "alice"
    ev.workspace_saved.state_json = "{}"
    (resp,) = send_events(srv.grpc, [ev])
    assert resp.WhichOneof("kind") == "rejected"
    assert "made by the server only" in resp.rejected.message

    # A real run in the project; the saves made no run and the reaper crashed none.
    send_events(srv.grpc, make_events("real", "ws", ENTITY, steps=3, metrics=1))
    q.wait_states("ws", {"real": "finished"}, timeout=30)
    assert [r.run_id for r in q.runs("ws")] == ["real"]
    before = {u: http(srv, "GET", path("ws", u)) for u in ("alice", "bob", "carol")}
    assert before["alice"][1]["state"] == STATE

    # Drop every table and rebuild from the log.
    srv.stop()
    replay(srv.data_dir)
    srv, q = restart(srv, q, "stop")
    try:
        assert {u: http(srv, "GET", path("ws", u)) for u in ("alice", "bob", "carol")} == before
        assert [r.run_id for r in q.runs("ws")] == ["real"]
    finally:
        q.close()
        srv.stop()
