"""TlsConfig.validate and the client's URL → channel choice, without servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from runstream import _channel
from runstream_server.common.errors import ConfigError
from runstream_server.config import ServerConfig, TlsConfig, is_loopback

from tests.fixtures.certs import make_certs


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
    ("gateway.example", False), ("", False),
])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_plaintext_only_on_loopback_unless_allowed():
    TlsConfig().validate("127.0.0.1")
    with pytest.raises(ConfigError, match="refusing plaintext on 0.0.0.0"):
        TlsConfig().validate("0.0.0.0")
    TlsConfig(allow_plaintext=True).validate("0.0.0.0")
    with pytest.raises(ConfigError, match="refusing plaintext"):
        ServerConfig(host="10.1.2.3").validate()
    # roles that listen on nothing (projector, reaper) are not concerned
    ServerConfig(host="10.1.2.3", roles=("projector", "reaper")).validate()


def test_tls_settings_are_checked_at_boot(tmp_path):
    c = make_certs(tmp_path)
    TlsConfig(cert=c.server_cert, key=c.server_key).validate("0.0.0.0")
    TlsConfig(cert=c.server_cert, key=c.server_key, client_ca=c.ca).validate("0.0.0.0")
    with pytest.raises(ConfigError, match="go together"):
        TlsConfig(cert=c.server_cert).validate("127.0.0.1")
    with pytest.raises(ConfigError, match="needs --tls-cert"):
        TlsConfig(client_ca=c.ca).validate("127.0.0.1")
    with pytest.raises(ConfigError, match="not a readable file"):
        TlsConfig(cert=tmp_path / "nope.pem", key=c.server_key).validate("127.0.0.1")
    with pytest.raises(ConfigError, match="do not load"):       # a key of another cert
        TlsConfig(cert=c.server_cert, key=c.client_key).validate("127.0.0.1")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="do not load"):
        TlsConfig(cert=garbage, key=c.server_key).validate("127.0.0.1")


@pytest.mark.parametrize("url, target, tls", [
    ("localhost:50051", "localhost:50051", False),
    ("grpc://h:1", "h:1", False), ("http://h:1/", "h:1", False),
    ("https://h:443", "h:443", True), ("grpcs://h:9", "h:9", True),
])
def test_client_url_schemes(url, target, tls):
    assert _channel.parse(url) == (target, tls)


def test_client_tls_files_must_pair_and_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNSTREAM_TLS_CERT", str(tmp_path / "c.pem"))
    monkeypatch.delenv("RUNSTREAM_TLS_KEY", raising=False)
    with pytest.raises(OSError):
        _channel.credentials()
    monkeypatch.delenv("RUNSTREAM_TLS_CERT")
    monkeypatch.setenv("RUNSTREAM_TLS_CA", str(Path(tmp_path / "missing-ca.pem")))
    with pytest.raises(OSError):
        _channel.credentials()
