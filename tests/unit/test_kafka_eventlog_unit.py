"""KafkaEventLog pieces that need no broker."""

from __future__ import annotations

import asyncio

import pytest
from runstream_server.common.errors import RetryableError
from runstream_server.common.partitioning import partition_for
from runstream_server.eventlog.kafka import KafkaEventLog, key_partition

from tests.fixtures.kafka import load_broker_module


@pytest.mark.parametrize("partitions", [1, 4, 12, 64])
def test_key_partition_is_partition_for(partitions):
    for i in range(500):
        run_id = f"r{i}-{'x' * (i % 17)}"
        assert key_partition(run_id.encode(), partitions) == partition_for(run_id, partitions)


def test_producer_and_consumer_settings():
    log = KafkaEventLog("127.0.0.1:1", "t", consumer_options={"heartbeat_interval_ms": 500})
    assert log.partitions == 12
    config = log.producer_config
    assert config["enable_idempotence"] is True and config["acks"] == "all"
    c = log.consumer("g").config
    assert c["group_id"] == "g"
    assert c["enable_auto_commit"] is False
    assert c["auto_offset_reset"] == "earliest"
    assert c["heartbeat_interval_ms"] == 500
    assert log.consumer("g", from_beginning_if_new=False).config["auto_offset_reset"] == "latest"


def test_unreachable_broker_is_retryable():
    port = load_broker_module().free_ports(1)[0]

    async def main():
        log = KafkaEventLog(f"127.0.0.1:{port}", "nowhere", request_timeout_ms=2000)
        with pytest.raises(RetryableError):
            await log.start()
        await log.close()
        consumer = log.consumer("g")
        consumer._start_timeout_s = 5
        with pytest.raises(RetryableError):
            await consumer.start()
        await consumer.close()

    asyncio.run(asyncio.wait_for(main(), 30))
