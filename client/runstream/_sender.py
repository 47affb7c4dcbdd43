"""The uploader: run journals (``_wal.py``) → one gRPC ``Ingest.Stream``.

One class, ``Uploader``, used three ways:

- in the **helper process** (``_helper.py``, the default): it outlives the training
  process, so what was journaled right before a SIGKILL still reaches the server;
- in a **thread** of the training process (``ThreadSender``: ``uploader="thread"``, or
  the fallback when no helper process can be started);
- in the **foreground**, by ``runstream sync`` (``_sync.py``).

Per journal it keeps a ``WalReader`` and a cursor (the last seq handed to the stream).
Every linger interval it reads what is new in every journal after its cursor and sends
it as one request (several runs per request: the gateway's cost is per message), up to
``max_inflight_requests`` requests in flight. An ack moves each journal of the batch to
the seq it sent (``WalReader.ack``: the persisted watermark; acknowledged segments are
deleted). A ``BatchRejected`` (the server can never take that batch) is acknowledged
too, and counted. On any stream failure, and after every failed connection attempt,
the uploader reconnects (exponential backoff with full jitter, capped at
``reconnect_max_s``: the uploader's own, not gRPC's, so that many clients that lost a
gateway together reach the restarted one spread out) and every cursor goes back to
its watermark, so everything un-acked is sent again (the server tolerates duplicates).

Back-pressure: ``Control.retry_after`` pauses new requests for the given time; a stream
ended with ``RESOURCE_EXHAUSTED`` (or a batch refused with that code) is retried after
the server's ``retry-after-ms`` / ``retry-after`` trailing metadata when present, else
after the backoff; nothing is acknowledged then. Memory stays bounded: records are read
from the journal on disk when they are sent, at most ``max_request_bytes`` per request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from google.protobuf.internal import encoder

from ._channel import aio_channel
from ._settings import Settings
from ._wal import WalReader, WalWriter
from .v1 import ingest_pb2

log = logging.getLogger("runstream")

_EVENTS_TAG = encoder.TagBytes(1, 2)        # IngestRequest.events
_BATCH_ID_TAG = encoder.TagBytes(15, 0)     # IngestRequest.batch_id
_ANY_CALL_ERROR = (grpc.aio.AioRpcError, grpc.aio.UsageError, ConnectionError, OSError)
_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                    # gRPC's own reconnect backoff, for a channel whose failed attempt
                    # _channel_ready did not see: 2 s at most, not gRPC's 120 s.
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000)]
# A connection attempt that neither succeeds nor fails (packets dropped) is given up
# after this long.
CONNECT_TIMEOUT_S = 10.0
_AUTH_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


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


class RetryLater(ConnectionError):
    """The server asked to slow down (RESOURCE_EXHAUSTED): reconnect after ``delay_s``."""

    def __init__(self, message: str, delay_s: float | None) -> None:
        super().__init__(message)
        self.delay_s = delay_s


def _retrieve(task: asyncio.Future) -> None:
    """Mark a finished task's exception as seen (asyncio logs one never retrieved)."""
    if not task.cancelled():
        task.exception()


async def _channel_ready(channel: grpc.aio.Channel) -> None:
    """Return once ``channel`` is connected; raise ``ConnectionError`` as soon as its
    connection attempt failed (state ``TRANSIENT_FAILURE``).

    ``channel.channel_ready()`` would instead wait through gRPC's own reconnect backoff
    (250 ms growing ×1.6 per attempt up to 2 s, with only ±20 % jitter): clients that
    lost a gateway at the same moment would keep retrying nearly in step and reach the
    restarted gateway together. Ending the attempt here leaves the next one to
    ``Uploader.run``'s backoff with full jitter, which spreads them.
    """
    state = channel.get_state(try_to_connect=True)
    while state != grpc.ChannelConnectivity.READY:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                     grpc.ChannelConnectivity.SHUTDOWN):
            raise ConnectionError(f"cannot connect: channel {state.name}")
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


def retry_after_s(e: BaseException) -> float | None:
    """The server's retry-after hint of a failed call (seconds), if it gave one."""
    try:
        md = e.trailing_metadata() or ()      # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not a call error, or no metadata
        return None
    for k, v in md:
        try:
            if k == "retry-after-ms":
                return max(0.0, float(v) / 1000)
            if k == "retry-after":
                return max(0.0, float(v))
        except (TypeError, ValueError):
            continue
    return None


