"""The ``EventLog`` contract (``eventlog/base.py``), run against the local log and Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict

from runstream_server.common.partitioning import partition_for

P = 4  # == conftest.CONTRACT_PARTITIONS (the Kafka test topics have 4 partitions)
ALL = set(range(P))


def run_with(event_log, body, timeout_s: float = 90.0):
    """Start ``event_log``, run ``await body(event_log)``, close it; all in one event loop."""

    async def main():
        await event_log.start()
        try:
            return await asyncio.wait_for(body(event_log), timeout_s)
        finally:
            await event_log.close()

    return asyncio.run(main())


def group() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


def keys(per_partition: int = 2) -> list[str]:
    """Run ids such that every partition gets ``per_partition`` of them."""
    found: dict[int, list[str]] = defaultdict(list)
    i = 0
    while any(len(found[p]) < per_partition for p in range(P)):
        run_id = f"run-{i}"
        p = partition_for(run_id, P)
        if len(found[p]) < per_partition:
            found[p].append(run_id)
        i += 1
    return [k for p in range(P) for k in found[p]]


async def append_sample(log, rounds: int = 3) -> list[tuple[int, int, bytes, bytes]]:
    """Append ``rounds`` records for every key; return (partition, offset, key, value)."""
    out = []
    for r in range(rounds):
        batch = [(k.encode(), f"{k}:{r}".encode()) for k in keys()]
        for (key, value), (p, o) in zip(batch, await log.append(batch), strict=True):
            out.append((p, o, key, value))
    return out


async def drain(consumer, count: int, timeout_s: float = 30.0) -> list:
    """Poll until ``count`` records arrived (or time is up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    records = []
    while len(records) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        records += await consumer.poll(min(remaining, 1.0), 1000)
    return records


def as_tuples(records) -> list[tuple[int, int, bytes, bytes]]:
    return [(r.partition, r.offset, r.key, r.value) for r in records]


def assert_offset_order(records) -> None:
    by_partition = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r.offset)
    for offsets in by_partition.values():
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


# ---------------------------------------------------------------------------- appends


def test_append_returns_partition_and_contiguous_offsets(event_log):
    async def body(log):
        assert log.partitions == P
        assert await log.end_offsets() == {p: 0 for p in ALL}
        appended = await append_sample(log)
        single = await log.append([(b"run-0", b"one more")])
        assert await log.append([]) == []
        return appended, single, await log.end_offsets()

    appended, single, ends = run_with(event_log, body)
    for p, _, key, _ in appended:
        assert p == partition_for(key.decode(), P)
    per_partition = defaultdict(list)
    for p, o, _, _ in appended:
        per_partition[p].append(o)
    assert set(per_partition) == ALL
    for p, offsets in per_partition.items():
        assert offsets == list(range(len(offsets))), p
    p0 = partition_for("run-0", P)
    assert single == [(p0, len(per_partition[p0]))]
    counts = Counter(p for p, *_ in appended)
    counts[p0] += 1
    assert ends == {p: counts[p] for p in ALL}


def test_concurrent_appends_get_unique_contiguous_offsets(event_log):
    ks = keys()

    async def body(log):
        batches = [
            [(k.encode(), f"{i}:{j}".encode()) for j, k in enumerate(ks[i % 3 :])]
            for i in range(30)
        ]
        results = await asyncio.gather(*(log.append(b) for b in batches))
        return batches, results, await log.end_offsets()

    batches, results, ends = run_with(event_log, body)
    offsets = defaultdict(list)
    for batch, result in zip(batches, results, strict=True):
        assert len(result) == len(batch)
        for (key, _), (p, o) in zip(batch, result, strict=True):
            assert p == partition_for(key.decode(), P)
            offsets[p].append(o)
        # within one call, records of one partition keep their order
        seen = defaultdict(list)
        for p, o in result:
            seen[p].append(o)
        assert all(v == sorted(v) for v in seen.values())
    for p in ALL:
        assert sorted(offsets[p]) == list(range(ends[p]))


def test_per_key_order_is_preserved(event_log):
    ks = keys()

    async def body(log):
        sent = 0
        for r in range(5):
            batch = [(k.encode(), f"{r}:{n}".encode()) for k in ks for n in range(3)]
            await log.append(batch)
            sent += len(batch)
        c = log.consumer(group())
        await c.start()
        try:
            return await drain(c, sent), sent
        finally:
            await c.close()

    records, sent = run_with(event_log, body)
    assert len(records) == sent
    per_key = defaultdict(list)
    for r in records:
        per_key[r.key.decode()].append((r.offset, r.value.decode()))
    for k in ks:
        offsets = [o for o, _ in per_key[k]]
        values = [v for _, v in per_key[k]]
        assert offsets == sorted(offsets)
        assert values == [f"{r}:{n}" for r in range(5) for n in range(3)]


