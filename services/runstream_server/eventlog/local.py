"""The local event log of the embedded deployment: partitioned, append-only segment files.

Layout under the log directory::

    LOCK                       flock held while a process has the log open
    meta.json                  {"format": 1, "partitions": N}; N is fixed at creation
    p-<N>/<base:020d>.log      segment files (framing: see ``segment.py``)
    p-<N>/<base:020d>.idx      index of a sealed segment (a cache, rebuilt if missing)
    groups/<group>.json        committed offsets of a consumer group (atomic replace)

Opening a log with a different partition count than the one stored raises
``ConfigError``: partitions decide where a run's events live, so the count can never
change silently.

Writes. Appends are routed by ``partition_for(run_id)`` (Kafka's partitioner) and
handed to one I/O thread. Appends that arrive while it is busy are written together
(group commit): one ``write`` per partition touched, then, with ``fsync="always"``, one
``fdatasync`` per partition file touched, and only then do all of them return. So
many concurrent appends share one fsync.

fsync policies, the trade-off:

* ``always`` (default): ``append`` returns after the data reached the disk. Nothing
  acknowledged is lost, even if the machine loses power.
* ``interval``: ``append`` returns after ``write``; the files are fsynced every
  ``fsync_interval_s`` (when something was written). A process crash (``kill -9``)
  still loses nothing, since the data is in the OS page cache; a machine crash or
  power loss can lose the last interval of acknowledged records.
* ``never``: like ``interval`` but flushing is left to the OS (typically ~30 s).

Segment files are fsynced when they are rolled and when the log is closed, whatever
the policy, so only the newest segment of a partition can have a torn tail. On open,
the newest segment of every partition is scanned and a torn or corrupt tail (a partial
write before a crash) is truncated away. Corruption anywhere else raises
``ConfigError``: that is damage an operator must look at, not a crash to recover from.
If a machine crash with ``interval``/``never`` lost records a group had already
committed, the group's position is clamped to the end of the log.

Reads. Consumers only see records that are durable by the policy. A poll reads the
byte range of a run of consecutive records with one ``pread`` per segment, in a worker
thread, and is woken by appends instead of sleeping. Consumer groups work within this
one process: the members of a group split the partitions round-robin in join order,
reassigned whenever a member joins or leaves; a lone member gets all partitions.

Failures. Every file error is raised as ``RetryableError``, never left to crash the
process. A failed write is rolled back (truncated) so the log stays consistent; a
failed fsync leaves the state of the page cache unknown, so the log then refuses all
appends until it is reopened (which re-scans the files).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import functools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..common.errors import ConfigError, PermanentError, RetryableError
from ..common.partitioning import partition_for
from .base import EventLog, LogConsumer, PartitionsCallback, Record
from .segment import (
    MAX_BODY,
    PREFIX_SIZE,
    RECORD_OVERHEAD,
    CorruptSegmentError,
    Segment,
    decode_records,
    encode_record,
    fsync_dir,
    index_name,
    pread_exact,
    read_index,
    scan,
    segment_name,
    write_all,
    write_index,
)

__all__ = ["FSYNC_POLICIES", "LocalEventLog"]

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "interval", "never")
FORMAT_VERSION = 1
MAX_POLL_BYTES = 16 << 20  # bytes read by one poll (at least one record)
MAX_KEY_VALUE_BYTES = MAX_BODY - PREFIX_SIZE
_MAX_GROUP_NAME = 200

_fdatasync = getattr(os, "fdatasync", os.fsync)


@functools.lru_cache(maxsize=1 << 16)
def _route(key: bytes, partitions: int) -> int:
    try:
        run_id = key.decode()
    except UnicodeDecodeError as e:
        raise PermanentError(f"event-log key {key!r} is not UTF-8") from e
    return partition_for(run_id, partitions)


def _group_file_name(group: str) -> str:
    return urllib.parse.quote(group, safe="") + ".json"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` so that it holds either the old or the new content after a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, (data,))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _as_retryable(what: str, e: BaseException) -> RetryableError:
    err = RetryableError(f"event log: {what}: {e}")
    err.__cause__ = e
    return err


class _Partition:
    __slots__ = ("index", "dir", "segments", "bases", "next_offset", "visible", "dirty")

    def __init__(self, index: int, directory: Path, segments: list[Segment]) -> None:
        self.index = index
        self.dir = directory
        self.segments = segments
        self.bases = [s.base for s in segments]
        last = segments[-1]
        self.next_offset = last.base + last.count  # written (I/O thread)
        self.visible = self.next_offset  # durable by the policy, readable (event loop)
        self.dirty = False  # written since the last fsync ("interval"/"never")

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def start(self) -> int:
        return self.segments[0].base

    def segment_for(self, offset: int) -> Segment:
        return self.segments[bisect.bisect_right(self.bases, offset) - 1]


class _PendingAppend:
    __slots__ = ("records", "parts", "future", "results", "error")

    def __init__(self, records, parts, future) -> None:
        self.records = records
        self.parts = parts
        self.future = future
        self.results: list[tuple[int, int] | None] = []
        self.error: BaseException | None = None


class LocalEventLog(EventLog):
    """Durable, partitioned event log in local segment files (see the module docstring)."""

    def __init__(
        self,
        directory: Path | str,
        partitions: int = 8,
        fsync: str = "always",
        fsync_interval_s: float = 0.05,
        segment_bytes: int = 64 << 20,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync policy must be one of {FSYNC_POLICIES}, not {fsync!r}")
        if not isinstance(partitions, int) or partitions < 1:
            raise ConfigError(f"partitions must be a positive integer, not {partitions!r}")
        if not fsync_interval_s > 0:
            raise ConfigError(f"fsync_interval_s must be > 0, not {fsync_interval_s!r}")
        if not isinstance(segment_bytes, int) or segment_bytes < 1024:
            raise ConfigError(f"segment_bytes must be at least 1024, not {segment_bytes!r}")
        self._dir = Path(directory)
        self._partitions = partitions
        self._fsync = fsync
        self._fsync_interval_s = float(fsync_interval_s)
        self._segment_bytes = segment_bytes

        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: ThreadPoolExecutor | None = None  # the one writer thread
        self._readers: ThreadPoolExecutor | None = None  # reads and group-offset files
        self._fsyncers: ThreadPoolExecutor | None = None  # parallel fsyncs of one group
        self._lock_fd: int | None = None
        self._parts: list[_Partition] = []
        self._started = False
        self._closing = False
        self._closed = False
        self._failure: BaseException | None = None  # fatal write-path error

        self._pending: list[_PendingAppend] = []
        self._writer: asyncio.Task | None = None
        self._fsync_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task] = set()
        self._waiters: set[asyncio.Future] = set()

        self._committed: dict[str, dict[int, int]] = {}
        self._group_locks: dict[str, asyncio.Lock] = {}
        self._members: dict[str, list[_LocalConsumer]] = {}
        self._consumers: set[_LocalConsumer] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def partitions(self) -> int:
        return self._partitions

    @property
    def directory(self) -> Path:
        return self._dir

    async def start(self) -> None:
        if self._closing or self._closed:
            raise RetryableError("event log: closed; create a new LocalEventLog to reopen")
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="runstream-eventlog-io")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="runstream-eventlog-read")
        if self._fsync == "always" and self._partitions > 1:
            self._fsyncers = ThreadPoolExecutor(
                min(self._partitions, 8), thread_name_prefix="runstream-eventlog-fsync"
            )
        try:
            await self._loop.run_in_executor(self._io, self._open_sync)
        except BaseException as e:
            await self._loop.run_in_executor(self._io, self._release_sync)
            self._shutdown_executors()
            if isinstance(e, OSError):
                raise _as_retryable(f"cannot open {self._dir}", e) from e
            raise
        self._started = True

    async def close(self) -> None:
        if self._closed or self._closing:
            return
        self._closing = True
        if not self._started:
            self._closed = True
            return
        for consumer in list(self._consumers):
            await consumer.close()
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._fsync_timer is not None:
            self._fsync_timer.cancel()
            self._fsync_timer = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        assert self._loop is not None and self._io is not None and self._readers is not None
        await self._loop.run_in_executor(self._io, self._release_sync)
        self._shutdown_executors()
        self._parts = []
        self._closed = True
        self._notify()

    def _shutdown_executors(self) -> None:
        for executor in (self._io, self._readers, self._fsyncers):
            if executor is not None:
                executor.shutdown(wait=False)

    def _open_sync(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RetryableError(
                f"event log {self._dir} is open in another process or LocalEventLog"
            ) from e
        meta_path = self._dir / "meta.json"
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_bytes())
                stored = int(meta["partitions"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"unreadable event-log metadata {meta_path}: {e}") from e
            if meta.get("format") != FORMAT_VERSION:
                raise ConfigError(f"{meta_path}: unsupported format {meta.get('format')!r}")
            if stored != self._partitions:
                raise ConfigError(
                    f"event log {self._dir} has {stored} partitions; it cannot be opened with "
                    f"{self._partitions} (the partition count is fixed when the log is created)"
                )
        else:
            meta = {"format": FORMAT_VERSION, "partitions": self._partitions}
            _atomic_write(meta_path, json.dumps(meta).encode())
        groups = self._dir / "groups"
        groups.mkdir(exist_ok=True)
        for path in groups.glob("*.json"):
            try:
                data = json.loads(path.read_bytes())
                offsets = {int(p): int(o) for p, o in data["offsets"].items()}
                self._committed[str(data["group"])] = offsets
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"unreadable committed offsets {path}: {e}") from e
        self._parts = []
        for p in range(self._partitions):  # appended one by one so a failure releases them
            self._parts.append(self._open_partition(p))
        fsync_dir(self._dir)

    def _open_partition(self, index: int) -> _Partition:
        directory = self._dir / f"p-{index}"
        created = not directory.exists()
        directory.mkdir(exist_ok=True)
        files = sorted(
            (int(path.stem), path)
            for path in directory.glob("*.log")
            if path.stem.isdigit() and len(path.stem) == 20
        )
        segments: list[Segment] = []
        for i, (base, path) in enumerate(files):
            if segments and base != segments[-1].base + segments[-1].count:
                raise ConfigError(
                    f"{path}: segment starts at offset {base}, but the previous one ends at "
                    f"{segments[-1].base + segments[-1].count}"
                )
            size = path.stat().st_size
            is_last = i == len(files) - 1
            ends = None if is_last else read_index(directory, base, size)
            if ends is None:
                ends, valid = scan(path, base)
                if valid < size:
                    later = files[i + 1 :]
                    if any(p.stat().st_size for _, p in later):
                        raise ConfigError(
                            f"corrupt record in {path} at byte {valid} of {size}, and it is "
                            "not the tail of the partition; refusing to open the event log"
                        )
                    log.warning(
                        "event log: truncating torn tail of %s: %d bytes after byte %d",
                        path,
                        size - valid,
                        valid,
                    )
                    os.truncate(path, valid)
                    _fsync_path(path)
                    for later_base, later_path in later:
                        later_path.unlink()
                        with contextlib.suppress(FileNotFoundError):
                            (directory / index_name(later_base)).unlink()
                    segments.append(Segment(base, path, ends))
                    break
                if not is_last:
                    write_index(directory, base, ends, size)
            segments.append(Segment(base, path, ends))
        for stale in directory.glob("*.tmp"):
            stale.unlink()
        if not segments:
            segments.append(Segment(0, directory / segment_name(0)))
        active = segments[-1]
        active.fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if created or not files:
            fsync_dir(directory)
        return _Partition(index, directory, segments)

    def _release_sync(self) -> None:
        for part in self._parts:
            fd = part.active.fd
            if fd is None:
                continue
            try:
                if self._failure is None:
                    _fdatasync(fd)
            except OSError as e:
                log.error("event log: fsync of %s at close failed: %s", part.active.path, e)
            finally:
                os.close(fd)
                part.active.fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ appends

    def _check_writable(self) -> None:
        if not self._started or self._closing:
            raise RetryableError("event log: not open")
        if self._failure is not None:
            raise RetryableError(
                f"event log: a write to disk failed ({self._failure}); reopen the log"
            )

    async def append(self, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        self._check_writable()
        if not records:
            return []
        n = self._partitions
        parts = []
        for key, value in records:
            if len(key) + len(value) > MAX_KEY_VALUE_BYTES:
                raise PermanentError(f"record of {len(key) + len(value)} bytes is too large")
            parts.append(_route(key if type(key) is bytes else bytes(key), n))
        assert self._loop is not None
        future = self._loop.create_future()
        self._pending.append(_PendingAppend(records, parts, future))
        if self._writer is None:
            self._writer = self._loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Write pending appends, one group at a time, until none are left."""
        assert self._loop is not None
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    updates = await self._loop.run_in_executor(self._io, self._write_group, batch)
                except Exception as e:  # anything here must reach the callers
                    log.exception("event log: write group failed")
                    updates = {}
                    for item in batch:
                        item.error = e
                for p, end in updates.items():
                    part = self._parts[p]
                    if end > part.visible:
                        part.visible = end
                for item in batch:
                    if item.future.done():
                        continue
                    if item.error is not None:
                        item.future.set_exception(_as_retryable("append failed", item.error))
                    else:
                        item.future.set_result(item.results)
                if updates:
                    self._notify()
                    if self._fsync == "interval" and self._fsync_timer is None:
                        self._fsync_timer = self._loop.call_later(
                            self._fsync_interval_s, self._interval_fsync
                        )
        finally:
            self._writer = None

    def _write_group(self, batch: list[_PendingAppend]) -> dict[int, int]:
        """I/O thread: write one group of appends; return the new visible end per partition."""
        ts = time.time_ns() // 1_000_000
        by_part: dict[int, list[tuple[_PendingAppend, int]]] = {}
        for item in batch:
            item.results = [None] * len(item.records)
            for i, p in enumerate(item.parts):
                entries = by_part.get(p)
                if entries is None:
                    by_part[p] = entries = []
                entries.append((item, i))
        touched: list[tuple[_Partition, list[tuple[_PendingAppend, int]]]] = []
        for p, entries in by_part.items():
            part = self._parts[p]
            before = part.next_offset
            if self._failure is not None:
                _fail(entries, self._failure)
                continue
            try:
                self._write_partition(part, entries, ts)
            except OSError as e:
                _fail(entries, e)
            if part.next_offset > before:
                touched.append((part, entries))
        updates: dict[int, int] = {}
        if self._fsync == "always":
            fds = [part.active.fd for part, _ in touched]
            if len(fds) > 1 and self._fsyncers is not None:
                # in parallel: concurrent fsyncs share the file system's journal commits
                errors = list(self._fsyncers.map(_try_fdatasync, fds))
            else:
                errors = [_try_fdatasync(fd) for fd in fds]
        else:
            errors = [None] * len(touched)
            for part, _ in touched:
                part.dirty = True
        for (part, entries), error in zip(touched, errors, strict=True):
            if error is not None:
                self._failure = error
                log.error("event log: fsync of %s failed: %s", part.active.path, error)
                _fail(entries, error, force=True)
            else:
                updates[part.index] = part.next_offset
        return updates

    def _write_partition(
        self, part: _Partition, entries: list[tuple[_PendingAppend, int]], ts: int
    ) -> None:
        limit = self._segment_bytes
        size = part.active.size
        offset = part.next_offset
        buf: list[bytes] = []
        buf_len = 0
        ends: list[int] = []
        refs: list[tuple[_PendingAppend, int]] = []
        for item, i in entries:
            key, value = item.records[i]
            record_len = RECORD_OVERHEAD + len(key) + len(value)
            if size + buf_len + record_len > limit and size + buf_len > 0:
                if buf:
                    self._flush(part, buf, ends, refs)
                    buf, buf_len, ends, refs = [], 0, [], []
                self._roll(part)
                size = 0
            buf.extend(encode_record(offset, ts, key, value))
            buf_len += record_len
            ends.append(size + buf_len)
            refs.append((item, i))
            offset += 1
        if buf:
            self._flush(part, buf, ends, refs)

    def _flush(
        self,
        part: _Partition,
        buf: list[bytes],
        ends: list[int],
        refs: list[tuple[_PendingAppend, int]],
    ) -> None:
        seg = part.active
        try:
            write_all(seg.fd, buf)
        except OSError:
            try:  # roll back a partial write so the next record starts on a boundary
                os.ftruncate(seg.fd, seg.size)
            except OSError as e2:
                self._failure = e2
            raise
        seg.ends.extend(ends)
        offset = part.next_offset
        index = part.index
        for item, i in refs:
            item.results[i] = (index, offset)
            offset += 1
        part.next_offset = offset

    def _roll(self, part: _Partition) -> None:
        old = part.active
        base = part.next_offset
        path = part.dir / segment_name(base)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            _fdatasync(old.fd)
            if self._fsync != "never":
                fsync_dir(part.dir)
        except OSError as e:
            os.close(fd)
            self._failure = e
            raise
        os.close(old.fd)
        old.fd = None
        part.dirty = False
        write_index(part.dir, old.base, old.ends, old.size)
        mapped = read_index(part.dir, old.base, old.size)
        if mapped is not None:
            old.ends = mapped
        part.segments.append(Segment(base, path, fd=fd))
        part.bases.append(base)

    def _interval_fsync(self) -> None:
        self._fsync_timer = None
        if self._closing or self._io is None or self._loop is None:
            return
        task = self._loop.create_task(self._run_interval_fsync())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _run_interval_fsync(self) -> None:
        assert self._loop is not None
        await self._loop.run_in_executor(self._io, self._fsync_dirty)

    def _fsync_dirty(self) -> None:
        for part in self._parts:
            if not part.dirty or part.active.fd is None:
                continue
            part.dirty = False
            try:
                _fdatasync(part.active.fd)
            except OSError as e:
                self._failure = e
                log.error("event log: fsync of %s failed: %s", part.active.path, e)

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def end_offsets(self) -> dict[int, int]:
        if not self._started or self._closing:
            raise RetryableError("event log: not open")
        return {part.index: part.visible for part in self._parts}

    # ------------------------------------------------------------------ consumers

    def consumer(self, group: str, *, from_beginning_if_new: bool = True,
                 on_revoke: PartitionsCallback | None = None,
                 on_assign: PartitionsCallback | None = None) -> LogConsumer:
        if not isinstance(group, str) or not group or len(group) > _MAX_GROUP_NAME:
            raise ValueError(f"group must be a non-empty string of at most {_MAX_GROUP_NAME}")
        return _LocalConsumer(self, group, from_beginning_if_new, on_revoke, on_assign)

    def _join(self, consumer: _LocalConsumer) -> None:
        self._consumers.add(consumer)
        self._members.setdefault(consumer.group, []).append(consumer)
        self._rebalance(consumer.group)

    def _leave(self, consumer: _LocalConsumer) -> None:
        self._consumers.discard(consumer)
        members = self._members.get(consumer.group, [])
        if consumer in members:
            members.remove(consumer)
        if not members:
            self._members.pop(consumer.group, None)
        elif not self._closing:
            self._rebalance(consumer.group)

    def _rebalance(self, group: str) -> None:
        members = self._members[group]
        n = len(members)
        for i, member in enumerate(members):
            member._assign({p for p in range(self._partitions) if p % n == i})

    async def _commit(self, group: str, offsets: dict[int, int]) -> None:
        assert self._loop is not None
        lock = self._group_locks.get(group)
        if lock is None:
            lock = self._group_locks[group] = asyncio.Lock()
        async with lock:
            merged = {**self._committed.get(group, {}), **offsets}
            body = {"group": group, "offsets": {str(p): o for p, o in sorted(merged.items())}}
            path = self._dir / "groups" / _group_file_name(group)
            try:
                await self._loop.run_in_executor(
                    self._readers, _atomic_write, path, json.dumps(body).encode()
                )
            except OSError as e:
                raise _as_retryable(f"commit of group {group!r} failed", e) from e
            self._committed[group] = merged


