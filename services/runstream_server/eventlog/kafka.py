"""The event log on Apache Kafka (the distributed deployment), via aiokafka.

One topic; the record key is the run id and picks the partition with Kafka's default
partitioner formula (``common.partitioning.partition_for``), computed here over the
topic's partition count read at ``start()`` and passed explicitly, so a run's partition
never depends on a client's metadata view. The producer is idempotent with
``acks=all``: ``append`` returns once every in-sync replica has the records.

Consumers are members of a Kafka consumer group (group-managed assignment, eager
rebalancing, never auto-committing). ``consumer(..., on_revoke=..., on_assign=...)``
takes optional coroutine callbacks run inside the rebalance, so an owner can flush and
commit before its partitions move to another member.

Topics created by ``start()`` keep records forever (the log is the source of truth that
every projection is rebuilt from) and stamp them with the broker's time
(``LogAppendTime``), so ``Record.timestamp_ms`` is when the log accepted the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    KafkaError,
    MessageSizeTooLargeError,
    PolicyViolationError,
    RecordListTooLargeError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ..common.errors import ConfigError, PermanentError, RetryableError
from .base import EventLog, LogConsumer, PartitionsCallback, Record

log = logging.getLogger(__name__)

#: Bytes of records an event log may have handed to the producer and not yet seen
#: resolved. aiokafka's producer has no bound of its own (Java's blocks at
#: ``buffer.memory``, 32 MiB by default): during a long outage the records of appends
#: that timed out stay queued in it while clients re-send them after every reconnect,
#: so without this the queue grows with the outage. Beyond it an append is refused at
#: once (RetryableError: the client keeps its events and retries). 64 MiB is twice
#: Java's default and a small part of a gateway's memory limit (deploy/k8s: 512 MiB).
MAX_PENDING_BYTES = 64 * 1024 * 1024

#: Configuration of topics created by ``KafkaEventLog.start()``.
TOPIC_CONFIGS: dict[str, str] = {
    "message.timestamp.type": "LogAppendTime",
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
}


_SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)
_CONFIG_ERRORS = (
    InvalidConfigurationError,
    InvalidPartitionsError,
    InvalidReplicationFactorError,
    PolicyViolationError,
)


def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: same result as ``partition_for(key.decode(), partitions)``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, absorbing aiokafka's stray CancelledError.

    aiokafka 0.14's ``Fetcher.close()`` cancels and awaits fetch tasks; one that is
    backing off after a failed fetch (broker away) re-raises the CancelledError out of
    ``stop()`` (aio-libs/aiokafka#647), leaving the client open. Our own task's
    cancellation still propagates.
    """
    try:
        await consumer.stop()
        return
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    fetcher = getattr(consumer, "_fetcher", None)
    for pending in list(getattr(fetcher, "_pending_tasks", ())):
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pending
    client = getattr(consumer, "_client", None)
    if client is not None:
        await client.close()
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _retryable(what: str, exc: BaseException) -> RetryableError:
    detail = str(exc) or "timed out"
    return RetryableError(f"kafka: {what}: {type(exc).__name__}: {detail}")


