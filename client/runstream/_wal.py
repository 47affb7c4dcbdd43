"""The run's journal on disk: every event is in it before ``log()`` returns.

One directory per run, written by one process (the training process) and read by an
uploader, which may live in the same process (a thread) or in another one (a helper
process or ``runstream sync``)::

    LOCK                  flock held by the writing process while it has the journal open
    acked                 the acknowledged watermark: [b"RSAK"][seq u64][crc32 of seq u32]
    000000000001.wal      segments, numbered in write order
    000000000002.wal      ...

Segment: a 16-byte header (``b"RSWAL001"`` + 8 reserved bytes), then records::

    [len u32][crc u32][seq u64][payload: len bytes, one serialized runstream.v1.Event]

little-endian; ``crc`` is the CRC-32 of the payload, seeded with the seq folded to 32
bits (so the seq is covered too, at no cost). seq >= 1 and strictly increases within
the journal. An all-zero header marks the end of the written data. (A payload whose
first byte is 0x00, never the start of a protobuf message, is reserved for other
record kinds.) POSIX only (Linux, macOS): ``flock``, ``pread``/``pwrite``, ``mmap``.

Writing (``WalWriter.append``, the hot path). Segments are preallocated
(``posix_fallocate``, else zero-filled) and memory-mapped, so an append is two memory
copies (payload first, then the header) and no system call: ~1 µs, and it never
releases the GIL (a ``write()`` per event would, and a busy Python thread could then
hold the GIL for a whole switch interval, 5 ms, while ``log()`` waits for it). A full
segment is sealed (unmapped and truncated to its data) and the next one, usually
prepared beforehand by ``maintain()`` on the uploader thread, takes over.

What survives what. A copy into a shared file mapping is in the kernel's page cache the
moment it is made, so everything ``append`` returned from survives a kill of the
process (SIGKILL, segfault, OOM kill) and is visible to other processes at once. A
crash of the machine (power loss, kernel panic) can lose what the kernel had not yet
written back (up to ~30 s by default): that is out of scope, the server's reaper covers
the run, and ``flush()`` (msync) is there for callers who want more.

Recovery. Opening a journal for writing takes ``LOCK`` (a second live writer gets
``WalLockedError``), scans the newest segments and zero-fills a torn tail (a record
whose copy was cut short: its header is missing or its CRC fails), then appends after
the last good record.

Reading (``WalReader``, any process, one reader per journal). ``read(after_seq, ...)``
returns the records with a seq above ``after_seq`` in order; a record still being
copied, or a torn one, reads as "not yet" (once a later segment has records, the
segment is complete, so it is read to its end again and an unreadable record there is
skipped and counted in ``corrupt_skips``). ``ack(seq)`` persists the watermark
(``acked``: one 16-byte ``pwrite``, no fsync: losing it only means re-sending, which
the server tolerates) and deletes segments whose records are all acknowledged. After a
restart (or in ``runstream sync``) reading resumes after the persisted watermark;
``remove_if_acked`` deletes a closed journal that has nothing left to send.

Disk full and other write errors (policy). Only segment creation touches the
filesystem, so ENOSPC/EDQUOT/EIO show up there, never in the middle of a mapped
segment (preallocation guarantees the blocks; that is also why a full disk cannot turn
into SIGBUS). When no segment can be made, appends go to a bounded in-memory overflow
(``memory_limit_bytes``, default 16 MiB) that the in-process reader serves like the
disk (so an online run keeps delivering while the disk is full); beyond the bound the
oldest records that are not ``pinned`` are dropped and counted (``dropped_events``).
Every ``retry_interval_s`` a new segment is tried again and, once it works, the
overflow still un-acknowledged is written out first, in order. ``append`` never
raises ``OSError``.

Threads. ``append`` calls must not overlap (the run's lock serializes them, together
with taking the seq); ``maintain``, ``WalReader.read``/``ack`` may run on another
thread meanwhile. After ``fork`` the child's copy of a writer refuses appends (it would
write into the parent's journal) and lets go of the parent's lock and files.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import struct
import threading
import time
import weakref
import zlib

log = logging.getLogger("runstream")

SEGMENT_MAGIC = b"RSWAL001"
SEGMENT_HEADER = 16
RECORD_HEADER = 16
DEFAULT_SEGMENT_BYTES = 8 << 20
DEFAULT_MEMORY_LIMIT = 16 << 20
MAX_RECORD_BYTES = (1 << 31) - 1
SUFFIX = ".wal"

_REC = struct.Struct("<IIQ")
_ACK = struct.Struct("<4sQI")
_ACK_MAGIC = b"RSAK"
_crc32 = zlib.crc32
_pack_into = _REC.pack_into
_MASK32 = 0xFFFFFFFF


class WalLockedError(OSError):
    """Another live process is writing this journal."""


def record_crc(seq: int, data) -> int:
    return _crc32(data, (seq ^ (seq >> 32)) & _MASK32)


def segment_name(index: int) -> str:
    return f"{index:012d}{SUFFIX}"


def list_segments(path: str) -> list[tuple[int, str]]:
    """(index, file path) of the journal's segments, oldest first."""
    out = []
    try:
        names = os.listdir(path)
    except OSError:
        return []
    for n in names:
        if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit():
            out.append((int(n[:-len(SUFFIX)]), os.path.join(path, n)))
    out.sort()
    return out


