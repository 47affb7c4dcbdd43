"""Hand-rolled protobuf encoding of ``Log`` events: the bytes ``log()`` journals.

``LogEncoder.encode`` gives exactly what building a ``runstream.v1.Event`` with a
``Log`` body from ``_values.flatten`` + ``_values.split_flat`` and calling
``SerializeToString`` gives, as far as any protobuf parser can tell (same fields and
values, NaN/±Inf/-0.0 bit-exact; map entries may come in another order, which the
wire format allows), in about a third of the time. Rare events (RunStart, config,
summary, Finish...) keep using the generated classes; only the hot path needs this.

Wire layout (field numbers from ``protos/runstream/v1/events.proto``)::

    Event:  1 run_id, 2 project, 3 entity (strings, left out when empty, as proto3
            does), 4 seq (fixed64), 5 client_time_us (sfixed64), 11 log (bytes)
    Log:    1 step (fixed64), 2 numbers (map<string,double> entries),
            3 others (map<string,JsonValue> entries)
    entry:  1 key (string), 2 value (double: fixed64 / JsonValue: bytes {1 json})

seq, time and step are always written (also when 0, which proto3 would leave out:
parsers read the same value). The fast path covers a flat dict of str keys and plain
numbers (float, int, and numpy's float/int scalars once numpy is imported). Every
field is then fixed width, so a dict with a known key order is the whole event in one
``struct.pack`` (formats cached per key order): the constant bytes, seq, time, step
and one 8-byte double per value. Anything else (nested dicts, strings, bools, huge ints,
other types) goes through ``_values`` exactly as before, so the two paths cannot
disagree on what is a number.

One deliberate difference from the generated code: a key that is not valid UTF-8 text
(a lone surrogate such as ``"\\udc80"``) makes ``SerializeToString`` raise; here the
offending characters become U+FFFD, because ``log()`` must not raise for a bad key.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping
from typing import Any

from . import _values

_MASK64 = (1 << 64) - 1
_SMALL = tuple(bytes((i,)) for i in range(128))
_pack_d = struct.Struct("<d").pack
_pack_seq_time = struct.Struct("<QBq").pack      # seq, time tag, time
_pack_step = struct.Struct("<Q").pack

# Tags: (field_number << 3) | wire_type.
_T_EVENT_SEQ = b"\x21"          # Event.seq, fixed64
_T_EVENT_TIME = 0x29            # Event.client_time_us, sfixed64
_T_EVENT_LOG = b"\x5a"          # Event.log, length-delimited
_T_LOG_STEP = b"\x09"           # Log.step, fixed64
_STEP_BYTES = 9                 # Log.step: tag + 8 bytes
_T_LOG_NUMBER = 0x12            # Log.numbers entry
_T_LOG_OTHER = 0x1A             # Log.others entry
_T_KEY = 0x0A                   # map entry key
_T_DOUBLE = b"\x11"             # map entry value, fixed64
_T_JSONVALUE = 0x12             # map entry value, JsonValue message
_T_JSON = 0x0A                  # JsonValue.json

# Value types whose float64 is ``struct.pack('<d', v)`` and that ``_values.as_number``
# turns into the same float64 (checked by tests/unit/test_wal.py). bool is an int
# subclass but not in here: ``type(v) is bool`` takes the slow path.
_FAST_TYPES: set[type] = {float, int}
_numpy_checked = False


def _add_numpy_types() -> None:
    """numpy's float and int scalar types join the fast path once numpy is imported."""
    global _numpy_checked
    np = sys.modules.get("numpy")
    if np is None:
        return
    _numpy_checked = True
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64"):
        t = getattr(np, name, None)
        if isinstance(t, type):
            _FAST_TYPES.add(t)


def varint(n: int) -> bytes:
    """Protobuf varint of ``n`` (negative: as uint64, i.e. ten bytes, like int64)."""
    if n < 0x80:
        if n >= 0:
            return _SMALL[n]
        n &= _MASK64
    elif n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    elif n < 0x200000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    elif n < 0x10000000:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80,
                      ((n >> 14) & 0x7F) | 0x80, n >> 21))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _utf8(s: str) -> bytes:
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates become U+FFFD (a surrogate pair becomes its character).
        return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace") \
            .encode("utf-8")