class KafkaEventLog(EventLog):
    """``EventLog`` on one Kafka topic.

    ``partitions`` is the count used when the topic is created; once started, the log
    uses the topic's real count. ``replication_factor`` applies to a topic created here
    (``None``: 3, or the number of brokers when there are fewer); ``topic_configs``
    replaces ``TOPIC_CONFIGS`` for it. ``append`` gives up after ``append_timeout_s``
    (aiokafka itself retries for as long as the broker is away) with ``RetryableError``;
    ``close`` waits as long for unacknowledged records. ``consumer_options`` are extra
    ``AIOKafkaConsumer`` arguments for every consumer (for example
    ``heartbeat_interval_ms``: a new member joins within about one heartbeat).

    ``start`` raises ``RetryableError`` when Kafka cannot be reached or the topic does
    not exist (and is not to be created), ``ConfigError`` when Kafka refuses to create
    the topic with these settings.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int = 12,
        create_topic: bool = True,
        client_id: str = "runstream",
        *,
        replication_factor: int | None = None,
        topic_configs: Mapping[str, str] | None = None,
        linger_ms: int = 2,
        compression_type: str | None = None,
        max_request_size: int = 1_048_576,
        request_timeout_ms: int = 30_000,
        append_timeout_s: float = 30.0,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        isolation_level: str = "read_committed",
        consumer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._bootstrap = bootstrap
        self._topic = topic
        self._partitions = partitions
        self._create_topic = create_topic
        self._client_id = client_id
        self._replication_factor = replication_factor
        self._topic_configs = dict(TOPIC_CONFIGS if topic_configs is None else topic_configs)
        self._request_timeout_ms = request_timeout_ms
        self._append_timeout_s = append_timeout_s
        self._max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0      # records handed to the producer, not yet resolved
        self._isolation_level = isolation_level
        self._consumer_options = dict(consumer_options or {})
        self._producer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": linger_ms,
            "compression_type": compression_type,
            "max_request_size": max_request_size,
            "request_timeout_ms": request_timeout_ms,
        }
        self._producer: AIOKafkaProducer | None = None
        self._offsets: AIOKafkaConsumer | None = None  # group-less, for end offsets
        self._started = False

    # -- introspection --------------------------------------------------------------------

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    @property
    def partitions(self) -> int:
        return self._partitions

    @property
    def producer_config(self) -> dict[str, Any]:
        """The keyword arguments the ``AIOKafkaProducer`` is built with (a copy)."""
        return dict(self._producer_config)

    @property
    def producer(self) -> AIOKafkaProducer | None:
        return self._producer

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        try:
            if self._create_topic:
                await self._ensure_topic()
            self._producer = AIOKafkaProducer(**self._producer_config)
            await self._producer.start()
            found = await self._producer.partitions_for(self._topic)
            self._offsets = AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                client_id=f"{self._client_id}-offsets",
                group_id=None,
                enable_auto_commit=False,
                isolation_level=self._isolation_level,
                request_timeout_ms=self._request_timeout_ms,
            )
            await self._offsets.start()
        except KafkaError as exc:
            await self._stop_clients()
            where = f"topic {self._topic!r} at {self._bootstrap}"
            raise _retryable(f"cannot open {where}", exc) from exc
        except BaseException:
            await self._stop_clients()
            raise
        if len(found) != self._partitions:
            log.info(
                "kafka topic %s has %d partitions (configured %d); using %d",
                self._topic,
                len(found),
                self._partitions,
                len(found),
            )
        self._partitions = len(found)
        self._started = True

    async def close(self) -> None:
        self._started = False
        await self._stop_clients()

    async def _stop_clients(self) -> None:
        producer, self._producer = self._producer, None
        offsets, self._offsets = self._offsets, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.flush(), self._append_timeout_s)
            except TimeoutError:
                # The broker is away and aiokafka would retry forever inside stop(): stop
                # its sender first, dropping what is unacknowledged (those appends already
                # raised RetryableError, so the callers re-send).
                log.warning("kafka: closing with unacknowledged records for %s", self._topic)
                sender = getattr(producer, "_sender", None)
                if sender is not None:
                    await sender.close()
        for client in (producer, offsets):
            if client is not None:
                try:
                    if isinstance(client, AIOKafkaConsumer):
                        await _stop_consumer(client)
                    else:
                        await client.stop()
                except Exception:
                    log.warning("kafka: error while closing %r", client, exc_info=True)

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            client_id=f"{self._client_id}-admin",
            request_timeout_ms=self._request_timeout_ms,
        )
        try:
            await admin.start()
            if self._topic in await admin.list_topics():
                return
            replication = self._replication_factor
            if replication is None:
                brokers = (await admin.describe_cluster()).get("brokers") or []
                replication = max(1, min(3, len(brokers)))
            configs = dict(self._topic_configs)
            if replication >= 3:
                # acks=all means "all in-sync replicas": require two of them.
                configs.setdefault("min.insync.replicas", "2")
            topic = NewTopic(
                self._topic,
                num_partitions=self._partitions,
                replication_factor=replication,
                topic_configs=configs,
            )
            response = await admin.create_topics([topic])
            for name, code, *rest in response.topic_errors:
                if code == 0 or name != self._topic:
                    continue
                err = for_code(code)
                if err is TopicAlreadyExistsError:
                    return  # created concurrently: fine
                message = f"creating topic {name!r}: {err.__name__}: {rest[0] if rest else ''}"
                if err in _CONFIG_ERRORS:
                    raise ConfigError(f"kafka: {message}")
                raise err(message)
        finally:
            await admin.close()

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaEventLog is not started")
        return self._producer

    # -- writing --------------------------------------------------------------------------

    async def append(self, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        producer = self._require()
        if not records:
            return []
        limit = self._producer_config["max_request_size"]
        sizes = []
        for i, (key, value) in enumerate(records):
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
            if size > limit:
                raise PermanentError(
                    f"record {i} is {size} bytes, over the event log's limit of {limit} bytes"
                )
            sizes.append(size)
        if self.pending_bytes and self.pending_bytes + sum(sizes) > self._max_pending_bytes:
            raise RetryableError(
                f"event log backlog full: {self.pending_bytes} bytes of earlier appends not "
                f"yet acknowledged by Kafka (at most {self._max_pending_bytes})")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._append_timeout_s
        futures: list[asyncio.Future[Any]] = []
        try:
            for (key, value), size in zip(records, sizes, strict=True):
                partition = key_partition(key, self._partitions)
                send = producer.send(self._topic, value, key=key, partition=partition)
                fut = await asyncio.wait_for(send, max(deadline - loop.time(), 0.001))
                self.pending_bytes += size
                fut.add_done_callback(functools.partial(self._resolved, size))
                futures.append(fut)
            # aiokafka retries a produce request for as long as the broker is away;
            # the deadline turns that into RetryableError. (Not cancelling: the producer
            # may still deliver these records later; the caller re-sends anyway.)
            _, pending = await asyncio.wait(futures, timeout=max(deadline - loop.time(), 0))
            if pending:
                raise TimeoutError(
                    f"{len(pending)} of {len(records)} records not acknowledged "
                    f"within {self._append_timeout_s:g} s"
                )
        except (KafkaError, TimeoutError) as exc:
            raise self._append_error(exc) from exc
        finally:
            for fut in futures:  # no "exception was never retrieved" for abandoned ones
                fut.add_done_callback(_retrieve)
        out: list[tuple[int, int]] = []
        for fut in futures:
            exc = fut.exception()
            if exc is not None:
                raise self._append_error(exc) from exc
            metadata = fut.result()
            out.append((metadata.partition, metadata.offset))
        return out

    def _resolved(self, size: int, _fut: asyncio.Future[Any]) -> None:
        self.pending_bytes -= size

    def _append_error(self, exc: BaseException) -> PermanentError | RetryableError:
        if isinstance(exc, _SIZE_ERRORS):
            return PermanentError(f"kafka rejected a record as too large: {exc}")
        return _retryable(f"append to {self._topic!r} failed", exc)

    # -- reading --------------------------------------------------------------------------

    async def end_offsets(self) -> dict[int, int]:
        self._require()
        assert self._offsets is not None
        tps = [TopicPartition(self._topic, p) for p in range(self._partitions)]
        try:
            ends = await asyncio.wait_for(
                self._offsets.end_offsets(tps), self._request_timeout_ms / 1000 + 1
            )
        except (KafkaError, TimeoutError) as exc:
            raise _retryable("reading end offsets", exc) from exc
        return {tp.partition: offset for tp, offset in ends.items()}

    def consumer(
        self,
        group: str,
        *,
        from_beginning_if_new: bool = True,
        on_revoke: PartitionsCallback | None = None,
        on_assign: PartitionsCallback | None = None,
    ) -> KafkaLogConsumer:
        """A consumer in ``group``; see ``KafkaLogConsumer`` for the callbacks."""
        return KafkaLogConsumer(
            bootstrap=self._bootstrap,
            topic=self._topic,
            group=group,
            client_id=self._client_id,
            auto_offset_reset="earliest" if from_beginning_if_new else "latest",
            isolation_level=self._isolation_level,
            request_timeout_ms=self._request_timeout_ms,
            on_revoke=on_revoke,
            on_assign=on_assign,
            options=self._consumer_options,
        )


class KafkaLogConsumer(LogConsumer):
    """A member of a Kafka consumer group reading one topic.

    ``on_revoke(partitions)`` runs when a rebalance takes partitions away, before any
    other member gets them (commit there what was processed); ``on_assign(partitions)``
    runs once the new assignment is known and positioned. Both run inside aiokafka's
    rebalance; an exception they raise is logged, not propagated. Pauses survive
    rebalances for partitions that come back.

    ``options`` are extra ``AIOKafkaConsumer`` keyword arguments (for example
    ``heartbeat_interval_ms``, ``session_timeout_ms``, ``max_poll_interval_ms``).
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group: str,
        client_id: str = "runstream",
        auto_offset_reset: str = "earliest",
        isolation_level: str = "read_committed",
        request_timeout_ms: int = 30_000,
        start_timeout_s: float = 60.0,
        on_revoke: PartitionsCallback | None = None,
        on_assign: PartitionsCallback | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._topic = topic
        self._group = group
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "isolation_level": isolation_level,
            "request_timeout_ms": request_timeout_ms,
            **(options or {}),
        }
        self._start_timeout_s = start_timeout_s
        self._timeout_s = request_timeout_ms / 1000
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[int, int] = {}
        self._paused: set[int] = set()
        # Revoked and not assigned again yet: aiokafka keeps listing them until the new
        # assignment arrives, but another member may own them already.
        self._revoked_pending: set[int] = set()
        self._closed = False

    @property
    def group(self) -> str:
        return self._group

    @property
    def config(self) -> dict[str, Any]:
        """The keyword arguments the ``AIOKafkaConsumer`` is built with (a copy)."""
        return dict(self._config)

    def _tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self._topic, partition)

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("KafkaLogConsumer is not started (or closed)")
        return self._consumer

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        if self._closed:
            raise RuntimeError("KafkaLogConsumer was closed")
        consumer = AIOKafkaConsumer(**self._config)
        consumer.subscribe([self._topic], listener=_Listener(self))
        self._consumer = consumer
        try:
            # Waits for the topic's metadata and the first group assignment.
            await asyncio.wait_for(consumer.start(), self._start_timeout_s)
            await self._resolve_positions(self._start_timeout_s)
        except (TimeoutError, KafkaError) as exc:
            await self.close()
            raise _retryable(f"group {self._group!r} cannot join on {self._topic!r}", exc) from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self._closed = True
        consumer, self._consumer = self._consumer, None
        self._positions.clear()
        if consumer is not None:
            try:
                await _stop_consumer(consumer)
            except Exception:
                log.warning("kafka: error while closing consumer of %s", self._group, exc_info=True)

    # -- assignment and positions ---------------------------------------------------------

    def assignment(self) -> set[int]:
        """The partitions this member owns: none of those revoked by a rebalance that
        is still going on (between ``on_revoke`` and the new assignment)."""
        if self._consumer is None:
            return set()
        return {tp.partition for tp in self._consumer.assignment()
                if tp.topic == self._topic} - self._revoked_pending

    def position(self, partition: int) -> int:
        try:
            return self._positions[partition]
        except KeyError:
            if partition in self.assignment():
                raise RetryableError(
                    f"kafka: position of partition {partition} is not known yet"
                ) from None
            raise ValueError(f"partition {partition} is not assigned to this consumer") from None

    async def _resolve_positions(self, timeout_s: float, only: set[int] | None = None) -> None:
        """Fill ``_positions`` from aiokafka for the assigned partitions (or ``only``)."""
        consumer = self._require()
        assigned = self.assignment()
        for p in list(self._positions):
            if p not in assigned:
                del self._positions[p]
        deadline = time.monotonic() + timeout_s
        for p in sorted(assigned if only is None else only & assigned):
            remaining = deadline - time.monotonic()
            try:
                # Immediate when the position is valid; waits for a committed-offset
                # lookup or reset right after an assignment.
                self._positions[p] = await asyncio.wait_for(
                    consumer.position(self._tp(p)), max(remaining, 0.001)
                )
            except IllegalStateError:
                self._positions.pop(p, None)  # revoked meanwhile
            except TimeoutError:
                break

    async def _revoked(self, tps: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in tps if tp.topic == self._topic}
        if partitions:
            log.info("kafka: group %s revoked partitions %s of %s", self._group,
                     sorted(partitions), self._topic)
        for p in partitions:
            self._positions.pop(p, None)
        if self._on_revoke is not None and partitions:
            await self._on_revoke(partitions)   # still owned while it commits
        self._revoked_pending |= partitions

    async def _assigned(self, tps: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in tps if tp.topic == self._topic}
        log.info("kafka: group %s assigned partitions %s of %s", self._group,
                 sorted(partitions), self._topic)
        self._revoked_pending.clear()     # aiokafka's assignment is the new one now
        consumer = self._consumer
        if consumer is None:
            return
        for p in partitions & self._paused:
            consumer.pause(self._tp(p))
        await self._resolve_positions(self._timeout_s, partitions)
        if self._on_assign is not None:
            await self._on_assign(partitions)

    # -- reading --------------------------------------------------------------------------

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        consumer = self._require()
        try:
            batches = await consumer.getmany(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max(1, max_records)
            )
        except KafkaError as exc:
            raise _retryable(f"poll of group {self._group!r}", exc) from exc
        out: list[Record] = []
        for tp, messages in batches.items():
            if tp.partition in self._revoked_pending:
                continue    # fetched before the rebalance: the new owner reads them
            for m in messages:
                out.append(
                    Record(
                        partition=m.partition,
                        offset=m.offset,
                        key=m.key if m.key is not None else b"",
                        value=m.value if m.value is not None else b"",
                        timestamp_ms=m.timestamp,
                    )
                )
            if messages:
                self._positions[tp.partition] = messages[-1].offset + 1
        missing = self.assignment() - set(self._positions)
        refresh = {tp.partition for tp, messages in batches.items() if messages} | missing
        if refresh:
            # Exact positions (control records can move them past the last record).
            await self._resolve_positions(max(timeout_s, 0.05), refresh)
        return out

    async def commit(self, offsets: dict[int, int]) -> None:
        if not offsets:
            return
        consumer = self._require()
        try:
            await asyncio.wait_for(
                consumer.commit({self._tp(p): int(o) for p, o in offsets.items()}),
                self._timeout_s,
            )
        except IllegalStateError as exc:
            raise RetryableError(
                f"kafka: cannot commit {sorted(offsets)}: not assigned to this consumer ({exc})"
            ) from exc
        except (KafkaError, TimeoutError) as exc:
            raise _retryable(f"commit of group {self._group!r}", exc) from exc

    async def committed(self, partition: int) -> int | None:
        consumer = self._require()
        try:
            return await asyncio.wait_for(consumer.committed(self._tp(partition)), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            raise _retryable(f"committed offset of group {self._group!r}", exc) from exc

    async def seek(self, partition: int, offset: int) -> None:
        consumer = self._require()
        try:
            consumer.seek(self._tp(partition), offset)
        except IllegalStateError as exc:
            raise ValueError(f"partition {partition} is not assigned to this consumer") from exc
        self._positions[partition] = offset

    def pause(self, partitions: set[int]) -> None:
        self._paused |= set(partitions)
        if self._consumer is not None:
            tps = [self._tp(p) for p in partitions & self.assignment()]
            self._consumer.pause(*tps)

    def resume(self, partitions: set[int]) -> None:
        self._paused -= set(partitions)
        if self._consumer is not None:
            tps = [self._tp(p) for p in partitions & self.assignment()]
            self._consumer.resume(*tps)

    async def caught_up(self) -> dict[int, tuple[bool, float]]:
        consumer = self._require()
        partitions = sorted(self.assignment())
        if not partitions:
            return {}
        tps = [self._tp(p) for p in partitions]
        now = time.time()
        try:
            ends = await asyncio.wait_for(consumer.end_offsets(tps), self._timeout_s + 1)
        except (KafkaError, TimeoutError) as exc:
            raise _retryable("reading end offsets", exc) from exc
        out: dict[int, tuple[bool, float]] = {}
        for tp in tps:
            try:
                position = await asyncio.wait_for(consumer.position(tp), self._timeout_s)
            except IllegalStateError:
                continue  # revoked while we looked
            except TimeoutError:
                out[tp.partition] = (False, now)  # position unknown: not caught up
                continue
            self._positions[tp.partition] = position
            out[tp.partition] = (position >= ends[tp], now)
        return out


class _Listener(ConsumerRebalanceListener):
    def __init__(self, owner: KafkaLogConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner._assigned(set(assigned))
