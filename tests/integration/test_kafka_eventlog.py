"""KafkaEventLog against a real Apache Kafka broker (fixtures in tests/fixtures/kafka.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from runstream_server.common.errors import PermanentError, RetryableError
from runstream_server.common.partitioning import partition_for
from runstream_server.eventlog.base import EventLog, LogConsumer, Record
from runstream_server.eventlog.kafka import KafkaEventLog, KafkaLogConsumer

from tests.fixtures.kafka import KAFKA_TEST_PARTITIONS, load_broker_module

# Fast rebalances: a member learns of a new one within a heartbeat.
FAST_GROUP = {"heartbeat_interval_ms": 200, "session_timeout_ms": 6000}


def run(coro, timeout_s: float = 60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:12]}"


async def opened(bootstrap: str, topic: str, **kw) -> KafkaEventLog:
    log = KafkaEventLog(
        bootstrap,
        topic,
        partitions=KAFKA_TEST_PARTITIONS,
        create_topic=False,
        consumer_options=FAST_GROUP,
        **kw,
    )
    await log.start()
    return log


async def drain(consumer: LogConsumer, want: int, timeout_s: float = 20.0) -> list[Record]:
    """Poll until ``want`` records arrived (or fail after ``timeout_s``)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} records arrived"
        got += await consumer.poll(0.5, 1000)
    return got


def key_on(partition: int, partitions: int = KAFKA_TEST_PARTITIONS) -> bytes:
    """A run id whose events land in ``partition``."""
    for i in range(10_000):
        key = f"run-{i}"
        if partition_for(key, partitions) == partition:
            return key.encode()
    raise AssertionError("no key found")


pytestmark = pytest.mark.kafka


def test_round_trip_keeps_partitions_offsets_and_order(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        assert isinstance(log, EventLog)
        assert log.partitions == KAFKA_TEST_PARTITIONS
        keys = [f"run-{uuid.uuid4().hex[:8]}" for _ in range(12)]
        records = [(k.encode(), f"{k}:{seq}".encode()) for seq in range(5) for k in keys]
        t0 = time.time()
        acks = await log.append(records)
        t1 = time.time()
        assert len(acks) == len(records)
        per_partition: dict[int, list[int]] = {}
        for (key, _), (p, off) in zip(records, acks, strict=True):
            assert p == partition_for(key.decode(), KAFKA_TEST_PARTITIONS)
            per_partition.setdefault(p, []).append(off)
        for p, offsets in per_partition.items():
            assert offsets == list(range(len(offsets))), p  # dense, from 0, in call order
        ends = await log.end_offsets()
        assert ends == {p: len(per_partition.get(p, [])) for p in range(KAFKA_TEST_PARTITIONS)}

        consumer = log.consumer(new_group())
        assert isinstance(consumer, KafkaLogConsumer)
        await consumer.start()
        assert consumer.assignment() == set(range(KAFKA_TEST_PARTITIONS))
        got = await drain(consumer, len(records))
        assert len(got) == len(records)
        assert {(r.partition, r.offset, r.key, r.value) for r in got} == {
            (p, off, k, v) for (k, v), (p, off) in zip(records, acks, strict=True)
        }
        for r in got:  # LogAppendTime: the broker's clock at append
            assert t0 * 1000 - 1000 <= r.timestamp_ms <= t1 * 1000 + 1000
        for key in keys:  # per-run order
            values = [r.value for r in got if r.key == key.encode()]
            assert values == [f"{key}:{seq}".encode() for seq in range(5)]
        for p in range(KAFKA_TEST_PARTITIONS):
            assert consumer.position(p) == ends[p]
        assert await consumer.poll(0.2, 10) == []
        await consumer.close()
        await consumer.close()  # idempotent
        await log.close()
        await log.close()

    run(main())


def test_start_creates_topic_with_log_settings(kafka_bootstrap):
    topic = f"runstream-test-{uuid.uuid4().hex}"

    async def main():
        log = KafkaEventLog(kafka_bootstrap, topic, partitions=3)
        await log.start()
        again = KafkaEventLog(kafka_bootstrap, topic, partitions=7)  # exists: keeps 3
        await again.start()
        assert (log.partitions, again.partitions) == (3, 3)
        acks = await again.append([(b"run-a", b"x"), (b"run-b", b"y")])
        assert [p for p, _ in acks] == [partition_for("run-a", 3), partition_for("run-b", 3)]
        await again.close()
        await log.close()

        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            (resp,) = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic)]
            )
            configs = {c[0]: c[1] for c in resp.resources[0][4]}
            assert configs["message.timestamp.type"] == "LogAppendTime"
            assert configs["retention.ms"] == "-1"
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    run(main())