def _ldelim(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + varint(len(payload)) + payload


class LogEncoder:
    """Encodes the ``Log`` events of one run. Not thread-safe (use under the run's lock).

    Caches, both bounded: one prefix per key (``max_cached_keys``, ~60 bytes each;
    keys beyond it are encoded each time) and, per distinct key order of a logged dict
    (``max_cached_keysets``), one ``struct`` format that writes the whole event.
    """

    __slots__ = ("_head", "_keys", "_max_keys", "_sets", "_max_sets")

    def __init__(self, run_id: str, project: str, entity: str,
                 max_cached_keys: int = 100_000, max_cached_keysets: int = 256) -> None:
        head = b""
        for tag, text in ((0x0A, run_id), (0x12, project), (0x1A, entity)):
            if text:
                head += _ldelim(tag, _utf8(text))
        self._head = head + _T_EVENT_SEQ
        self._keys: dict[str, bytes] = {}
        self._max_keys = max_cached_keys
        self._sets: dict[tuple, tuple[Any, list] | None] = {}
        self._max_sets = max_cached_keysets

    def _number_prefix(self, key: str) -> bytes:
        """Everything of a ``numbers`` entry before its 8 value bytes."""
        p = self._keys.get(key)
        if p is None:
            kp = _ldelim(_T_KEY, _utf8(key))
            p = bytes((_T_LOG_NUMBER,)) + varint(len(kp) + 9) + kp + _T_DOUBLE
            if len(self._keys) < self._max_keys:
                self._keys[key] = p
        return p

    def _keyset(self, kt: tuple):
        """(struct pack, argument template) of whole events whose dict has these keys in
        this order; None when a key is not a str (that dict takes the slow path).
        Arguments: head, seq, time tag, time, log header, step, then prefix/value pairs."""
        if len(self._sets) >= self._max_sets:
            self._sets.clear()
        if not all(type(k) is str for k in kt):
            self._sets[kt] = None
            return None
        prefixes = [self._number_prefix(k) for k in kt]
        size = sum(len(p) + 8 for p in prefixes)
        log_head = _T_EVENT_LOG + varint(_STEP_BYTES + size) + _T_LOG_STEP
        st = struct.Struct(f"<{len(self._head)}sQBq{len(log_head)}sQ"
                           + "".join(f"{len(p)}sd" for p in prefixes))
        template: list = [self._head, 0, _T_EVENT_TIME, 0, log_head, 0] + [None] * (2 * len(kt))
        template[6::2] = prefixes
        entry = (st.pack, template)
        self._sets[kt] = entry
        return entry

    def encode(self, seq: int, time_us: int, step: int,
               data: Mapping[str, Any]) -> tuple[bytes, Mapping[str, Any]]:
        """(Event bytes, flattened data). The flattened data is ``data`` itself when
        it was flat already; pass it on read-only (e.g. to the summary)."""
        if type(data) is dict:
            kt = tuple(data)
            ks = self._sets.get(kt, False)
            if ks is False:
                ks = self._keyset(kt)
            if ks is not None:
                vals = data.values()
                if _FAST_TYPES.issuperset(map(type, vals)):
                    pack, template = ks
                    args = template.copy()
                    args[1] = seq
                    args[3] = time_us
                    args[5] = step
                    args[7::2] = vals
                    try:
                        return pack(*args), data
                    except struct.error:        # an int beyond float64
                        pass
        entries, size, flat = self._slow_entries(data)
        return b"".join((self._head, _pack_seq_time(seq, _T_EVENT_TIME, time_us),
                         _T_EVENT_LOG, varint(_STEP_BYTES + size), _T_LOG_STEP,
                         _pack_step(step), entries)), flat

    def _slow_entries(self, data: Mapping[str, Any]) -> tuple[bytes, int, Mapping[str, Any]]:
        if not _numpy_checked:
            _add_numpy_types()
        flat = _values.flatten(data)
        nums, others = _values.split_flat(flat)
        body = []
        for k, v in nums.items():
            body.append(self._number_prefix(k))
            body.append(_pack_d(v))
        for k, j in others.items():
            jv = _ldelim(_T_JSON, _utf8(j))
            entry = _ldelim(_T_KEY, _utf8(k)) + _ldelim(_T_JSONVALUE, jv)
            body.append(_ldelim(_T_LOG_OTHER, entry))
        entries = b"".join(body)
        return entries, len(entries), flat
