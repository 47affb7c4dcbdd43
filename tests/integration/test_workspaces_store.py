"""Saved workspaces on the real engine (chDB): fold → writer → read, latest save wins,
bound parameters, replay; and the HTTP routes over a real local event log, a running
projector and the store (PUT → GET within a projector batch, bad input → 400)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from runstream.v1 import events_pb2 as E
from runstream_server.api.http import HttpApi
from runstream_server.api.mutations import Mutations
from runstream_server.api.queries import Queries
from runstream_server.api.store_access import StoreAccess
from runstream_server.api.workspaces import MAX_STATE_BYTES, WorkspaceQueries
from runstream_server.common.errors import PermanentError
from runstream_server.config import ProjectorConfig
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.projector.processor import RowBatch, fold_records
from runstream_server.projector.service import Projector
from runstream_server.store.client import connect, drop_projections
from runstream_server.store.migrate import apply_migrations
from runstream_server.store.writer import StoreWriter

from tests.fixtures.identity import admin_table, auth_headers

pytestmark = pytest.mark.chdb

DB = "ws_test"
T0 = 1_700_000_000_000_000
EVIL = "x'); DROP TABLE workspaces; --{db}\\\"`"
STATE = {"hidden": ["r1", "r3"], "colors": {"r2": "#00ff00"},
         "sort": {"key": "summary.loss", "desc": False}, "group_by": ["config.lr"],
         "filters": [{"key": "tags", "op": "has", "value": "best"}], "visualized": 20,
         "columns": ["name", "state", "config.lr"], "nested": {"deep": [1, 2.5, None, True]}}


@pytest.fixture
def client(store_dsn):
    c = connect(store_dsn, DB)
    try:
        apply_migrations(c, DB)
        yield c
    finally:
        c.close()


def save(user: str, state: dict, *, entity: str = "ent", project: str = "proj",
         t: int = T0) -> bytes:
    ev = E.Event(entity=entity, project=project, seq=0, server_time_us=t,
                 workspace_saved=E.WorkspaceSaved(user=user, state_json=json.dumps(state)))
    return E.LogRecord(events=[ev], server_time_us=t).SerializeToString()


def write(client, records: list[tuple[int, int, bytes]]) -> RowBatch:
    batch = RowBatch()
    fold_records({}, records, batch)
    StoreWriter(client, DB).write(batch, None)
    return batch


def test_saved_workspaces_read_back_per_project_and_user(client):
    q = WorkspaceQueries(client, DB)
    assert q.get("ent", "proj", "alice") == {"user": "alice", "state": {}, "updated_us": 0}
    write(client, [(0, 0, save("alice", STATE, t=T0 + 1)), (0, 1, save("bob", {"b": 1})),
                   (0, 2, save("alice", {"other": 1}, project="proj2"))])
    assert q.get("ent", "proj", "alice") == {"user": "alice", "state": STATE,
                                             "updated_us": T0 + 1}
    assert q.get("ent", "proj", "bob")["state"] == {"b": 1}
    assert q.get("ent", "proj2", "alice")["state"] == {"other": 1}
    assert q.get("ent", "proj2", "bob")["state"] == {}
    assert q.get("other", "proj", "alice")["state"] == {}
    assert client.query(f"SELECT count() FROM {DB}.runs").result_rows == [(0,)]
    with pytest.raises(PermanentError):
        q.get("ent", "proj", "")


def test_the_latest_save_in_the_log_wins_whatever_the_insert_order(client):
    q = WorkspaceQueries(client, DB)
    write(client, [(3, 7, save("alice", {"v": "new"}, t=T0 + 2))])
    write(client, [(3, 5, save("alice", {"v": "old"}, t=T0 + 9))])   # an older save, later
    write(client, [(3, 7, save("alice", {"v": "new"}, t=T0 + 2))])   # a replayed one
    assert q.get("ent", "proj", "alice") == {"user": "alice", "state": {"v": "new"},
                                             "updated_us": T0 + 2}
    client.command(f"OPTIMIZE TABLE {DB}.workspaces FINAL")
    assert q.get("ent", "proj", "alice")["state"] == {"v": "new"}
    assert client.query(f"SELECT count() FROM {DB}.workspaces").result_rows == [(1,)]


def test_user_values_are_bound_parameters(client):
    q = WorkspaceQueries(client, DB)
    state = {EVIL: EVIL, "unicode": "ü ✓ 🚀"}
    write(client, [(0, 0, save(EVIL, state, entity=EVIL, project=EVIL))])
    assert q.get(EVIL, EVIL, EVIL)["state"] == state
    assert q.get("ent", "proj", EVIL)["state"] == {}


def test_drop_and_replay_rebuilds_the_same_answers(client):
    log = [(0, i, save(u, {"i": i, "u": u}, t=T0 + i))
           for i, u in enumerate(["alice", "bob", "alice", "carol", "bob"])]
    write(client, log)
    q = WorkspaceQueries(client, DB)
    before = [q.get("ent", "proj", u) for u in ("alice", "bob", "carol", "dave")]
    assert [w["state"].get("i") for w in before] == [2, 4, 3, None]
    assert "workspaces" in drop_projections(client, DB)
    apply_migrations(client, DB)
    for i in range(len(log)):                       # other batch boundaries: one per record
        write(client, [log[i]])
    assert [q.get("ent", "proj", u) for u in ("alice", "bob", "carol", "dave")] == before


# --- HTTP over a real event log, projector and store ---------------------------------------

PATH = "/api/v1/projects/ent/proj/workspace"


class Stack:
    """Local event log + chDB + a running projector + the HTTP app, in this process."""

    def __init__(self, tmp_path, store_dsn, run_projector: bool = True) -> None:
        self.tmp_path, self.store_dsn = tmp_path, store_dsn
        self.run_projector = run_projector

    async def __aenter__(self) -> Stack:
        self.log = LocalEventLog(self.tmp_path / "log", partitions=4)
        await self.log.start()
        self.chdb = connect(self.store_dsn, DB)
        apply_migrations(self.chdb, DB)
        self.store = StoreAccess(self.chdb, DB)
        self.projector = Projector(self.log, self.store, ProjectorConfig(batch_max_s=0.1))
        self.task = asyncio.create_task(self.projector.run()) if self.run_projector else None
        queries = Queries(self.chdb, DB)
        mutations = Mutations(self.log, None, self.store, queries, "test")
        self.http = TestClient(TestServer(HttpApi(self.store, queries, mutations,
                                                  admin_table()).app(),
                                          ), headers=auth_headers())
        await self.http.start_server()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()
        if self.task is not None:
            self.projector.stop()
            await asyncio.wait_for(self.task, 30)
        await self.log.close()
        self.store.close()
        self.chdb.close()

    async def get(self, user: str, path: str = PATH) -> tuple[int, dict]:
        r = await self.http.get(path, params={"user": user})
        return r.status, await r.json()

    async def put(self, body, path: str = PATH) -> tuple[int, dict]:
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        r = await self.http.put(path, data=data)
        return r.status, await r.json()

    async def wait_state(self, user: str, state: dict, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = await self.get(user)
            if status == 200 and body["state"] == state:
                return body
            await asyncio.sleep(0.05)
        raise AssertionError(f"workspace of {user} never became {state}; last {body}")


def test_http_put_then_get_round_trip(tmp_path, store_dsn):
    async def main():
        async with Stack(tmp_path, store_dsn) as s:
            assert await s.get("alice") == (200, {"user": "alice", "state": {},
                                                  "updated_us": 0})
            status, body = await s.put({"user": "alice", "state": STATE})
            assert status == 202
            acc = body["accepted"]
            assert acc["entity"] == "ent" and acc["project"] == "proj"
            assert acc["workspace_saved"]["user"] == "alice"
            assert json.loads(acc["workspace_saved"]["state_json"]) == STATE
            got = await s.wait_state("alice", STATE)
            assert got["updated_us"] == int(acc["server_time_us"])
            # A second save replaces the first; other users and projects are separate.
            assert (await s.put({"user": "alice", "state": {"visualized": 5}}))[0] == 202
            assert (await s.put({"user": "bob", "state": {"b": True}}))[0] == 202
            assert (await s.put({"user": "alice", "state": {"p": 2}},
                                "/api/v1/projects/ent/proj2/workspace"))[0] == 202
            await s.wait_state("alice", {"visualized": 5})
            await s.wait_state("bob", {"b": True})
            assert (await s.get("alice", "/api/v1/projects/ent/proj2/workspace"))[1][
                "state"] == {"p": 2}
            # The largest state allowed round-trips.
            big = {"k": "x" * (MAX_STATE_BYTES - len('{"k":""}'))}
            assert (await s.put({"user": "carol", "state": big}))[0] == 202
            await s.wait_state("carol", big)
            # No run, no project appeared.
            assert (await s.http.get("/api/v1/projects")).status == 200
            assert (await (await s.http.get("/api/v1/projects")).json()) == {"projects": []}
            before = {u: await s.get(u) for u in ("alice", "bob", "carol")}
        # Replay: drop every table, re-fold the whole log.
        c = connect(store_dsn, DB)
        try:
            drop_projections(c, DB)
        finally:
            c.close()
        async with Stack(tmp_path, store_dsn, run_projector=False) as s:
            await s.projector.run(from_beginning=True, until_caught_up=True)
            assert {u: await s.get(u) for u in ("alice", "bob", "carol")} == before

    asyncio.run(asyncio.wait_for(main(), 120))


def test_http_bad_input_is_400_and_appends_nothing(tmp_path, store_dsn):
    async def main():
        async with Stack(tmp_path, store_dsn) as s:
            bad_puts = [
                "", "not json", "[1]", '{"user": "u", "state": NaN}',
                "[" * 100_000 + "]" * 100_000,
                {"state": {}}, {"user": "u"},
                {"user": " ", "state": {}}, {"user": "a\nb", "state": {}},
                {"user": "x" * 129, "state": {}}, {"user": 5, "state": {}},
                {"user": "u", "state": []}, {"user": "u", "state": "x"},
                {"user": "u", "state": None}, {"user": "u", "state": {}, "more": 1},
                {"user": "u", "state": {"k": "x" * MAX_STATE_BYTES}},
                {"user": "u", "state": {"k": "x" * (2 * 1024 * 1024)}},   # over aiohttp's 1 MiB
            ]
            for body in bad_puts:
                status, answer = await s.put(body)
                assert status == 400, (str(body)[:80], answer)
                assert answer["error"]["code"] == "INVALID_ARGUMENT"
                assert answer["error"]["message"]
            status, answer = await s.put({"user": "u", "state": {}},
                                         "/api/v1/projects/ent/a:b/workspace")
            assert status == 400 and "project" in answer["error"]["message"]
            r = await s.http.get(PATH)
            assert r.status == 400 and "user" in (await r.json())["error"]["message"]
            for user in ("", "a\x00b", "x" * 129):
                status, answer = await s.get(user)
                assert status == 400, user
            assert set((await s.log.end_offsets()).values()) == {0}   # nothing appended

    asyncio.run(asyncio.wait_for(main(), 120))
