"""The on-disk journal (client/runstream/_wal.py) and the hand-rolled Log encoding
(client/runstream/_encode.py)."""

from __future__ import annotations

import errno
import math
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from runstream import _encode, _values, _wal
from runstream._encode import LogEncoder
from runstream._wal import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    WalLockedError,
    WalReader,
    WalWriter,
    list_segments,
    read_acked,
    remove_if_acked,
)
from runstream.v1 import events_pb2

CLIENT_DIR = str(Path(_wal.__file__).resolve().parents[1])


def payload(seq: int) -> bytes:
    """Deterministic, variable-size content for a seq."""
    return (b"%d:" % seq) * (1 + seq % 13)


def read_all(reader: WalReader, after: int = 0, **kw) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    while True:
        got = reader.read(after, **kw)
        if not got:
            return out
        out += got
        after = got[-1][0]


def crash(w: WalWriter) -> None:
    """What a SIGKILL leaves: mapping and files dropped, nothing sealed or truncated."""
    if w._seg is not None:
        w._seg.mm.close()
        os.close(w._seg.fd)
    if w._spare is not None:
        w._spare.mm.close()
        os.close(w._spare.fd)
    os.close(w._lock_fd)
    w._seg = w._spare = None
    w._lock_fd = -1
    w._closed = True


# -- round trip, recovery, acknowledgements ---------------------------------------------

def test_round_trip_across_segments_and_limits(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=4096)
    for s in range(1, 501):
        assert w.append(s, payload(s)) is True
    assert w.last_seq == 500
    assert len(list_segments(d)) > 5
    r = WalReader(d, writer=w)
    got = read_all(r)
    assert got == [(s, payload(s)) for s in range(1, 501)]
    # Limits: events, bytes (but always at least one record), reading from the middle.
    assert [s for s, _ in r.read(0, max_events=7)] == list(range(1, 8))
    assert [s for s, _ in r.read(250, max_events=3)] == [251, 252, 253]
    assert len(r.read(0, max_bytes=1)) == 1
    one = r.read(10, max_bytes=len(payload(11)) + len(payload(12)))
    assert [s for s, _ in one] == [11, 12]
    assert r.read(500) == []
    # A fresh reader (no hints, no writer) finds the same.
    r2 = WalReader(d)
    assert read_all(r2, 123) == [(s, payload(s)) for s in range(124, 501)]
    w.close()
    r.close()
    r2.close()


def test_reopen_continues_after_close_and_after_crash(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=8192)
    for s in range(1, 101):
        w.append(s, payload(s))
    w.close()
    w = WalWriter(d, segment_bytes=8192)
    assert w.last_seq == 100
    with pytest.raises(ValueError):
        w.append(100, b"x")             # seqs only go up, across restarts too
    for s in range(101, 201):
        w.append(s, payload(s))
    crash(w)
    w = WalWriter(d, segment_bytes=8192)
    assert w.last_seq == 200
    assert w.recovered_bytes == 0
    for s in range(201, 301):
        w.append(s, payload(s))
    assert read_all(WalReader(d, writer=w)) == [(s, payload(s)) for s in range(1, 301)]
    w.close()


def test_second_writer_is_refused(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d)
    with pytest.raises(WalLockedError):
        WalWriter(d)
    w.close()
    WalWriter(d).close()


@pytest.mark.parametrize("tear", ["partial_header", "bad_crc", "header_missing", "short"])
def test_torn_tail_is_cut_on_open(tmp_path, tear):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=1 << 16)
    for s in range(1, 51):
        w.append(s, payload(s))
    seg_path, end = w._seg.path, w._seg.pos
    crash(w)
    # The state a kill in the middle of copying record 51 can leave behind.
    data = payload(51)
    with open(seg_path, "r+b") as f:
        f.seek(end)
        if tear == "partial_header":      # header half copied
            f.write(struct.pack("<I", len(data)) + b"\x12\x34")
        elif tear == "bad_crc":           # header copied, payload cut short
            f.write(struct.pack("<IIQ", len(data), _wal.record_crc(51, data), 51))
            f.write(data[:5])
        elif tear == "header_missing":    # payload copied, header not yet
            f.seek(end + RECORD_HEADER)
            f.write(data)
        else:                             # length pointing beyond the file
            f.write(struct.pack("<IIQ", 1 << 30, 7, 51))
    w = WalWriter(d, segment_bytes=1 << 16)
    assert w.last_seq == 50
    assert w.recovered_bytes > 0
    # The tail is zeros again: nothing of the torn record can be read later.
    with open(seg_path, "rb") as f:
        f.seek(end)
        assert f.read(1024) == bytes(1024)
    for s in range(51, 61):
        w.append(s, payload(s) * 2)       # different content for the same seq
    got = read_all(WalReader(d))
    assert got == [(s, payload(s)) for s in range(1, 51)] + \
        [(s, payload(s) * 2) for s in range(51, 61)]
    w.close()