def read_acked(path: str) -> int:
    """The persisted acknowledged watermark of the journal at ``path`` (0: none)."""
    try:
        with open(os.path.join(path, "acked"), "rb") as f:
            raw = f.read(_ACK.size)
    except OSError:
        return 0
    if len(raw) != _ACK.size:
        return 0
    magic, seq, crc = _ACK.unpack(raw)
    if magic != _ACK_MAGIC or crc != _crc32(raw[4:12]):
        return 0
    return seq


def scan(buf, start: int = SEGMENT_HEADER):
    """Walk the valid records of a segment's bytes from ``start``.

    Returns (records as (seq, offset, length) of the payload, end offset, last seq,
    reason) where reason is "end" (zero header or end of buffer) or "bad" (a
    partial header, a length beyond the buffer, or a CRC mismatch).
    """
    recs = []
    pos = start
    last = 0
    size = len(buf)
    while pos + RECORD_HEADER <= size:
        n, crc, seq = _REC.unpack_from(buf, pos)
        if n == 0 and crc == 0 and seq == 0:
            return recs, pos, last, "end"
        end = pos + RECORD_HEADER + n
        if end > size or seq <= last:
            return recs, pos, last, "bad"
        if record_crc(seq, memoryview(buf)[pos + RECORD_HEADER:end]) != crc:
            return recs, pos, last, "bad"
        recs.append((seq, pos + RECORD_HEADER, n))
        last = seq
        pos = end
    return recs, pos, last, ("end" if not any(buf[pos:]) else "bad")