def test_idempotent_producer_with_acks_all(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        config = log.producer_config
        assert config["enable_idempotence"] is True
        assert config["acks"] == "all"
        await log.append([(b"run-1", b"v")])
        txn = log.producer._txn_manager  # aiokafka keeps the producer id here
        assert txn is not None and txn.has_pid() and txn.producer_id >= 0
        await log.close()

    run(main())


def test_commit_then_new_consumer_resumes_at_committed_offset(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        key = key_on(2)
        await log.append([(key, f"{i}".encode()) for i in range(20)])
        group = new_group()

        first = log.consumer(group)
        await first.start()
        assert await first.committed(2) is None
        batch = []
        while len(batch) < 8:
            batch += await first.poll(1.0, 8 - len(batch))
        assert [r.offset for r in batch] == list(range(8))
        assert first.position(2) == 8
        await first.commit({2: 8})
        assert await first.committed(2) == 8
        await first.close()

        second = log.consumer(group)
        await second.start()
        assert await second.committed(2) == 8
        assert second.position(2) == 8
        rest = await drain(second, 12)
        assert [r.offset for r in rest] == list(range(8, 20))
        assert [r.value for r in rest] == [f"{i}".encode() for i in range(8, 20)]
        await second.close()
        await log.close()

    run(main())


def test_new_group_from_end_when_asked(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        key = key_on(1)
        await log.append([(key, b"old")] * 3)
        consumer = log.consumer(new_group(), from_beginning_if_new=False)
        await consumer.start()
        assert consumer.position(1) == 3
        assert await consumer.poll(0.3, 10) == []
        await log.append([(key, b"new")])
        (rec,) = await drain(consumer, 1)
        assert (rec.partition, rec.offset, rec.value) == (1, 3, b"new")
        await consumer.close()
        await log.close()

    run(main())


def test_two_consumers_split_partitions_and_commit_on_revoke(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        records = [(key_on(p), f"{p}-{i}".encode()) for p in range(4) for i in range(5)]
        await log.append(records)
        group = new_group()
        revoked: list[set[int]] = []
        assigned: list[set[int]] = []
        processed: dict[int, int] = {}
        owned_in_revoke: list[set[int]] = []
        owned_after_revoke: list[set[int]] = []

        async def on_revoke(partitions: set[int]) -> None:  # the projector's flush + commit
            revoked.append(partitions)
            owned_in_revoke.append(a.assignment())
            done = {p: processed[p] for p in partitions if p in processed}
            if done:
                await a.commit(done)
            # Runs while the rebalance waits for the new assignment: the revoked
            # partitions may belong to b already, so a must not count them as its own.
            asyncio.get_running_loop().call_soon(
                lambda: owned_after_revoke.append(a.assignment()))

        async def on_assign(partitions: set[int]) -> None:
            assigned.append(partitions)

        a = log.consumer(group, on_revoke=on_revoke, on_assign=on_assign)
        await a.start()
        assert a.assignment() == {0, 1, 2, 3}
        assert assigned == [{0, 1, 2, 3}]
        for r in await drain(a, len(records)):
            processed[r.partition] = r.offset + 1

        b = log.consumer(group)
        b_start = asyncio.ensure_future(b.start())
        deadline = time.monotonic() + 30
        while not b_start.done():  # a keeps polling, as a real owner does
            assert time.monotonic() < deadline, "second member never joined"
            await a.poll(0.2, 100)
        await b_start
        while a.assignment() & b.assignment() or len(a.assignment() | b.assignment()) < 4:
            assert time.monotonic() < deadline, (a.assignment(), b.assignment())
            await a.poll(0.2, 100)
            await b.poll(0.2, 100)
        assert a.assignment() and b.assignment()
        assert a.assignment() | b.assignment() == {0, 1, 2, 3}
        assert revoked and revoked[0] == {0, 1, 2, 3}
        assert owned_in_revoke[0] == {0, 1, 2, 3}      # still owned while committing
        assert owned_after_revoke[0] == set()
        assert assigned[-1] == a.assignment()
        # What a committed on revoke is where b goes on: nothing is read twice.
        for p in b.assignment():
            assert b.position(p) == processed[p] == 5
        assert await b.poll(0.3, 100) == []
        await b.close()
        await a.close()
        await log.close()

    run(main(), 90)


def test_caught_up_tracks_position_against_end(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        consumer = log.consumer(new_group())
        await consumer.start()
        before = time.time()
        state = await consumer.caught_up()
        assert set(state) == {0, 1, 2, 3}
        assert all(ok for ok, _ in state.values())
        assert all(before <= at <= time.time() for _, at in state.values())

        await log.append([(key_on(3), b"x"), (key_on(3), b"y")])
        state = await consumer.caught_up()
        assert state[3][0] is False
        assert all(state[p][0] for p in (0, 1, 2))
        await drain(consumer, 2)
        state = await consumer.caught_up()
        assert all(ok for ok, _ in state.values())
        await consumer.close()
        await log.close()

    run(main())


def test_pause_resume_and_seek(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic)
        await log.append([(key_on(0), b"p0"), (key_on(1), b"p1")])
        consumer = log.consumer(new_group())
        await consumer.start()
        consumer.pause({0})
        got = await drain(consumer, 1)
        assert [r.partition for r in got] == [1]
        assert await consumer.poll(0.5, 10) == []
        consumer.resume({0})
        got = await drain(consumer, 1)
        assert [(r.partition, r.value) for r in got] == [(0, b"p0")]

        await consumer.seek(1, 0)
        assert consumer.position(1) == 0
        got = await drain(consumer, 1)
        assert [(r.partition, r.offset, r.value) for r in got] == [(1, 0, b"p1")]
        with pytest.raises(ValueError):
            consumer.position(99)
        await consumer.close()
        await log.close()

    run(main())


def test_record_too_large_is_permanent_and_nothing_is_sent(kafka_bootstrap, kafka_topic):
    async def main():
        log = await opened(kafka_bootstrap, kafka_topic, max_request_size=10_000)
        with pytest.raises(PermanentError):
            await log.append([(key_on(0), b"ok"), (key_on(0), b"x" * 20_000)])
        assert (await log.end_offsets())[0] == 0
        await log.close()

    run(main())


def test_broker_away_gives_retryable_errors_and_a_clean_close(kafka_bootstrap, tmp_path):
    # A broker of its own, stopped mid-test (kafka_bootstrap: jars present, or skip/fail).
    kb = load_broker_module()
    if not kb.libs_available():
        pytest.skip("no Kafka jars (external broker)")
    broker = kb.KafkaBroker(tmp_path / "kafka")
    broker.start()

    async def main():
        log = KafkaEventLog(
            broker.bootstrap, "away", partitions=2, request_timeout_ms=1000, append_timeout_s=1
        )
        await log.start()
        assert await log.append([(b"run-a", b"1")]) == [(partition_for("run-a", 2), 0)]
        consumer = log.consumer(new_group())
        await consumer.start()
        broker.stop()
        t0 = time.monotonic()
        with pytest.raises(RetryableError):
            await log.append([(b"run-a", b"2"), (b"run-b", b"3")])
        assert time.monotonic() - t0 < 10
        with pytest.raises(RetryableError):
            await log.end_offsets()
        with pytest.raises(RetryableError):
            await consumer.commit({partition_for("run-a", 2): 1})
        with pytest.raises(RetryableError):
            await consumer.caught_up()
        t0 = time.monotonic()
        await consumer.close()
        await log.close()
        assert time.monotonic() - t0 < 10

    try:
        run(main(), 60)
    finally:
        broker.stop()


@pytest.mark.kafka
def test_appends_are_refused_at_once_beyond_the_producer_backlog_bound(dedicated_kafka):
    """With the broker cut off, appends time out and their records stay queued in the
    producer; once the queue holds ``max_pending_bytes``, further appends are refused at
    once (RetryableError) instead of queueing more. After the heal the queue drains and
    appends are accepted again."""
    from tests.e2e.procs import free_port
    from tests.fixtures.tcpproxy import TcpProxy

    proxy_port = free_port()
    broker = dedicated_kafka(listeners={"GATEWAY": proxy_port})
    proxy = TcpProxy(broker.listener_ports["GATEWAY"], port=proxy_port).start()
    records = [(b"run-%d" % i, b"x" * 1000) for i in range(40)]       # ~41 KB

    async def main():
        log = KafkaEventLog(proxy.address, f"backlog-{uuid.uuid4().hex[:8]}", partitions=2,
                            append_timeout_s=1.0, max_pending_bytes=60_000,
                            request_timeout_ms=5_000)
        await log.start()
        try:
            await log.append(records)
            assert log.pending_bytes == 0
            proxy.cut("blackhole")
            with pytest.raises(RetryableError):
                await log.append(records)                  # queued, timed out
            assert log.pending_bytes > 30_000              # all 40 records, as estimated
            t = time.monotonic()
            with pytest.raises(RetryableError, match="backlog full"):
                await log.append(records)                  # over the bound: at once
            assert time.monotonic() - t < 0.5
            proxy.heal()
            deadline = time.monotonic() + 30
            while log.pending_bytes and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert log.pending_bytes == 0, "the queued records were never resolved"
            assert len(await log.append(records)) == len(records)
        finally:
            proxy.heal()
            await log.close()

    try:
        run(main(), 90)
    finally:
        proxy.stop()
