"""The uploader (client/runstream/_sender.py), the helper process's two ends
(_helper.py) and ``runstream sync`` (_sync.py), against a scripted fake Ingest server:
acks move the persisted watermark, reconnects re-send everything un-acked, refused
batches are acknowledged and counted, RESOURCE_EXHAUSTED and retry-after are obeyed,
control messages reach the training process."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from runstream import _control, _sync
from runstream._helper import HelperSender, mark_exited
from runstream._sender import Uploader
from runstream._settings import Settings
from runstream._wal import WalReader, WalWriter, read_acked
from runstream.v1 import events_pb2, ingest_pb2

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


class FakeIngest:
    """An Ingest server whose answer to each request is ``policy(stream, index, request)``:
    "ack", "reject", "busy" (rejected with RESOURCE_EXHAUSTED), "silent", "drop" (end the
    stream UNAVAILABLE), "exhausted" (end it RESOURCE_EXHAUSTED with retry-after-ms), or
    a list of IngestResponses to write."""

    def __init__(self, policy: Callable | None = None) -> None:
        self.policy = policy or (lambda s, i, r: "ack")
        self.streams: list[list[tuple[float, ingest_pb2.IngestRequest]]] = []
        self.contexts: list = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.address = self._call(self._start())

    def _call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> str:
        self.server = grpc.aio.server()
        method = grpc.stream_stream_rpc_method_handler(
            self._stream, request_deserializer=None,
            response_serializer=ingest_pb2.IngestResponse.SerializeToString)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("runstream.v1.Ingest", {"Stream": method}),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return f"127.0.0.1:{port}"

    async def _stream(self, requests, context) -> None:
        got: list = []
        self.streams.append(got)
        self.contexts.append(context)
        s = len(self.streams) - 1
        async for raw in requests:
            req = ingest_pb2.IngestRequest.FromString(raw)
            got.append((time.monotonic(), req))
            action = self.policy(s, len(got) - 1, req)
            if action == "ack":
                ack = ingest_pb2.Ack(batch_id=req.batch_id)
                last: dict[str, int] = {}
                for e in req.events:
                    last[e.run_id] = e.seq
                for rid, seq in last.items():
                    ack.runs.add(run_id=rid, seq=seq)
                await context.write(ingest_pb2.IngestResponse(ack=ack))
            elif action in ("reject", "busy"):
                await context.write(ingest_pb2.IngestResponse(rejected=ingest_pb2.BatchRejected(
                    batch_id=req.batch_id, code=INVALID if action == "reject" else EXHAUSTED,
                    message="no")))
            elif action == "drop":
                await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")
            elif action == "exhausted":
                context.set_trailing_metadata((("retry-after-ms", "600"),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")
            elif isinstance(action, list):
                for resp in action:
                    await context.write(resp)

    def push(self, resp: ingest_pb2.IngestResponse) -> None:
        """Write ``resp`` on the newest stream."""
        self._call(self.contexts[-1].write(resp))

    def seqs(self, stream: int | None = None) -> list[int]:
        streams = self.streams if stream is None else [self.streams[stream]]
        return [e.seq for got in streams for _t, r in got for e in r.events]

    def close(self) -> None:
        self._call(self.server.stop(None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def fake():
    servers: list[FakeIngest] = []

    def make(policy=None) -> FakeIngest:
        servers.append(FakeIngest(policy))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


class Running:
    """An Uploader's ``run()`` on a loop in a background thread."""

    def __init__(self, up: Uploader) -> None:
        self.up = up
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.future = asyncio.run_coroutine_threadsafe(up.run(), self.loop)

    def stop(self) -> None:
        self.up.stop()
        self.future.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def settings(url: str, **kw) -> Settings:
    return Settings(url=url, **{"linger_s": 0.01, "reconnect_max_s": 0.5, **kw})


def event(run_id: str, seq: int, body: str = "log") -> events_pb2.Event:
    e = events_pb2.Event(run_id=run_id, project="p", entity="e", seq=seq,
                         client_time_us=1_700_000_000_000_000 + seq)
    if body == "log":
        e.log.step = seq
        e.log.numbers["x"] = float(seq)
    else:
        getattr(e, body).SetInParent()
    return e


