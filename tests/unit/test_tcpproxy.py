"""tests/fixtures/tcpproxy.py against a real echo server on 127.0.0.1."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from tests.fixtures.tcpproxy import TcpProxy

QUIET_S = 0.5   # how long "nothing arrives" is watched: loopback answers in microseconds


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass                            # the reset tests reset this end too


@pytest.fixture
def proxy():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = TcpProxy(server.server_address[1]).start()
    try:
        yield p
    finally:
        p.stop()
        server.shutdown()
        server.server_close()


def _connect(p: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", p.port), timeout=5)


def _recv(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def _echo(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    return _recv(s, len(data))


def _silent(s: socket.socket) -> bool:
    """Nothing arrives within QUIET_S: no bytes, no end of file, no reset."""
    s.settimeout(QUIET_S)
    try:
        s.recv(1)
        return False
    except TimeoutError:
        return True
    finally:
        s.settimeout(5)


def test_forwards_both_ways(proxy):
    big = bytes(range(256)) * 4096          # 1 MiB: many reads and writes each way
    with _connect(proxy) as s:
        assert _echo(s, b"hello") == b"hello"
        assert _echo(s, big) == big
    assert proxy.stats["forwarded"] == 1
    assert proxy.stats["bytes_up"] == proxy.stats["bytes_down"] == len(big) + 5


def test_reset_cut_resets_open_and_new_connections_until_healed(proxy):
    old = _connect(proxy)
    assert _echo(old, b"a") == b"a"
    proxy.cut("reset")
    with pytest.raises(ConnectionResetError):
        old.recv(1)
    with pytest.raises(ConnectionResetError):
        # Accepted, then reset at once: the reset may reach connect() itself.
        with _connect(proxy) as new:
            new.recv(1)
    old.close()
    proxy.heal()
    with _connect(proxy) as s:
        assert _echo(s, b"d") == b"d"
    assert proxy.stats["reset"] >= 2


def test_blackhole_holds_everything_and_delivers_it_in_order_after_the_heal(proxy):
    old = _connect(proxy)
    assert _echo(old, b"x") == b"x"
    proxy.cut("blackhole")
    old.sendall(b"1")
    old.sendall(b"2")
    assert _silent(old)                     # no answer, and no error either
    new = _connect(proxy)                   # the handshake completes...
    new.sendall(b"n")
    assert _silent(new)                     # ...but nothing reaches the server
    assert proxy.stats["forwarded"] == 1
    proxy.heal()
    assert _recv(old, 2) == b"12"           # held bytes arrive late, in order
    new.sendall(b"m")
    assert _recv(new, 2) == b"nm"           # the held "n" first, then "m"
    old.close()
    new.close()
    assert proxy.stats["forwarded"] == 2


def test_cut_mode_is_checked(proxy):
    with pytest.raises(ValueError):
        proxy.cut("drop-half")
