"""Bad input against a real embedded server: every case gets a typed answer (a gRPC
status, a BatchRejected with INVALID_ARGUMENT, or an HTTP 4xx with a message), the
server keeps serving, and the run accepted before the bad input is unchanged after it.

What is refused where is documented in docs/limits.md ("Bad input").
"""

from __future__ import annotations

import json
import os
import socket
import struct
import urllib.parse

import grpc
import pytest
from runstream.v1 import events_pb2 as E
from runstream.v1 import ingest_pb2, query_pb2

from .conftest import ENTITY, start_embedded
from .procs import auth_headers, auth_metadata, expected_value, http, make_events, send_events

pytestmark = [pytest.mark.e2e]

PROJECT = "bad"
BASE_STEPS, BASE_METRICS = 50, 5
METHOD = "/runstream.v1.Ingest/Stream"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, q = start_embedded(tmp_path_factory.mktemp("bad-input"), heartbeat_timeout=600)
    try:
        answers = send_events(srv.grpc, make_events("base", PROJECT, ENTITY, BASE_STEPS,
                                                    BASE_METRICS))
        assert all(a.HasField("ack") for a in answers)
        q.wait_states(PROJECT, {"base": "finished"})
        yield srv, q
    finally:
        q.close()
        srv.stop()


def assert_intact(server) -> None:
    """The server still serves, and the run accepted first is exactly as sent."""
    srv, q = server
    assert srv.proc.poll() is None, srv.output()
    run = q.run(PROJECT, "base")
    assert run.state == "finished" and run.last_seq == BASE_STEPS + 2
    hist = q.history(PROJECT, "base")
    assert sorted(hist) == [f"m{k}" for k in range(BASE_METRICS)]
    for k in range(BASE_METRICS):
        s = hist[f"m{k}"]
        assert list(s.step) == list(range(BASE_STEPS))
        assert list(s.value) == [expected_value(i, k) for i in range(BASE_STEPS)]


def raw_stream(url: str, payloads: list[bytes], timeout: float = 30,
               max_send: int = -1) -> list[ingest_pb2.IngestResponse]:
    """Send each payload as one message of an Ingest stream, bytes as given."""
    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", max_send)]) as ch:
        call = ch.stream_stream(METHOD, request_serializer=None,
                                response_deserializer=ingest_pb2.IngestResponse.FromString)
        return list(call(iter(payloads), timeout=timeout, metadata=auth_metadata()))


def request(*events: E.Event, batch_id: int = 1) -> bytes:
    return ingest_pb2.IngestRequest(events=list(events), batch_id=batch_id).SerializeToString()


def event(run_id: str, seq: int, **body) -> E.Event:
    e = E.Event(run_id=run_id, project=PROJECT, entity=ENTITY, seq=seq,
                client_time_us=1_700_000_000_000_000 + seq)
    ((name, msg),) = body.items()
    getattr(e, name).CopyFrom(msg)
    return e


def status_of(payloads: list[bytes], url: str, **kw) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        raw_stream(url, payloads, **kw)
    return info.value.code(), info.value.details()


# -- the gRPC ingest stream ---------------------------------------------------------------

def test_a_message_over_the_size_limit_is_resource_exhausted(server):
    srv, _ = server
    big = E.JsonValue(json=json.dumps("x" * (17 << 20)))        # limit: 16 MiB
    code, details = status_of([request(event("big", 1, log=E.Log(step=0, others={"t": big})))],
                              srv.grpc)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert_intact(server)


@pytest.mark.parametrize("payload", [
    pytest.param(os.urandom(4096), id="random-bytes"),
    # an Event whose run_id is not UTF-8
    pytest.param(b"\x0a\x06\x0a\x04r\xff\xfex", id="invalid-utf8"),
    # 200 nested groups: deeper than the protobuf decoder's limit of 100
    pytest.param(b"\x0b" * 200 + b"\x0c" * 200, id="deep-nesting"),
    # a length prefix pointing past the end
    pytest.param(b"\x0a\xff\xff\x03abc", id="truncated"),
])
def test_undecodable_requests_end_the_call_with_invalid_argument(server, payload):
    srv, _ = server
    code, details = status_of([payload], srv.grpc)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "IngestRequest" in details
    assert_intact(server)


