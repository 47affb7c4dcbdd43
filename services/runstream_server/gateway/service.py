"""The Ingest gRPC service: the edge where errors become status codes.

Per stream, requests are handled one after another: a request is appended only after
the previous one is durable, so a failure can never leave a later batch of a run in
the log without an earlier one (no gaps from a failed append). Streams run
concurrently with each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import grpc
from google.protobuf.message import DecodeError
from runstream.v1 import ingest_pb2

from ..auth.access import UNAUTHENTICATED, key_from_metadata
from ..auth.identity import IdentityTable, Principal
from ..common.clock import now_us
from ..common.errors import PermanentError, QuotaError, RetryableError
from ..eventlog import EventLog
from ..metrics.state import APPEND_BUCKETS, Histogram
from .quota import ProjectQuotas
from .records import build_records, trailer
from .validation import InvalidEvent, validate_request

log = logging.getLogger(__name__)

SERVICE = "runstream.v1.Ingest"
# A client streaming flat out sends a request at least every linger interval (50 ms by
# default, less when full): a gap shorter than this counts as still busy.
BUSY_WINDOW_S = 0.02


class _Stream:
    """One open client stream: serialises writes, knows the runs it carries."""

    def __init__(self, context: grpc.aio.ServicerContext, key: str) -> None:
        self.context = context
        self.key = key
        # The key's principal as of identity-table version ``checked`` (looked up again
        # only when the table changed: a new key, a revocation, a team change).
        self.principal: Principal | None = None
        self.checked = -1
        self.lock = asyncio.Lock()
        self.runs: set[str] = set()

    async def write(self, response: ingest_pb2.IngestResponse) -> None:
        async with self.lock:
            await self.context.write(response)


class IngestService:
    """Validates, stamps and appends client events; acks what is durable.

    ``push_control`` sends a control message to every stream that carries a run.
    Every request is authenticated against ``identity`` (the key of the stream's
    metadata, looked up again per request, so a revoked key stops an open stream) and
    may write only the entities of its key's user. ``identity=None`` accepts every
    request: for in-process tests of the protocol only; the server always passes one.
    """

    def __init__(self, event_log: EventLog, gateway_name: str,
                 quotas: ProjectQuotas | None = None,
                 identity: IdentityTable | None = None) -> None:
        self._log = event_log
        self._identity = identity
        self._name = gateway_name.encode()
        self._quotas = quotas if quotas is not None and quotas.enabled else None
        self._streams_by_run: dict[str, set[_Stream]] = defaultdict(set)
        # Per request, never per event (the metrics collector reads these at scrape time):
        # requests/events/bytes accepted; refusals: rejected and malformed
        # (INVALID_ARGUMENT), unavailable, throttled (RESOURCE_EXHAUSTED),
        # unauthenticated, denied (PERMISSION_DENIED).
        self.stats = {"requests": 0, "events": 0, "bytes": 0, "rejected": 0, "malformed": 0,
                      "unavailable": 0, "throttled": 0, "unauthenticated": 0, "denied": 0}
        self.open_streams = 0
        self.append_seconds = Histogram(APPEND_BUCKETS)   # appends that succeeded
        self._last_request = -1e9

    def busy(self) -> bool:
        """Whether a request arrived within the last BUSY_WINDOW_S (clients are
        streaming): work sharing this event loop can step aside (see the projector)."""
        return time.monotonic() - self._last_request < BUSY_WINDOW_S

    def handler(self) -> grpc.GenericRpcHandler:
        # Requests arrive as raw bytes (no deserializer) so that they can be forwarded
        # to the log unchanged after validation.
        method = grpc.stream_stream_rpc_method_handler(
            self.stream, request_deserializer=None,
            response_serializer=ingest_pb2.IngestResponse.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {"Stream": method})

    async def push_control(self, run_id: str, control: ingest_pb2.Control) -> int:
        """Send ``control`` to the streams carrying ``run_id``; returns how many got it."""
        sent = 0
        for stream in list(self._streams_by_run.get(run_id, ())):
            try:
                await stream.write(ingest_pb2.IngestResponse(control=control))
                sent += 1
            except Exception:
                log.debug("control to a closed stream dropped", exc_info=True)
        return sent

    async def stream(self, request_iterator, context: grpc.aio.ServicerContext) -> None:
        s = _Stream(context, key_from_metadata(context.invocation_metadata()))
        self.open_streams += 1
        try:
            if self._identity is not None:
                await self._authenticate(s)     # before reading anything; again per request
            async for raw in request_iterator:
                await self._handle(raw, s)
        finally:
            self.open_streams -= 1
            for run_id in s.runs:
                streams = self._streams_by_run.get(run_id)
                if streams is not None:
                    streams.discard(s)
                    if not streams:
                        del self._streams_by_run[run_id]

    async def _authenticate(self, s: _Stream) -> Principal:
        """The stream key's principal now, or the stream ends with UNAUTHENTICATED."""
        version = self._identity.applied
        if s.checked != version:
            s.principal = self._identity.authenticate(s.key)
            s.checked = version
        if s.principal is None:
            self.stats["unauthenticated"] += 1
            await s.context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
        return s.principal

    async def _authorize(self, s: _Stream, request: ingest_pb2.IngestRequest,
                         slices: list) -> str:
        """End the stream (UNAUTHENTICATED / PERMISSION_DENIED) unless the stream's key
        is valid now and may write every entity of the request; returns the key's id.
        The client keeps the events and retries: a fixed key loses nothing."""
        principal = await self._authenticate(s)
        if principal.admin:
            return principal.key_id
        events = request.events
        for sl in slices:
            entity = events[sl.indexes[0]].entity
            if not principal.member_of(entity):
                self.stats["denied"] += 1
                await s.context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                      f"user {principal.user} may not write entity {entity}")
        return principal.key_id

    def _demands(self, raw: bytes, request: ingest_pb2.IngestRequest,
                 slices: list) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(events, bytes, runs started) per (entity, project) of a validated request."""
        events = request.events
        total = len(events)
        count_runs = bool(self._quotas.limits.runs_per_s or self._quotas.key_limits.runs_per_s)
        out: dict[tuple[str, str], list[int]] = {}
        for sl in slices:
            first = events[sl.indexes[0]]
            acc = out.setdefault((first.entity, first.project), [0, 0, 0])
            n = len(sl.indexes)
            acc[0] += n
            acc[1] += len(raw) * n // total
            if count_runs:
                acc[2] += sum(1 for i in sl.indexes if events[i].HasField("run_start"))
        return {k: tuple(v) for k, v in out.items()}

    async def _handle(self, raw: bytes, s: _Stream) -> None:
        received = now_us()
        self._last_request = time.monotonic()
        try:
            request = ingest_pb2.IngestRequest.FromString(raw)
        except DecodeError:
            self.stats["malformed"] += 1
            await s.context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  "request is not a runstream.v1.IngestRequest")
        batch_id = request.batch_id
        try:
            slices = validate_request(request)
        except InvalidEvent as e:
            self.stats["rejected"] += 1
            await s.write(ingest_pb2.IngestResponse(rejected=ingest_pb2.BatchRejected(
                batch_id=batch_id, code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                message=str(e), run_id=e.run_id)))
            return
        key_id = ""
        if self._identity is not None:
            key_id = await self._authorize(s, request, slices)
        if not slices:
            await s.write(ingest_pb2.IngestResponse(ack=ingest_pb2.Ack(batch_id=batch_id)))
            return
        if self._quotas is not None:
            try:
                self._quotas.take(time.monotonic(), self._demands(raw, request, slices),
                                  key_id)
            except QuotaError as e:
                # The stream ends: a later request of it must not be appended before
                # this one (per-run order). The client re-sends from its watermarks.
                self.stats["throttled"] += 1
                ms = max(1, int(e.retry_after_s * 1000))
                await s.context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      f"{e}; retry after {ms} ms",
                                      trailing_metadata=(("retry-after-ms", str(ms)),))
        for sl in slices:
            if sl.run_id not in s.runs:
                s.runs.add(sl.run_id)
                self._streams_by_run[sl.run_id].add(s)
        records = build_records(raw, request, slices, trailer(received, self._name))
        appending = time.monotonic()
        try:
            await self._log.append(records)
        except RetryableError as e:
            self.stats["unavailable"] += 1
            await s.context.abort(grpc.StatusCode.UNAVAILABLE, f"event log unavailable: {e}")
        except PermanentError as e:
            self.stats["rejected"] += 1
            await s.write(ingest_pb2.IngestResponse(rejected=ingest_pb2.BatchRejected(
                batch_id=batch_id, code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                message=str(e))))
            return
        self.append_seconds.observe(time.monotonic() - appending)
        self.stats["requests"] += 1
        self.stats["events"] += len(request.events)
        self.stats["bytes"] += len(raw)
        ack = ingest_pb2.Ack(batch_id=batch_id)
        for sl in slices:
            ack.runs.add(run_id=sl.run_id, seq=sl.max_seq)
        await s.write(ingest_pb2.IngestResponse(ack=ack))
