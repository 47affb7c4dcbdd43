"""Event-log interface.

Records are opaque bytes keyed by run id. A key always maps to the same partition
(``common.partitioning.partition_for``), so all events of a run are totally ordered.
Offsets are per partition, start at 0 and grow by one per record. Consumers belong
to a group; a group's committed offset is the *next* offset to read, and survives
restarts of the consumer and of the log.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# Called with the partitions a rebalance took away or gave; runs inside poll().
PartitionsCallback = Callable[[set[int]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp_ms: int  # when the log accepted the record


class EventLog(abc.ABC):
    """An append-only, partitioned, durable log.

    Owned by one process; safe to use from one asyncio event loop.
    """

    @property
    @abc.abstractmethod
    def partitions(self) -> int:
        """Number of partitions (fixed for the life of the log)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open or create the log. Raises ``RetryableError`` if it cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release everything. Idempotent."""

    @abc.abstractmethod
    async def append(self, records: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """Append ``(key, value)`` records; return ``(partition, offset)`` for each.

        Returns only once every record is durable by the log's policy (local: written,
        and fsynced when the fsync policy is ``always``; Kafka: acknowledged by all
        in-sync replicas). Records with the same key keep their order. Raises
        ``RetryableError`` when the log is unavailable; then none, some or all records
        may have been appended, and the caller must re-send (duplicates are expected
        downstream).
        """

    @abc.abstractmethod
    def consumer(self, group: str, *, from_beginning_if_new: bool = True,
                 on_revoke: PartitionsCallback | None = None,
                 on_assign: PartitionsCallback | None = None) -> LogConsumer:
        """A new consumer in ``group``. Start it with ``await consumer.start()``.

        Consumers of one group share the partitions. When a rebalance takes partitions
        away, ``on_revoke`` runs inside ``poll()`` before records of the new assignment
        are returned: flush and commit what was processed there. ``on_assign`` runs for
        partitions gained. Committing a partition the consumer no longer owns raises
        ``RetryableError``.
        """

    @abc.abstractmethod
    async def end_offsets(self) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""


class LogConsumer(abc.ABC):
    """Reads records of the partitions assigned to it, in offset order per partition.

    Never commits on its own: the owner calls ``commit`` with the next offsets after
    the records were processed downstream.
    """

    @abc.abstractmethod
    async def start(self) -> None:
        """Join the group and position at the committed offsets (or the beginning)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the group. Does not commit. Idempotent."""

    @abc.abstractmethod
    def assignment(self) -> set[int]:
        """Partitions currently assigned to this consumer."""

    @abc.abstractmethod
    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """Up to ``max_records`` records from unpaused partitions, waiting at most ``timeout_s``.

        Returns an empty list on timeout. Never blocks the event loop.
        """

    @abc.abstractmethod
    async def commit(self, offsets: dict[int, int]) -> None:
        """Durably commit, per partition, the next offset to read."""

    @abc.abstractmethod
    async def committed(self, partition: int) -> int | None:
        """The committed next offset of ``partition`` for this group, or None."""

    @abc.abstractmethod
    def position(self, partition: int) -> int:
        """The offset of the next record ``poll`` will return for ``partition``."""

    @abc.abstractmethod
    async def seek(self, partition: int, offset: int) -> None:
        """Make ``poll`` continue from ``offset`` in ``partition``."""

    @abc.abstractmethod
    def pause(self, partitions: set[int]) -> None:
        """Stop returning records of ``partitions`` until resumed (backpressure)."""

    @abc.abstractmethod
    def resume(self, partitions: set[int]) -> None:
        """Undo ``pause``."""

    @abc.abstractmethod
    async def caught_up(self) -> dict[int, tuple[bool, float]]:
        """Per assigned partition: (position has reached the log end, when that was known, unix s).

        The reaper uses it so that a consumer that is behind never mistakes a backlog
        for silence.
        """