def test_non_http2_garbage_on_the_grpc_port_is_dropped(server):
    srv, _ = server
    host, port = srv.grpc.rsplit(":", 1)
    for garbage in (os.urandom(64 << 10), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(1024)):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            try:
                s.sendall(garbage)
                s.settimeout(5)
                s.recv(65536)               # whatever the server answers before it closes
            except OSError:
                pass                        # it may reset the connection: that is fine
    assert_intact(server)


def rejected(answers) -> list[ingest_pb2.BatchRejected]:
    return [a.rejected for a in answers if a.HasField("rejected")]


def test_each_broken_rule_is_a_typed_rejection_and_the_stream_goes_on(server):
    srv, q = server
    many = {f"k{i}": float(i) for i in range(10_001)}
    cases = [
        ("10001 keys", event("lim", 2, log=E.Log(step=0, numbers=many)), "limit is 10000"),
        ("empty key", event("lim", 2, log=E.Log(step=0, numbers={"": 1.0})), "empty key"),
        ("257-char key", event("lim", 2, log=E.Log(step=0, numbers={"k" * 257: 1.0})),
         "longer than 256"),
        ("bad run id", event("a/b", 1, heartbeat=E.Heartbeat()), "run_id"),
        ("empty project", E.Event(run_id="lim", entity=ENTITY, seq=2, heartbeat=E.Heartbeat()),
         "project is empty"),
        ("server time", E.Event(run_id="lim", project=PROJECT, entity=ENTITY, seq=2,
                                server_time_us=5, heartbeat=E.Heartbeat()), "server_time_us"),
        ("crashed", event("lim", 2, crashed=E.Crashed(reason="x")), "server only"),
        ("step", event("lim", 2, log=E.Log(step=2**63, numbers={"a": 1.0})), "step"),
    ]
    payloads = [request(event("lim", 1, run_start=E.RunStart(name="lim")), batch_id=100)]
    payloads += [request(ev, batch_id=i) for i, (_, ev, _) in enumerate(cases)]
    # seq not increasing inside one request
    payloads.append(request(event("lim", 5, heartbeat=E.Heartbeat()),
                            event("lim", 4, heartbeat=E.Heartbeat()), batch_id=50))
    ok = {f"k{i}": float(i) for i in range(10_000)}
    ok["k" * 256] = -1.0
    ok.pop("k0")
    payloads.append(request(event("lim", 6, log=E.Log(step=3, numbers=ok)), batch_id=51))
    answers = raw_stream(srv.grpc, payloads)
    rej = rejected(answers)
    assert [r.batch_id for r in rej] == [*range(len(cases)), 50]
    for r, (name, _, fragment) in zip(rej, cases, strict=False):
        assert r.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], name
        assert fragment in r.message, (name, r.message)
    assert "strictly increase" in rej[-1].message
    acks = [a.ack.batch_id for a in answers if a.HasField("ack")]
    assert acks == [100, 51]
    # the 10,000 keys at the limits arrived, nothing of the refused requests did
    q.wait_for(lambda: q.run(PROJECT, "lim").last_seq == 6, 60, "the limit-size log")
    run = q.run(PROJECT, "lim")
    assert len(run.summary) == 10_000 and run.summary["k" * 256] == -1.0
    assert "a" not in run.summary and run.last_step == 3
    assert_intact(server)


