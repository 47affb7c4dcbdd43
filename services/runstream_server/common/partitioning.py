"""Which partition a run's events live in.

Both event-log implementations use Kafka's default partitioner (murmur2 of the key,
the run id), so a run maps to the same partition number in the local log and in
Kafka, and the reaper and projector can compute ownership from a run id alone.
"""

from aiokafka.partitioner import murmur2


def partition_for(run_id: str, partitions: int) -> int:
    """Partition of ``run_id`` among ``partitions``; identical to Kafka's default partitioner."""
    return (murmur2(run_id.encode()) & 0x7FFFFFFF) % partitions


# Keys of gateway beacons (gateway/beacon.py): "~" is never in a run id (limits.RUN_ID_RE).
BEACON_KEY_PREFIX = b"~beacon/"


def beacon_keys(partitions: int) -> list[bytes]:
    """One record key per partition, index = partition: ``~beacon/<n>`` with the
    smallest ``n`` that the partitioner maps to it."""
    keys: list[bytes | None] = [None] * partitions
    left, n = partitions, 0
    while left:
        key = BEACON_KEY_PREFIX + str(n).encode()
        p = partition_for(key.decode(), partitions)
        if keys[p] is None:
            keys[p] = key
            left -= 1
        n += 1
    return keys   # type: ignore[return-value]
