"""Gateway validation (pure) and record building: every rejection rule, and the records."""

from __future__ import annotations

import pytest
from runstream.v1 import events_pb2, ingest_pb2
from runstream_server.common import limits
from runstream_server.common.errors import PermanentError
from runstream_server.gateway.records import build_records, trailer
from runstream_server.gateway.validation import InvalidEvent, RunSlice, validate_request


def ev(run_id="run-1", seq=1, project="proj", entity="ent", kind="heartbeat",
       **fields) -> events_pb2.Event:
    e = events_pb2.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                         client_time_us=1_700_000_000_000_000, **fields)
    if kind == "heartbeat":
        e.heartbeat.SetInParent()
    elif kind == "log":
        e.log.step = seq
        e.log.numbers["loss"] = 0.5 / seq
    elif kind == "finish":
        e.finish.exit_code = 0
    elif kind == "crashed":
        e.crashed.detector = "someone"
    elif kind is not None:
        getattr(e, kind).SetInParent()
    return e


def req(*events, batch_id=7) -> ingest_pb2.IngestRequest:
    return ingest_pb2.IngestRequest(events=list(events), batch_id=batch_id)


def rejected(*events) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        validate_request(req(*events))
    return info.value


# ---------------------------------------------------------------------------- accepted


def test_valid_request_grouped_per_run_in_order_with_max_seq():
    r = req(ev("a", 1, kind="run_start"), ev("b", 5, kind="log"), ev("a", 2, kind="log"),
            ev("a", 9, kind="heartbeat"), ev("b", 6, kind="finish"))
    slices = validate_request(r)
    assert slices == [RunSlice("a", (0, 2, 3), 9), RunSlice("b", (1, 4), 6)]


def test_empty_request_has_no_slices():
    assert validate_request(req()) == []


def test_seq_gaps_are_allowed_and_every_client_body_is_accepted():
    kinds = ["run_start", "log", "config_update", "summary_update", "heartbeat", "finish",
             "run_patch", "delete", "stop_requested", "artifact_logged"]
    events = [ev("r", 10 * (i + 1), kind=k) for i, k in enumerate(kinds)]
    [s] = validate_request(req(*events))
    assert s.indexes == tuple(range(len(kinds))) and s.max_seq == 10 * len(kinds)


def test_names_at_the_limits_are_accepted():
    n = limits.MAX_ID_CHARS
    e = ev("A" * n, project="p" * n, entity="e" * n, kind="log")
    e.log.numbers["k" * limits.MAX_KEY_CHARS] = 1.0
    [s] = validate_request(req(e))
    assert s.run_id == "A" * n


def test_invalid_event_is_permanent():
    assert issubclass(InvalidEvent, PermanentError)


# ---------------------------------------------------------------------------- rejected


@pytest.mark.parametrize("run_id", ["", "a/b", "a b", "ünï", "a:b", "x" * 129, "a\n"])
def test_bad_run_id(run_id):
    err = rejected(ev(run_id))
    assert "run_id" in str(err)


@pytest.mark.parametrize("field", ["project", "entity"])
@pytest.mark.parametrize("value", ["", "a/b", "a\\b", "a#b", "a?b", "a%b", "a:b", "a\x01b",
                                   "a\x7fb", "n" * (limits.MAX_ID_CHARS + 1)])
def test_bad_project_or_entity(field, value):
    err = rejected(ev("r", **{field: value}))
    assert field in str(err)
    assert err.run_id == "r"


def test_seq_zero_is_reserved_for_the_server():
    err = rejected(ev("r", seq=0))
    assert "seq" in str(err) and err.run_id == "r"


def test_server_time_set_by_client():
    err = rejected(ev("r", seq=3, server_time_us=123))
    assert "server_time_us" in str(err) and err.seq == 3


def test_event_without_body():
    err = rejected(ev("r", seq=2, kind=None))
    assert "no body" in str(err) and err.seq == 2


def test_crashed_from_a_client():
    err = rejected(ev("r", seq=4, kind="crashed"))
    assert "crashed" in str(err) and err.run_id == "r" and err.seq == 4


@pytest.mark.parametrize("seqs", [(3, 3), (5, 4), (1, 2, 2)])
def test_non_increasing_seq_within_a_run(seqs):
    err = rejected(*(ev("r", s) for s in seqs))
    assert "strictly increase" in str(err) and err.seq == seqs[-1]


