"""A gateway's gRPC health follows whether it can write the event log.

The Ingest service (``runstream.v1.Ingest``, what the Kubernetes readiness probe asks)
turns NOT_SERVING when a beacon append fails and SERVING again on the next one that
succeeds; the overall health ("", the liveness probe) stays SERVING throughout, so an
outage of Kafka takes gateways out of rotation without restarting them.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from runstream_server.common.errors import RetryableError
from runstream_server.config import AuthConfig, GatewayConfig, ServerConfig
from runstream_server.gateway.beacon import Beacon

from tests.fixtures.identity import TEST_KEY

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FlakyLog:
    """An event log whose appends fail while ``down``."""

    partitions = 4

    def __init__(self) -> None:
        self.down = False
        self.appends = 0

    async def append(self, records):
        self.appends += 1
        if self.down:
            raise RetryableError("event log unavailable")
        return [(0, 0)] * len(records)


def test_beacon_reports_each_change_of_reachability_once():
    async def main():
        log, seen = FlakyLog(), []

        async def on_reachable(ok: bool) -> None:
            seen.append(ok)
        beacon = Beacon(log, "gw", 0.01, on_reachable=on_reachable)
        task = asyncio.create_task(beacon.run())

        async def until(n_appends: int) -> None:
            start = log.appends
            while log.appends < start + n_appends:
                await asyncio.sleep(0.005)
        await until(3)
        assert seen == []                      # reachable from the start: nothing to say
        log.down = True
        await until(3)
        assert seen == [False]                 # once, not per failed beacon
        log.down = False
        await until(3)
        assert seen == [False, True]
        beacon.stop()
        await task

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_failing_callback_does_not_stop_the_beacons():
    async def main():
        log = FlakyLog()
        log.down = True

        async def broken(ok: bool) -> None:
            raise RuntimeError("boom")
        beacon = Beacon(log, "gw", 0.01, on_reachable=broken)
        task = asyncio.create_task(beacon.run())
        while log.appends < 5:
            await asyncio.sleep(0.005)
        beacon.stop()
        await task

    asyncio.run(asyncio.wait_for(main(), 10))


def test_ingest_health_is_not_serving_while_the_log_cannot_be_written(tmp_path):
    from runstream_server.server import Server

    cfg = ServerConfig(roles=("gateway",), data_dir=tmp_path, grpc_port=0,
                       gateway=GatewayConfig(beacon_interval_s=0.1),
                       auth=AuthConfig(bootstrap_key=TEST_KEY))

    async def main():
        server = Server(cfg)
        addrs = await server.start()
        real_append = server.event_log.append
        down = asyncio.Event()

        async def append(records):
            if down.is_set():
                raise RetryableError("event log unavailable")
            return await real_append(records)
        server.event_log.append = append
        try:
            async with grpc.aio.insecure_channel(addrs.grpc) as ch:
                health = health_pb2_grpc.HealthStub(ch)

                async def status(service: str) -> int:
                    r = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    return r.status

                async def wait_for(service: str, want: int) -> None:
                    for _ in range(100):
                        if await status(service) == want:
                            return
                        await asyncio.sleep(0.05)
                    raise AssertionError(f"{service!r} never became {want}")
                assert await status("runstream.v1.Ingest") == SERVING
                down.set()
                await wait_for("runstream.v1.Ingest", NOT_SERVING)
                assert await status("") == SERVING         # alive: no restart for it
                down.clear()
                await wait_for("runstream.v1.Ingest", SERVING)
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
