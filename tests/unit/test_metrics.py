"""Prometheus metrics (services/runstream_server/metrics/): state, collectors, endpoint.

The collectors are rendered through a registry of their own and parsed back with
``prometheus_client.parser``, as a scraper would read them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import urllib.request
from types import SimpleNamespace

import aiohttp
import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from runstream.v1 import events_pb2, ingest_pb2, ingest_pb2_grpc
from runstream_server import cli
from runstream_server.common.errors import ConfigError, RetryableError
from runstream_server.config import METRICS_PORT, AuthConfig, ServerConfig
from runstream_server.eventlog.local import LocalEventLog
from runstream_server.gateway.service import IngestService
from runstream_server.metrics.collectors import (
    ApiCollector,
    GatewayCollector,
    ProjectorCollector,
    ReaperCollector,
)
from runstream_server.metrics.endpoint import ServerMetrics
from runstream_server.metrics.state import ApiStats, Histogram, TimedStore


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def parse(text: str) -> dict[str, object]:
    """Family name → family (``prometheus_client.parser``; counters lose ``_total``)."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def scrape(*collectors) -> dict[str, object]:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    return parse(generate_latest(registry).decode())


def value(families, name: str, **labels) -> float:
    """The value of the sample ``name`` (a family's sample name) with ``labels``."""
    for fam in families.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"no sample {name} {labels}")


# -- state -----------------------------------------------------------------------------

def test_histogram_buckets_are_less_or_equal_and_cumulative():
    h = Histogram([1.0, 0.1, 0.5])                  # sorted whatever the order given
    for v in (0.05, 0.1, 0.3, 0.5, 0.7, 2.0):
        h.observe(v)
    assert h.bounds == (0.1, 0.5, 1.0)
    assert h.cumulative() == [(0.1, 2), (0.5, 4), (1.0, 5), (math.inf, 6)]
    assert h.count == 6 and h.sum == pytest.approx(3.65)
    with pytest.raises(ValueError):
        Histogram([])


def test_api_stats_count_routes_and_bound_the_method_label():
    stats = ApiStats()
    stats.count_request("/api/v1/projects", "GET", 200)
    stats.count_request("/api/v1/projects", "GET", 200)
    stats.count_request("/api/v1/projects", "BREW", 405)
    assert stats.http_requests == {("/api/v1/projects", "GET", "200"): 2,
                                   ("/api/v1/projects", "other", "405"): 1}


def test_timed_store_times_every_call_and_passes_results_and_errors():
    class Store:
        client, database = "client", "db"

        async def call(self, fn, *args):
            return fn(*args)

    h = Histogram([0.1, 1.0])
    store = TimedStore(Store(), h)
    assert (store.client, store.database) == ("client", "db")

    def boom():
        raise RetryableError("store away")

    async def main():
        assert await store.call(lambda a, b: a + b, 2, 3) == 5
        with pytest.raises(RetryableError):
            await store.call(boom)

    arun(main())
    assert h.count == 2


def test_http_middleware_labels_by_route_pattern_and_counts_errors():
    stats = ApiStats()

    async def run(request):
        return web.json_response({"id": request.match_info["run_id"]})

    async def broken(request):
        raise RuntimeError("bug")

    async def main():
        app = web.Application(middlewares=[stats.middleware()])
        app.router.add_get("/api/v1/runs/{run_id}", run)
        app.router.add_get("/broken", broken)
        async with TestClient(TestServer(app)) as client:
            for rid in ("a", "b", "c"):
                assert (await client.get(f"/api/v1/runs/{rid}")).status == 200
            assert (await client.get("/nowhere")).status == 404
            assert (await client.post("/api/v1/runs/a")).status == 405
            assert (await client.get("/broken")).status == 500

    arun(main())
    assert stats.http_requests == {
        ("/api/v1/runs/{run_id}", "GET", "200"): 3,     # one series, not one per run
        ("unmatched", "GET", "404"): 1,
        ("unmatched", "POST", "405"): 1,
        ("/broken", "GET", "500"): 1,
    }
    fams = scrape(ApiCollector(SimpleNamespace(api_stats=stats)))
    assert fams["runstream_api_http_requests"].type == "counter"
    assert value(fams, "runstream_api_http_requests_total", route="/api/v1/runs/{run_id}",
                 method="GET", status="200") == 3
    assert fams["runstream_api_query_duration_seconds"].type == "histogram"
    assert value(fams, "runstream_api_query_duration_seconds_count", interface="grpc") == 0


# -- collectors ------------------------------------------------------------------------

def _ev(run_id: str, seq: int) -> events_pb2.Event:
    e = events_pb2.Event(run_id=run_id, project="proj", entity="ent", seq=seq,
                         client_time_us=1_000)
    e.log.step = seq
    e.log.numbers["loss"] = 1.0 / seq
    return e


