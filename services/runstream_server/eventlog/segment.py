"""On-disk format of the local event log: record framing, segment files, recovery scan.

A partition is a directory of segment files ``<base_offset:020d>.log``; a segment holds
consecutive records starting at its base offset. Every record is framed as::

    header (12 bytes, little-endian)
        magic      u16   0x5352 ("RS")
        version    u8    1
        flags      u8    0 (reserved)
        body_len   u32   length of everything after the header
        crc32      u32   zlib CRC-32 of the body
    body
        offset       u64   the record's offset (checked against its position on scan)
        timestamp_ms i64   when the log accepted the record
        key_len      u32
        key          key_len bytes
        value        body_len - 20 - key_len bytes

A sealed (rolled) segment gets a ``<base_offset:020d>.idx`` beside it: the end position
of every record, so reopening a large log does not re-read sealed segments. The index
is a cache: if it is missing or does not match its segment, the segment is scanned.

This module does blocking file I/O; ``local.py`` calls it from worker threads only.
"""

from __future__ import annotations

import mmap
import os
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .base import Record

MAGIC = 0x5352
VERSION = 1
HEADER = struct.Struct("<HBBII")  # magic, version, flags, body_len, crc32(body)
BODY_PREFIX = struct.Struct("<QqI")  # offset, timestamp_ms, key_len
HEADER_SIZE = HEADER.size  # 12
PREFIX_SIZE = BODY_PREFIX.size  # 20
RECORD_OVERHEAD = HEADER_SIZE + PREFIX_SIZE
MAX_BODY = 0xFFFFFFFF

IDX_MAGIC = b"RSIDX001"
IDX_HEADER = struct.Struct("<8sQQI4x")  # magic, segment size, record count, crc32(ends); 32 bytes

_crc32 = zlib.crc32
_pack_header = HEADER.pack
_pack_prefix = BODY_PREFIX.pack
_unpack_header = HEADER.unpack_from
_unpack_prefix = BODY_PREFIX.unpack_from


class CorruptSegmentError(Exception):
    """A segment holds bytes that are not a valid record where one is expected."""


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}.log"


def index_name(base_offset: int) -> str:
    return f"{base_offset:020d}.idx"


def encode_record(offset: int, timestamp_ms: int, key: bytes, value: bytes) -> tuple[bytes, ...]:
    """The framed record as parts to be joined (avoids copying key and value twice)."""
    prefix = _pack_prefix(offset, timestamp_ms, len(key))
    body_len = PREFIX_SIZE + len(key) + len(value)
    if body_len > MAX_BODY:
        raise ValueError(f"record of {body_len} bytes is too large")
    crc = _crc32(value, _crc32(key, _crc32(prefix)))
    return _pack_header(MAGIC, VERSION, 0, body_len, crc), prefix, key, value


def decode_records(
    partition: int, first_offset: int, count: int, data: bytes | memoryview
) -> list[Record]:
    """Decode ``count`` consecutive records starting at ``first_offset`` from ``data``."""
    out: list[Record] = []
    view = memoryview(data)
    pos = 0
    append = out.append
    for expected in range(first_offset, first_offset + count):
        try:
            magic, version, _flags, body_len, crc = _unpack_header(view, pos)
        except struct.error as e:
            raise CorruptSegmentError(f"short read at offset {expected}") from e
        body_start = pos + HEADER_SIZE
        body_end = body_start + body_len
        if (
            magic != MAGIC
            or version != VERSION
            or body_len < PREFIX_SIZE
            or body_end > len(view)
            or _crc32(view[body_start:body_end]) != crc
        ):
            raise CorruptSegmentError(f"corrupt record at offset {expected}")
        offset, ts, key_len = _unpack_prefix(view, body_start)
        if offset != expected or PREFIX_SIZE + key_len > body_len:
            raise CorruptSegmentError(f"corrupt record at offset {expected}")
        key_start = body_start + PREFIX_SIZE
        append(
            Record(
                partition,
                offset,
                bytes(view[key_start : key_start + key_len]),
                bytes(view[key_start + key_len : body_end]),
                ts,
            )
        )
        pos = body_end
    return out


