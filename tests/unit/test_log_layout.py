"""The fold's fast Log decode (projector/log_layout.py) against the general protobuf parse.

A record of Log (and heartbeat) events is folded through views and ``decode_numbers``;
any other record through the full messages. Both must give the same rows, states and
counts, so every test here folds the same records both ways and compares.
"""

from __future__ import annotations

import math
import random
import struct

import pytest
from runstream._encode import LogEncoder
from runstream.v1 import events_pb2 as E
from runstream_server.projector import log_layout
from runstream_server.projector.log_layout import decode_numbers
from runstream_server.projector.processor import RowBatch, fold_record

from tests.fixtures.fold import T0

NAN_PAYLOAD = struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]   # a quiet NaN, payload 1
SPECIAL = [0.0, -0.0, math.inf, -math.inf, math.nan, NAN_PAYLOAD, 5e-324, 1.7976931348623157e308]


def _bits(values) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def _parsed(body: bytes) -> tuple[int, list[str], list[float]]:
    lg = E.Log.FromString(body)
    keys = list(lg.numbers)
    return lg.step, keys, [lg.numbers[k] for k in keys]


def _log_body(event_bytes: bytes) -> bytes:
    """The Log body of an encoded Event, as the views give it."""
    from runstream.v1 import views_pb2
    return views_pb2.EventView.FromString(event_bytes).log


@pytest.fixture(autouse=True)
def _fresh_layouts():
    log_layout.clear()
    yield
    log_layout.clear()


def _assert_same_as_parse(body: bytes) -> None:
    got = decode_numbers(body)
    assert got is not None
    step, keys, values = got
    p_step, p_keys, p_values = _parsed(body)
    assert step == p_step
    assert dict(zip(keys, _bits(values), strict=True)) == dict(zip(p_keys, _bits(p_values),
                                                                   strict=True))
    assert len(keys) == len(p_keys)


def test_client_encoded_events_decode_bit_exact():
    rng = random.Random(7)
    enc = LogEncoder("run", "proj", "ent")
    long_key = "k" * 300                      # entry and key lengths take two-byte varints
    for i in range(300):
        n = rng.choice([0, 1, 3, 10, 50])
        data = {f"m/{j}": rng.choice(SPECIAL + [rng.uniform(-1e6, 1e6)]) for j in range(n)}
        if i % 7 == 0:
            data[long_key] = float(i)
        if i % 11 == 0:
            data["é/λ/😀"] = -0.0
        raw, _ = enc.encode(seq=i + 1, time_us=T0 + i, step=rng.choice([0, 1, i, 2**63 + i]),
                            data=data)
        body = _log_body(raw)
        _assert_same_as_parse(body)
        _assert_same_as_parse(body)          # again, from the learned layout


def test_standard_encoder_bodies_decode_when_in_the_layout():
    lg = E.Log(step=12)
    lg.numbers.update({"a": 1.5, "b": -0.0, "c": math.nan})
    _assert_same_as_parse(lg.SerializeToString())


@pytest.mark.parametrize("body", [
    b"",                                                      # step 0 left out, no values
    E.Log(numbers={"a": 1.0}).SerializeToString(),            # step 0 left out
    E.Log(step=3, others={"t": E.JsonValue(json='"x"')}).SerializeToString(),
    b"\x09" + bytes(8) + b"\x12\x0b\x0a\x01a\x11" + bytes(8) + b"\x00",   # trailing byte
    b"\x09" + bytes(8) + b"\x12\x0b\x0a\x01a\x11" + bytes(7),            # truncated value
    b"\x09" + bytes(8) + b"\x12\x0b\x11" + bytes(8) + b"\x0a\x01a",       # value before key
    b"\x09" + bytes(8) + (b"\x12\x0b\x0a\x01a\x11" + bytes(8)) * 2,      # key twice: last wins
    b"\x09" + bytes(8) + b"\x12\x0b\x0a\x01\xff\x11" + bytes(8),          # key not UTF-8
    b"\x12\x0b\x0a\x01a\x11" + bytes(8) + b"\x09" + bytes(8),             # step after values
    b"\x09" + bytes(8) + b"\x20\x01",                                    # unknown field
])
def test_bodies_outside_the_layout_take_the_general_parse(body):
    assert decode_numbers(body) is None


def test_the_same_length_with_other_keys_is_not_confused():
    bodies = []
    for name in ("aa", "ab", "ba", "zz") * 3 + tuple(f"{i:02d}" for i in range(30)):
        lg = E.Log(step=5)
        lg.numbers[name] = float(len(bodies))
        bodies.append(lg.SerializeToString())
    for b in bodies + bodies[::-1]:          # more layouts of one length than are kept
        step, keys, values = decode_numbers(b)
        assert (step, keys, list(values)) == _parsed(b)


def test_the_layout_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(log_layout, "MAX_LAYOUTS", 10)
    for i in range(100):
        lg = E.Log(step=1)
        lg.numbers["k" * (i + 1)] = 1.0
        assert decode_numbers(lg.SerializeToString()) is not None
        assert sum(len(v) for v in log_layout._layouts.values()) <= 10


# --- the fold, both ways ---------------------------------------------------------------------

def _event(run: str, seq: int, **body) -> E.Event:
    e = E.Event(run_id=run, project="proj", entity="ent", seq=seq, client_time_us=T0 + seq)
    for name, msg in body.items():
        getattr(e, name).CopyFrom(msg)
    return e