class Source:
    """One journal being uploaded."""

    __slots__ = ("path", "reader", "cursor", "removed", "acked_events", "rejected_events")

    def __init__(self, path: str, writer: WalWriter | None) -> None:
        self.path = path
        self.reader = WalReader(path, writer=writer)
        self.cursor = self.reader.acked       # the last seq handed to the current stream
        self.removed = False
        self.acked_events = 0                 # acknowledged by this uploader (rejected too)
        self.rejected_events = 0


class Uploader:
    """Uploads journals over one stream; see the module docstring.

    ``add``/``remove``/``stop``/``wait_acked``/``pending`` may be called from any
    thread; ``run`` is the coroutine that does the work (one event loop).
    ``on_ack(path, seq)`` is called on the loop after a watermark moved,
    ``on_control(control)`` for every control message but ``retry_after``; neither may
    block.

    ``channel_options`` are gRPC channel arguments added to the uploader's own for every
    connection it makes. gRPC shares one TCP connection among the channels of a process
    that have the same target and arguments; ``("grpc.use_local_subchannel_pool", 1)``
    gives this uploader a connection of its own even when others in the process upload
    to the same server.
    """

    def __init__(self, settings: Settings, *,
                 on_ack: Callable[[str, int], None] | None = None,
                 on_control: Callable[[ingest_pb2.Control], None] | None = None,
                 channel_options: Sequence[tuple[str, Any]] = ()) -> None:
        self.settings = settings
        self.on_ack = on_ack
        self.on_control = on_control
        self.channel_options = [*_CHANNEL_OPTIONS, *channel_options]
        self._sources: dict[str, Source] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._pause_until = 0.0
        self._warned_auth = False
        self._rr = 0                          # round-robin start among the sources
        self.connected = False
        self.reconnects = 0
        self.requests = 0
        self.rejected_batches = 0
        self.rejected_events = 0
        self.last_error = ""

    # -- any thread ----------------------------------------------------------------------
    def add(self, path: str, writer: WalWriter | None = None) -> Source:
        """Upload the journal at ``path`` (``writer``: this process's writer of it, whose
        memory overflow is then sent too). Adding a journal twice changes nothing."""
        with self._lock:
            src = self._sources.get(path)
            if src is None:
                src = self._sources[path] = Source(path, writer)
        self._poke()
        return src

    def remove(self, path: str) -> None:
        """Stop uploading ``path`` (acks still in flight for it are dropped)."""
        with self._lock:
            src = self._sources.pop(path, None)
        if src is not None:
            src.removed = True
            with src.reader._cond:
                src.reader.close()

    def source(self, path: str) -> Source | None:
        return self._sources.get(path)

    def paths(self) -> list[str]:
        with self._lock:
            return list(self._sources)

    def acked(self, path: str) -> int:
        src = self._sources.get(path)
        return src.reader.acked if src is not None else 0

    def wait_acked(self, path: str, seq: int, timeout: float) -> bool:
        src = self._sources.get(path)
        if src is None:
            return False
        return src.reader.wait_acked(seq, max(0.0, timeout))

    def pending(self, path: str | None = None) -> bool:
        """Is anything journaled and not yet acknowledged (in ``path``, or anywhere)?"""
        with self._lock:
            srcs = [self._sources[path]] if path in self._sources else (
                [] if path is not None else list(self._sources.values()))
        for src in srcs:
            with src.reader._cond:
                if src.removed:
                    continue
                if src.reader._read_locked(src.reader.acked, 1, 1):
                    return True
        return False

    def stop(self) -> None:
        """Make ``run`` return soon (what is in flight is abandoned, never lost)."""
        self._stop_requested = True
        self._poke(stop=True)

    def _poke(self, stop: bool = False) -> None:
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            if stop and self._stopping is not None:
                self._stopping.set()
            if self._wake is not None:
                self._wake.set()
        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:      # the loop is closed
            pass

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, send, reconnect, until ``stop()``."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            return
        backoff = 0.1
        while not self._stopping.is_set():
            conn = asyncio.ensure_future(self._connection())
            stopper = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({conn, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not conn.done():
                conn.cancel()
                try:
                    await conn
                except (asyncio.CancelledError, *_ANY_CALL_ERROR):
                    pass
                except Exception:
                    log.debug("runstream uploader: error while stopping", exc_info=True)
                break
            delay = None
            try:
                got_ack = conn.result()
            except RetryLater as e:
                got_ack = getattr(e, "_runstream_got_ack", False)
                delay = e.delay_s if e.delay_s is not None else backoff
                self.last_error = str(e)
                log.debug("runstream uploader: server busy: %s", e)
            except _ANY_CALL_ERROR as e:
                got_ack = getattr(e, "_runstream_got_ack", False)
                self.last_error = str(e)
                if (isinstance(e, grpc.aio.AioRpcError)
                        and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED):
                    delay = retry_after_s(e)
                    if delay is None:
                        delay = backoff
                if (isinstance(e, grpc.aio.AioRpcError) and e.code() in _AUTH_CODES
                        and not self._warned_auth):
                    # Kept and retried: a key fixed on the server side (or a later
                    # `runstream sync` with the right key) loses nothing.
                    self._warned_auth = True
                    log.warning("runstream: %s refused the upload (%s: %s); the events stay "
                                "in the journal and are retried (RUNSTREAM_API_KEY)",
                                self.settings.url, e.code().name, e.details())
                log.debug("runstream uploader: stream ended: %s", e)
            except Exception as e:
                got_ack = False
                self.last_error = repr(e)
                log.exception("runstream uploader error")
            self.connected = False
            if self._stopping.is_set():
                break
            self.reconnects += 1
            backoff = 0.1 if got_ack else min(self.settings.reconnect_max_s, backoff * 2)
            # Full jitter spreads a storm of reconnecting clients after a gateway restart;
            # a server's retry-after is honoured as a minimum.
            wait = random.uniform(0, backoff)
            if delay is not None:
                wait = max(wait, delay)
            await self._sleep(wait)
        self.connected = False

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _connection(self) -> bool:
        """One stream's life. Returns (or raises) when it fails."""
        s = self.settings
        async with aio_channel(s.url, options=self.channel_options) as channel:
            await asyncio.wait_for(_channel_ready(channel), timeout=CONNECT_TIMEOUT_S)
            # Requests are sent as pre-encoded bytes (no serializer): see encode_request.
            call = channel.stream_stream(
                "/runstream.v1.Ingest/Stream", request_serializer=None,
                response_deserializer=ingest_pb2.IngestResponse.FromString)(
                    metadata=s.call_metadata)
            self.connected = True
            with self._lock:
                for src in self._sources.values():
                    src.cursor = src.reader.acked      # re-send everything un-acked
            state = {"got_ack": False}
            inflight: dict[int, list[tuple[Source, int, int]]] = {}
            window = asyncio.Semaphore(s.max_inflight_requests)
            reader = asyncio.ensure_future(self._read(call, inflight, window, state))
            try:
                await self._write(call, inflight, window, reader)
            except _ANY_CALL_ERROR as e:
                # A write can fail before the reader took in the acks that came before
                # the error: let it, so that they are not sent again.
                if not reader.done():
                    await asyncio.wait({reader}, timeout=1.0)
                e._runstream_got_ack = state["got_ack"]  # type: ignore[attr-defined]
                raise
            finally:
                reader.cancel()
                # What the reader ends with is this same stream failure; it may end only
                # later (with the status of the call cancelled here): retrieve it then.
                reader.add_done_callback(_retrieve)
                call.cancel()
            return state["got_ack"]

    async def _wait(self, reader: asyncio.Future, seconds: float) -> None:
        """Sleep up to ``seconds``; return early when woken or the stream ended."""
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter, reader}, timeout=max(0.0, seconds),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    def _collect(self) -> tuple[list[bytes], list[tuple[Source, int, int]], bool]:
        """What is new after every cursor, within one request's limits: (payloads,
        [(source, last seq, events)], full)."""
        s = self.settings
        with self._lock:
            srcs = list(self._sources.values())
        if not srcs:
            return [], [], False
        self._rr = (self._rr + 1) % len(srcs)
        srcs = srcs[self._rr:] + srcs[:self._rr]
        events_left = s.max_request_events
        bytes_left = s.max_request_bytes
        parts: list[bytes] = []
        touched: list[tuple[Source, int, int]] = []
        for src in srcs:
            if events_left <= 0 or bytes_left <= 0:
                return parts, touched, True
            try:
                with src.reader._cond:
                    if src.removed:
                        continue
                    recs = src.reader._read_locked(src.cursor, events_left, bytes_left)
            except OSError as e:
                log.debug("runstream uploader: reading %s: %s", src.path, e)
                continue
            if not recs:
                continue
            for _seq, data in recs:
                parts.append(data)
                bytes_left -= len(data)
            events_left -= len(recs)
            touched.append((src, recs[-1][0], len(recs)))
        return parts, touched, events_left <= 0 or bytes_left <= 0

    async def _write(self, call, inflight, window, reader) -> None:
        s = self.settings
        batch_id = 0
        last_send = 0.0
        full = False
        while True:
            if reader.done():
                reader.result()   # raises the stream's error
                raise ConnectionError("stream closed by server")
            now = time.monotonic()
            if now < self._pause_until:                      # Control.retry_after
                await self._wait(reader, self._pause_until - now)
                continue
            if not full and now - last_send < s.linger_s:
                # At most one request per linger interval unless a full one is ready.
                await asyncio.sleep(s.linger_s - (now - last_send))
                continue
            parts, touched, full = self._collect()
            if not parts:
                await self._wait(reader, s.linger_s)          # poll the journals
                continue
            if window.locked():
                acq = asyncio.ensure_future(window.acquire())
                await asyncio.wait({acq, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not acq.done():
                    acq.cancel()
                    full = True
                    continue
            else:
                await window.acquire()
            batch_id += 1
            inflight[batch_id] = touched
            try:
                await call.write(encode_request(parts, batch_id))
            except asyncio.InvalidStateError:
                # The call ended (the server went away) after the check above, before
                # the reader task saw it: a stream failure like any other.
                raise ConnectionError("stream closed while writing") from None
            self.requests += 1
            for src, seq, _n in touched:
                src.cursor = seq
            last_send = time.monotonic()

    def _ack(self, touched: list[tuple[Source, int, int]], rejected: bool) -> None:
        for src, seq, n in touched:
            if src.removed:
                continue
            with src.reader._cond:
                if src.removed or seq <= src.reader.acked:
                    continue
                src.reader._ack_locked(seq)
            src.acked_events += n
            if rejected:
                src.rejected_events += n
                self.rejected_events += n
            if self.on_ack is not None:
                try:
                    self.on_ack(src.path, seq)
                except Exception:
                    log.exception("runstream uploader: on_ack")

    async def _read(self, call, inflight, window, state) -> None:
        async for resp in call:
            kind = resp.WhichOneof("kind")
            if kind == "ack":
                state["got_ack"] = True
                touched = inflight.pop(resp.ack.batch_id, None)
                if touched:
                    self._ack(touched, rejected=False)
                window.release()
            elif kind == "rejected":
                rej = resp.rejected
                touched = inflight.pop(rej.batch_id, None) or []
                if rej.code == _RESOURCE_EXHAUSTED:
                    # Not refused for good: the whole stream starts again from the
                    # watermarks after the pause.
                    raise RetryLater(f"batch refused: {rej.message}", None)
                self.rejected_batches += 1
                n = sum(t[2] for t in touched)
                if self.rejected_batches <= 10:
                    log.warning("runstream: the server refused %d event(s) for good: %s", n,
                                rej.message)
                self._ack(touched, rejected=True)
                window.release()
            elif kind == "control":
                ctl = resp.control
                if ctl.WhichOneof("kind") == "retry_after":
                    pause = max(0, ctl.retry_after.millis) / 1000
                    self._pause_until = max(self._pause_until, time.monotonic() + pause)
                elif self.on_control is not None:
                    try:
                        self.on_control(ctl)
                    except Exception:
                        log.exception("runstream: handling control message %s", ctl)
        raise ConnectionError("stream closed by server")


# -- in the training process: the uploader in a thread ----------------------------------

class ThreadSender:
    """The training process's sender when uploading in-process (``uploader="thread"``,
    or the fallback): an ``Uploader`` on its own event loop in a daemon thread."""

    kind = "thread"

    def __init__(self, settings: Settings) -> None:
        from . import _control
        self.settings = settings
        self.uploader = Uploader(settings, on_control=lambda c: _control.handle(c, self))
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="runstream-uploader",
                                        daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _main(self) -> None:
        async def amain():
            self._ready.set()
            await self.uploader.run()
        try:
            asyncio.run(amain())
        except Exception:
            log.exception("runstream uploader thread")

    @property
    def connected(self) -> bool:
        return self.uploader.connected

    def register(self, run) -> None:
        self.uploader.add(run.journal_dir, writer=run._journal)

    def acked(self, run) -> int:
        return self.uploader.acked(run.journal_dir)

    def wait_acked(self, run, seq: int, timeout: float) -> bool:
        return self.uploader.wait_acked(run.journal_dir, seq, timeout)

    def release(self, run) -> None:
        self.uploader.remove(run.journal_dir)

    def watch(self) -> None:
        """Called by the keeper thread about once a second."""

    def close(self, timeout: float = 5.0) -> None:
        self.uploader.stop()
        self._thread.join(timeout)


class NullSender:
    """Offline and disabled runs (and online runs when nothing can upload): nothing is
    sent; the journal stays for ``runstream sync``."""

    kind = "none"
    connected = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def register(self, run) -> None:
        pass

    def acked(self, run) -> int:
        return 0

    def wait_acked(self, run, seq: int, timeout: float) -> bool:
        return False

    def release(self, run) -> None:
        pass

    def watch(self) -> None:
        pass

    def close(self, timeout: float = 5.0) -> None:
        pass