def test_gateway_collector_reads_the_ingest_service(tmp_path):
    """Accepted events/bytes, refusals by code, open streams and the append histogram
    move with real requests over gRPC."""

    async def main():
        event_log = LocalEventLog(tmp_path / "log", partitions=2)
        await event_log.start()
        service = IngestService(event_log, "gw-test")
        owner = SimpleNamespace(ingest=service, beacon=SimpleNamespace(sent=3))
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((service.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = ingest_pb2_grpc.IngestStub(channel)
            call = stub.Stream()
            request = ingest_pb2.IngestRequest(events=[_ev("a", 1), _ev("a", 2), _ev("b", 1)],
                                               batch_id=1)
            await call.write(request)
            assert (await asyncio.wait_for(call.read(), 5)).WhichOneof("kind") == "ack"
            bad = ingest_pb2.IngestRequest(events=[_ev("a", 1)], batch_id=2)
            bad.events[0].project = ""                       # invalid: rejected
            await call.write(bad)
            assert (await asyncio.wait_for(call.read(), 5)).WhichOneof("kind") == "rejected"
            during = scrape(GatewayCollector(owner))
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            # Garbage ends a second stream with INVALID_ARGUMENT.
            raw = channel.stream_stream("/runstream.v1.Ingest/Stream",
                                        request_serializer=None,
                                        response_deserializer=ingest_pb2.IngestResponse
                                        .FromString)()
            await raw.write(b"\xff\xff\xff")
            with pytest.raises(grpc.aio.AioRpcError):
                await asyncio.wait_for(raw.read(), 5)
            return request.ByteSize(), during, scrape(GatewayCollector(owner))
        finally:
            await channel.close()
            await server.stop(None)
            await event_log.close()

    size, during, after = arun(main())
    assert value(during, "runstream_gateway_open_streams") == 1
    assert value(after, "runstream_gateway_open_streams") == 0
    assert value(after, "runstream_gateway_requests_accepted_total") == 1
    assert value(after, "runstream_gateway_events_accepted_total") == 3
    assert value(after, "runstream_gateway_bytes_accepted_total") == size
    assert value(after, "runstream_gateway_requests_refused_total",
                 code="INVALID_ARGUMENT") == 2                  # the invalid and the garbage
    for code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        assert value(after, "runstream_gateway_requests_refused_total", code=code) == 0
    fam = after["runstream_gateway_append_duration_seconds"]
    assert fam.type == "histogram"
    assert value(after, "runstream_gateway_append_duration_seconds_count") == 1
    assert value(after, "runstream_gateway_append_duration_seconds_bucket", le="+Inf") == 1
    assert value(after, "runstream_gateway_beacons_total") == 3
    assert after["runstream_gateway_events_accepted"].type == "counter"
    assert after["runstream_gateway_open_streams"].type == "gauge"


def test_a_role_that_is_not_up_yields_nothing():
    owner = SimpleNamespace(ingest=None, projector=None, reaper=None, api_stats=None)
    fams = scrape(GatewayCollector(owner), ProjectorCollector(owner), ReaperCollector(owner),
                  ApiCollector(owner))
    assert fams == {}


class _FakeLog:
    def __init__(self, ends=None, error: Exception | None = None) -> None:
        self.ends, self.error = ends, error

    async def end_offsets(self):
        if self.error is not None:
            raise self.error
        return self.ends


def _projector(**kw):
    base = dict(records_applied=120, batches_written=4, rows_written={"runs": 3,
                "history_numeric": 90}, insert_errors={"retryable": 1, "permanent": 0},
                partitions=lambda: {0, 1, 2}, consumed_offsets=lambda: {0: 10, 1: 7, 2: 0})
    return SimpleNamespace(**{**base, **kw})


def test_projector_collector_counts_and_lag_per_partition():
    owner = SimpleNamespace(projector=_projector(), event_log=_FakeLog({0: 15, 1: 7, 2: 4}))
    collector = ProjectorCollector(owner)
    arun(collector.refresh())
    fams = scrape(collector)
    assert value(fams, "runstream_projector_records_consumed_total") == 120
    assert value(fams, "runstream_projector_batches_written_total") == 4
    assert value(fams, "runstream_projector_rows_written_total", table="history_numeric") == 90
    assert value(fams, "runstream_projector_insert_errors_total", kind="retryable") == 1
    assert value(fams, "runstream_projector_assigned_partitions") == 3
    lag = {s.labels["partition"]: s.value
           for s in fams["runstream_projector_consumer_lag_records"].samples}
    assert lag == {"0": 5, "1": 0, "2": 4}
    assert fams["runstream_projector_consumer_lag_records"].type == "gauge"


def _record(run_id: str, seq: int) -> bytes:
    e = events_pb2.Event(run_id=run_id, project="proj", entity="ent", seq=seq,
                         client_time_us=1_700_000_000_000_000 + seq)
    if seq == 1:
        e.run_start.name = run_id
    else:
        e.log.step = seq
        e.log.numbers["x"] = float(seq)
    return events_pb2.LogRecord(events=[e], server_time_us=1_700_000_000_000_000
                                ).SerializeToString()


class _PlannedStore:
    """A store whose writes fail as planned (then succeed); it holds no run state."""

    client, database = None, "metrics"

    def __init__(self, plan: list[type[Exception]]) -> None:
        self.plan = list(plan)

    async def call(self, fn, *args):
        if fn.__name__ == "load_states":
            return {}
        if self.plan:
            raise self.plan.pop(0)("planned")
        return {}


def test_projector_counts_rows_insert_errors_and_commits(tmp_path):
    """The real Projector over a local log: a retryable failure is retried, a permanent
    one skips its batch; rows are counted only when written; committed offsets are kept
    for the lag."""
    from runstream_server.common.errors import PermanentError
    from runstream_server.config import ProjectorConfig
    from runstream_server.projector.service import Projector

    cfg = ProjectorConfig(batch_max_rows=1000, batch_max_s=0.05)

    async def main():
        log = LocalEventLog(tmp_path / "log", partitions=2)
        await log.start()
        try:
            await log.append([(b"r", _record("r", seq)) for seq in (1, 2, 3)])
            first = Projector(log, _PlannedStore([RetryableError]), cfg)
            await first.run(until_caught_up=True)
            ends = await log.end_offsets()
            await log.append([(b"r", _record("r", 4))])
            second = Projector(log, _PlannedStore([PermanentError]), cfg)
            await second.run(until_caught_up=True)
            return first, second, ends
        finally:
            await log.close()

    first, second, ends = arun(main())
    assert first.insert_errors == {"retryable": 1, "permanent": 0}
    assert first.rows_written["history_numeric"] == 2 and first.rows_written["runs"] == 1
    assert first.committed == {p: o for p, o in ends.items() if o}
    assert second.insert_errors == {"retryable": 0, "permanent": 1}
    assert sum(second.rows_written.values()) == 0          # the refused batch wrote nothing
    assert second.batches_written == 1
    assert second.partitions() == set()                    # its consumer has closed


@pytest.mark.parametrize("error", [RetryableError("broker away"), TimeoutError(),
                                   RuntimeError("not started")])
def test_projector_lag_is_left_out_when_the_end_offsets_cannot_be_read(error):
    owner = SimpleNamespace(projector=_projector(), event_log=_FakeLog(error=error))
    collector = ProjectorCollector(owner)
    arun(collector.refresh())
    fams = scrape(collector)
    assert "runstream_projector_consumer_lag_records" not in fams
    assert value(fams, "runstream_projector_records_consumed_total") == 120


def test_reaper_collector():
    from runstream_server.reaper.liveness import Liveness, LivenessTable
    table = LivenessTable()
    table.runs = {("e", "p", f"r{i}"): Liveness(f"r{i}", "p", "e", 0) for i in range(4)}
    reaper = SimpleNamespace(table=table, crashes_emitted=2,
                             skipped={"backlog": 5, "log_unavailable": 1},
                             partitions=lambda: {3})
    fams = scrape(ReaperCollector(SimpleNamespace(reaper=reaper)))
    assert value(fams, "runstream_reaper_runs_tracked") == 4
    assert value(fams, "runstream_reaper_crashes_emitted_total") == 2
    assert value(fams, "runstream_reaper_judgements_skipped_total", reason="backlog") == 5
    assert value(fams, "runstream_reaper_judgements_skipped_total",
                 reason="log_unavailable") == 1
    assert value(fams, "runstream_reaper_assigned_partitions") == 1


# -- the endpoint ----------------------------------------------------------------------

def test_two_servers_in_one_process_have_their_own_registries():
    """Both serve on free ports, each only its own roles, with the process metrics;
    the scraper's Accept header picks OpenMetrics; stop releases the port."""

    async def main():
        a = ServerMetrics(SimpleNamespace(ingest=None), ("gateway",))
        b = ServerMetrics(SimpleNamespace(reaper=None), ("reaper",))
        url_a = await a.start("127.0.0.1", 0)
        url_b = await b.start("127.0.0.1", 0)
        try:
            assert url_a != url_b and url_a.endswith("/metrics")
            async with aiohttp.ClientSession() as http:
                async with http.get(url_a) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain")
                    text_a = await r.text()
                async with http.get(url_b) as r:
                    text_b = await r.text()
                om = {"Accept": "application/openmetrics-text; version=1.0.0"}
                async with http.get(url_b, headers=om) as r:
                    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                    assert (await r.text()).rstrip().endswith("# EOF")
                async with http.get(url_a.replace("/metrics", "/other")) as r:
                    assert r.status == 404
        finally:
            await a.stop()
            await b.stop()
        return url_a, text_a, text_b

    url_a, text_a, text_b = arun(main())
    fa, fb = parse(text_a), parse(text_b)
    assert [s.labels for s in fa["runstream_role"].samples] == [{"role": "gateway"}]
    assert [s.labels for s in fb["runstream_role"].samples] == [{"role": "reaper"}]
    for fams in (fa, fb):
        assert value(fams, "process_resident_memory_bytes") > 0
        assert "process_cpu_seconds" in fams
    port = int(url_a.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))                       # free again after stop()


def test_a_taken_port_fails_the_start():
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            m = ServerMetrics(SimpleNamespace(), ())
            with pytest.raises(OSError, match="metrics: cannot listen"):
                await m.start("127.0.0.1", s.getsockname()[1])

    arun(main())


def test_server_serves_metrics_on_port_0_and_stops_them(tmp_path):
    """A gateway-only Server (local log, no store) reports its metrics URL; a request
    moves the gateway's counters; stop() closes the endpoint."""
    from runstream_server.server import Server

    from tests.fixtures.identity import TEST_KEY, auth_metadata

    cfg = ServerConfig(roles=("gateway",), data_dir=tmp_path, grpc_port=0, metrics_port=0,
                       auth=AuthConfig(bootstrap_key=TEST_KEY))

    async def main():
        server = Server(cfg)
        addrs = await server.start()
        try:
            assert addrs.metrics.startswith("http://127.0.0.1:")
            async with grpc.aio.insecure_channel(addrs.grpc) as ch:
                call = ingest_pb2_grpc.IngestStub(ch).Stream(metadata=auth_metadata())
                await call.write(ingest_pb2.IngestRequest(events=[_ev("m", 1)], batch_id=1))
                assert (await asyncio.wait_for(call.read(), 5)).WhichOneof("kind") == "ack"
                await call.done_writing()
            text = await asyncio.to_thread(
                lambda: urllib.request.urlopen(addrs.metrics, timeout=5).read().decode())
        finally:
            await server.stop()
        with pytest.raises(OSError):
            await asyncio.to_thread(urllib.request.urlopen, addrs.metrics, timeout=2)
        return text

    fams = parse(arun(main()))
    assert value(fams, "runstream_gateway_events_accepted_total") == 1
    assert value(fams, "runstream_role", role="gateway") == 1
    assert "runstream_projector_records_consumed" not in fams


# -- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"metrics_port": 65536}, "invalid metrics port"),
    ({"metrics_port": -2}, "invalid metrics port"),
    ({"metrics_port": 9000, "grpc_port": 9000}, "also the gRPC port"),
    ({"metrics_port": 9000, "http_port": 9000}, "also the HTTP port"),
    ({"metrics_host": "a b"}, "invalid metrics host"),
])
def test_bad_metrics_settings_fail_validation(kw, message):
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**kw).validate()


