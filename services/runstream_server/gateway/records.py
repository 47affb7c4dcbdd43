"""Validated requests → event-log records, without re-encoding the client's events.

A ``LogRecord`` shares field 1 (repeated Event) with ``IngestRequest``, so a request
holding one run is forwarded as its own bytes with the server receive time appended
(protobuf merges appended fields). Requests mixing runs are split per run.
"""

from __future__ import annotations

from google.protobuf.internal import encoder
from runstream.v1 import events_pb2, ingest_pb2

from .validation import RunSlice

_SERVER_TIME_TAG = encoder.TagBytes(2, 0)   # LogRecord.server_time_us, varint
_GATEWAY_TAG = encoder.TagBytes(3, 2)       # LogRecord.gateway, length-delimited


def trailer(server_time_us: int, gateway: bytes) -> bytes:
    """The bytes appended to every record: receive time and gateway name."""
    return (_SERVER_TIME_TAG + encoder._VarintBytes(server_time_us)
            + _GATEWAY_TAG + encoder._VarintBytes(len(gateway)) + gateway)


def build_records(raw: bytes, request: ingest_pb2.IngestRequest, slices: list[RunSlice],
                  tail: bytes) -> list[tuple[bytes, bytes]]:
    """(key, value) records for the log: one per run, key = run id."""
    if len(slices) == 1:
        return [(slices[0].run_id.encode(), raw + tail)]
    out = []
    for s in slices:
        rec = events_pb2.LogRecord()
        rec.events.extend(request.events[i] for i in s.indexes)
        out.append((s.run_id.encode(), rec.SerializeToString() + tail))
    return out
