"""The event-log contract suite runs every test against both implementations.

``event_log`` is an *unstarted* log; tests start and close it inside their own event
loop (see ``run_with`` in ``test_eventlog.py``).
"""

from __future__ import annotations

import pytest

CONTRACT_PARTITIONS = 4


@pytest.fixture(params=["local", pytest.param("kafka", marks=pytest.mark.kafka)])
def event_log(request, tmp_path):
    """An unstarted ``EventLog`` with ``CONTRACT_PARTITIONS`` partitions."""
    if request.param == "local":
        from runstream_server.eventlog.local import LocalEventLog

        return LocalEventLog(tmp_path / "eventlog", partitions=CONTRACT_PARTITIONS)
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    topic = request.getfixturevalue("kafka_topic")
    from runstream_server.eventlog.kafka import KafkaEventLog

    return KafkaEventLog(bootstrap=bootstrap, topic=topic, partitions=CONTRACT_PARTITIONS)
