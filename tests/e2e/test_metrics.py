"""Every role's Prometheus /metrics, scraped from real processes.

The embedded ``runstream server`` serves the metrics of its four roles on one port. In
the distributed deployment (Kafka), ``runstream gateway``, ``projector`` and ``reaper``
run as processes of their own, each serving only its role's metrics; the api then reads
the projector's chDB as ``runstream api`` once the projector stopped (chDB allows one
process per data directory). Each process's metrics are on a free port
(``ServerProcess`` sets ``RUNSTREAM_METRICS_PORT=0``) and it prints their URL.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ENTITY, start_embedded
from .procs import QueryClient, ServerProcess, http, make_events, send_events

pytestmark = [pytest.mark.e2e]
STEPS, KEYS = 40, 3
RUNS_ROUTE = "/api/v1/projects/{entity}/{project}/runs"


def scrape(url: str) -> dict[str, list]:
    """Sample name → its samples, as a Prometheus server parses the page."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict[str, list], name: str, default: float | None = None,
          **labels) -> float:
    for s in samples.get(name, ()):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    if default is None:
        raise AssertionError(f"no sample {name}{labels} in {sorted(samples)}")
    return default


def wait_scrape(url: str, predicate, what: str, timeout: float = 30) -> dict[str, list]:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if predicate(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics at {url}: timed out waiting for {what}")
        time.sleep(0.3)


def roles(samples) -> set[str]:
    return {s.labels["role"] for s in samples["runstream_role"]}


def rows(samples) -> float:
    return sum(s.value for s in samples.get("runstream_projector_rows_written_total", ()))


def test_embedded_server_serves_every_role(tmp_path):
    srv, q = start_embedded(tmp_path)
    try:
        assert srv.metrics.startswith("http://127.0.0.1:")
        before = scrape(srv.metrics)
        assert roles(before) == {"gateway", "projector", "reaper", "api"}
        assert value(before, "process_resident_memory_bytes") > 0
        assert value(before, "process_cpu_seconds_total") > 0
        assert value(before, "runstream_gateway_events_accepted_total") == 0
        assert value(before, "runstream_projector_assigned_partitions") == 12

        events = make_events("m-1", "metrics", ENTITY, steps=STEPS, metrics=KEYS, finish=False)
        send_events(srv.grpc, events, batch=10)
        after = wait_scrape(srv.metrics, lambda s: value(
            s, "runstream_projector_rows_written_total", 0, table="history_numeric")
            >= STEPS * KEYS, "the history rows")
        assert value(after, "runstream_gateway_events_accepted_total") == len(events)
        assert value(after, "runstream_gateway_requests_accepted_total") == 5
        assert value(after, "runstream_gateway_bytes_accepted_total") > 0
        assert value(after, "runstream_gateway_append_duration_seconds_count") == 5
        assert value(after, "runstream_gateway_open_streams") == 0
        assert value(after, "runstream_projector_records_consumed_total") > 0
        assert value(after, "runstream_projector_batches_written_total") >= 1
        assert value(after, "runstream_reaper_runs_tracked") == 1
        assert value(after, "runstream_reaper_assigned_partitions") == 12

        # The run, silent, is crashed by the reaper (heartbeat timeout 3 s).
        q.wait_states("metrics", {"m-1": "crashed"}, timeout=30)
        status, _ = http(srv, "GET", f"/api/v1/projects/{ENTITY}/metrics/runs")
        assert status == 200
        assert http(srv, "GET", "/api/v1/runs/e2e/metrics/nope")[0] == 404
        last = scrape(srv.metrics)
        assert value(last, "runstream_reaper_crashes_emitted_total") == 1
        assert value(last, "runstream_api_http_requests_total", route=RUNS_ROUTE,
                     method="GET", status="200") == 1
        assert value(last, "runstream_api_http_requests_total", method="GET",
                     route="/api/v1/runs/{entity}/{project}/{run_id}", status="404") == 1
        assert value(last, "runstream_api_query_duration_seconds_count", interface="http") >= 2
        assert value(last, "runstream_api_query_duration_seconds_count", interface="grpc") >= 1
        lag = last["runstream_projector_consumer_lag_records"]
        assert len(lag) == 12 and all(s.value >= 0 for s in lag)
    finally:
        q.close()
        srv.stop()


@pytest.mark.kafka
def test_each_role_process_serves_its_own_metrics(kafka_bootstrap, tmp_path):
    log_args = ["--kafka", kafka_bootstrap, "--topic", f"runstream-e2e-{uuid.uuid4().hex[:10]}",
                "--partitions", "4"]
    data = tmp_path / "projector-data"
    procs = {
        "gateway": ServerProcess(["gateway", *log_args, "--grpc-port", "0"],
                                 log_path=tmp_path / "gateway.log"),
        "projector": ServerProcess(["projector", *log_args, "--data-dir", str(data)],
                                   log_path=tmp_path / "projector.log"),
        "reaper": ServerProcess(["reaper", *log_args, "--heartbeat-timeout", "3",
                                 "--reaper-tick", "0.2"], log_path=tmp_path / "reaper.log"),
    }
    api = None
    try:
        # The gateway first: it creates the topic the others consume.
        procs["gateway"].start()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda p: p.start(), (procs["projector"], procs["reaper"])))
        urls = {name: p.metrics for name, p in procs.items()}
        assert len(set(urls.values())) == 3 and all(urls.values())
        for name, url in urls.items():
            samples = scrape(url)
            assert roles(samples) == {name}
            assert value(samples, "process_resident_memory_bytes") > 0
        gw = scrape(urls["gateway"])
        assert "runstream_projector_records_consumed_total" not in gw
        assert "runstream_reaper_runs_tracked" not in gw

        events = make_events("k-m", "kafka-metrics", ENTITY, steps=STEPS, metrics=KEYS,
                             finish=False)
        send_events(procs["gateway"].grpc, events, batch=10)
        gw = scrape(urls["gateway"])
        assert value(gw, "runstream_gateway_events_accepted_total") == len(events)
        assert value(gw, "runstream_gateway_bytes_accepted_total") > 0
        assert value(gw, "runstream_gateway_append_duration_seconds_count") == 5
        assert value(gw, "runstream_gateway_requests_refused_total",
                     code="UNAUTHENTICATED") == 0
        assert value(gw, "runstream_gateway_eventlog_pending_bytes") == 0   # all acked

        pr = wait_scrape(urls["projector"], lambda s: value(
            s, "runstream_projector_rows_written_total", 0, table="history_numeric")
            >= STEPS * KEYS, "the projector's history rows")
        assert value(pr, "runstream_projector_assigned_partitions") == 4
        assert value(pr, "runstream_projector_batches_written_total") >= 1
        pr = wait_scrape(urls["projector"], lambda s: len(
            s.get("runstream_projector_consumer_lag_records", ())) == 4 and all(
            x.value == 0 for x in s["runstream_projector_consumer_lag_records"]),
            "no lag on the 4 partitions")

        # Silent since its last event: the reaper crashes the run after 3 s.
        rp = wait_scrape(urls["reaper"], lambda s: value(
            s, "runstream_reaper_crashes_emitted_total") >= 1, "the crash", timeout=30)
        assert value(rp, "runstream_reaper_runs_tracked") == 1
        assert value(rp, "runstream_reaper_assigned_partitions") == 4
        # The projector folds the crash too.
        wait_scrape(urls["projector"], lambda s: rows(s) > rows(pr), "the crash's rows")
        procs["projector"].stop()

        # The api alone, on the projector's store.
        api = ServerProcess(["api", "--data-dir", str(data), "--grpc-port", "0",
                             "--http-port", "0"], log_path=tmp_path / "api.log").start()
        samples = scrape(api.metrics)
        assert roles(samples) == {"api"}
        status, body = http(api, "GET", f"/api/v1/projects/{ENTITY}/kafka-metrics/runs")
        assert status == 200 and [r["state"] for r in body["runs"]] == ["crashed"]
        q = QueryClient(api.grpc, api.http, ENTITY)
        try:
            assert [r.run_id for r in q.runs("kafka-metrics")] == ["k-m"]
        finally:
            q.close()
        samples = scrape(api.metrics)
        assert value(samples, "runstream_api_http_requests_total", route=RUNS_ROUTE,
                     method="GET", status="200") == 1
        assert value(samples, "runstream_api_query_duration_seconds_count",
                     interface="http") >= 1
        assert value(samples, "runstream_api_query_duration_seconds_count",
                     interface="grpc") >= 1
        assert "runstream_gateway_events_accepted_total" not in samples
    finally:
        for p in [*procs.values(), api]:
            if p is not None:
                try:
                    p.stop()
                finally:
                    p.kill()