def test_special_numbers_are_stored_bit_for_bit_and_big_values_whole(server):
    srv, q = server
    bits = {"nan": 0x7FF8000000000000, "nan_payload": 0x7FF0000000000123,
            "neg_nan": 0xFFF8000000000001, "inf": 0x7FF0000000000000,
            "neg_inf": 0xFFF0000000000000, "neg_zero": 0x8000000000000000,
            "subnormal": 0x0000000000000001, "max": 0x7FEFFFFFFFFFFFFF}
    numbers = {k: struct.unpack("<d", struct.pack("<Q", b))[0] for k, b in bits.items()}
    deep = "[" * 100_000 + "]" * 100_000
    mega = json.dumps("é" * (1 << 20))                          # 2 MiB of UTF-8
    answers = raw_stream(srv.grpc, [request(
        event("vals", 1, run_start=E.RunStart(config={"deep": E.JsonValue(json=deep)})),
        event("vals", 2, log=E.Log(step=0, numbers=numbers, others={
            "deep": E.JsonValue(json=deep), "mega": E.JsonValue(json=mega),
            "not_json": E.JsonValue(json="{oops")})),
        event("vals", 3, finish=E.Finish()))])
    assert [a.WhichOneof("kind") for a in answers] == ["ack"]
    q.wait_states(PROJECT, {"vals": "finished"})
    hist = q.history(PROJECT, "vals")
    for key, b in bits.items():
        (v,) = hist[key].value
        assert struct.unpack("<Q", struct.pack("<d", v))[0] == b, key
    run = q.run(PROJECT, "vals")
    assert run.summary_other["mega"] == mega and run.summary_other["deep"] == deep
    assert run.summary_other["not_json"] == "{oops"
    # JSON that cannot be parsed as such (too deep) is kept as text: a JSON string
    assert json.loads(run.config["deep"]) == deep
    # the HTTP API answers for the same run (non-finite numbers as strings)
    status, body = http(srv, "GET", f"/api/v1/runs/{ENTITY}/{PROJECT}/vals")
    assert status == 200, body
    status, body = http(srv, "GET", f"/api/v1/runs/{ENTITY}/{PROJECT}/vals/history")
    assert status == 200, body
    assert_intact(server)


def test_run_lifecycle_edge_cases_follow_the_fold_rules(server):
    """Accepted by the (stateless) gateway; the projector applies docs/limits.md's rules."""
    srv, q = server
    answers = raw_stream(srv.grpc, [
        # a run whose first event is a log: created, the cause says so
        request(event("orphan", 3, log=E.Log(step=7, numbers={"a": 1.0})), batch_id=1),
        # finished, then more events, then a second finish with another exit code
        request(event("done", 1, run_start=E.RunStart()),
                event("done", 2, log=E.Log(step=0, numbers={"a": 1.0})),
                event("done", 3, finish=E.Finish(exit_code=0)), batch_id=2),
        request(event("done", 4, log=E.Log(step=1, numbers={"a": 2.0})),
                event("done", 5, heartbeat=E.Heartbeat()),
                event("done", 6, finish=E.Finish(exit_code=9)), batch_id=3),
        # a re-send of events already acked: acked again, changes nothing
        request(event("done", 2, log=E.Log(step=0, numbers={"a": 100.0})), batch_id=4),
    ])
    assert [a.ack.batch_id for a in answers] == [1, 2, 3, 4]
    q.wait_for(lambda: q.run(PROJECT, "done").last_seq == 6, 60, "done's events")
    orphan = q.wait_for(lambda: q.run(PROJECT, "orphan"), 60, "the orphan run")
    assert orphan.state == "running" and "no RunStart seen" in orphan.state_cause
    done = q.run(PROJECT, "done")
    assert (done.state, done.exit_code) == ("finished", 0)
    assert list(q.history(PROJECT, "done")["a"].value) == [1.0, 2.0]
    with pytest.raises(grpc.RpcError) as info:
        q.run(PROJECT, "never-sent")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert_intact(server)


# -- the HTTP API ---------------------------------------------------------------------

# Filters and parameters that try to escape into SQL, break parsing, or ask for too
# much. Each must be a 400 with a message, or a 200 with the right (here: no) runs.
INJECTIONS = [
    {"name": "' OR 1=1 --"}, {"name": "\\'; DROP TABLE runs; --"}, {"name": "%"},
    {"name_regex": "'); DROP TABLE runs; --"}, {"name_regex": "(a"}, {"name_regex": "a{99999}"},
    {"tag": "x' OR '1'='1"}, {"user": "\") OR 1=1 --"}, {"state": "running' OR 1=1"},
    {"config.lr') OR 1=1 --": "0.5"}, {"config.lr": "0.5) OR (1=1"}, {"config.lr": "{"},
    {"config.": "1"}, {"config." + "k" * 300: "1"}, {"summary.m0": "0..1; DROP TABLE runs"},
    {"summary.m0": "1e999..2"}, {"summary.m0": "nan..1"}, {"summary.m0` OR 1=1": "0..1"},
    {"hidden": "2"}, {"name": "\x00"}, {"name": "\ud800".encode("utf-8", "surrogatepass")},
    {"name": "x" * 5000}, {"tag": ["a"] * 500}, {"zzz": "1"},
]
# Sorting and paging: a 400, or a 200 with every run (a key nobody logged sorts last).
PAGING = [
    {"sort": "name; DROP TABLE runs"}, {"sort": "summary.m0') --"}, {"sort": "config."},
    {"sort": "config.lr' DESC, (SELECT 1) --"}, {"desc": "maybe"},
    {"limit": "-1"}, {"limit": "1e3"}, {"offset": "99999999999999999999999"},
]