def test_acked_watermark_persists_and_reading_resumes_after_it(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=4096)
    for s in range(1, 201):
        w.append(s, payload(s))
    r = WalReader(d, writer=w)
    r.ack(120)
    r.ack(80)                            # never goes back
    assert r.acked == 120
    assert r.wait_acked(120, 0)
    assert not r.wait_acked(121, 0.01)
    r.close()
    crash(w)
    assert read_acked(d) == 120
    w = WalWriter(d, segment_bytes=4096)
    r = WalReader(d, writer=w)
    assert r.acked == 120
    assert [s for s, _ in read_all(r, r.acked)] == list(range(121, 201))
    w.close()
    # A damaged watermark means "nothing acknowledged": re-sending is always safe.
    with open(os.path.join(d, "acked"), "r+b") as f:
        f.seek(6)
        f.write(b"\xff")
    assert read_acked(d) == 0


def test_segments_are_deleted_once_acknowledged(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=2048)
    for s in range(1, 301):
        w.append(s, payload(s))
    r = WalReader(d, writer=w)
    read_all(r)
    firsts = [r._first_seq([i, p, None]) for i, p in list_segments(d)]
    n = len(firsts)
    assert n >= 4
    # Acking up to just before the third segment's first seq frees the first two.
    r.ack(firsts[2] - 1)
    assert len(list_segments(d)) == n - 2
    assert [s for s, _ in read_all(r, r.acked)] == list(range(firsts[2], 301))
    r.ack(300)
    segs = list_segments(d)
    assert len(segs) == 1                 # the active segment stays
    assert r.read(300) == []
    w.close()
    r.close()
    assert remove_if_acked(d)
    assert not os.path.exists(d)


def test_remove_if_acked_keeps_unacknowledged_journals(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d)
    w.append(1, b"a")
    w.append(2, b"b")
    assert not remove_if_acked(d)         # the writer holds it
    w.close()
    r = WalReader(d)
    r.ack(1)
    r.close()
    assert not remove_if_acked(d)         # seq 2 is not acknowledged
    assert os.path.isdir(d)


def test_record_larger_than_a_segment(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=4096)
    big = os.urandom(50_000)
    w.append(1, b"small")
    w.append(2, big)
    w.append(3, b"after")
    got = read_all(WalReader(d, writer=w, chunk_bytes=4096))
    assert got == [(1, b"small"), (2, big), (3, b"after")]
    w.close()


def test_concurrent_append_read_ack_and_maintain(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=4096)   # many rolls: races at segment starts
    r = WalReader(d, writer=w)
    total = 30_000
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader():
        try:
            after = 0
            deadline = time.monotonic() + 60
            while after < total and time.monotonic() < deadline:
                got = r.read(after, max_events=500)
                for s, data in got:
                    assert data == payload(s)
                    seen.append(s)
                if got:
                    after = got[-1][0]
                    r.ack(after)
                w.maintain()
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for s in range(1, total + 1):
        assert w.append(s, payload(s))
    t.join(60)
    assert not errors, errors
    assert seen == list(range(1, total + 1))
    assert read_acked(d) == total
    assert len(list_segments(d)) <= 2     # active (+ spare): acked segments are gone
    w.close()


# -- a writer that is killed --------------------------------------------------------------

