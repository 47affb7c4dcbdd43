"""The background sender: one gRPC stream to the gateway, re-opened on failure.

Runs in a daemon thread with its own asyncio loop, so the user's code never waits on
the network. Every (re)connection re-sends all un-acknowledged events in journal order
(the server tolerates duplicates). Heartbeats are sent for runs that have been idle
for ``heartbeat_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable

import grpc
from google.protobuf.internal import encoder

from . import _control
from ._journal import Journal
from ._settings import Settings
from .v1 import ingest_pb2

log = logging.getLogger("runstream")

_EVENTS_TAG = encoder.TagBytes(1, 2)        # IngestRequest.events
_BATCH_ID_TAG = encoder.TagBytes(15, 0)     # IngestRequest.batch_id
_ANY_CALL_ERROR = (grpc.aio.AioRpcError, grpc.aio.UsageError, ConnectionError, OSError)


def encode_request(datas: list[bytes], batch_id: int) -> bytes:
    """IngestRequest bytes from already-serialized events (no re-encoding)."""
    parts = []
    for d in datas:
        parts.append(_EVENTS_TAG)
        parts.append(encoder._VarintBytes(len(d)))
        parts.append(d)
    parts.append(_BATCH_ID_TAG)
    parts.append(encoder._VarintBytes(batch_id))
    return b"".join(parts)


class Sender:
    """Owns the journal and the connection. Create once per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.journal = Journal()
        self._heartbeats: dict[str, Callable[[], None]] = {}
        self._last_activity: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        # True only while the writer waits with nothing to send: publish() then wakes
        # it. A busy writer finds new entries on its next linger tick, so most log()
        # calls cost no cross-thread wake-up (~15-35 µs each when done every time).
        self._idle = False
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.connected = False
        self.reconnects = 0
        self._thread = threading.Thread(target=self._main, name="runstream-sender", daemon=True)
        self._thread.start()
        self._ready.wait(5)

    # -- called from user threads -------------------------------------------------
    def publish(self, run_id: str, seq: int, data: bytes) -> None:
        """Fire-and-forget: journal the event and wake the sender. Never blocks on I/O."""
        self.journal.append(run_id, seq, data)
        self._last_activity[run_id] = time.monotonic()
        loop = self._loop
        if loop is not None and self._idle:
            self._idle = False
            try:
                loop.call_soon_threadsafe(self._set_wake)
            except RuntimeError:   # loop already closed at interpreter exit
                pass

    def deliver(self, run_id: str, seq: int, timeout: float) -> bool:
        """Wait until the server acknowledged ``run_id`` up to ``seq``."""
        return self.journal.wait_acked(run_id, seq, timeout)

    def register_heartbeat(self, run_id: str, beat: Callable[[], None]) -> None:
        with self._lock:
            self._heartbeats[run_id] = beat
            self._last_activity[run_id] = time.monotonic()

    def unregister_heartbeat(self, run_id: str) -> None:
        with self._lock:
            self._heartbeats.pop(run_id, None)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._set_wake)
            except RuntimeError:
                pass
        self._thread.join(timeout)

    # -- the sender thread ----------------------------------------------------------
    def _set_wake(self) -> None:
        if self._stop.is_set():
            self._astop.set()
        if self._wake is not None:
            self._wake.set()

    def _main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._astop = asyncio.Event()
        self._ready.set()
        hb = asyncio.create_task(self._heartbeat_loop())
        backoff = 0.1
        while not self._stop.is_set():
            conn = asyncio.create_task(self._connection())
            stopper = asyncio.create_task(self._astop.wait())
            await asyncio.wait({conn, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not conn.done() and not self.connected:
                # Stopping while no connection exists: nothing can be delivered now.
                conn.cancel()
                break
            try:
                got_ack = await conn
            except _ANY_CALL_ERROR as e:
                got_ack = getattr(e, "_runstream_got_ack", False)
                log.debug("runstream stream ended: %s", e)
            except Exception:
                log.exception("runstream sender error")
                got_ack = False
            self.connected = False
            if self._stop.is_set():
                break
            self.reconnects += 1
            backoff = 0.1 if got_ack else min(self.settings.reconnect_max_s, backoff * 2)
            # Full jitter spreads a storm of reconnecting clients after a gateway restart.
            await self._sleep_or_stop(random.uniform(0, backoff))
        hb.cancel()

    async def _sleep_or_stop(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._astop.wait(), seconds)
        except TimeoutError:
            pass

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_s
        while True:
            await asyncio.sleep(min(interval / 4, 1.0))
            now = time.monotonic()
            with self._lock:
                due = [(rid, beat) for rid, beat in self._heartbeats.items()
                       if now - self._last_activity.get(rid, 0) >= interval]
            for _rid, beat in due:
                beat()   # publishes a Heartbeat event through publish()

    async def _connection(self) -> bool:
        """One stream's life. Returns when it fails; raises the gRPC error."""
        s = self.settings
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024),
                   ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(s.url, options=options) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
            # Requests are sent as pre-encoded bytes (no serializer): see encode_request.
            call = channel.stream_stream(
                "/runstream.v1.Ingest/Stream", request_serializer=None,
                response_deserializer=ingest_pb2.IngestResponse.FromString)()
            self.connected = True
            state = {"got_ack": False}
            inflight: dict[int, list[tuple[str, int]]] = {}
            window = asyncio.Semaphore(s.max_inflight_requests)
            reader = asyncio.create_task(self._read(call, inflight, window, state))
            try:
                await self._write(call, inflight, window, reader)
            except _ANY_CALL_ERROR as e:
                e._runstream_got_ack = state["got_ack"]  # type: ignore[attr-defined]
                raise
            finally:
                reader.cancel()
                call.cancel()
            return state["got_ack"]

    async def _write(self, call, inflight, window, reader) -> None:
        s = self.settings
        cursor = self.journal.first_unacked()   # re-send everything un-acked
        batch_id = 0
        last_send = 0.0
        while not self._stop.is_set() or self.journal.unacked():
            if reader.done():
                reader.result()   # raises the stream's error
                raise ConnectionError("stream closed by server")
            entries = self.journal.pending_from(cursor, s.max_request_events, s.max_request_bytes)
            if not entries:
                # Announce idleness before the last look, so a publish() racing with
                # it either is seen by that look or wakes us.
                self._idle = True
                self._wake.clear()
                if self.journal.pending_from(cursor, 1, 1 << 30):
                    self._idle = False
                    continue
                waiter = asyncio.create_task(self._wake.wait())
                await asyncio.wait({waiter, reader}, timeout=0.5,
                                   return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                self._idle = False
                continue
            # Linger: at most one request per linger_s unless a full request is ready.
            since = time.monotonic() - last_send
            if since < s.linger_s and len(entries) < s.max_request_events:
                await asyncio.sleep(s.linger_s - since)
                continue
            await window.acquire()
            batch_id += 1
            runs: dict[str, int] = {}
            for e in entries:
                runs[e.run_id] = e.seq
            inflight[batch_id] = list(runs.items())
            await call.write(encode_request([e.data for e in entries], batch_id))
            cursor = entries[-1].n + 1
            last_send = time.monotonic()

    async def _read(self, call, inflight, window, state) -> None:
        async for resp in call:
            kind = resp.WhichOneof("kind")
            if kind == "ack":
                state["got_ack"] = True
                for ra in resp.ack.runs:
                    self.journal.ack(ra.run_id, ra.seq)
                inflight.pop(resp.ack.batch_id, None)
                window.release()
            elif kind == "rejected":
                rej = resp.rejected
                log.warning("runstream: the server refused %d event batch(es): %s",
                            1, rej.message)
                for run_id, seq in inflight.pop(rej.batch_id, []):
                    self.journal.ack(run_id, seq, rejected=True)
                window.release()
            elif kind == "control":
                try:
                    _control.handle(resp.control, self)
                except Exception:
                    log.exception("runstream: handling control message %s", resp.control)
        raise ConnectionError("stream closed by server")
