"""One Prometheus collector per role: the services' own counters, read at scrape time.

A collector is given the object that holds the role's service (the ``Server``, or a
stand-in in tests) and looks the service up on every scrape: a role that has not started
yet, or has stopped, yields nothing. Nothing here runs on the ingest path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..common.errors import RetryableError
from .state import Histogram

log = logging.getLogger(__name__)

# How long a scrape waits for the event log's end offsets (the projector's lag).
END_OFFSETS_TIMEOUT_S = 2.0

# The gateway's refusals: status code → the IngestService.stats entries counting it.
REFUSALS = {
    "INVALID_ARGUMENT": ("rejected", "malformed"),
    "UNAUTHENTICATED": ("unauthenticated",),
    "PERMISSION_DENIED": ("denied",),
    "RESOURCE_EXHAUSTED": ("throttled",),
    "UNAVAILABLE": ("unavailable",),
}


def histogram_family(name: str, doc: str, labels: list[str],
                     series: list[tuple[list[str], Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in series:
        buckets = [(floatToGoString(le), n) for le, n in h.cumulative()]
        family.add_metric(values, buckets, h.sum)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class RolesCollector(Collector):
    """``runstream_role{role}`` 1 for each role the process runs."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self._roles = roles

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("runstream_role", "Roles this process runs (always 1)",
                                   labels=["role"])
        for role in self._roles:
            family.add_metric([role], 1)
        yield family


class GatewayCollector(Collector):
    """``owner.ingest`` (gateway/service.py IngestService) and ``owner.beacon``."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        ingest = getattr(self._owner, "ingest", None)
        if ingest is None:
            return
        stats = ingest.stats
        p = "runstream_gateway_"
        yield _counter(p + "requests_accepted", "Ingest requests appended to the event log "
                       "and acknowledged", stats["requests"])
        yield _counter(p + "events_accepted", "Events appended to the event log and "
                       "acknowledged", stats["events"])
        yield _counter(p + "bytes_accepted", "Bytes of the ingest requests appended to the "
                       "event log", stats["bytes"])
        refused = CounterMetricFamily(p + "requests_refused", "Ingest requests refused, by "
                                      "the gRPC status code the client got", labels=["code"])
        for code, keys in REFUSALS.items():
            refused.add_metric([code], sum(stats.get(k, 0) for k in keys))
        yield refused
        yield _gauge(p + "open_streams", "Client ingest streams open now",
                     ingest.open_streams)
        yield histogram_family(p + "append_duration_seconds", "Time to append one ingest "
                               "request's records durably to the event log (appends that "
                               "succeeded)", [], [([], ingest.append_seconds)])
        beacon = getattr(self._owner, "beacon", None)
        if beacon is not None:
            yield _counter(p + "beacons", "Beacon rounds appended (one record to every "
                           "partition each)", beacon.sent)
        pending = getattr(getattr(self._owner, "event_log", None), "pending_bytes", None)
        if pending is not None:          # Kafka: records not yet acknowledged by the brokers
            yield _gauge(p + "eventlog_pending_bytes", "Bytes of records handed to the Kafka "
                         "producer and not yet acknowledged or failed (appends are refused "
                         "beyond 64 MiB)", pending)


class ProjectorCollector(Collector):
    """``owner.projector`` (projector/service.py) and the lag of its partitions against
    ``owner.event_log``'s end offsets, which ``refresh()`` reads before each scrape."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self._ends: dict[int, int] | None = None

    async def refresh(self) -> None:
        """Read the event log's end offsets (one request to Kafka); on an error or
        after END_OFFSETS_TIMEOUT_S the lag is left out of this scrape."""
        self._ends = None
        event_log = getattr(self._owner, "event_log", None)
        if getattr(self._owner, "projector", None) is None or event_log is None:
            return
        try:
            self._ends = await asyncio.wait_for(event_log.end_offsets(),
                                                END_OFFSETS_TIMEOUT_S)
        except (RetryableError, RuntimeError, OSError, TimeoutError) as e:   # no lag then
            log.debug("metrics: end offsets not read: %s", e)

    def collect(self) -> Iterator[Metric]:
        projector = getattr(self._owner, "projector", None)
        if projector is None:
            return
        p = "runstream_projector_"
        yield _counter(p + "records_consumed", "Event-log records folded (records folded "
                       "again after a rewind included)", projector.records_applied)
        rows = CounterMetricFamily(p + "rows_written", "Rows inserted into the store, by "
                                   "table", labels=["table"])
        for table, n in sorted(projector.rows_written.items()):
            rows.add_metric([table], n)
        yield rows
        yield _counter(p + "batches_written", "Batches written to the store (refused ones "
                       "skipped included)", projector.batches_written)
        errors = CounterMetricFamily(p + "insert_errors", "Failed batch inserts: retryable "
                                     "(retried from the last commit) or permanent (the batch "
                                     "skipped)", labels=["kind"])
        for kind, n in sorted(projector.insert_errors.items()):
            errors.add_metric([kind], n)
        yield errors
        yield _gauge(p + "assigned_partitions", "Event-log partitions this projector owns",
                     len(projector.partitions()))
        if self._ends is not None:
            lag = GaugeMetricFamily(p + "consumer_lag_records", "Records of the partition "
                                    "not yet committed by this projector (end offset minus "
                                    "committed offset)", labels=["partition"])
            for part, offset in sorted(projector.consumed_offsets().items()):
                end = self._ends.get(part)
                if end is not None:
                    lag.add_metric([str(part)], max(0, end - offset))
            yield lag


class ReaperCollector(Collector):
    """``owner.reaper`` (reaper/service.py)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        reaper = getattr(self._owner, "reaper", None)
        if reaper is None:
            return
        p = "runstream_reaper_"
        yield _gauge(p + "runs_tracked", "Runs whose liveness this reaper tracks (every "
                     "state)", len(reaper.table.runs))
        yield _counter(p + "crashes_emitted", "Crashed events appended for silent runs",
                       reaper.crashes_emitted)
        skipped = CounterMetricFamily(p + "judgements_skipped", "Judgements not made: a "
                                      "partition behind the log at a tick (backlog), a tick "
                                      "lost to an event-log error (log_unavailable)",
                                      labels=["reason"])
        for reason, n in sorted(reaper.skipped.items()):
            skipped.add_metric([reason], n)
        yield skipped
        yield _gauge(p + "assigned_partitions", "Event-log partitions this reaper judges",
                     len(reaper.partitions()))


class ApiCollector(Collector):
    """``owner.api_stats`` (state.ApiStats), set when the api role serves."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner

    def collect(self) -> Iterator[Metric]:
        stats = getattr(self._owner, "api_stats", None)
        if stats is None:
            return
        requests = CounterMetricFamily("runstream_api_http_requests", "HTTP API requests "
                                       "answered, by route pattern, method and status",
                                       labels=["route", "method", "status"])
        for labels, n in sorted(stats.http_requests.items()):
            requests.add_metric(list(labels), n)
        yield requests
        yield histogram_family("runstream_api_query_duration_seconds", "Time of the api's "
                               "store reads (the wait for the store thread included), by "
                               "interface: http or grpc", ["interface"],
                               [([name], h) for name, h in sorted(stats.query_seconds.items())])
