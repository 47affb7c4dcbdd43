"""Behaviour of the local event log beyond the shared contract (tests/contract)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runstream_server.common.errors import ConfigError, PermanentError, RetryableError
from runstream_server.common.partitioning import partition_for
from runstream_server.eventlog import local as local_module
from runstream_server.eventlog.local import LocalEventLog

P = 4


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def read_all(log: LocalEventLog, group: str = "reader") -> list:
    c = log.consumer(group)
    await c.start()
    try:
        records = []
        while True:
            batch = await c.poll(0, 10_000)
            if not batch:
                return records
            records += batch
    finally:
        await c.close()


def segment_files(directory: Path, partition: int) -> list[Path]:
    return sorted((directory / f"p-{partition}").glob("*.log"))


# ---------------------------------------------------------------------------- durability


def test_close_and_reopen_keeps_everything(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        first = await log.append([(f"run-{i}".encode(), b"a%d" % i) for i in range(20)])
        await log.close()
        await log.close()  # idempotent

        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            assert sum((await log.end_offsets()).values()) == 20
            second = await log.append([(f"run-{i}".encode(), b"b%d" % i) for i in range(20)])
            records = await read_all(log)
        finally:
            await log.close()
        return first, second, records

    first, second, records = arun(main())
    assert [p for p, _ in first] == [p for p, _ in second]
    per_partition = {}
    for p, o in first + second:
        per_partition.setdefault(p, []).append(o)
    for offsets in per_partition.values():
        assert sorted(offsets) == list(range(len(offsets)))
    assert sorted(r.value for r in records) == sorted(
        [b"a%d" % i for i in range(20)] + [b"b%d" % i for i in range(20)]
    )


CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from runstream_server.eventlog.local import LocalEventLog

    async def main(directory, policy, self_kill_after):
        log = LocalEventLog(directory, partitions=4, fsync=policy, segment_bytes=16384)
        await log.start()
        acked = 0
        i = 0
        while True:
            batch = [(f"run-{(i + j) % 13}".encode(), (b"v%d:" % (i + j)) * 40) for j in range(8)]
            i += len(batch)
            results = await asyncio.gather(*(log.append([r]) for r in batch))
            lines = []
            for ((_, value), [(p, o)]) in zip(batch, results):
                lines.append(f"{p} {o} {value[:value.index(b':')].decode()}\\n")
            os.write(1, "".join(lines).encode())
            acked += len(batch)
            if self_kill_after and acked >= self_kill_after:
                os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.parametrize(
    "policy,killer", [("always", "parent"), ("always", "self"), ("interval", "parent")]
)
def test_acked_records_survive_kill_9(tmp_path, policy, killer):
    directory = tmp_path / "log"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), policy, "400" if killer == "self" else "0"],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    acked = []
    try:
        for line in child.stdout:
            acked.append(line)
            if killer == "parent" and len(acked) >= 400:
                child.kill()  # mid-stream, appends in flight
                break
        rest = child.stdout.read()
    finally:
        child.kill()
        child.wait(10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    acked += rest.splitlines(keepends=True)
    acked = [line.split() for line in acked if line.endswith(b"\n")]
    assert len(acked) >= 400

    async def main():
        log = LocalEventLog(directory, partitions=P)
        await log.start()
        try:
            records = await read_all(log)
            ends = await log.end_offsets()
            more = await log.append([(b"run-1", b"after")])
        finally:
            await log.close()
        return records, ends, more

    records, ends, more = arun(main())
    stored = {(r.partition, r.offset): r.value for r in records}
    for p, o, tag in acked:
        value = stored.get((int(p), int(o)))
        assert value is not None and value.startswith(tag + b":"), (p, o, tag)
    assert len(stored) == sum(ends.values())
    assert more == [(partition_for("run-1", P), ends[partition_for("run-1", P)])]


# ---------------------------------------------------------------------------- recovery


def _write_ten(tmp_path: Path, **kwargs) -> tuple[int, Path]:
    async def main():
        log = LocalEventLog(tmp_path, partitions=P, **kwargs)
        await log.start()
        result = await log.append([(b"run-x", b"value-%d" % i * 10) for i in range(10)])
        await log.close()
        return result

    result = arun(main())
    p = result[0][0]
    assert result == [(p, i) for i in range(10)]
    return p, segment_files(tmp_path, p)[-1]


@pytest.mark.parametrize("damage", ["chop", "garbage", "zeros", "bitflip"])
def test_torn_tail_is_truncated(tmp_path, damage):
    p, segment = _write_ten(tmp_path)
    data = segment.read_bytes()
    record_len = len(data) // 10
    if damage == "chop":
        segment.write_bytes(data[:-7])
    elif damage == "garbage":
        segment.write_bytes(data + os.urandom(5000))
    elif damage == "zeros":
        segment.write_bytes(data + bytes(4096))
    else:
        corrupt = bytearray(data)
        corrupt[-3] ^= 0xFF
        segment.write_bytes(bytes(corrupt))
    expected = 10 if damage in ("garbage", "zeros") else 9

    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            ends = await log.end_offsets()
            size = segment.stat().st_size
            records = await read_all(log)
            more = await log.append([(b"run-x", b"next")])
        finally:
            await log.close()
        return ends, size, records, more

    ends, size, records, more = arun(main())
    assert ends[p] == expected
    assert size == expected * record_len
    assert [r.offset for r in records] == list(range(expected))
    assert [r.value for r in records] == [b"value-%d" % i * 10 for i in range(expected)]
    assert more == [(p, expected)]


def _write_segments(tmp_path: Path) -> tuple[int, list[Path]]:
    async def main():
        log = LocalEventLog(tmp_path, partitions=P, segment_bytes=4096)
        await log.start()
        result = []
        for i in range(40):
            result += await log.append([(b"run-x", b"%03d" % i * 100) for _ in range(3)])
        await log.close()
        return result

    result = arun(main())
    p = result[0][0]
    assert [o for _, o in result] == list(range(120))
    return p, segment_files(tmp_path, p)


def test_segment_rolling(tmp_path):
    p, files = _write_segments(tmp_path)
    assert len(files) > 5
    bases = [int(f.stem) for f in files]
    assert bases[0] == 0 and bases == sorted(bases)
    assert all(f.stat().st_size <= 4096 for f in files)
    indexes = sorted((tmp_path / f"p-{p}").glob("*.idx"))
    assert [i.stem for i in indexes] == [f.stem for f in files[:-1]]  # sealed ones only

    async def reopen():
        log = LocalEventLog(tmp_path, partitions=P, segment_bytes=4096)
        await log.start()
        try:
            records = await read_all(log)
            c = log.consumer("small-polls")
            await c.start()
            small = []
            while batch := await c.poll(0, 7):
                assert len(batch) <= 7
                small += batch
            await c.seek(p, 50)
            (from_50,) = await c.poll(0, 1)
            await c.close()
            more = await log.append([(b"run-x", b"y" * 100)])
        finally:
            await log.close()
        return records, small, from_50, more

    for with_index in (True, False):
        if not with_index:
            for index in indexes:
                index.unlink()
        records, small, from_50, more = arun(reopen())
        assert [r.offset for r in records][:120] == list(range(120))
        assert [r.value for r in records][:120] == [b"%03d" % (i // 3) * 100 for i in range(120)]
        assert [r.offset for r in small] == [r.offset for r in records]
        assert from_50.offset == 50 and from_50.value == b"%03d" % 16 * 100
        assert more[0][0] == p
    assert sorted(f.stem for f in (tmp_path / f"p-{p}").glob("*.idx")) == [
        f.stem for f in segment_files(tmp_path, p)[:-1]
    ]


def test_corruption_before_the_tail(tmp_path):
    p, files = _write_segments(tmp_path)
    data = bytearray(files[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[1].write_bytes(bytes(data))

    async def read_with_index():
        log = LocalEventLog(tmp_path, partitions=P, segment_bytes=4096)
        await log.start()
        try:
            with pytest.raises(RetryableError):
                await read_all(log)
        finally:
            await log.close()

    arun(read_with_index())  # the index is trusted at open; reads verify every record

    files[1].with_suffix(".idx").unlink()
    with pytest.raises(ConfigError, match="not the tail"):
        arun(LocalEventLog(tmp_path, partitions=P, segment_bytes=4096).start())


# ---------------------------------------------------------------------------- configuration


def test_invalid_configuration_is_rejected():
    for kwargs in (
        {"fsync": "sometimes"},
        {"partitions": 0},
        {"fsync_interval_s": 0},
        {"segment_bytes": 10},
    ):
        with pytest.raises(ConfigError):
            LocalEventLog("/nonexistent", **kwargs)


def test_partition_count_is_fixed_at_creation(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        await log.close()
        with pytest.raises(ConfigError, match="4 partitions"):
            await LocalEventLog(tmp_path, partitions=8).start()
        log = LocalEventLog(tmp_path, partitions=P)  # the lock was released on failure
        await log.start()
        await log.close()

    arun(main())


def test_second_instance_on_the_same_directory_is_refused(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            with pytest.raises(RetryableError, match="open in another"):
                await LocalEventLog(tmp_path, partitions=P).start()
        finally:
            await log.close()

    arun(main())


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies(tmp_path, policy, monkeypatch):
    fsyncs = []
    real = local_module._fdatasync
    monkeypatch.setattr(local_module, "_fdatasync", lambda fd: (fsyncs.append(fd), real(fd)))

    async def main():
        log = LocalEventLog(tmp_path, partitions=P, fsync=policy, fsync_interval_s=0.02)
        await log.start()
        try:
            await log.append([(f"run-{i}".encode(), b"x") for i in range(10)])
            after_append = len(fsyncs)
            await asyncio.sleep(0.2)
            after_wait = len(fsyncs)
            records = await read_all(log)
        finally:
            await log.close()
        return after_append, after_wait, records

    after_append, after_wait, records = arun(main())
    assert len(records) == 10
    if policy == "always":
        assert after_append >= 1
    elif policy == "interval":
        assert after_append == 0 and after_wait >= 1
    else:
        assert after_wait == 0
    assert len(arun(_reopen_and_read(tmp_path))) == 10


async def _reopen_and_read(directory: Path) -> list:
    log = LocalEventLog(directory, partitions=P)
    await log.start()
    try:
        return await read_all(log, "reopen")
    finally:
        await log.close()


def test_concurrent_appends_share_an_fsync(tmp_path, monkeypatch):
    fsyncs = []
    real = local_module._fdatasync
    monkeypatch.setattr(local_module, "_fdatasync", lambda fd: (fsyncs.append(fd), real(fd)))

    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            return await asyncio.gather(*(log.append([(b"run-1", b"%d" % i)]) for i in range(50)))
        finally:
            await log.close()

    results = arun(main())
    assert sorted(o for ((_, o),) in results) == list(range(50))
    assert len(fsyncs) <= 5  # the first append's group, then the rest in one or two groups


# ---------------------------------------------------------------------------- groups, offsets


def test_committed_offsets_persist_across_reopen(tmp_path):
    group = "projector/odd name ü"

    async def first():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            await log.append([(f"run-{i}".encode(), b"x") for i in range(40)])
            c = log.consumer(group)
            await c.start()
            await c.commit({0: 3, 1: 1})
            await c.commit({1: 2})
            await c.close()
        finally:
            await log.close()

    async def second():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            c = log.consumer(group)
            await c.start()
            committed = {p: await c.committed(p) for p in range(P)}
            positions = {p: c.position(p) for p in range(P)}
            await c.close()
        finally:
            await log.close()
        return committed, positions

    arun(first())
    committed, positions = arun(second())
    assert committed == {0: 3, 1: 2, 2: None, 3: None}
    assert positions == {0: 3, 1: 2, 2: 0, 3: 0}
    assert not list((tmp_path / "groups").glob("*.tmp"))


def test_in_process_group_membership(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            await log.append([(f"run-{i}".encode(), b"x") for i in range(40)])
            a, b, c = (log.consumer("g") for _ in range(3))
            await a.start()
            assert a.assignment() == {0, 1, 2, 3}
            await a.commit({1: 2})
            await b.start()
            await c.start()
            split = [a.assignment(), b.assignment(), c.assignment()]
            with pytest.raises(RetryableError, match="not assigned"):
                await a.commit({1: 5})  # partition 1 moved to b
            assert b.position(1) == 2  # b starts partition 1 at the committed offset
            await b.close()
            after = [a.assignment(), c.assignment()]
            await a.close()
            await c.close()
        finally:
            await log.close()
        return split, after

    split, after = arun(main())
    assert split == [{0, 3}, {1}, {2}]
    assert after == [{0, 2}, {1, 3}]


def test_closed_log_and_consumers_raise_retryable(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        with pytest.raises(RetryableError):
            await log.append([(b"run-1", b"x")])
        await log.start()
        c = log.consumer("g")
        await c.start()
        waiting = asyncio.create_task(c.poll(30, 10))
        await asyncio.sleep(0.05)
        await log.close()
        with pytest.raises(RetryableError):
            await waiting
        with pytest.raises(RetryableError):
            await log.append([(b"run-1", b"x")])
        with pytest.raises(RetryableError):
            await log.end_offsets()
        with pytest.raises(RetryableError):
            await log.consumer("h").start()
        with pytest.raises(RetryableError):
            await log.start()

    arun(main())


def test_bad_records_are_permanent_errors(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            with pytest.raises(PermanentError):
                await log.append([(b"\xff\xfe", b"x")])
            assert await log.end_offsets() == {p: 0 for p in range(P)}
        finally:
            await log.close()

    arun(main())


# ---------------------------------------------------------------------------- disk failures


def test_failed_write_is_rolled_back_and_retryable(tmp_path, monkeypatch):
    real_write_all = local_module.write_all

    def disk_full(fd, parts):
        data = b"".join(parts)
        os.write(fd, data[: len(data) // 2])  # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            (first,) = await log.append([(b"run-1", b"one")])
            monkeypatch.setattr(local_module, "write_all", disk_full)
            with pytest.raises(RetryableError, match="No space"):
                await log.append([(b"run-1", b"two")])
            monkeypatch.setattr(local_module, "write_all", real_write_all)
            (second,) = await log.append([(b"run-1", b"three")])
        finally:
            await log.close()
        return first, second

    first, second = arun(main())
    assert second == (first[0], first[1] + 1)
    assert [r.value for r in arun(_reopen_and_read(tmp_path))] == [b"one", b"three"]


def test_failed_fsync_stops_appends_until_reopened(tmp_path, monkeypatch):
    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            await log.append([(b"run-1", b"one")])
            monkeypatch.setattr(local_module, "_fdatasync", broken)
            with pytest.raises(RetryableError, match="Input/output"):
                await log.append([(b"run-1", b"two")])
            monkeypatch.undo()
            with pytest.raises(RetryableError, match="reopen"):
                await log.append([(b"run-1", b"three")])
        finally:
            await log.close()

    arun(main())
    log = LocalEventLog(tmp_path, partitions=P)

    async def reopened():
        await log.start()
        try:
            await log.append([(b"run-1", b"four")])
            return await read_all(log)
        finally:
            await log.close()

    values = [r.value for r in arun(reopened())]
    assert values[0] == b"one" and values[-1] == b"four"  # "two" may or may not be there


def test_poll_wakes_without_sleeping(tmp_path):
    async def main():
        log = LocalEventLog(tmp_path, partitions=P)
        await log.start()
        try:
            c = log.consumer("g")
            await c.start()
            latencies = []
            for i in range(20):
                waiting = asyncio.create_task(c.poll(5, 10))
                await asyncio.sleep(0)
                t0 = time.perf_counter()
                await log.append([(b"run-%d" % i, b"x")])
                assert len(await waiting) == 1
                latencies.append(time.perf_counter() - t0)
            await c.close()
        finally:
            await log.close()
        return sorted(latencies)[len(latencies) // 2]

    assert arun(main()) < 0.05