WRITER_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {client!r})
    from runstream._wal import WalWriter
    def payload(seq):
        return (b"%d:" % seq) * (1 + seq % 13)
    w = WalWriter(sys.argv[1], segment_bytes=16384)
    out = os.fdopen(1, "w", buffering=1)
    s = w.last_seq
    while True:
        s += 1
        if not w.append(s, payload(s)):
            raise SystemExit("not on disk")
        if s % 7 == 0:
            w.maintain()
        out.write(f"{{s}}\\n")     # only after append returned
""")


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_loses_nothing_that_append_returned(tmp_path, round_):
    """A writer process killed at a random moment: every append that returned is read
    back (by another process, while the writer was alive, and after recovery)."""
    d = str(tmp_path / "run")
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT.format(client=CLIENT_DIR))
    rng = random.Random(round_)
    proc = subprocess.Popen([sys.executable, str(script), d], stdout=subprocess.PIPE,
                            text=True)
    try:
        confirmed = 0
        live = WalReader(d)               # a reader in another process than the writer
        live_seen = 0
        stop_after = rng.randint(2_000, 20_000)
        while confirmed < stop_after:
            line = proc.stdout.readline()
            assert line, "writer died early"
            confirmed = int(line)
            if confirmed % 1000 == 0:
                for s, data in read_all(live, live_seen):
                    assert s == live_seen + 1 and data == payload(s)
                    live_seen = s
        time.sleep(rng.random() * 0.02)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        if rest.strip():
            confirmed = int(rest.split()[-1])
    finally:
        proc.kill()
        proc.wait()
    assert live_seen > 0
    live.close()
    w = WalWriter(d, segment_bytes=16384)
    got = read_all(WalReader(d, writer=w))
    seqs = [s for s, _ in got]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= confirmed
    assert all(data == payload(s) for s, data in got)
    assert w.last_seq == len(seqs)
    w.close()


def test_forked_child_cannot_write_the_parents_journal(tmp_path):
    d = str(tmp_path / "run")
    w = WalWriter(d)
    w.append(1, b"parent")
    pid = os.fork()
    if pid == 0:                          # child
        code = 0
        try:
            if w.append(2, b"child") is not False:
                code = 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert w.append(2, b"parent again")
    with pytest.raises(WalLockedError):   # the child did not take the lock with it
        WalWriter(d)
    assert read_all(WalReader(d)) == [(1, b"parent"), (2, b"parent again")]
    w.close()


# -- disk full ------------------------------------------------------------------------------

def test_disk_full_keeps_a_bounded_overflow_and_recovers(tmp_path, monkeypatch):
    d = str(tmp_path / "run")
    w = WalWriter(d, segment_bytes=4096, memory_limit_bytes=3000, retry_interval_s=0)
    r = WalReader(d, writer=w)
    real = _wal._preallocate
    full = {"on": True}

    def preallocate(fd, size):
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, size)

    monkeypatch.setattr(_wal, "_preallocate", preallocate)
    full["on"] = False
    assert w.append(1, payload(1))        # the first segment exists
    full["on"] = True
    on_disk = [1]
    s = 1
    while len(on_disk) == s:              # fill the first segment
        s += 1
        if w.append(s, payload(s), pinned=(s == 1)):
            on_disk.append(s)
    first_off = s
    assert w.disk_errors >= 1 and not w.on_disk
    for s in range(first_off + 1, first_off + 400):
        assert w.append(s, payload(s), pinned=(s == first_off + 5)) is False
    last = first_off + 399
    assert w.dropped_events > 0
    assert w._overflow_bytes <= 3000 + len(payload(last))
    # The in-process reader serves the overflow after the disk, in order.
    got = read_all(r)
    seqs = [x for x, _ in got]
    assert seqs[: len(on_disk)] == on_disk
    assert seqs == sorted(seqs) and seqs[-1] == last
    assert first_off + 5 in seqs          # pinned: never dropped
    assert len(seqs) == last - w.dropped_events
    kept = [x for x, _ in w.overflow_after(0, 10**9, 1 << 30)]
    # Acknowledged overflow needs no disk.
    r.ack(kept[2])
    # The disk comes back: what is left is written out in order, then appends go on.
    full["on"] = False
    w.maintain()
    assert w.on_disk
    for s in range(last + 1, last + 11):
        assert w.append(s, payload(s)) is True
    # On disk: what fitted before, the overflow not acknowledged, the new ones.
    expect = on_disk + [x for x in kept if x > kept[2]] + list(range(last + 1, last + 11))
    got = read_all(WalReader(d))
    assert [x for x, _ in got] == expect
    assert all(data == payload(x) for x, data in got)
    assert [x for x, _ in read_all(WalReader(d), kept[2])] == \
        [x for x in expect if x > kept[2]]
    w.close()


def test_unwritable_directory_never_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    w = WalWriter(str(blocker / "run"), memory_limit_bytes=1000, retry_interval_s=3600)
    assert not w.on_disk
    for s in range(1, 200):
        assert w.append(s, payload(s)) is False
    assert w.dropped_events > 0
    w.close()


# -- the hand-rolled Log encoding -------------------------------------------------------------

def build_protobuf(run_id, project, entity, seq, time_us, step, data) -> events_pb2.Event:
    """What _run.py builds today."""
    flat = _values.flatten(data)
    nums, others = _values.split_flat(flat)
    ev = events_pb2.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                          client_time_us=time_us)
    lg = ev.log
    lg.step = step
    lg.numbers.update(nums)
    for k, j in others.items():
        lg.others[k].json = j
    return ev


def canonical(ev: events_pb2.Event) -> bytes:
    # Deterministic serialization sorts map entries; doubles keep every bit (NaN
    # payloads, -0.0), so equal bytes mean equal events, bit for bit.
    return ev.SerializeToString(deterministic=True)


KEYS = ["loss", "train/loss", "val/acc", "a/b/c", "", " ", "ключ", "損失", "🚀/rate",
        "e\u0301", "x" * 300, "tab\tkey", "nul\x00key", "1", "ü" * 40]
SPECIAL = [math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324, -5e-324,
           1.7976931348623157e308, 2.2250738585072014e-308, 1.0, -1.5,
           struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0],   # NaN payload
           struct.unpack("<d", b"\xff\xff\xff\xff\xff\xff\xff\xff")[0]]


def random_value(rng: random.Random, depth: int = 0):
    import numpy as np
    kind = rng.randrange(16)
    if kind < 5:
        return rng.choice(SPECIAL) if rng.random() < 0.4 else rng.uniform(-1e6, 1e6)
    if kind == 5:
        return rng.choice([0, 1, -1, 2**53 + 1, -(2**63), 2**64, 10**400, -(10**400)])
    if kind == 6:
        return rng.choice([True, False, np.bool_(True), np.bool_(False)])
    if kind == 7:
        return rng.choice([np.float32(rng.random()), np.float64(rng.choice(SPECIAL)),
                           np.float16(0.1), np.int64(-7), np.uint64(2**64 - 1),
                           np.int8(-3), np.float32("nan")])
    if kind == 8:
        return rng.choice(["text", "", "ünï", None, [1, 2.5, "x"], {"": 1}, {}])
    if kind == 9 and depth < 3:
        return {rng.choice(KEYS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 10:
        return rng.choice([np.array(1.5), np.array([1.0, 2.0]), float, object()])
    if kind == 11:
        from decimal import Decimal
        from fractions import Fraction
        return rng.choice([Decimal("1.25"), Fraction(1, 3)])
    return rng.random()


def check_same(run_id, project, entity, seq, time_us, step, data, enc=None):
    enc = enc or LogEncoder(run_id, project, entity)
    raw, flat = enc.encode(seq, time_us, step, data)
    parsed = events_pb2.Event.FromString(raw)
    want = build_protobuf(run_id, project, entity, seq, time_us, step, data)
    assert canonical(parsed) == canonical(want), data
    assert parsed.WhichOneof("body") == "log"
    assert list(flat.items()) == list(_values.flatten(data).items())
    return raw


def test_encoding_matches_protobuf_fast_path():
    keys = [f"train/metric_{i}" for i in range(10)]
    enc = LogEncoder("abcd1234efgh", "proj", "me")
    for i in range(200):
        data = {k: random.random() * 10 ** random.randint(-300, 300) for k in keys}
        check_same("abcd1234efgh", "proj", "me", i + 1, 1_790_000_000_000_000 + i, i,
                   data, enc)
    for v in SPECIAL:
        raw = check_same("abcd1234efgh", "proj", "me", 1, 1, 1, {"x": v}, enc)
        parsed = events_pb2.Event.FromString(raw)
        assert struct.pack("<d", parsed.log.numbers["x"]) == struct.pack("<d", v)


def test_encoding_property_random_events():
    rng = random.Random(1234)
    enc = LogEncoder("run-ü", "projéct", "")
    edges = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**32, 2**63 - 1]
    for i in range(3000):
        n = rng.randrange(0, 12)
        data = {}
        for _ in range(n):
            k = rng.choice(KEYS) if rng.random() < 0.8 else rng.choice([1, 2.5, None, ("t",)])
            data[k] = random_value(rng)
        seq = rng.choice(edges) if rng.random() < 0.2 else i + 1
        t = rng.choice(edges + [-1, -(2**40), 1_790_000_000_000_000]) if rng.random() < 0.2 \
            else 1_790_000_000_000_000 + rng.randrange(10**9)
        step = rng.choice(edges) if rng.random() < 0.2 else rng.randrange(10**6)
        check_same("run-ü", "projéct", "", seq, t, step, data, enc)
    # Same key cached as a number prefix, then used as a non-number.
    check_same("run-ü", "projéct", "", 1, 2, 3, {"k": 1.0}, enc)
    check_same("run-ü", "projéct", "", 2, 2, 3, {"k": "text", "k2": 1.0}, enc)


def test_encoding_numpy_types_use_the_fast_path_after_numpy_import():
    import numpy as np
    enc = LogEncoder("r", "p", "e")
    check_same("r", "p", "e", 1, 2, 3, {"a": np.float32(0.1)}, enc)   # registers numpy
    assert np.float32 in _encode._FAST_TYPES and np.bool_ not in _encode._FAST_TYPES
    for v in (np.float32(1.1), np.float64(-0.0), np.int64(2**62), np.uint64(2**64 - 1),
              np.float16(65504), np.float64("nan"), np.bool_(True)):
        check_same("r", "p", "e", 1, 2, 3, {"a": v, "b": 1.0}, enc)


def test_encoding_of_a_lone_surrogate_key_does_not_raise():
    enc = LogEncoder("r", "p", "e")
    raw, _ = enc.encode(1, 2, 3, {"bad\udc80": 1.0, "ok": 2.0, "pair\ud83d\ude80": 3.0})
    ev = events_pb2.Event.FromString(raw)
    assert dict(ev.log.numbers) == {"bad\ufffd": 1.0, "ok": 2.0, "pair🚀": 3.0}
    with pytest.raises(UnicodeEncodeError):   # what the generated code does instead
        build_protobuf("r", "p", "e", 1, 2, 3, {"bad\udc80": 1.0}).SerializeToString()


def test_key_cache_is_bounded():
    enc = LogEncoder("r", "p", "e", max_cached_keys=10)
    for i in range(100):
        check_same("r", "p", "e", i + 1, 2, 3, {f"k{i}": float(i)}, enc)
    assert len(enc._keys) == 10


def test_journal_of_encoded_events_round_trips(tmp_path):
    enc = LogEncoder("run1", "p", "e")
    w = WalWriter(str(tmp_path / "run1"), segment_bytes=SEGMENT_HEADER + 4096)
    for s in range(1, 101):
        raw, _ = enc.encode(s, 1_790_000_000_000_000 + s, s - 1, {"loss": 1.0 / s, "s": "x"})
        w.append(s, raw)
    for s, raw in read_all(WalReader(str(tmp_path / "run1"))):
        ev = events_pb2.Event.FromString(raw)
        assert ev.seq == s and ev.log.step == s - 1 and ev.log.numbers["loss"] == 1.0 / s
    w.close()


def test_journal_that_could_not_be_opened_is_opened_later(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs directory should be")
    d = str(blocker / "run")
    w = WalWriter(d, retry_interval_s=0)
    for s in range(1, 6):
        assert w.append(s, payload(s)) is False
    blocker.unlink()
    assert w.append(6, payload(6)) is True    # the overflow went first
    assert read_all(WalReader(d)) == [(s, payload(s)) for s in range(1, 7)]
    w.close()