def test_seq_order_is_per_run():
    # Another run's higher seq does not constrain this run.
    [a, b] = validate_request(req(ev("a", 10), ev("b", 1), ev("a", 11), ev("b", 2)))
    assert (a.max_seq, b.max_seq) == (11, 2)


@pytest.mark.parametrize("change", [{"project": "other"}, {"entity": "other"}])
def test_a_run_switching_project_or_entity(change):
    err = rejected(ev("r", 1), ev("r", 2, **change))
    assert "same project and entity" in str(err) and err.seq == 2


def _with_keys(kind: str, keys: list[str]) -> events_pb2.Event:
    e = ev("r", 1, kind=None)
    if kind == "log.numbers":
        e.log.numbers.update(dict.fromkeys(keys, 1.0))
    elif kind == "log.others":
        for k in keys:
            e.log.others[k].json = "1"
    elif kind == "config_update":
        for k in keys:
            e.config_update.set[k].json = "1"
    elif kind == "summary_update.numbers":
        e.summary_update.numbers.update(dict.fromkeys(keys, 1.0))
    elif kind == "summary_update.others":
        for k in keys:
            e.summary_update.others[k].json = "1"
    elif kind == "run_start":
        for k in keys:
            e.run_start.config[k].json = "1"
    return e


KEYED = ["log.numbers", "log.others", "config_update", "summary_update.numbers",
         "summary_update.others", "run_start"]


@pytest.mark.parametrize("kind", KEYED)
def test_too_many_keys(kind):
    n = limits.MAX_KEYS_PER_EVENT
    validate_request(req(_with_keys(kind, [f"k{i}" for i in range(n)])))  # at the limit: ok
    err = rejected(_with_keys(kind, [f"k{i}" for i in range(n + 1)]))
    assert "keys" in str(err) and str(limits.MAX_KEYS_PER_EVENT) in str(err)


@pytest.mark.parametrize("kind", KEYED)
def test_empty_key(kind):
    err = rejected(_with_keys(kind, ["fine", ""]))
    assert "empty key" in str(err)


@pytest.mark.parametrize("kind", KEYED)
def test_overlong_key(kind):
    err = rejected(_with_keys(kind, ["fine", "k" * (limits.MAX_KEY_CHARS + 1)]))
    assert "longer than" in str(err)


def test_log_keys_at_the_limits_in_both_maps_are_accepted():
    # The log check first looks at sizes and totals and checks key by key only when
    # those cannot rule a problem out: limits hold per map and count characters.
    e = ev("r", 1, kind=None)
    e.log.numbers.update({f"n{i}": 1.0 for i in range(limits.MAX_KEYS_PER_EVENT)})
    for i in range(limits.MAX_KEYS_PER_EVENT):
        e.log.others[f"o{i}"].json = "1"
    multibyte = "é" * limits.MAX_KEY_CHARS              # 256 characters, 512 bytes
    small = ev("r", 2, kind=None)
    small.log.numbers[multibyte] = 1.0
    small.log.others["x" * limits.MAX_KEY_CHARS].json = '"a long value"' * 50
    assert validate_request(req(e, small)) == [RunSlice("r", (0, 1), 2)]
    assert "longer than" in str(rejected(_with_keys("log.numbers", [multibyte + "é"])))


def test_too_many_events(monkeypatch):
    monkeypatch.setattr(limits, "MAX_EVENTS_PER_REQUEST", 3)
    validate_request(req(*(ev("r", s) for s in range(1, 4))))
    err = rejected(*(ev("r", s) for s in range(1, 5)))
    assert "4 events" in str(err)


def test_define_metric_names_and_modes():
    def dm(**kw):
        return ev("r", 1, kind=None, define_metric=events_pb2.DefineMetric(**kw))
    long = "k" * (limits.MAX_KEY_CHARS + 1)
    validate_request(req(dm(name="val/*", summary="min", step_metric="epoch")))
    validate_request(req(dm(name="k" * limits.MAX_KEY_CHARS, summary="some-future-mode")))
    assert "empty key" in str(rejected(dm(name="", summary="min")))
    assert "longer than" in str(rejected(dm(name=long)))
    assert "step_metric" in str(rejected(dm(name="x", step_metric=long)))
    assert "summary longer" in str(rejected(dm(name="x", summary="m" * 65)))