def journal(path, run_id: str, seqs, body: str = "log", writer: WalWriter | None = None):
    w = writer or WalWriter(str(path))
    for seq in seqs:
        assert w.append(seq, event(run_id, seq, body).SerializeToString())
    return w


def wait(pred, timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or pred}")


# -------------------------------------------------------------------------- Uploader


def test_acks_move_the_persisted_watermark_and_runs_share_requests(fake, tmp_path):
    srv = fake()
    a, b = str(tmp_path / "run-a"), str(tmp_path / "run-b")
    wa, wb = journal(a, "a", range(1, 51)), journal(b, "b", range(1, 31))
    acks: list[tuple[str, int]] = []
    up = Uploader(settings(srv.address), on_ack=lambda p, s: acks.append((p, s)))
    up.add(a, writer=wa)
    up.add(b)
    r = Running(up)
    try:
        assert up.wait_acked(a, 50, 10) and up.wait_acked(b, 30, 10)
        assert read_acked(a) == 50 and read_acked(b) == 30      # persisted
        assert not up.pending()
        journal(a, "a", range(51, 61), writer=wa)               # the live tail follows
        assert up.wait_acked(a, 60, 10)
    finally:
        r.stop()
    per_run: dict[str, list[int]] = {}
    for _t, req in srv.streams[0]:
        for e in req.events:
            per_run.setdefault(e.run_id, []).append(e.seq)
    assert per_run == {"a": list(range(1, 61)), "b": list(range(1, 31))}
    assert any(len({e.run_id for e in req.events}) == 2 for _t, req in srv.streams[0])
    assert acks[-1] == (a, 60) and (b, 30) in acks and up.rejected_events == 0
    # A new uploader (a restarted helper, runstream sync) starts after the watermark.
    up2 = Uploader(settings(srv.address))
    assert up2.add(a).cursor == 60 and not up2.pending()
    wa.close()
    wb.close()


def test_reconnect_resends_everything_not_acknowledged(fake, tmp_path):
    def policy(stream, i, req):
        if stream == 0:
            return ["ack", "silent", "drop"][min(i, 2)]
        return "ack"
    srv = fake(policy)
    path = str(tmp_path / "run-r")
    w = journal(path, "r", range(1, 41))
    up = Uploader(settings(srv.address, max_request_events=10))
    up.add(path)
    r = Running(up)
    try:
        assert up.wait_acked(path, 40, 15)
    finally:
        r.stop()
    assert srv.seqs(0)[:30] == list(range(1, 31))
    assert srv.seqs(1)[0] == 11                  # from the watermark: 1..10 were acked
    assert srv.seqs(1) == list(range(11, 41)) and up.reconnects >= 1
    assert read_acked(path) == 40
    w.close()


def test_refused_batches_are_acknowledged_and_counted(fake, tmp_path, caplog):
    srv = fake(lambda s, i, req: "reject" if req.events[0].seq == 11 else "ack")
    path = str(tmp_path / "run-x")
    w = journal(path, "x", range(1, 41))
    up = Uploader(settings(srv.address, max_request_events=10))
    src = up.add(path)
    r = Running(up)
    try:
        assert up.wait_acked(path, 40, 10)
    finally:
        r.stop()
    assert (up.rejected_batches, up.rejected_events, src.rejected_events) == (1, 10, 10)
    assert src.acked_events == 40 and len(srv.streams) == 1
    assert "refused 10 event(s) for good" in caplog.text
    w.close()