def test_metrics_settings_that_are_fine():
    ServerConfig(metrics_port=-1).validate()                 # off
    ServerConfig(metrics_port=0, grpc_port=0, http_port=0).validate()
    # The same port on another address, or one a role here does not listen on.
    ServerConfig(metrics_port=9000, grpc_port=9000, metrics_host="127.0.0.2").validate()
    ServerConfig(roles=("reaper",), metrics_port=50051).validate()


def _parsed(argv: list[str]) -> ServerConfig:
    p = argparse.ArgumentParser()
    cli._common(p)
    return cli._config(p.parse_args(argv), ("gateway",))


def test_cli_flag_env_and_defaults(monkeypatch):
    monkeypatch.delenv("RUNSTREAM_METRICS_PORT", raising=False)
    monkeypatch.delenv("RUNSTREAM_METRICS_HOST", raising=False)
    cfg = _parsed([])
    assert (cfg.metrics_port, cfg.metrics_listen_host) == (METRICS_PORT, "127.0.0.1")
    assert METRICS_PORT == 9464
    assert _parsed(["--metrics-port", "-1", "--metrics-host", "0.0.0.0"]).metrics_port == -1
    monkeypatch.setenv("RUNSTREAM_METRICS_PORT", "0")
    monkeypatch.setenv("RUNSTREAM_METRICS_HOST", "127.0.0.3")
    cfg = _parsed([])
    assert (cfg.metrics_port, cfg.metrics_listen_host) == (0, "127.0.0.3")
    # Commands that serve nothing never open the port.
    p = argparse.ArgumentParser()
    cli._common(p, ports=False)
    assert cli._config(p.parse_args([]), ("projector",)).metrics_port == -1


def test_cli_refuses_a_bad_metrics_port(capsys):
    assert cli.main(["reaper", "--metrics-port", "70000"]) == 2
    assert "invalid metrics port 70000" in capsys.readouterr().err
