"""gRPC channels to a Runstream server, plaintext or TLS, chosen by the URL.

``https://host:port`` (or ``grpcs://``) opens a TLS channel; ``host:port``,
``http://host:port`` and ``grpc://host:port`` a plaintext one (the embedded server on
127.0.0.1). For TLS, ``RUNSTREAM_TLS_CA`` names a PEM file of the certificate
authorities to trust (default: the system's), and ``RUNSTREAM_TLS_CERT`` with
``RUNSTREAM_TLS_KEY`` a client certificate and key for servers that require one
(mutual TLS). A file that cannot be read raises ``OSError`` when the channel is made.
"""

from __future__ import annotations

import os

import grpc

_TLS_SCHEMES = ("https://", "grpcs://")
_PLAIN_SCHEMES = ("http://", "grpc://")


def parse(url: str) -> tuple[str, bool]:
    """``(host:port target, tls?)`` of a server URL; a trailing "/" is ignored."""
    for scheme in _TLS_SCHEMES:
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/"), True
    for scheme in _PLAIN_SCHEMES:
        if url.startswith(scheme):
            return url[len(scheme):].rstrip("/"), False
    return url.rstrip("/"), False


def _read(env: str) -> bytes | None:
    path = os.environ.get(env)
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def credentials() -> grpc.ChannelCredentials:
    """TLS credentials from RUNSTREAM_TLS_CA / RUNSTREAM_TLS_CERT / RUNSTREAM_TLS_KEY."""
    cert, key = _read("RUNSTREAM_TLS_CERT"), _read("RUNSTREAM_TLS_KEY")
    if (cert is None) != (key is None):
        raise OSError("RUNSTREAM_TLS_CERT and RUNSTREAM_TLS_KEY must be set together")
    return grpc.ssl_channel_credentials(root_certificates=_read("RUNSTREAM_TLS_CA"),
                                        private_key=key, certificate_chain=cert)


def channel(url: str, options: list | None = None) -> grpc.Channel:
    target, tls = parse(url)
    if tls:
        return grpc.secure_channel(target, credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


def aio_channel(url: str, options: list | None = None) -> grpc.aio.Channel:
    target, tls = parse(url)
    if tls:
        return grpc.aio.secure_channel(target, credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