def test_resource_exhausted_is_retried_never_acknowledged(fake, tmp_path):
    def policy(stream, i, req):
        if stream == 0:
            return "busy"                        # refused for now, not for good
        if stream == 1:
            return "exhausted"                   # the stream ends, retry-after-ms: 600
        return "ack"
    srv = fake(policy)
    path = str(tmp_path / "run-b")
    w = journal(path, "b", range(1, 21))
    up = Uploader(settings(srv.address))
    r = Running(up)
    up.add(path)
    try:
        assert up.wait_acked(path, 20, 15)
    finally:
        r.stop()
    assert up.rejected_events == 0 and len(srv.streams) == 3
    assert srv.seqs(1)[0] == 1 and srv.seqs(2)[0] == 1       # nothing was acknowledged
    gap = srv.streams[2][0][0] - srv.streams[1][-1][0]
    assert gap >= 0.55, f"reconnected {gap:.2f}s after a retry-after of 0.6s"
    w.close()


def test_retry_after_pauses_new_requests(fake, tmp_path):
    pause = ingest_pb2.IngestResponse(control=ingest_pb2.Control(
        retry_after=ingest_pb2.RetryAfter(millis=400)))

    def policy(stream, i, req):
        if i == 0:
            return [pause, ingest_pb2.IngestResponse(ack=ingest_pb2.Ack(batch_id=req.batch_id))]
        return "ack"
    srv = fake(policy)
    path = str(tmp_path / "run-p")
    w = journal(path, "p", range(1, 11))
    up = Uploader(settings(srv.address))
    up.add(path)
    r = Running(up)
    try:
        assert up.wait_acked(path, 10, 10)          # the pause came just before this ack
        journal(path, "p", range(11, 21), writer=w)
        assert up.wait_acked(path, 20, 10)
    finally:
        r.stop()
    (t0, first), (t1, second) = srv.streams[0][:2]
    assert [e.seq for e in first.events] == list(range(1, 11))
    assert t1 - t0 >= 0.38 and len(srv.streams) == 1
    w.close()


def test_control_messages_reach_on_control(fake, tmp_path):
    srv = fake()
    got: list = []
    path = str(tmp_path / "run-c")
    w = journal(path, "c", [1])
    up = Uploader(settings(srv.address), on_control=got.append)
    up.add(path)
    r = Running(up)
    try:
        assert up.wait_acked(path, 1, 10)
        srv.push(ingest_pb2.IngestResponse(control=ingest_pb2.Control(
            stop_run=ingest_pb2.StopRun(run_id="c", requested_by="bob"))))
        wait(lambda: got, what="the control message")
    finally:
        r.stop()
    assert got[0].stop_run.run_id == "c" and got[0].stop_run.requested_by == "bob"
    w.close()


def test_a_dead_server_is_retried_with_backoff_and_stop_returns_at_once(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    path = str(tmp_path / "run-d")
    w = journal(path, "d", range(1, 4))
    up = Uploader(settings(dead))
    up.add(path)
    r = Running(up)
    time.sleep(1.0)
    t0 = time.monotonic()
    r.stop()
    assert time.monotonic() - t0 < 2 and up.pending() and read_acked(path) == 0
    w.close()


def test_a_refused_connection_attempt_goes_back_to_the_uploaders_backoff(tmp_path):
    """Each attempt to reach a dead server ends as soon as it failed and the next one
    waits for the uploader's jittered backoff (not gRPC's own reconnect loop, which
    would keep one attempt pending for up to CONNECT_TIMEOUT_S)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    path = str(tmp_path / "run-d")
    w = journal(path, "d", [1])
    up = Uploader(settings(dead, reconnect_max_s=0.2))
    up.add(path)
    r = Running(up)
    time.sleep(2.0)
    r.stop()
    # Waits of U(0, 0.2 s) on average 0.1 s: about 20 attempts in 2 s; gRPC's loop
    # would have made one.
    assert up.reconnects >= 8, up.reconnects
    assert "cannot connect" in up.last_error
    w.close()


def test_a_stream_ended_by_the_server_mid_write_is_not_an_error(fake, tmp_path, caplog):
    """The server ending streams while requests are being written (a gateway going
    away) is a reconnect, never an ERROR in the client's log, whichever of the writer
    or the reader notices first; nothing is lost."""
    def policy(stream, i, req):
        return "drop" if stream < 20 and i == 2 else "ack"
    srv = fake(policy)
    path = str(tmp_path / "run-m")
    n = 2000
    w = journal(path, "m", range(1, n + 1))
    # One event per request, no linger: the writer writes back to back.
    up = Uploader(settings(srv.address, linger_s=0.0, max_request_events=1,
                           reconnect_max_s=0.01))
    up.add(path)
    r = Running(up)
    try:
        assert up.wait_acked(path, n, 30)
    finally:
        r.stop()
    assert len(srv.streams) == 21
    gc.collect()     # asyncio logs a task's exception never retrieved when it is collected
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert not errors, [rec.getMessage() for rec in errors]
    w.close()


def test_uploaders_of_one_process_get_a_connection_each_with_a_local_subchannel_pool(
        fake, tmp_path):
    """gRPC carries every channel of a process to one target over one shared connection;
    ``channel_options=[("grpc.use_local_subchannel_pool", 1)]`` gives each uploader its
    own (what a process standing in for many clients needs)."""
    for options, connections in (((), 1), ([("grpc.use_local_subchannel_pool", 1)], 3)):
        srv = fake()
        ups, writers, runs = [], [], []
        for i in range(3):
            path = str(tmp_path / f"run-{len(options)}-{i}")
            writers.append(journal(path, f"s{i}", [1]))
            up = Uploader(settings(srv.address), channel_options=options)
            up.add(path)
            ups.append((up, path))
            runs.append(Running(up))
        try:
            for up, path in ups:
                assert up.wait_acked(path, 1, 10)
            peers = {ctx.peer() for ctx in srv.contexts}
        finally:
            for r in runs:
                r.stop()
        assert len(srv.contexts) == 3 and len(peers) == connections, peers
        for wr in writers:
            wr.close()


# ------------------------------------------------------------ the helper process


class _Run:
    """What the senders need of a run."""

    def __init__(self, path: str, writer: WalWriter) -> None:
        self.journal_dir = path
        self._journal = writer


def test_helper_process_relays_acks_and_stops_and_is_restarted(fake, tmp_path, monkeypatch):
    srv = fake()
    stops: list = []
    monkeypatch.setattr(_control, "handle", lambda ctl, sender: stops.append((ctl, sender)))
    path = str(tmp_path / "run-h")
    w = journal(path, "h", range(1, 11))
    sender = HelperSender(settings(srv.address))
    run = _Run(path, w)
    try:
        sender.register(run)
        assert sender.wait_acked(run, 10, 20) and sender.acked(run) == 10
        wait(lambda: sender.connected, what="status: connected")
        srv.push(ingest_pb2.IngestResponse(control=ingest_pb2.Control(
            stop_run=ingest_pb2.StopRun(run_id="h", requested_by="ann"))))
        wait(lambda: stops, 5, "the stop, forwarded by the helper")
        assert stops[0][0].stop_run.requested_by == "ann" and stops[0][1] is sender
        # A helper that dies is started again and resumes from the watermark.
        first = sender._proc
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        sender.watch()
        assert sender._proc is not first and sender.restarts == 1
        journal(path, "h", range(11, 21), writer=w)
        assert sender.wait_acked(run, 20, 20)
        assert srv.seqs(len(srv.streams) - 1)[0] == 11
    finally:
        sender.release(run)
        sender.close()
        w.close()


def test_the_helper_marks_runs_its_parent_did_not_finish(fake, tmp_path):
    srv = fake()
    done, open_ = str(tmp_path / "run-done"), str(tmp_path / "run-open")
    wd = journal(done, "done", [1, 2])
    journal(done, "done", [3], body="finish", writer=wd)
    wo = journal(open_, "open", [1, 2, 3])
    sender = HelperSender(settings(srv.address))
    try:
        sender.register(_Run(done, wd))
        sender.register(_Run(open_, wo))
        assert sender.wait_acked(_Run(open_, wo), 3, 20)
        wd.close()
        wo.close()
        proc = sender._proc
        sender.close()                   # the parent's end of the pipe: as if it died
        proc.wait(30)
    finally:
        sender.close()
    assert srv.seqs().count(4) == 1      # one ProcessExited, for the unfinished run only
    (pe,) = [e for _t, r in srv.streams[-1] for e in r.events
             if e.WhichOneof("body") == "process_exited"]
    assert (pe.run_id, pe.seq, pe.process_exited.after_seq) == ("open", 4, 3)
    assert pe.process_exited.pid == os.getpid() and pe.process_exited.hostname
    # Both were delivered in full: the helper removed them.
    assert not os.path.exists(done) and not os.path.exists(open_)


def test_mark_exited_only_once_and_never_after_finish(tmp_path):
    path = str(tmp_path / "run-m")
    journal(path, "m", [1, 2]).close()
    assert mark_exited(path, 7, "host", "why") is True
    assert mark_exited(path, 7, "host", "why") is False      # already ends with it
    r = WalReader(path)
    last = events_pb2.Event.FromString(r.read(2)[0][1])
    r.close()
    assert last.WhichOneof("body") == "process_exited" and last.seq == 3
    assert (last.process_exited.pid, last.process_exited.reason) == (7, "why")
    fin = str(tmp_path / "run-f")
    journal(fin, "f", [5], body="finish").close()
    assert mark_exited(fin, 7, "host", "") is False
    w = journal(str(tmp_path / "run-l"), "l", [1])           # still written by a process
    assert mark_exited(str(tmp_path / "run-l"), 7, "host", "", lock_wait_s=0.1) is False
    w.close()


# --------------------------------------------------------------------- runstream sync


def test_sync_uploads_once_skips_journals_in_use_and_cleans(fake, tmp_path):
    srv = fake()
    root = tmp_path / "runstream-runs"
    journal(root / "run-one", "one", range(1, 6)).close()
    busy = journal(root / "run-busy", "busy", range(1, 4))    # a live writer holds it
    lines: list[str] = []
    res = {os.path.basename(r.path): r for r in _sync.sync(str(tmp_path), srv.address,
                                                           echo=lines.append)}
    assert (res["run-one"].status, res["run-one"].sent, res["run-one"].acked_seq) == (
        "synced", 5, 5)
    assert res["run-busy"].status == "in use" and res["run-busy"].sent == 0
    assert srv.seqs() == [1, 2, 3, 4, 5] and len(lines) == 2
    again = _sync.sync(str(root / "run-one"), srv.address)
    assert [(r.status, r.sent) for r in again] == [("up to date", 0)]
    assert srv.seqs() == [1, 2, 3, 4, 5]
    busy.close()
    res = {os.path.basename(r.path): r.status for r in _sync.sync(str(root), srv.address,
                                                                  clean=True)}
    assert res == {"run-busy": "synced, removed", "run-one": "up to date, removed"}
    assert not root.exists()                                 # the empty parent too


def test_no_helper_process_falls_back_to_a_thread(fake, tmp_path, monkeypatch, caplog):
    from runstream import _helper, _state
    srv = fake()
    # A helper that cannot be started at all: init() uploads from a thread instead.
    monkeypatch.setattr(_helper.sys, "executable", str(tmp_path / "no-such-python"))
    s = _state._make_sender(settings(srv.address), "")
    try:
        assert s.kind == "thread" and "cannot start the upload helper" in caplog.text
    finally:
        s.close()
    monkeypatch.undo()
    # A helper that keeps dying: the runs move to a thread, from their watermarks.
    monkeypatch.setattr(_helper, "MAX_RESTARTS", 0)
    path = str(tmp_path / "run-f")
    w = journal(path, "f", range(1, 6))
    sender = HelperSender(settings(srv.address))
    run = _Run(path, w)
    try:
        sender.register(run)
        assert sender.wait_acked(run, 5, 20)
        os.kill(sender._proc.pid, signal.SIGKILL)
        sender._proc.wait(10)
        sender.watch()
        assert sender._fallback is not None and sender._fallback.kind == "thread"
        journal(path, "f", range(6, 11), writer=w)
        assert sender.wait_acked(run, 10, 20) and sender.acked(run) == 10
        assert srv.seqs(len(srv.streams) - 1)[0] == 6
    finally:
        sender.release(run)
        sender.close()
        w.close()
