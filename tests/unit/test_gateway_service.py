"""The Ingest gRPC service in-process, over a real LocalEventLog in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc
import pytest
from runstream.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from runstream_server.common.clock import now_us
from runstream_server.common.errors import RetryableError
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.gateway.service import IngestService

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


def ev(run_id: str, seq: int, kind: str = "log", project: str = "proj") -> events_pb2.Event:
    e = events_pb2.Event(run_id=run_id, project=project, entity="ent", seq=seq,
                         client_time_us=1_000)
    if kind == "log":
        e.log.step = seq
        e.log.numbers["loss"] = 1.0 / seq
    elif kind == "run_start":
        e.run_start.name = run_id
    else:
        getattr(e, kind).SetInParent()
    return e


class _Gateway:
    def __init__(self, service, event_log, channel, stub) -> None:
        self.service = service
        self.log = event_log
        self.channel = channel
        self.stub = stub


@contextlib.asynccontextmanager
async def gateway(tmp_path, event_log: LocalEventLog | None = None, quotas=None):
    event_log = event_log or LocalEventLog(tmp_path / "log", partitions=4)
    await event_log.start()
    service = IngestService(event_log, "gw-test", quotas)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((service.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield _Gateway(service, event_log, channel, ingest_pb2_grpc.IngestStub(channel))
    finally:
        await channel.close()
        await server.stop(None)
        await event_log.close()


async def read_log(event_log: LocalEventLog) -> list[tuple[bytes, events_pb2.LogRecord]]:
    c = event_log.consumer("t")
    await c.start()
    try:
        out = []
        while batch := await c.poll(0.2 if not out else 0, 100):
            out += [(r.key, events_pb2.LogRecord.FromString(r.value)) for r in batch]
        return out
    finally:
        await c.close()


async def next_response(call) -> ingest_pb2.IngestResponse:
    return await asyncio.wait_for(call.read(), 5)


def test_batch_is_acked_with_per_run_max_seq_after_it_is_in_the_log(tmp_path):
    async def main():
        async with gateway(tmp_path) as gw:
            call = gw.stub.Stream()
            events = [ev("a", 1, "run_start"), ev("b", 3), ev("a", 2), ev("a", 5), ev("b", 4)]
            t0 = now_us()
            await call.write(ingest_pb2.IngestRequest(events=events, batch_id=11))
            resp = await next_response(call)
            t1 = now_us()
            assert resp.WhichOneof("kind") == "ack"
            assert resp.ack.batch_id == 11
            assert {r.run_id: r.seq for r in resp.ack.runs} == {"a": 5, "b": 4}
            # The ack came after the log had the records.
            assert sum((await gw.log.end_offsets()).values()) == 2
            records = dict(await read_log(gw.log))
            assert set(records) == {b"a", b"b"}
            assert list(records[b"a"].events) == [events[0], events[2], events[3]]
            assert list(records[b"b"].events) == [events[1], events[4]]
            for rec in records.values():
                assert t0 <= rec.server_time_us <= t1
                assert rec.gateway == "gw-test"
            assert gw.service.stats["requests"] == 1 and gw.service.stats["events"] == 5
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    arun(main())


class _GatedLog(LocalEventLog):
    """Appends wait for ``gate``: shows that no ack is sent before the append returned."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def append(self, records: Sequence[tuple[bytes, bytes]]):
        self.entered.set()
        await self.gate.wait()
        return await super().append(records)


def test_no_ack_before_the_append_completed(tmp_path):
    async def main():
        gated = _GatedLog(tmp_path / "log", partitions=2)
        async with gateway(tmp_path, gated) as gw:
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(events=[ev("r", 1)], batch_id=1))
            await asyncio.wait_for(gated.entered.wait(), 5)
            read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read}, timeout=0.1)
            assert not done, "acked before the event log accepted the batch"
            gated.gate.set()
            resp = await asyncio.wait_for(read, 5)
            assert resp.ack.batch_id == 1 and resp.ack.runs[0].seq == 1

    arun(main())


def test_busy_while_requests_arrive(tmp_path, monkeypatch):
    from runstream_server.gateway import service as gateway_service
    monkeypatch.setattr(gateway_service, "BUSY_WINDOW_S", 0.3)

    async def main():
        async with gateway(tmp_path) as gw:
            assert not gw.service.busy()
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(events=[ev("r", 1)], batch_id=1))
            assert (await next_response(call)).ack.batch_id == 1
            assert gw.service.busy()
            await asyncio.sleep(0.4)
            assert not gw.service.busy()

    arun(main())


def test_empty_batch_is_acked_without_runs(tmp_path):
    async def main():
        async with gateway(tmp_path) as gw:
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(batch_id=3))
            resp = await next_response(call)
            assert resp.ack.batch_id == 3 and len(resp.ack.runs) == 0
            assert await read_log(gw.log) == []

    arun(main())