def _get(srv, path: str, params) -> tuple[int, dict]:
    return http(srv, "GET", path + "?" + urllib.parse.urlencode(params, doseq=True))


def test_http_filters_and_parameters_never_reach_sql_or_crash(server):
    srv, q = server
    base = f"/api/v1/projects/{ENTITY}/{PROJECT}/runs"
    before = len(q.runs(PROJECT))
    for params in INJECTIONS:
        status, body = _get(srv, base, params)
        assert status in (200, 400), (params, status, body)
        if status == 400:
            assert body["error"]["code"] == "INVALID_ARGUMENT" and body["error"]["message"]
        else:
            assert body["runs"] == [], (params, body)
    for params in PAGING:
        status, body = _get(srv, base, params)
        assert status in (200, 400), (params, status, body)
        if status == 400:
            assert body["error"]["code"] == "INVALID_ARGUMENT" and body["error"]["message"]
        else:
            assert len(body["runs"]) == before, (params, body)
    for path, params in ((f"/api/v1/projects/{ENTITY}/{PROJECT}/bands",
                          {"key": "m0') OR 1=1 --", "group_by": "config.lr"}),
                         (f"/api/v1/projects/{ENTITY}/{PROJECT}/history",
                          {"runs": "base' OR '1", "keys": "m0"}),
                         (f"/api/v1/runs/{ENTITY}/{PROJECT}/base/history",
                          {"keys": "m0') UNION SELECT 1 --"}),
                         (f"/api/v1/runs/{ENTITY}/{PROJECT}/"
                          + urllib.parse.quote("base' OR '1'='1"), {}),
                         (f"/api/v1/projects/{ENTITY}/{PROJECT}/columns", {"prefix": "'--"})):
        status, body = _get(srv, path, params)
        assert status in (200, 400, 404), (path, status, body)
        assert "error" not in body or body["error"]["message"], body
    assert len(q.runs(PROJECT)) == before
    assert_intact(server)


def test_http_malformed_bodies_are_400(server):
    srv, _ = server
    run = f"/api/v1/runs/{ENTITY}/{PROJECT}/base"
    for body in ("not json", "[1, 2]", json.dumps({"name": 5}), json.dumps({"tags": "x"}),
                 json.dumps({"privacy": "secret"}), json.dumps({"nope": 1}),
                 json.dumps({"name": "x" * 100_000})):
        status, answer = _raw(srv, "PATCH", run, body.encode())
        assert status == 400, (body[:50], status, answer)
        assert answer["error"]["code"] == "INVALID_ARGUMENT"
    status, answer = _raw(srv, "PUT", f"/api/v1/projects/{ENTITY}/{PROJECT}/workspace",
                          b'{"user": "u", "state": "[unclosed"}')
    assert status == 400, answer
    assert_intact(server)


def _raw(srv, method: str, path: str, data: bytes) -> tuple[int, dict]:
    import urllib.error
    import urllib.request
    req = urllib.request.Request(srv.http + path, data=data, method=method,
                                 headers={"Content-Type": "application/json",
                                          **auth_headers()})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_query_rpcs_refuse_bad_requests_with_typed_status(server):
    _, q = server
    for req, code in (
            (query_pb2.GetRunRequest(entity=ENTITY, project=PROJECT, run_id="a/b"),
             grpc.StatusCode.INVALID_ARGUMENT),
            (query_pb2.GetRunRequest(entity=ENTITY, project="", run_id="base"),
             grpc.StatusCode.INVALID_ARGUMENT),
            (query_pb2.GetRunRequest(entity=ENTITY, project="nope", run_id="base"),
             grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as info:
            q.stub.GetRun(req)
        assert info.value.code() == code, (req, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        q.stub.GetHistory(query_pb2.GetHistoryRequest(entity=ENTITY, project=PROJECT,
                                                      run_id="base", buckets=10**9))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_intact(server)
