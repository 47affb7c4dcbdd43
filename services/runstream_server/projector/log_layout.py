"""Decoding a ``Log`` body of numbers with one ``struct.unpack``: the fold's hot path.

The client writes a ``Log`` event of plain numbers as fixed-width fields in one layout
(``client/runstream/_encode.py``): ``step`` (tag 0x09 + 8 bytes) first, then per key one
``numbers`` map entry, ``0x12 <entry length> 0x0A <key length> <key> 0x11 <8-byte
double>``. For a given key order everything but the step and the doubles is constant,
so the body is one ``struct`` format: the constant parts as byte strings that must equal
the layout's, the step and the values as numbers. Runs of a sweep log the same keys in
the same order, so a few layouts serve every event.

Contract: ``decode_numbers(body)`` returns ``(step, keys, values)`` exactly as parsing
the body as ``runstream.v1.Log`` would give them (values bit for bit, NaN payloads and
-0.0 included), or None when the body is anything else: other values, fields in another
order or left out (step 0 omitted by a standard encoder), unknown fields, a repeated
key, a key that is not UTF-8, trailing bytes. None only means "take the general parse";
it never means the body is invalid. ``keys`` is shared between calls: callers must not
mutate it. Pure (no I/O, clock or randomness); the layout cache is bounded and changes
only speed, never results. Not thread-safe (the fold runs on one thread).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_T_STEP = 0x09       # Log.step, fixed64
_T_NUMBER = 0x12     # Log.numbers entry, length-delimited
_T_KEY = 0x0A        # entry key, length-delimited
_T_DOUBLE = 0x11     # entry value, fixed64
_STEP_BYTES = 9      # tag + 8 bytes
_VALUE_BYTES = 8

# Layouts kept per body length (most recently learned first) and in all. A sweep has a
# handful of key sets; a miss costs one learn (~0.5 µs a key), so small caps are enough.
MAX_PER_LENGTH = 8
MAX_LAYOUTS = 4096


class _Layout(NamedTuple):
    unpack: object            # struct.Struct.unpack of the whole body
    chunks: tuple[bytes, ...]  # the constant bytes before each value
    keys: list[str]


_layouts: dict[int, list[_Layout]] = {}
_count = 0


def decode_numbers(body: bytes) -> tuple[int, list[str], tuple[float, ...]] | None:
    """``(step, keys, values)`` of a Log body of numbers only, or None (see the module)."""
    for lay in _layouts.get(len(body), ()):
        r = lay.unpack(body)
        if r[2::2] == lay.chunks and r[0] == b"\x09":
            return r[1], lay.keys, r[3::2]
    lay = _learn(body)
    if lay is None:
        return None
    _remember(len(body), lay)
    r = lay.unpack(body)
    return r[1], lay.keys, r[3::2]


def _remember(length: int, lay: _Layout) -> None:
    global _count
    if _count >= MAX_LAYOUTS:
        _layouts.clear()
        _count = 0
    same = _layouts.setdefault(length, [])
    same.insert(0, lay)
    _count += 1
    if len(same) > MAX_PER_LENGTH:
        same.pop()
        _count -= 1


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (IndexError past the end)."""
    n = shift = 0
    while True:
        c = b[pos]
        pos += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _learn(body: bytes) -> _Layout | None:
    """The layout of ``body`` if it is step + number entries in the client's layout."""
    n = len(body)
    if n < _STEP_BYTES or body[0] != _T_STEP:
        return None
    pos = _STEP_BYTES
    chunks: list[bytes] = []
    keys: list[str] = []
    try:
        while pos < n:
            start = pos
            if body[pos] != _T_NUMBER:
                return None
            length, pos = _varint(body, pos + 1)
            end = pos + length
            if body[pos] != _T_KEY:
                return None
            key_len, pos = _varint(body, pos + 1)
            key = body[pos:pos + key_len].decode("utf-8")   # the general parse checks it too
            pos += key_len
            if body[pos] != _T_DOUBLE or pos + 1 + _VALUE_BYTES != end:
                return None
            pos += 1
            chunks.append(body[start:pos])
            keys.append(key)
            pos += _VALUE_BYTES
    except (IndexError, UnicodeDecodeError):
        return None
    if pos != n or len(set(keys)) != len(keys):
        return None
    fmt = "<1sQ" + "".join(f"{len(c)}sd" for c in chunks)
    return _Layout(struct.Struct(fmt).unpack, tuple(chunks), keys)


def clear() -> None:
    """Forget every layout (tests)."""
    global _count
    _layouts.clear()
    _count = 0


__all__ = ["decode_numbers", "clear", "MAX_PER_LENGTH", "MAX_LAYOUTS"]