def _log(step: int, numbers=None, others=None) -> E.Log:
    lg = E.Log(step=step)
    lg.numbers.update(numbers or {})
    for k, v in (others or {}).items():
        lg.others[k].json = v
    return lg


def _corpus() -> list[bytes]:
    """Records as gateways append them, hitting both paths and every rule on the way."""
    rng = random.Random(3)
    enc = {r: LogEncoder(r, "proj", "ent") for r in ("r1", "r2", "r3")}
    records = []

    def add(events, server_us=None, raw_events=()):
        rec = E.LogRecord(events=events, server_time_us=server_us or T0 + len(records),
                          gateway="gw")
        data = rec.SerializeToString()
        for raw in raw_events:                 # client-encoded events: field 1 entries
            data += b"\x0a" + _varint(len(raw)) + raw
        records.append(data)

    seq = {"r1": 0, "r2": 0, "r3": 0}

    def nxt(r):
        seq[r] += 1
        return seq[r]

    add([_event("r1", nxt("r1"), run_start=E.RunStart(name="one"))])
    for step in range(40):
        for r in ("r1", "r2", "r3"):
            width = rng.choice([1, 3, 10])
            vals = {f"m{j}": rng.choice(SPECIAL + [rng.random()]) for j in range(width)}
            raws = [enc[r].encode(nxt(r), T0 + step * 10, step, vals)[0]]
            if step % 5 == 0:
                raws.append(enc[r].encode(nxt(r), T0 + step * 10 + 1, step, {"sys/cpu": 0.5})[0])
            add([], raw_events=raws)
        if step % 7 == 3:                      # heartbeat + log in one record
            add([_event("r2", nxt("r2"), heartbeat=E.Heartbeat()),
                 _event("r2", nxt("r2"), log=_log(step, {"m0": 9.0}))])
        if step % 9 == 4:                      # other values: the general parse
            add([_event("r3", nxt("r3"), log=_log(step, {"m1": 1.0}, {"txt": '"hi"'}))])
        if step % 11 == 5:                     # a rewrite of an earlier step
            add([_event("r1", nxt("r1"), log=_log(step - 2, {"m0": -1.0}))])
        if step % 13 == 6:                     # a duplicate: a re-sent earlier record
            records.append(records[-3])
        if step == 20:                         # a gap, and a step-0 log (no step field)
            seq["r2"] += 5
            add([_event("r2", nxt("r2"), log=_log(0, {"m0": 3.0}))])
        if step == 25:                         # two runs in one record; one with no identity
            add([_event("r1", nxt("r1"), log=_log(step, {"m2": 2.0})),
                 _event("r3", nxt("r3"), log=_log(step, {"m2": 3.0})),
                 E.Event(seq=1, log=_log(1, {"x": 1.0}))])
        if step == 30:                         # crashed (server event), then a revival
            add([E.Event(run_id="r2", project="proj", entity="ent", seq=0,
                         crashed=E.Crashed(after_seq=seq["r2"], detector="d"))])
    add([_event("r1", nxt("r1"), finish=E.Finish(exit_code=0))])
    add([_event("r9", 4, log=_log(1, {"late": 1.0}))])          # no RunStart seen
    records.append(b"\x0a\x03\xff\xff\xff")                     # not a record
    return records


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fold(records, parsed: bool):
    states, batch = {}, RowBatch()
    for offset, raw in enumerate(records):
        if parsed:
            rec = E.LogRecord()
            try:
                rec.ParseFromString(raw)
            except Exception:
                batch.stats.records += 1
                batch.stats.undecodable += 1
                continue
            fold_record(states, rec, 0, offset, batch)
        else:
            fold_record(states, raw, 0, offset, batch)
    # A replay of the whole log over the states changes nothing.
    replay = RowBatch()
    for offset, raw in enumerate(records):
        fold_record(states, raw, 0, offset, replay)
    assert replay.total_rows() == 0
    return states, batch


def _exact(v):
    """``v`` with every float as its bits (NaN equals itself, -0.0 differs from 0.0)."""
    if isinstance(v, float):
        return struct.pack("<d", v)
    if isinstance(v, (list, tuple)):
        return tuple(_exact(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _exact(x)) for k, x in v.items()))
    return v


def _canonical(table) -> list[tuple]:
    return sorted(_exact(r) for r in table.to_pylist())


def test_the_fast_fold_equals_the_general_fold(monkeypatch):
    from runstream_server.projector import processor
    decoded = []

    def counting(body):
        d = decode_numbers(body)
        decoded.append(d is not None)
        return d

    monkeypatch.setattr(processor, "decode_numbers", counting)
    records = _corpus()
    fast_states, fast = _fold(records, parsed=False)
    slow_states, slow = _fold(records, parsed=True)
    assert fast.stats == slow.stats
    assert fast.stats.duplicates and fast.stats.gaps and fast.stats.invalid
    assert fast.stats.undecodable == 1
    for table in ("history_numeric", "history_other", "runs"):
        assert _canonical(fast.to_arrow(table)) == _canonical(slow.to_arrow(table)), table
    assert {k: s.to_row() for k, s in fast_states.items()}.keys() == slow_states.keys()
    for k, s in fast_states.items():
        assert _exact(s.to_row()) == _exact(slow_states[k].to_row()), k
    # the corpus went through both paths: Log bodies decoded fast, and records parsed whole
    assert sum(decoded) > 100 and not all(decoded)
    assert len(fast.other) > 0