# ---------------------------------------------------------------------------- consumers


def test_consumer_reads_everything_from_the_beginning(event_log):
    async def body(log):
        before_ms = time.time() * 1000
        appended = await append_sample(log)
        after_ms = time.time() * 1000
        c = log.consumer(group())
        await c.start()
        try:
            assert c.assignment() == ALL
            assert {p: c.position(p) for p in ALL} == {p: 0 for p in ALL}
            records = await drain(c, len(appended))
            extra = await c.poll(0.2, 100)
        finally:
            await c.close()
        return appended, records, extra, before_ms, after_ms

    appended, records, extra, before_ms, after_ms = run_with(event_log, body)
    assert extra == []
    assert sorted(as_tuples(records)) == sorted(appended)
    assert_offset_order(records)
    for r in records:
        assert before_ms - 60_000 <= r.timestamp_ms <= after_ms + 60_000


def test_new_group_without_commit_starts_at_zero(event_log):
    async def body(log):
        appended = await append_sample(log, rounds=2)
        c = log.consumer(group(), from_beginning_if_new=True)
        await c.start()
        try:
            committed = {p: await c.committed(p) for p in ALL}
            positions = {p: c.position(p) for p in ALL}
            first = await drain(c, len(appended))
        finally:
            await c.close()
        return appended, committed, positions, first

    appended, committed, positions, records = run_with(event_log, body)
    assert committed == {p: None for p in ALL}
    assert positions == {p: 0 for p in ALL}
    assert len(records) == len(appended)
    assert {min(r.offset for r in records if r.partition == p) for p in ALL} == {0}


