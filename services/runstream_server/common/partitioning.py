"""Which partition a run's events live in.

Both event-log implementations use Kafka's default partitioner (murmur2 of the key,
the run id), so a run maps to the same partition number in the local log and in
Kafka, and the reaper and projector can compute ownership from a run id alone.
"""

from aiokafka.partitioner import murmur2


def partition_for(run_id: str, partitions: int) -> int:
    """Partition of ``run_id`` among ``partitions``; identical to Kafka's default partitioner."""
    return (murmur2(run_id.encode()) & 0x7FFFFFFF) % partitions