def test_invalid_batch_is_rejected_and_the_stream_stays_usable(tmp_path):
    async def main():
        async with gateway(tmp_path) as gw:
            call = gw.stub.Stream()
            bad = [ev("good", 1), ev("bad", 1, project="has/slash")]
            await call.write(ingest_pb2.IngestRequest(events=bad, batch_id=1))
            resp = await next_response(call)
            assert resp.WhichOneof("kind") == "rejected"
            assert resp.rejected.batch_id == 1
            assert resp.rejected.code == INVALID_ARGUMENT
            assert resp.rejected.run_id == "bad"
            assert "project" in resp.rejected.message

            good = [ev("next", 1, "run_start"), ev("next", 2)]
            await call.write(ingest_pb2.IngestRequest(events=good, batch_id=2))
            resp = await next_response(call)
            assert resp.WhichOneof("kind") == "ack"
            assert resp.ack.batch_id == 2
            assert [(r.run_id, r.seq) for r in resp.ack.runs] == [("next", 2)]

            records = await read_log(gw.log)
            assert [k for k, _ in records] == [b"next"]
            assert list(records[0][1].events) == good
            assert gw.service.stats["rejected"] == 1

    arun(main())


def test_garbage_bytes_end_the_call_with_invalid_argument(tmp_path):
    async def main():
        async with gateway(tmp_path) as gw:
            call = gw.channel.stream_stream(
                "/runstream.v1.Ingest/Stream", request_serializer=None,
                response_deserializer=ingest_pb2.IngestResponse.FromString)()
            await call.write(b"\xff\xff\xff")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await next_response(call)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert await read_log(gw.log) == []

    arun(main())


class _UnavailableLog(LocalEventLog):
    async def append(self, records: Sequence[tuple[bytes, bytes]]):
        raise RetryableError("disk on fire")


def test_retryable_log_error_ends_the_stream_with_unavailable(tmp_path):
    async def main():
        async with gateway(tmp_path, _UnavailableLog(tmp_path / "log", partitions=2)) as gw:
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(events=[ev("r", 1)], batch_id=1))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await next_response(call)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "disk on fire" in info.value.details()
            assert gw.service.stats["unavailable"] == 1
            assert gw.service.stats["requests"] == 0

    arun(main())


def test_push_control_reaches_the_stream_carrying_the_run(tmp_path):
    async def main():
        async with gateway(tmp_path) as gw:
            call_a = gw.stub.Stream()
            call_b = gw.stub.Stream()
            await call_a.write(ingest_pb2.IngestRequest(events=[ev("run-a", 1)], batch_id=1))
            await call_b.write(ingest_pb2.IngestRequest(events=[ev("run-b", 1)], batch_id=1))
            assert (await next_response(call_a)).WhichOneof("kind") == "ack"
            assert (await next_response(call_b)).WhichOneof("kind") == "ack"

            control = ingest_pb2.Control(
                stop_run=ingest_pb2.StopRun(run_id="run-a", requested_by="ui"))
            assert await gw.service.push_control("run-a", control) == 1
            resp = await next_response(call_a)
            assert resp.WhichOneof("kind") == "control"
            assert resp.control.stop_run.run_id == "run-a"
            assert resp.control.stop_run.requested_by == "ui"
            assert await gw.service.push_control("unknown-run", control) == 0

            # run-b's stream got nothing: its next response is the ack of its next batch.
            await call_b.write(ingest_pb2.IngestRequest(events=[ev("run-b", 2)], batch_id=2))
            resp = await next_response(call_b)
            assert resp.WhichOneof("kind") == "ack" and resp.ack.batch_id == 2

            # A closed stream no longer carries its runs.
            await call_a.done_writing()
            assert await call_a.read() is grpc.aio.EOF
            await call_a.code()
            for _ in range(200):
                if "run-a" not in gw.service._streams_by_run:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("a closed stream is still registered for its run")
            assert await gw.service.push_control("run-a", control) == 0
            assert "run-b" in gw.service._streams_by_run

    arun(main())


def test_a_project_over_its_limit_ends_the_stream_with_resource_exhausted(tmp_path):
    from runstream_server.gateway.quota import Limits, ProjectQuotas

    async def main():
        quotas = ProjectQuotas(Limits(events_per_s=2, burst_s=2))   # a burst of 4 events
        async with gateway(tmp_path, quotas=quotas) as gw:
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(
                events=[ev("r", 1, "run_start"), ev("r", 2), ev("r", 3)], batch_id=1))
            assert (await next_response(call)).ack.batch_id == 1
            # 2 more events ask for more than the 1 left: refused, and the stream ends
            # (a status), so no later request on it can be appended before this one. (A
            # write after the end would fail on the client and mask the status.)
            await call.write(ingest_pb2.IngestRequest(events=[ev("r", 4), ev("r", 5)],
                                                      batch_id=2))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await next_response(call)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "ent/proj" in info.value.details()
            md = dict(info.value.trailing_metadata())
            assert 400 <= int(md["retry-after-ms"]) <= 600       # 1 event short at 2/s
            records = await read_log(gw.log)
            assert [e.seq for _, r in records for e in r.events] == [1, 2, 3]
            assert gw.service.stats["throttled"] == 1
            # another project is not held back
            call = gw.stub.Stream()
            await call.write(ingest_pb2.IngestRequest(events=[ev("o", 1, project="other")],
                                                      batch_id=9))
            assert (await next_response(call)).ack.batch_id == 9

    arun(main())