def test_one_bad_event_rejects_the_whole_request():
    err = rejected(ev("good", 1), ev("good", 2), ev("bad", 1, project=""))
    assert err.run_id == "bad"


# ---------------------------------------------------------------------------- records


def _parse(value: bytes) -> events_pb2.LogRecord:
    return events_pb2.LogRecord.FromString(value)


def test_trailer_parses_as_log_record_fields():
    rec = _parse(trailer(1_234_567_890_123_456, b"gw-1"))
    assert rec.server_time_us == 1_234_567_890_123_456
    assert rec.gateway == "gw-1"
    assert len(rec.events) == 0


def test_one_run_is_forwarded_as_its_own_bytes_plus_trailer():
    r = req(ev("r", 1, kind="run_start"), ev("r", 2, kind="log"), ev("r", 3), batch_id=42)
    raw = r.SerializeToString()
    tail = trailer(1_700_000_000_123_456, b"gw-a")
    [(key, value)] = build_records(raw, r, validate_request(r), tail)
    assert key == b"r"
    assert value == raw + tail
    rec = _parse(value)
    assert list(rec.events) == list(r.events)
    assert [e.server_time_us for e in rec.events] == [0, 0, 0]  # unchanged; record carries it
    assert rec.server_time_us == 1_700_000_000_123_456
    assert rec.gateway == "gw-a"


def test_mixed_runs_one_record_per_run_with_only_its_events_in_order():
    events = [ev("a", 1, kind="run_start"), ev("b", 1, kind="run_start"), ev("a", 2, kind="log"),
              ev("c", 7), ev("b", 2, kind="log"), ev("a", 3, kind="finish")]
    r = req(*events)
    tail = trailer(99, b"gw")
    out = build_records(r.SerializeToString(), r, validate_request(r), tail)
    assert [k for k, _ in out] == [b"a", b"b", b"c"]
    by_key = {k.decode(): _parse(v) for k, v in out}
    assert list(by_key["a"].events) == [events[0], events[2], events[5]]
    assert list(by_key["b"].events) == [events[1], events[4]]
    assert list(by_key["c"].events) == [events[3]]
    for rec in by_key.values():
        assert rec.server_time_us == 99 and rec.gateway == "gw"
    assert all(v.endswith(tail) for _, v in out)


def test_log_step_above_the_int64_range_is_refused():
    E = events_pb2
    ok = E.Event(run_id="r", project="p", entity="e", seq=1, log=E.Log(step=limits.MAX_STEP))
    assert validate_request(ingest_pb2.IngestRequest(events=[ok]))
    bad = E.Event(run_id="r", project="p", entity="e", seq=1,
                  log=E.Log(step=limits.MAX_STEP + 1))
    with pytest.raises(InvalidEvent, match="step"):
        validate_request(ingest_pb2.IngestRequest(events=[bad]))


@pytest.mark.parametrize("extra", [
    b"\x1a\x02\xf0\x7f",            # field 3 (LogRecord.gateway) with invalid UTF-8
    b"\x10\x05",                    # field 2 (LogRecord.server_time_us)
    b"\x72\x00",                    # field 14
])
def test_request_fields_of_the_log_record_are_refused(extra):
    # forwarded unchanged, such bytes would turn an acked request into an undecodable
    # (so dropped) record, or rewrite the server's fields
    E = events_pb2
    req = ingest_pb2.IngestRequest(events=[E.Event(run_id="r", project="p", entity="e", seq=1,
                                                   heartbeat=E.Heartbeat())], batch_id=1)
    raw = req.SerializeToString() + extra
    with pytest.raises(InvalidEvent, match="reserved"):
        validate_request(ingest_pb2.IngestRequest.FromString(raw))


def test_unknown_request_fields_above_15_are_forwarded():
    E = events_pb2
    req = ingest_pb2.IngestRequest(events=[E.Event(run_id="r", project="p", entity="e", seq=1,
                                                   heartbeat=E.Heartbeat())])
    raw = req.SerializeToString() + b"\x80\x01\x07"     # field 16, varint 7: a newer client
    slices = validate_request(ingest_pb2.IngestRequest.FromString(raw))
    ((_, value),) = build_records(raw, ingest_pb2.IngestRequest.FromString(raw), slices,
                                  trailer(5, b"gw"))
    assert len(E.LogRecord.FromString(value).events) == 1