def _fail(entries, error: BaseException, force: bool = False) -> None:
    """Mark the appends of ``entries`` failed: all of them, or those with unwritten records."""
    for item, i in entries:
        if item.error is None and (force or item.results[i] is None):
            item.error = error


def _try_fdatasync(fd: int) -> OSError | None:
    try:
        _fdatasync(fd)
    except OSError as e:
        return e
    return None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalConsumer(LogConsumer):
    def __init__(self, log_: LocalEventLog, group: str, from_beginning_if_new: bool,
                 on_revoke: PartitionsCallback | None = None,
                 on_assign: PartitionsCallback | None = None) -> None:
        self._log = log_
        self.group = group
        # Rebalances happen synchronously on join/leave; the callbacks run at the start
        # of this member's next poll(), as aiokafka runs them inside getmany().
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._pending_revoked: set[int] = set()
        self._pending_assigned: set[int] = set()
        self._from_beginning = from_beginning_if_new
        self._assignment: set[int] = set()
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        self._fds: dict[int, tuple[int, int]] = {}  # partition -> (segment base, fd)
        self._poll_lock = asyncio.Lock()
        self._waiter: asyncio.Future | None = None
        self._rr = 0
        self._started = False
        self._closed = False

    def _check_active(self) -> None:
        if self._closed:
            raise RetryableError("event-log consumer: closed")
        if not self._started:
            raise RetryableError("event-log consumer: not started")
        if self._log._closing or not self._log._started:
            raise RetryableError("event log: not open")

    async def start(self) -> None:
        if self._closed:
            raise RetryableError("event-log consumer: closed")
        if self._started:
            return
        if self._log._closing or not self._log._started:
            raise RetryableError("event log: not open")
        self._started = True
        self._log._join(self)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._log._leave(self)
        self._wake()
        async with self._poll_lock:
            for _, fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
        self._assignment = set()
        self._positions = {}

    def _assign(self, partitions: set[int]) -> None:
        old = self._assignment
        self._pending_revoked |= old - partitions
        self._pending_assigned = (self._pending_assigned | (partitions - old)) & partitions
        for p in old - partitions:
            self._positions.pop(p, None)
        committed = self._log._committed.get(self.group, {})
        for p in partitions - old:
            part = self._log._parts[p]
            offset = committed.get(p)
            if offset is None:
                offset = part.start if self._from_beginning else part.visible
            self._positions[p] = min(max(offset, part.start), part.visible)
        self._assignment = set(partitions)
        self._paused &= self._assignment
        self._wake()

    async def _run_callbacks(self) -> None:
        revoked, self._pending_revoked = self._pending_revoked, set()
        assigned, self._pending_assigned = self._pending_assigned, set()
        if revoked and self._on_revoke is not None:
            await self._on_revoke(revoked)
        if assigned and self._on_assign is not None:
            await self._on_assign(assigned)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def assignment(self) -> set[int]:
        return set(self._assignment)

    def _check_assigned(self, partition: int) -> None:
        if partition not in self._assignment:
            raise ValueError(f"partition {partition} is not assigned to this consumer")

    def position(self, partition: int) -> int:
        self._check_assigned(partition)
        return self._positions[partition]

    async def seek(self, partition: int, offset: int) -> None:
        """Continue from ``offset``; an offset beyond the end of the log means the end."""
        self._check_active()
        self._check_assigned(partition)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, not {offset!r}")
        part = self._log._parts[partition]
        self._positions[partition] = min(max(offset, part.start), part.visible)
        self._wake()

    def pause(self, partitions: set[int]) -> None:
        self._paused |= set(partitions) & self._assignment

    def resume(self, partitions: set[int]) -> None:
        self._paused -= set(partitions)
        self._wake()

    async def commit(self, offsets: dict[int, int]) -> None:
        """Commit next offsets; partitions no longer assigned (rebalanced) are refused."""
        self._check_active()
        clean: dict[int, int] = {}
        for p, o in offsets.items():
            if p not in self._assignment:
                raise RetryableError(
                    f"event-log consumer: partition {p} is not assigned to this consumer "
                    "(the group rebalanced); nothing was committed"
                )
            if not isinstance(o, int) or o < 0:
                raise ValueError(f"offset must be a non-negative integer, not {o!r}")
            clean[p] = o
        if clean:
            await self._log._commit(self.group, clean)

    async def committed(self, partition: int) -> int | None:
        if not 0 <= partition < self._log.partitions:
            raise ValueError(f"no partition {partition}")
        return self._log._committed.get(self.group, {}).get(partition)

    async def caught_up(self) -> dict[int, tuple[bool, float]]:
        self._check_active()
        now = time.time()
        parts = self._log._parts
        return {p: (self._positions[p] >= parts[p].visible, now) for p in self._assignment}

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        async with self._poll_lock:
            await self._run_callbacks()
            while True:
                self._check_active()
                plan = self._plan(max_records)
                if plan:
                    try:
                        chunks = await loop.run_in_executor(self._log._readers, self._read, plan)
                    except (OSError, CorruptSegmentError) as e:
                        raise _as_retryable("read failed", e) from e
                    records: list[Record] = []
                    for p, first, recs in chunks:
                        if p in self._assignment and self._positions.get(p) == first:
                            records.extend(recs)
                            self._positions[p] = first + len(recs)
                    if records:
                        return records
                    continue  # assignment or positions changed during the read
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return []
                waiter = loop.create_future()
                self._waiter = waiter
                self._log._waiters.add(waiter)
                timer = loop.call_later(remaining, _resolve, waiter)
                try:
                    await waiter
                finally:
                    timer.cancel()
                    self._log._waiters.discard(waiter)
                    self._waiter = None

    def _plan(self, max_records: int) -> list[tuple]:
        """Byte ranges to read: (partition, segment base, path, first offset, count, start, end)."""
        ready = sorted(self._assignment - self._paused)
        if not ready:
            return []
        k = self._rr % len(ready)
        self._rr += 1
        parts = self._log._parts
        plan = []
        remaining = max_records
        budget = MAX_POLL_BYTES
        for p in ready[k:] + ready[:k]:
            part = parts[p]
            pos = self._positions[p]
            end = part.visible
            while pos < end and remaining > 0 and budget > 0:
                seg = part.segment_for(pos)
                i = pos - seg.base
                n = min(end - pos, seg.count - i, remaining)
                start, _ = seg.byte_range(i, 1)
                # largest run of records within the byte budget (at least one)
                j = bisect.bisect_right(seg.ends, start + budget, i, i + n)
                n = max(1, j - i)
                stop = seg.ends[i + n - 1]
                plan.append((p, seg.base, seg.path, pos, n, start, stop))
                pos += n
                remaining -= n
                budget -= stop - start
            if remaining <= 0 or budget <= 0:
                break
        return plan

    def _read(self, plan: list[tuple]) -> list[tuple[int, int, list[Record]]]:
        """Reader thread: one pread per planned range, then decode and verify."""
        out = []
        for p, base, path, first, count, start, stop in plan:
            cached = self._fds.get(p)
            if cached is None or cached[0] != base:
                if cached is not None:
                    os.close(cached[1])
                    del self._fds[p]
                self._fds[p] = cached = (base, os.open(path, os.O_RDONLY))
            data = pread_exact(cached[1], stop - start, start)
            out.append((p, first, decode_records(p, first, count, data)))
        return out


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
