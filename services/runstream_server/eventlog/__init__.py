"""The event log: the source of truth every projection is rebuilt from.

``base`` defines the interface; ``local`` (segment files, the embedded deployment)
and ``kafka`` (aiokafka, the distributed deployment) implement it, and one contract
suite (``tests/contract/test_eventlog.py``) runs against both.
"""

from .base import EventLog, LogConsumer, PartitionsCallback, Record

__all__ = ["EventLog", "LogConsumer", "PartitionsCallback", "Record"]