def scan(path: Path, base_offset: int) -> tuple[array, int]:
    """Walk a segment, checking every record.

    Returns the end position of every valid record and the length of the valid
    prefix of the file; bytes after it are a torn or corrupt tail.
    """
    ends = array("Q")
    size = path.stat().st_size
    if size == 0:
        return ends, 0
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        view = memoryview(mm)
        try:
            pos = 0
            expected = base_offset
            while pos + HEADER_SIZE + PREFIX_SIZE <= size:
                magic, version, _flags, body_len, crc = _unpack_header(view, pos)
                body_start = pos + HEADER_SIZE
                body_end = body_start + body_len
                if (
                    magic != MAGIC
                    or version != VERSION
                    or body_len < PREFIX_SIZE
                    or body_end > size
                ):
                    break
                offset, _ts, key_len = _unpack_prefix(view, body_start)
                if (
                    offset != expected
                    or PREFIX_SIZE + key_len > body_len
                    or _crc32(view[body_start:body_end]) != crc
                ):
                    break
                ends.append(body_end)
                pos = body_end
                expected += 1
        finally:
            view.release()
    return ends, (ends[-1] if ends else 0)


def write_index(directory: Path, base_offset: int, ends: array, size: int) -> None:
    """Write the index of a sealed segment (best effort: it is only a cache, not fsynced)."""
    payload = ends.tobytes()
    header = IDX_HEADER.pack(IDX_MAGIC, size, len(ends), _crc32(payload))
    tmp = directory / (index_name(base_offset) + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(payload)
        os.replace(tmp, directory / index_name(base_offset))
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


def read_index(directory: Path, base_offset: int, segment_size: int) -> memoryview | None:
    """The ends of a sealed segment, mapped from its index file; None if absent or stale.

    The index is memory-mapped, so sealed segments cost page cache, not heap.
    """
    try:
        with open(directory / index_name(base_offset), "rb") as f:
            if os.fstat(f.fileno()).st_size < IDX_HEADER.size:
                return None
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    magic, size, count, crc = IDX_HEADER.unpack_from(mm)
    payload = memoryview(mm)[IDX_HEADER.size :]
    ok = (
        magic == IDX_MAGIC
        and size == segment_size
        and len(payload) == 8 * count
        and _crc32(payload) == crc
    )
    if ok:
        ends = payload.cast("Q")
        if (count and ends[-1] == size) or (not count and not size):
            return ends
        ends.release()
    payload.release()
    mm.close()
    return None


@dataclass(eq=False)
class Segment:
    """One segment file. ``ends[i]`` is the end position of record ``base + i``."""

    base: int
    path: Path
    ends: array | memoryview = field(default_factory=lambda: array("Q"))
    fd: int | None = None  # open for appending while this is the active segment

    @property
    def count(self) -> int:
        return len(self.ends)

    @property
    def size(self) -> int:
        return self.ends[-1] if self.ends else 0

    def byte_range(self, index: int, count: int) -> tuple[int, int]:
        """File positions spanning records ``base+index .. base+index+count-1``."""
        start = self.ends[index - 1] if index else 0
        return start, self.ends[index + count - 1]


def write_all(fd: int, parts: Sequence[bytes] | Iterable[bytes]) -> None:
    """Write the concatenation of ``parts`` to ``fd`` (one syscall in the common case)."""
    data = memoryview(b"".join(parts))
    while data:
        n = os.write(fd, data)
        data = data[n:]


def pread_exact(fd: int, length: int, position: int) -> bytes:
    data = os.pread(fd, length, position)
    if len(data) == length:
        return data
    chunks = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, position + got)
        if not more:
            raise CorruptSegmentError(f"segment ends at {position + got}, expected {length} bytes")
        chunks.append(more)
        got += len(more)
    return b"".join(chunks)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