def test_commit_then_new_consumer_in_group_resumes_at_committed(event_log):
    g = group()

    async def body(log):
        appended = await append_sample(log, rounds=4)
        c1 = log.consumer(g)
        await c1.start()
        try:
            assert len(await drain(c1, len(appended))) == len(appended)
            ends = await log.end_offsets()
            to_commit = {p: ends[p] // 2 for p in ALL}
            await c1.commit(to_commit)
            committed = {p: await c1.committed(p) for p in ALL}
        finally:
            await c1.close()
        c2 = log.consumer(g)
        await c2.start()
        try:
            assert c2.assignment() == ALL
            positions = {p: c2.position(p) for p in ALL}
            committed2 = {p: await c2.committed(p) for p in ALL}
            expected = sum(ends[p] - to_commit[p] for p in ALL)
            rest = await drain(c2, expected)
        finally:
            await c2.close()
        return appended, to_commit, committed, positions, committed2, rest, ends

    appended, to_commit, committed, positions, committed2, rest, ends = run_with(event_log, body)
    assert committed == to_commit == committed2 == positions
    got = sorted((r.partition, r.offset) for r in rest)
    assert got == sorted((p, o) for p in ALL for o in range(to_commit[p], ends[p]))


def test_new_group_not_from_beginning_starts_at_the_end(event_log):
    g = group()

    async def body(log):
        await append_sample(log, rounds=2)
        ends = await log.end_offsets()
        c = log.consumer(g, from_beginning_if_new=False)
        await c.start()
        try:
            positions = {p: c.position(p) for p in ALL}
            idle = await c.poll(0.3, 100)
            new = await append_sample(log, rounds=1)
            records = await drain(c, len(new))
            await c.commit({p: c.position(p) for p in ALL})
        finally:
            await c.close()
        # committed offsets win over the flag
        c2 = log.consumer(g, from_beginning_if_new=True)
        await c2.start()
        try:
            positions2 = {p: c2.position(p) for p in ALL}
            ends2 = await log.end_offsets()
        finally:
            await c2.close()
        return ends, positions, idle, new, records, positions2, ends2

    ends, positions, idle, new, records, positions2, ends2 = run_with(event_log, body)
    assert positions == ends
    assert idle == []
    assert sorted(as_tuples(records)) == sorted(new)
    assert positions2 == ends2


def test_pause_and_resume(event_log):
    async def body(log):
        appended = await append_sample(log)
        c = log.consumer(group())
        await c.start()
        try:
            paused = {0}
            c.pause(paused)
            others = [a for a in appended if a[0] not in paused]
            first = await drain(c, len(others))
            idle = await c.poll(0.3, 100)
            c.resume(paused)
            rest = await drain(c, len(appended) - len(others))
        finally:
            await c.close()
        return appended, others, first, idle, rest

    appended, others, first, idle, rest = run_with(event_log, body)
    assert sorted(as_tuples(first)) == sorted(others)
    assert idle == []
    assert sorted(as_tuples(rest)) == sorted(a for a in appended if a[0] == 0)


def test_seek(event_log):
    async def body(log):
        appended = await append_sample(log)
        c = log.consumer(group())
        await c.start()
        try:
            await drain(c, len(appended))
            await c.seek(1, 1)
            assert c.position(1) == 1
            again = await drain(c, sum(1 for a in appended if a[0] == 1) - 1)
            position = c.position(1)
            await c.seek(2, 0)
            from_start = await drain(c, sum(1 for a in appended if a[0] == 2))
        finally:
            await c.close()
        return appended, again, position, from_start

    appended, again, position, from_start = run_with(event_log, body)
    p1 = sorted(a for a in appended if a[0] == 1)
    assert as_tuples(again) == p1[1:]
    assert position == len(p1)
    assert as_tuples(from_start) == sorted(a for a in appended if a[0] == 2)


def test_caught_up(event_log):
    async def body(log):
        appended = await append_sample(log)
        c = log.consumer(group())
        await c.start()
        try:
            behind = await c.caught_up()
            await drain(c, len(appended))
            t0 = time.time()
            await c.poll(0.2, 100)  # lets a fetch-based implementation learn the end
            after = await c.caught_up()
            t_append = time.time()
            ((p, _),) = await log.append([(b"run-0", b"late")])
            later = await c.caught_up()
            await drain(c, 1)
            await c.poll(0.2, 100)
            final = await c.caught_up()
        finally:
            await c.close()
        return behind, after, t0, t_append, p, later, final

    behind, after, t0, t_append, p, later, final = run_with(event_log, body)
    assert set(behind) == ALL and not any(ok for ok, _ in behind.values())
    assert set(after) == ALL and all(ok for ok, _ in after.values())
    assert all(t0 - 60 <= ts <= time.time() for _, ts in after.values())
    ok, ts = later[p]
    assert not ok or ts <= t_append  # either it knows it is behind, or its knowledge is older
    assert all(ok for ok, _ in final.values())


def test_poll_on_empty_log_returns_empty_within_timeout(event_log):
    async def body(log):
        c = log.consumer(group())
        await c.start()
        try:
            t0 = time.monotonic()
            records = await c.poll(0.5, 100)
            return records, time.monotonic() - t0, await log.end_offsets()
        finally:
            await c.close()

    records, elapsed, ends = run_with(event_log, body)
    assert records == []
    assert elapsed < 0.5 + 2.0
    assert ends == {p: 0 for p in ALL}


def test_poll_wakes_up_when_records_arrive(event_log):
    async def body(log):
        c = log.consumer(group())
        await c.start()
        try:
            await c.poll(0.2, 10)
            waiting = asyncio.create_task(c.poll(20.0, 10))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await log.append([(b"run-7", b"wake up")])
            records = await waiting
            return records, time.monotonic() - t0
        finally:
            await c.close()

    records, elapsed = run_with(event_log, body)
    assert [r.value for r in records] == [b"wake up"]
    assert elapsed < 3.0


def test_groups_are_independent(event_log):
    async def body(log):
        appended = await append_sample(log, rounds=1)
        results = []
        for g in (group(), group()):
            c = log.consumer(g)
            await c.start()
            try:
                results.append(await drain(c, len(appended)))
                await c.commit({p: c.position(p) for p in ALL})
            finally:
                await c.close()
        return appended, results

    appended, results = run_with(event_log, body)
    for records in results:
        assert sorted(as_tuples(records)) == sorted(appended)


def test_two_consumers_in_a_group_split_the_partitions(event_log):
    g = group()

    async def balanced(c1, c2, timeout_s=45.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            a1, a2 = c1.assignment(), c2.assignment()
            if a1 and a2 and not a1 & a2 and a1 | a2 == ALL:
                return True
            await asyncio.gather(c1.poll(0.1, 1000), c2.poll(0.1, 1000))
        return False

    async def body(log):
        c1 = log.consumer(g)
        c2 = log.consumer(g)
        await c1.start()
        await c2.start()
        try:
            assert await balanced(c1, c2)
            a1, a2 = c1.assignment(), c2.assignment()
            appended = await append_sample(log)
            got1, got2 = await asyncio.gather(
                drain(c1, sum(1 for a in appended if a[0] in a1)),
                drain(c2, sum(1 for a in appended if a[0] in a2)),
            )
            stable = (c1.assignment(), c2.assignment()) == (a1, a2)
        finally:
            await c2.close()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 45
            while c1.assignment() != ALL and loop.time() < deadline:
                await c1.poll(0.1, 1000)
            alone = c1.assignment()
        finally:
            await c1.close()
        return appended, a1, a2, got1, got2, stable, alone

    appended, a1, a2, got1, got2, stable, alone = run_with(event_log, body)
    assert stable
    assert {r.partition for r in got1} <= a1
    assert {r.partition for r in got2} <= a2
    assert sorted(as_tuples(got1 + got2)) == sorted(appended)
    assert alone == ALL