def _preallocate(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except AttributeError:      # no posix_fallocate (macOS): write the zeros
        pass
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    chunk = bytes(1 << 20)
    off = os.fstat(fd).st_size
    while off < size:
        off += os.pwrite(fd, chunk[: min(len(chunk), size - off)], off)


class _Segment:
    __slots__ = ("index", "path", "fd", "mm", "pos", "limit")

    def __init__(self, index, path, fd, mm, pos, limit):
        self.index = index
        self.path = path
        self.fd = fd
        self.mm = mm
        self.pos = pos
        self.limit = limit


_writers: weakref.WeakSet[WalWriter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for w in list(_writers):
        w._disown_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class WalWriter:
    """The writing end of a run's journal. See the module docstring."""

    def __init__(self, path: str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
                 retry_interval_s: float = 1.0) -> None:
        if segment_bytes < SEGMENT_HEADER + RECORD_HEADER + 1:
            raise ValueError("segment_bytes too small")
        self.path = path
        self.segment_bytes = segment_bytes
        self.memory_limit_bytes = memory_limit_bytes
        self.retry_interval_s = retry_interval_s
        self._seg: _Segment | None = None
        self._spare: _Segment | None = None
        self._next_index = 1
        self._last_seq = 0
        self._lock = threading.Lock()
        self._overflow: collections.deque[tuple[int, bytes, bool]] = collections.deque()
        self._overflow_bytes = 0
        self._next_retry = 0.0
        self._failing = False
        self._opened = False
        self._lock_fd = -1
        self._forked = False
        self._closed = False
        self.dropped_events = 0
        self.dropped_bytes = 0
        self.disk_errors = 0
        self.last_error: OSError | None = None
        self.recovered_bytes = 0    # torn tail zero-filled at open
        try:
            self._open_locked()
        except WalLockedError:
            raise
        except OSError as e:
            self._disk_failed(e, "opening the journal")
        _writers.add(self)

    def _open_locked(self) -> None:
        """Directory, lock, recovery: before any segment is made (retried after a
        failure, so a journal that could not be scanned is never overwritten)."""
        os.makedirs(self.path, exist_ok=True)
        if self._lock_fd < 0:
            self._take_lock()
        self._recover()
        self._opened = True

    # -- the hot path ------------------------------------------------------------------
    def append(self, seq: int, data: bytes, pinned: bool = False) -> bool:
        """Journal one record. True: it is on disk (survives a kill of this process);
        False: it is in the bounded memory overflow (disk error) or the writer is
        unusable (closed, or a forked child's copy). Never raises OSError.

        ``pinned`` records (run start, finish, config...) are never dropped from the
        overflow. ``seq`` must be above every seq appended before (ValueError).
        """
        if seq <= self._last_seq:
            raise ValueError(f"seq {seq} is not above the last seq {self._last_seq}")
        seg = self._seg
        if seg is not None:
            pos = seg.pos
            n = len(data)
            end = pos + RECORD_HEADER + n
            if end <= seg.limit:
                mm = seg.mm
                try:
                    mm[pos + RECORD_HEADER:end] = data
                    _pack_into(mm, pos, n, _crc32(data, (seq ^ (seq >> 32)) & _MASK32), seq)
                except ValueError:          # closed under us (close() from another thread)
                    return self._append_slow(seq, data, pinned)
                seg.pos = end
                self._last_seq = seq
                return True
        return self._append_slow(seq, data, pinned)

    def _append_slow(self, seq: int, data: bytes, pinned: bool) -> bool:
        if len(data) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(data)} bytes is too large for the journal")
        with self._lock:
            if self._forked or self._closed:
                self.dropped_events += 1
                self.dropped_bytes += len(data)
                return False
            self._last_seq = seq
            need = RECORD_HEADER + len(data)
            seg = self._seg
            if seg is not None and seg.pos + need <= seg.limit:
                self._write_locked(seg, seq, data)      # room made by another thread
                return True
            if not self._overflow and (seg is not None
                                       or time.monotonic() >= self._next_retry):
                try:
                    self._roll_locked(need)
                    self._write_locked(self._seg, seq, data)
                    return True
                except OSError as e:
                    self._disk_failed(e, "starting a journal segment")
            elif self._overflow and time.monotonic() >= self._next_retry:
                try:
                    if self._restore_locked(need):
                        if self._seg.pos + need > self._seg.limit:
                            self._roll_locked(need)
                        self._write_locked(self._seg, seq, data)
                        return True
                except OSError as e:
                    self._disk_failed(e, "starting a journal segment")
            self._overflow_add_locked(seq, data, pinned)
            return False

    @staticmethod
    def _write_locked(seg: _Segment, seq: int, data: bytes) -> None:
        pos = seg.pos
        n = len(data)
        end = pos + RECORD_HEADER + n
        seg.mm[pos + RECORD_HEADER:end] = data
        _pack_into(seg.mm, pos, n, record_crc(seq, data), seq)
        seg.pos = end

    # -- segments ----------------------------------------------------------------------
    def _take_lock(self) -> None:
        fd = os.open(os.path.join(self.path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise WalLockedError(f"{self.path} is being written by another process") from None
        except OSError:
            os.close(fd)
            raise
        self._lock_fd = fd

    def _new_segment(self, min_bytes: int) -> _Segment:
        index = self._next_index
        size = max(self.segment_bytes, SEGMENT_HEADER + min_bytes)
        final = os.path.join(self.path, segment_name(index))
        tmp = final + ".tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        mm = None
        try:
            _preallocate(fd, size)
            os.pwrite(fd, SEGMENT_MAGIC + bytes(SEGMENT_HEADER - len(SEGMENT_MAGIC)), 0)
            mm = mmap.mmap(fd, size)
            os.rename(tmp, final)
        except BaseException:
            if mm is not None:
                mm.close()
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._next_index = index + 1
        return _Segment(index, final, fd, mm, SEGMENT_HEADER, size)

    def _seal(self, seg: _Segment) -> None:
        """Unmap a segment that will get no more records; cut it to its data."""
        try:
            seg.mm.close()
        finally:
            try:
                os.ftruncate(seg.fd, seg.pos)
            except OSError as e:
                log.debug("runstream journal: truncating %s: %s", seg.path, e)
            os.close(seg.fd)

    def _roll_locked(self, need: int) -> None:
        if not self._opened:
            self._open_locked()
            seg = self._seg
            if seg is not None and seg.limit - seg.pos >= need:
                return
        spare = self._spare
        self._spare = None
        if spare is not None and spare.limit - spare.pos < need:
            self._discard(spare)
            spare = None
        nxt = spare if spare is not None else self._new_segment(need)
        old = self._seg
        self._seg = nxt
        if old is not None:
            self._seal(old)

    def _discard(self, seg: _Segment) -> None:
        with contextlib.suppress(OSError, ValueError):
            seg.mm.close()
        with contextlib.suppress(OSError):
            os.close(seg.fd)
        with contextlib.suppress(OSError):
            os.unlink(seg.path)

    def maintain(self) -> None:
        """Background upkeep (uploader thread, every second or so): prepare the next
        segment so that ``append`` rarely makes one itself, and after a disk error
        retry the disk and write the overflow out."""
        with self._lock:
            if self._forked or self._closed:
                return
            if self._overflow or self._seg is None:
                if time.monotonic() >= self._next_retry:
                    self._restore_locked(0)
                return
            if self._spare is None and time.monotonic() >= self._next_retry:
                try:
                    self._spare = self._new_segment(0)
                except OSError as e:
                    # Not fatal yet: the active segment has room. Counted, retried.
                    self.disk_errors += 1
                    self.last_error = e
                    self._next_retry = time.monotonic() + self.retry_interval_s

    def _restore_locked(self, need: int) -> bool:
        """After a disk error: a fresh segment with the overflow written into it."""
        try:
            if self._seg is None or self._seg.limit - self._seg.pos < need:
                self._roll_locked(need)
            while self._overflow:
                seq, data, _pinned = self._overflow[0]
                seg = self._seg
                if seg.pos + RECORD_HEADER + len(data) > seg.limit:
                    self._roll_locked(RECORD_HEADER + len(data))
                    seg = self._seg
                self._write_locked(seg, seq, data)
                self._overflow.popleft()
                self._overflow_bytes -= len(data)
        except OSError as e:
            self._disk_failed(e, "writing the journal overflow")
            return False
        if self._failing:
            self._failing = False
            log.warning("runstream journal %s: writing to disk again", self.path)
        return True

    def _disk_failed(self, e: OSError, what: str) -> None:
        self._failing = True
        self.disk_errors += 1
        self.last_error = e
        self._next_retry = time.monotonic() + self.retry_interval_s
        if self.disk_errors == 1 or self._seg is not None:
            log.warning("runstream journal %s: %s failed (%s); keeping up to %d MiB of "
                        "events in memory until the disk works again", self.path, what, e,
                        self.memory_limit_bytes >> 20)
        if self._seg is not None:
            seg = self._seg
            self._seg = None
            with contextlib.suppress(OSError, ValueError):
                self._seal(seg)

    def _overflow_add_locked(self, seq: int, data: bytes, pinned: bool) -> None:
        self._overflow.append((seq, data, pinned))
        self._overflow_bytes += len(data)
        ov = self._overflow
        i = 0
        while self._overflow_bytes > self.memory_limit_bytes and i < len(ov) - 1:
            if ov[i][2]:
                i += 1
                continue
            _s, d, _p = ov[i]
            del ov[i]
            self._overflow_bytes -= len(d)
            self.dropped_events += 1
            self.dropped_bytes += len(d)
            if self.dropped_events == 1:
                log.warning("runstream journal %s: disk unusable and memory bound reached; "
                            "dropping the oldest events (counted in dropped_events)",
                            self.path)

    # -- recovery ----------------------------------------------------------------------
    def _recover(self) -> None:
        for n in os.listdir(self.path):
            if n.endswith(SUFFIX + ".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, n))
        segs = list_segments(self.path)
        if segs:
            self._next_index = segs[-1][0] + 1
        # The newest segments with data; empty ones after them were spares.
        data_segs = []
        for index, p in reversed(segs):
            with open(p, "rb") as f:
                buf = f.read()
            recs, end, last, _why = scan(buf) if buf[:8] == SEGMENT_MAGIC else ([], 0, 0, "bad")
            if not recs and not data_segs:
                os.unlink(p)            # an unused spare, or a segment torn at birth
                continue
            data_segs.append((index, p, buf, end, last))
            if len(data_segs) == 2:
                break
        if not data_segs:
            return
        index, p, buf, end, last = data_segs[0]
        self._last_seq = max(self._last_seq, last)
        if len(data_segs) == 2:
            _i, p2, buf2, end2, _l = data_segs[1]
            if len(buf2) > end2:
                os.truncate(p2, end2)   # sealed by a crash before its truncation
        if len(buf) == end:
            return                      # sealed: the next append starts a new segment
        tail = buf[end:]
        if tail.count(0) != len(tail):
            self.recovered_bytes = len(tail.rstrip(b"\0"))
            fd = os.open(p, os.O_RDWR)
            try:
                os.pwrite(fd, bytes(len(tail)), end)
            finally:
                os.close(fd)
            log.warning("runstream journal %s: cut a torn tail of %d bytes", p,
                        self.recovered_bytes)
        fd = os.open(p, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, len(buf))
        except BaseException:
            os.close(fd)
            raise
        self._seg = _Segment(index, p, fd, mm, end, len(buf))

    # -- state -------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def on_disk(self) -> bool:
        """False while appends go to the memory overflow."""
        return self._seg is not None and not self._overflow

    def overflow_after(self, after_seq: int, max_events: int, max_bytes: int):
        """Overflow records (seq, data) above ``after_seq`` (for an in-process reader)."""
        out = []
        size = 0
        with self._lock:
            for seq, data, _p in self._overflow:
                if seq <= after_seq:
                    continue
                if out and (len(out) >= max_events or size + len(data) > max_bytes):
                    break
                out.append((seq, data))
                size += len(data)
        return out

    def forget_overflow(self, acked: int) -> None:
        """The server has the overflow up to ``acked``: no need to keep or write it."""
        with self._lock:
            ov = self._overflow
            while ov and ov[0][0] <= acked:
                self._overflow_bytes -= len(ov.popleft()[1])

    def flush(self) -> None:
        """msync the active segment (only needed to survive a machine crash)."""
        seg = self._seg
        if seg is not None:
            with contextlib.suppress(OSError, ValueError):
                seg.mm.flush()

    def close(self) -> None:
        """Seal the active segment, remove the spare and release the lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._overflow and not self._forked:
                self._restore_locked(0)
                self.dropped_events += len(self._overflow)
                self.dropped_bytes += self._overflow_bytes
                self._overflow.clear()
                self._overflow_bytes = 0
            if self._forked:
                return
            if self._seg is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._seal(self._seg)
                self._seg = None
            if self._spare is not None:
                self._discard(self._spare)
                self._spare = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def _disown_after_fork(self) -> None:
        """In a forked child: never write the parent's journal, keep none of its fds."""
        self._forked = True
        self._lock = threading.Lock()
        for seg in (self._seg, self._spare):
            if seg is not None:
                with contextlib.suppress(OSError):
                    os.close(seg.fd)    # our copy only; the parent keeps its mapping
        self._seg = None
        self._spare = None
        self._overflow = collections.deque()
        if self._lock_fd >= 0:
            # Closing our copy does not release the parent's flock (no LOCK_UN here).
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> WalWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WalReader:
    """The reading end: records after a seq, acknowledgements, segment deletion.

    Works on a journal written by this process (pass ``writer`` to see its memory
    overflow too) or by another one. One reader per journal at a time.
    """

    def __init__(self, path: str, writer: WalWriter | None = None,
                 chunk_bytes: int = 1 << 20) -> None:
        self.path = path
        self.writer = writer
        self.chunk_bytes = chunk_bytes
        self._acked = read_acked(path)
        self._ack_fd = -1
        self._segs: list[list] = []           # [index, path, first_seq | None]
        self._fds: dict[int, int] = {}
        self._hints: collections.OrderedDict[int, tuple[int, int]] = collections.OrderedDict()
        self._cond = threading.Condition()
        self.corrupt_skips = 0

    @property
    def acked(self) -> int:
        return self._acked

    # -- segments ----------------------------------------------------------------------
    def _refresh(self) -> None:
        known = {s[0]: s for s in self._segs}
        segs = []
        for index, p in list_segments(self.path):
            s = known.get(index) or [index, p, None]
            if s[2] is None:
                s[2] = self._first_seq(s)
            segs.append(s)
        for index in set(known) - {s[0] for s in segs}:
            self._close_fd(index)
        self._segs = segs

    def _fd(self, seg) -> int:
        fd = self._fds.get(seg[0])
        if fd is None:
            fd = os.open(seg[1], os.O_RDONLY)
            self._fds[seg[0]] = fd
        return fd

    def _close_fd(self, index: int) -> None:
        fd = self._fds.pop(index, None)
        if fd is not None:
            os.close(fd)

    def _first_seq(self, seg) -> int | None:
        """The seq of the segment's first record; None while it has no complete one
        (a header caught mid-copy must not pass for a seq)."""
        try:
            fd = self._fd(seg)
            raw = os.pread(fd, SEGMENT_HEADER + RECORD_HEADER, 0)
            if len(raw) < SEGMENT_HEADER + RECORD_HEADER or raw[:8] != SEGMENT_MAGIC:
                return None
            n, crc, seq = _REC.unpack_from(raw, SEGMENT_HEADER)
            if seq == 0:
                return None
            data = os.pread(fd, n, SEGMENT_HEADER + RECORD_HEADER)
        except OSError:
            return None
        return seq if len(data) == n and record_crc(seq, data) == crc else None

    def _locate(self, after_seq: int) -> tuple[int, int] | None:
        """(segment index, offset) where reading after ``after_seq`` starts: the
        newest segment whose first seq is <= after_seq + 1, from its beginning."""
        start = None
        for index, _p, first in self._segs:
            if first is None:
                continue
            if start is None or first <= after_seq + 1:
                start = index
            else:
                break
        return None if start is None else (start, SEGMENT_HEADER)

    # -- reading -----------------------------------------------------------------------
    def read(self, after_seq: int, max_events: int = 10_000,
             max_bytes: int = 4 << 20) -> list[tuple[int, bytes]]:
        """Up to ``max_events`` records (at least one whatever its size, then up to
        ``max_bytes`` of payload) with seq > ``after_seq``, in order."""
        with self._cond:
            return self._read_locked(after_seq, max_events, max_bytes)

    def _read_locked(self, after_seq, max_events, max_bytes):
        out: list[tuple[int, bytes]] = []
        pos = self._hints.get(after_seq)
        if pos is None or not any(s[0] == pos[0] for s in self._segs):
            self._refresh()
            pos = self._locate(after_seq)
        size = 0
        if pos is not None:
            index, offset = pos
            refreshed = False
            while True:
                seg = next((s for s in self._segs if s[0] == index), None)
                if seg is None:
                    break
                offset, size, why = self._read_segment(seg, offset, after_seq, out,
                                                       max_events, max_bytes, size)
                if why == "full":
                    break
                later = [s for s in self._segs if s[0] > index and s[2] is not None]
                if not later and not refreshed:
                    self._refresh()
                    refreshed = True
                    later = [s for s in self._segs if s[0] > index and s[2] is not None]
                if not later:
                    break
                # A later segment has records, so this one is complete now (the writer
                # seals a segment before it writes the next): what was its end a moment
                # ago may have grown since. Read on from here once more.
                offset, size, why = self._read_segment(seg, offset, after_seq, out,
                                                       max_events, max_bytes, size)
                if why == "full":
                    break
                if why == "bad":
                    self.corrupt_skips += 1
                    log.warning("runstream journal %s: unreadable record at %d, skipping "
                                "to the next segment", seg[1], offset)
                index, offset = later[0][0], SEGMENT_HEADER
            pos = (index, offset)
            # Where reading after the last record seen goes on (also when nothing was
            # new: the next call then starts at the end instead of re-scanning).
            self._hint(out[-1][0] if out else after_seq, pos)
        w = self.writer
        if w is not None and w._overflow and len(out) < max_events:
            last = out[-1][0] if out else after_seq
            more = w.overflow_after(last, max_events - len(out),
                                    max(1, max_bytes - size) if out else max_bytes)
            if more:
                out += more
                if pos is not None:
                    # Overflow written to disk later lands after pos: scanning from
                    # there (skipping what is <= the seq asked for) stays right.
                    self._hint(more[-1][0], pos)
        return out

    def _hint(self, seq: int, pos: tuple[int, int]) -> None:
        self._hints[seq] = pos
        self._hints.move_to_end(seq)
        while len(self._hints) > 256:
            self._hints.popitem(last=False)

    def _read_segment(self, seg, offset, after_seq, out, max_events, max_bytes, size):
        """Append records of one segment from ``offset``; (offset, size, why) with why
        "full" (limits reached), "end" (no more data for now) or "bad"."""
        try:
            fd = self._fd(seg)
        except OSError:
            return offset, size, "end"
        # Start small: a poll that finds nothing new (the usual case every linger
        # interval) should not copy a megabyte of zeros out of the preallocated tail.
        want = min(self.chunk_bytes, 64 << 10)
        while True:
            buf = os.pread(fd, want, offset)
            pos = 0
            blen = len(buf)
            while pos + RECORD_HEADER <= blen:
                n, crc, seq = _REC.unpack_from(buf, pos)
                if n == 0 and crc == 0 and seq == 0:
                    return offset + pos, size, "end"
                end = pos + RECORD_HEADER + n
                if end > blen:
                    break
                if seq > after_seq:
                    if out and (len(out) >= max_events or size + n > max_bytes):
                        return offset + pos, size, "full"
                    data = buf[pos + RECORD_HEADER:end]
                    if record_crc(seq, data) != crc:
                        return offset + pos, size, "bad"
                    out.append((seq, data))
                    size += n
                elif record_crc(seq, memoryview(buf)[pos + RECORD_HEADER:end]) != crc:
                    # Checked too: a header caught mid-copy can show a seq of 0.
                    return offset + pos, size, "bad"
                pos = end
            if blen < want:
                # End of file: anything left is a partial record (or zeros).
                return offset + pos, size, ("end" if not any(buf[pos:]) else "bad")
            if pos == 0:
                want *= 2               # one record larger than the chunk
            else:
                want = min(want * 2, max(want, self.chunk_bytes))
            offset += pos

    # -- acknowledgements ----------------------------------------------------------------
    def ack(self, seq: int) -> None:
        """The server has every record up to ``seq``: persist the watermark, delete
        the segments it covers, forget the writer's overflow up to it."""
        with self._cond:
            self._ack_locked(seq)

    def _ack_locked(self, seq: int) -> None:
        if seq <= self._acked:
            return
        self._acked = seq
        raw = struct.pack("<Q", seq)
        try:
            if self._ack_fd < 0:
                self._ack_fd = os.open(os.path.join(self.path, "acked"),
                                       os.O_WRONLY | os.O_CREAT, 0o644)
            os.pwrite(self._ack_fd, _ACK.pack(_ACK_MAGIC, seq, _crc32(raw)), 0)
        except OSError as e:
            log.debug("runstream journal %s: persisting acked: %s", self.path, e)
        self._cond.notify_all()
        if self.writer is not None:
            self.writer.forget_overflow(seq)
        self._delete_acked()

    def _delete_acked(self) -> None:
        segs = [s for s in self._segs if s[2] is not None]
        for cur, nxt in zip(segs, segs[1:], strict=False):
            if nxt[2] > self._acked + 1:
                break
            self._close_fd(cur[0])
            try:
                os.unlink(cur[1])
            except FileNotFoundError:
                pass
            except OSError as e:
                log.debug("runstream journal: deleting %s: %s", cur[1], e)
                break
            self._segs.remove(cur)
            for k in [k for k, v in self._hints.items() if v[0] == cur[0]]:
                del self._hints[k]

    def wait_acked(self, seq: int, timeout: float) -> bool:
        """Block until the watermark reaches ``seq`` (acks made by this reader)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._acked >= seq, timeout)

    def close(self) -> None:
        for index in list(self._fds):
            self._close_fd(index)
        if self._ack_fd >= 0:
            os.close(self._ack_fd)
            self._ack_fd = -1


def remove_if_acked(path: str) -> bool:
    """Delete a closed journal whose records are all acknowledged (True if removed).
    Keeps it when a writer still holds it or anything is un-acknowledged."""
    try:
        fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        acked = read_acked(path)
        last = 0
        for _i, p in list_segments(path):
            with open(p, "rb") as f:
                buf = f.read()
            if buf[:8] == SEGMENT_MAGIC:
                _r, _e, lseq, _w = scan(buf)
                last = max(last, lseq)
        if last > acked:
            return False
        for n in os.listdir(path):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, n))
        with contextlib.suppress(OSError):
            os.rmdir(path)
        return True
    finally:
        os.close(fd)
