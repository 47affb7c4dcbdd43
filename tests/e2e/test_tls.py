"""TLS on both ports of a real embedded server: the client SDK, Api() and HTTP over TLS,
plaintext and untrusted clients refused, mutual TLS, and plaintext on a non-loopback
address refused at boot."""

from __future__ import annotations

import ssl
import subprocess
import time
import urllib.error
import urllib.request

import grpc
import pytest
import runstream
from runstream.v1 import query_pb2, query_pb2_grpc

from tests.fixtures.certs import make_certs

from .conftest import ENTITY, embedded_args
from .procs import BIN, ServerProcess, auth_headers, expected_value, run_client

pytestmark = [pytest.mark.e2e]

PROJECT = "tls"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _server(tmp_path, certs, *extra: str) -> ServerProcess:
    srv = ServerProcess(embedded_args(tmp_path / "data", "--tls-cert", str(certs.server_cert),
                                      "--tls-key", str(certs.server_key), *extra),
                        log_path=tmp_path / "server.log").start()
    return srv


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certs):
    srv = _server(tmp_path_factory.mktemp("tls"), certs)
    try:
        yield srv
    finally:
        srv.stop()


def _https(url: str, cafile=None, cert=None) -> int:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    req = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return r.status


def test_client_logs_and_api_reads_over_tls(tls_server, certs, monkeypatch):
    assert tls_server.http.startswith("https://")
    url = "https://" + tls_server.grpc
    env = {"RUNSTREAM_TLS_CA": str(certs.ca), "RUNSTREAM_ENTITY": ENTITY}
    run_client(url, run_id="secure", project=PROJECT, steps=40, metrics=3, env=env)
    monkeypatch.setenv("RUNSTREAM_TLS_CA", str(certs.ca))
    with runstream.Api(url) as api:
        deadline = time.monotonic() + 60
        while True:                      # acked by the gateway; the projector follows
            try:
                run = api.run(f"{ENTITY}/{PROJECT}/secure")
                if run.state == "finished":
                    break
            except runstream.errors.NotFound:
                pass
            assert time.monotonic() < deadline, "the run did not arrive"
            time.sleep(0.2)
        hist = {s.key: s for s in run.history_series(keys=["m0", "m2"])}
    assert list(hist["m2"].value) == [expected_value(s, 2) for s in range(40)]


def test_plaintext_and_untrusted_clients_are_refused(tls_server, certs, monkeypatch):
    req = query_pb2.ListProjectsRequest()
    with grpc.insecure_channel(tls_server.grpc) as ch, pytest.raises(grpc.RpcError) as info:
        query_pb2_grpc.QueryStub(ch).ListProjects(req, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    monkeypatch.setenv("RUNSTREAM_TLS_CA", str(certs.other_ca))
    with runstream.Api("https://" + tls_server.grpc, timeout=5) as api, \
            pytest.raises(runstream.errors.Unavailable):
        api.projects()


def test_http_is_served_over_tls_only(tls_server, certs):
    assert _https(tls_server.http + "/healthz", certs.ca) == 200
    assert _https(tls_server.http + "/api/v1/projects", certs.ca) == 200
    with pytest.raises(urllib.error.URLError):              # the certificate is not trusted
        _https(tls_server.http + "/healthz")
    plain = tls_server.http.replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(plain + "/healthz", timeout=10)


def test_mutual_tls_requires_a_client_certificate(tmp_path, certs, monkeypatch):
    srv = _server(tmp_path, certs, "--tls-client-ca", str(certs.ca))
    try:
        monkeypatch.setenv("RUNSTREAM_TLS_CA", str(certs.ca))
        with runstream.Api("https://" + srv.grpc, timeout=5) as api, \
                pytest.raises(runstream.errors.Unavailable):
            api.projects()
        monkeypatch.setenv("RUNSTREAM_TLS_CERT", str(certs.client_cert))
        monkeypatch.setenv("RUNSTREAM_TLS_KEY", str(certs.client_key))
        with runstream.Api("https://" + srv.grpc, timeout=10) as api:
            assert api.projects() == []                      # served: nothing logged yet
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _https(srv.http + "/healthz", certs.ca)
        assert _https(srv.http + "/healthz", certs.ca,
                      (certs.client_cert, certs.client_key)) == 200
    finally:
        srv.stop()


@pytest.mark.parametrize("extra, message", [
    (["--host", "0.0.0.0"], "refusing plaintext on 0.0.0.0"),
    (["--host", "::"], "refusing plaintext on ::"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "not a readable file"),
])
def test_bad_transport_settings_fail_the_boot(tmp_path, extra, message):
    # Validation runs before anything listens: nothing is bound to 0.0.0.0 here.
    out = subprocess.run([str(BIN / "runstream"), "server", "--data-dir", str(tmp_path / "d"),
                          "--grpc-port", "0", "--http-port", "0", *extra],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr
