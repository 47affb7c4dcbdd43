"""Authentication and object-level authorisation on a real embedded server.

Every endpoint (HTTP and gRPC) × {owner, other user, no key, revoked key}: the owner is
served; no key and a revoked key are UNAUTHENTICATED / 401; another user reads public
runs only, may change nothing of another entity, and gets for a private run or project
exactly the answer of one that does not exist. Team members share their team's entity.
Keys are made with the `runstream user|key|team` commands and never appear in logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse

import grpc
import pytest
from runstream.v1 import (
    events_pb2,
    identity_pb2,
    identity_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    query_pb2,
    runs_pb2,
    runs_pb2_grpc,
)

from .conftest import start_embedded
from .procs import BIN, auth_metadata, http, make_events, run_client

pytestmark = [pytest.mark.e2e]

OWNER, OTHER, MEMBER, TEAM = "alice", "bob", "carol", "vision"
P1, P2 = "p1", "p2"            # P1: a private and a public run; P2: private runs only


def cli(srv, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RUNSTREAM_URL": srv.grpc}
    if key is not None:
        env["RUNSTREAM_API_KEY"] = key
    return subprocess.run([str(BIN / "runstream"), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def new_key(srv, *args: str, key: str | None = None) -> str:
    out = cli(srv, *args, key=key)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


def ingest(srv, key: str, events) -> list[ingest_pb2.IngestResponse]:
    def requests():
        yield ingest_pb2.IngestRequest(events=events, batch_id=1)
    with grpc.insecure_channel(srv.grpc) as ch:
        return list(ingest_pb2_grpc.IngestStub(ch).Stream(
            requests(), timeout=30, metadata=auth_metadata(key)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    srv, q = start_embedded(tmp, heartbeat_timeout=600)
    try:
        keys = {"owner": new_key(srv, "user", "create", OWNER, "--team", TEAM),
                "other": new_key(srv, "user", "create", OTHER),
                "member": new_key(srv, "user", "create", MEMBER)}
        out = cli(srv, "team", "add", TEAM, MEMBER)
        assert out.returncode == 0, out.stderr
        revoked = new_key(srv, "key", "create", "--description", "to revoke",
                          key=keys["other"])
        key_id = new_key(srv, "whoami", key=revoked).split("key ")[-1]
        out = cli(srv, "key", "revoke", key_id, key=keys["other"])
        assert out.returncode == 0 and key_id in out.stdout, out.stdout + out.stderr
        keys["revoked"], keys["none"] = revoked, ""
        # The owner's runs: through the client SDK with the owner's key, and raw.
        run_client(srv.grpc, run_id="priv", project=P1, steps=5, metrics=2,
                   env={"RUNSTREAM_API_KEY": keys["owner"], "RUNSTREAM_ENTITY": OWNER})
        for run_id, project, entity in (("pub", P1, OWNER), ("hidden2", P2, OWNER),
                                        ("teamrun", P1, TEAM)):
            answers = ingest(srv, keys["owner"], make_events(run_id, project, entity, 5, 2,
                                                             finish=False))
            assert [a.WhichOneof("kind") for a in answers] == ["ack"]
        q.wait_for(lambda: len(q.runs(P1)) >= 0 and all(
            _exists(q, e, p, r) for e, p, r in ((OWNER, P1, "priv"), (OWNER, P1, "pub"),
                                                (OWNER, P2, "hidden2"), (TEAM, P1, "teamrun"))),
                   60, "the owner's runs")
        status, body = http(srv, "PATCH", f"/api/v1/runs/{OWNER}/{P1}/pub",
                            {"privacy": "public"}, key=keys["owner"])
        assert status == 202, body
        q.wait_for(lambda: http(srv, "GET", f"/api/v1/runs/{OWNER}/{P1}/pub",
                                key=keys["other"])[0] == 200, 60, "pub is public")
        yield srv, q, keys
    finally:
        q.close()
        srv.stop()


def _exists(q, entity, project, run_id) -> bool:
    try:
        q.stub.GetRun(query_pb2.GetRunRequest(entity=entity, project=project, run_id=run_id))
        return True
    except grpc.RpcError:
        return False


def _reads(entity: str, project: str, run_id: str) -> list[tuple[str, str]]:
    """Every HTTP read of a run or its project."""
    r = f"/api/v1/runs/{entity}/{project}/{run_id}"
    p = f"/api/v1/projects/{entity}/{project}"
    return [("GET", r), ("GET", r + "/history?keys=m0"), ("GET", r + "/keys"),
            ("GET", p + "/runs"), ("GET", p + "/columns"), ("GET", p + "/keys"),
            ("GET", p + "/history?" + urllib.parse.urlencode({"runs": run_id, "keys": "m0"})),
            ("GET", p + "/bands?key=m0"), ("GET", p + "/workspace?user=x")]


def _changes(entity: str, project: str, run_id: str) -> list[tuple[str, str, object]]:
    r = f"/api/v1/runs/{entity}/{project}/{run_id}"
    return [("PATCH", r, {"notes": "x"}), ("POST", r + "/stop", {}), ("DELETE", r, None),
            ("PUT", f"/api/v1/projects/{entity}/{project}/workspace", {"user": "u", "state": {}})]


def _same(a: tuple[int, dict], b: tuple[int, dict], hide: str, instead: str) -> bool:
    """Two HTTP answers are the same once the asked-for name is replaced."""
    return a[0] == b[0] and json.dumps(a[1]).replace(hide, instead) == json.dumps(b[1])


def test_no_key_and_revoked_key_are_refused_everywhere(world):
    srv, _, keys = world
    for who in ("none", "revoked"):
        for method, path in [("GET", "/api/v1/projects"), ("GET", "/api/v1/whoami"),
                             *_reads(OWNER, P1, "pub"), ("GET", "/api/v1/live"),
                             ("GET", f"/api/v1/projects/{OWNER}/{P1}/live")]:
            status, body = http(srv, method, path, key=keys[who])
            assert status == 401 and body["error"]["code"] == "UNAUTHENTICATED", (who, path)
        for method, path, body in _changes(OWNER, P1, "pub"):
            status, answer = http(srv, method, path, body, key=keys[who])
            assert status == 401, (who, method, path, answer)
        md = auth_metadata(keys[who])
        with grpc.insecure_channel(srv.grpc) as ch:
            from runstream.v1 import query_pb2_grpc
            qs, rs = query_pb2_grpc.QueryStub(ch), runs_pb2_grpc.RunsStub(ch)
            admin = identity_pb2_grpc.AdminStub(ch)
            calls = [
                (qs.ListProjects, query_pb2.ListProjectsRequest()),
                (qs.ListRuns, query_pb2.ListRunsRequest(entity=OWNER, project=P1)),
                (qs.GetRun, query_pb2.GetRunRequest(entity=OWNER, project=P1, run_id="pub")),
                (qs.GetHistory, query_pb2.GetHistoryRequest(entity=OWNER, project=P1,
                                                            run_id="pub")),
                (rs.DeleteRun, runs_pb2.DeleteRunRequest(entity=OWNER, project=P1,
                                                         run_id="pub")),
                (admin.WhoAmI, identity_pb2.WhoAmIRequest()),
            ]
            for method, req in calls:
                with pytest.raises(grpc.RpcError) as info:
                    method(req, metadata=md)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, who
        with pytest.raises(grpc.RpcError) as info:
            ingest(srv, keys[who], make_events("x", P1, OWNER, 1, 1))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_owner_and_team_members_are_served(world):
    srv, _, keys = world
    for who, entity, run_id in (("owner", OWNER, "priv"), ("owner", TEAM, "teamrun"),
                                ("member", TEAM, "teamrun")):
        for method, path in _reads(entity, P1, run_id):
            status, body = http(srv, method, path, key=keys[who])
            assert status == 200, (who, path, body)
    status, body = http(srv, "GET", "/api/v1/whoami", key=keys["member"])
    assert body == {"user": MEMBER, "admin": False, "teams": [TEAM],
                    "key_id": body["key_id"]}
    answers = ingest(srv, keys["member"], make_events("m1", P1, TEAM, 1, 1))
    assert [a.WhichOneof("kind") for a in answers] == ["ack"]


def test_another_user_sees_private_runs_as_missing_and_public_ones_read_only(world):
    srv, _, keys = world
    k = keys["other"]
    # A private run, a private project and a team's run answer as ones that do not exist.
    for entity, project, run_id, ghost in ((OWNER, P1, "priv", "ghost"),
                                           (OWNER, P2, "hidden2", "ghost"),
                                           (TEAM, P1, "teamrun", "ghost")):
        for (_, path), (_, ghost_path) in zip(_reads(entity, project, run_id),
                                              _reads(entity, project, ghost), strict=True):
            if "/projects/" in path and project == P1 and entity == OWNER:
                continue                    # P1 has a public run: the project is visible
            mine = http(srv, "GET", path, key=k)
            missing = http(srv, "GET", ghost_path, key=k)
            assert mine[0] == 404, (path, mine)
            assert _same(mine, missing, run_id, ghost), (path, mine, missing)
    for project, ghost in ((P2, "nope2"),):
        for suffix in ("/runs", "/columns", "/keys", "/bands?key=m0", "/workspace?user=x"):
            mine = http(srv, "GET", f"/api/v1/projects/{OWNER}/{project}{suffix}", key=k)
            missing = http(srv, "GET", f"/api/v1/projects/{OWNER}/{ghost}{suffix}", key=k)
            assert mine[0] == 404 and _same(mine, missing, project, ghost), (suffix, mine)
    # The public run of P1 is readable, and only it.
    status, body = http(srv, "GET", f"/api/v1/projects/{OWNER}/{P1}/runs", key=k)
    assert status == 200 and [r["run_id"] for r in body["runs"]] == ["pub"]
    assert body["total"] == 1
    status, body = http(srv, "GET", f"/api/v1/projects/{OWNER}/{P1}/history?runs=pub,priv"
                                    "&keys=m0", key=k)
    assert status == 200 and [s["run_id"] for s in body["series"]] == ["pub"]
    status, body = http(srv, "GET", "/api/v1/projects", key=k)
    assert [(p["entity"], p["name"], p["run_count"]) for p in body["projects"]] == [
        (OWNER, P1, 1)]
    for method, path in _reads(OWNER, P1, "pub"):
        assert http(srv, method, path, key=k)[0] == 200, path
    # Changes: forbidden on the public run, "not found" on the private one.
    for method, path, body in _changes(OWNER, P1, "pub")[:3]:
        status, answer = http(srv, method, path, body, key=k)
        assert status == 403 and answer["error"]["code"] == "PERMISSION_DENIED", (path, answer)
    for (method, path, body), (_, ghost, _) in zip(_changes(OWNER, P1, "priv")[:3],
                                                   _changes(OWNER, P1, "ghost")[:3],
                                                   strict=True):
        mine, missing = http(srv, method, path, body, key=k), http(srv, method, ghost, body,
                                                                   key=k)
        assert mine[0] == 404 and _same(mine, missing, "priv", "ghost"), (path, mine)
    # Own workspace of a visible project: yes; someone else's: no.
    ws = f"/api/v1/projects/{OWNER}/{P1}/workspace"
    assert http(srv, "PUT", ws, {"user": OTHER, "state": {"a": 1}}, key=k)[0] == 202
    assert http(srv, "PUT", ws, {"user": OWNER, "state": {}}, key=k)[0] == 403
    # Live updates carry every run: members only.
    assert http(srv, "GET", f"/api/v1/projects/{OWNER}/{P1}/live", key=k)[0] == 404
    assert http(srv, "GET", "/api/v1/live", key=k)[0] == 403
    # Ingest into another entity: refused; into one's own: accepted.
    with pytest.raises(grpc.RpcError) as info:
        ingest(srv, k, make_events("intruder", P1, OWNER, 1, 1))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    answers = ingest(srv, k, make_events("mine", P1, OTHER, 1, 1))
    assert [a.WhichOneof("kind") for a in answers] == ["ack"]


def test_grpc_reads_and_changes_follow_the_same_rules(world):
    srv, _, keys = world
    from runstream.v1 import query_pb2_grpc
    md = auth_metadata(keys["other"])
    with grpc.insecure_channel(srv.grpc) as ch:
        qs, rs = query_pb2_grpc.QueryStub(ch), runs_pb2_grpc.RunsStub(ch)
        for run_id in ("priv", "ghost"):
            with pytest.raises(grpc.RpcError) as info:
                qs.GetRun(query_pb2.GetRunRequest(entity=OWNER, project=P1, run_id=run_id),
                          metadata=md)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert info.value.details() == f"run {OWNER}/{P1}/{run_id} not found"
            with pytest.raises(grpc.RpcError) as info:
                qs.GetHistory(query_pb2.GetHistoryRequest(entity=OWNER, project=P1,
                                                          run_id=run_id), metadata=md)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert qs.GetRun(query_pb2.GetRunRequest(entity=OWNER, project=P1, run_id="pub"),
                         metadata=md).run_id == "pub"
        runs = qs.ListRuns(query_pb2.ListRunsRequest(entity=OWNER, project=P1), metadata=md)
        assert [r.run_id for r in runs.runs] == ["pub"]
        with pytest.raises(grpc.RpcError) as info:
            qs.ListRuns(query_pb2.ListRunsRequest(entity=OWNER, project=P2), metadata=md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            rs.StopRun(runs_pb2.StopRunRequest(entity=OWNER, project=P1, run_id="pub"),
                       metadata=md)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        admin = identity_pb2_grpc.AdminStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            admin.CreateUser(identity_pb2.CreateUserRequest(name="mallory"), metadata=md)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as info:        # someone else's key id
            admin.RevokeKey(identity_pb2.RevokeKeyRequest(key_id="000000000000"),
                            metadata=md)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_revoked_key_stops_an_open_stream_and_keys_are_never_logged(world, tmp_path):
    srv, _, keys = world
    key = new_key(srv, "key", "create", key=keys["other"])
    key_id = new_key(srv, "whoami", key=key).split("key ")[-1]

    def requests():
        for i in range(1, 200):
            yield ingest_pb2.IngestRequest(events=[events_pb2.Event(
                run_id="long", project=P1, entity=OTHER, seq=i, heartbeat=events_pb2.Heartbeat())],
                batch_id=i)
            if i == 3:
                assert cli(srv, "key", "revoke", key_id, key=keys["other"]).returncode == 0
            time.sleep(0.02)
    acked = 0
    with grpc.insecure_channel(srv.grpc) as ch, pytest.raises(grpc.RpcError) as info:
        for answer in ingest_pb2_grpc.IngestStub(ch).Stream(requests(), timeout=60,
                                                            metadata=auth_metadata(key)):
            acked += answer.HasField("ack")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert 3 <= acked < 199
    log_text = srv.output() + srv.log_path.read_text()
    for k in (*keys.values(), key, os.environ["RUNSTREAM_API_KEY"]):
        if k:
            assert k not in log_text
