"""Live updates (``GET /api/v1/projects/{entity}/{project}/live``, Server-Sent Events).

Against a real embedded server: streams are opened with http.client (``httpc``) and read
by a thread; a real client (``runstream.init`` / ``run.log`` in this process) logs,
finishes, and the run is patched and deleted over HTTP. The streams must show the run's
steps, its end, the patch and the delete; streams are counted in ``GET /api/v1/live``
and leave it when they close; SIGTERM ends open streams and the server at once.
"""

from __future__ import annotations

import http.client as httpc
import json
import socket
import threading
import time
import urllib.parse

import pytest
import runstream

from .conftest import ENTITY, embedded_args
from .procs import QueryClient, ServerProcess, auth_headers, http

pytestmark = [pytest.mark.e2e]

WAIT_S = 30   # generous: a change shows within ~1.5 s at normal load


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    srv = ServerProcess(embedded_args(tmp / "data"), log_path=tmp / "server.log").start()
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    try:
        yield srv
    finally:
        q.close()
        srv.stop()


class Stream:
    """One open SSE stream; a thread parses its events (``messages``: the JSON data of
    each ``runs`` event, in order) and comments until it ends (``ended``)."""

    def __init__(self, base: str, path: str, headers: dict | None = None) -> None:
        u = urllib.parse.urlsplit(base)
        # Idle streams get a ping every 15 s; 60 s is only the stuck-server bound.
        self.conn = httpc.HTTPConnection(u.hostname, u.port, timeout=60)
        self.conn.connect()
        self.sock = self.conn.sock
        self.conn.request("GET", path, headers={**auth_headers(), **(headers or {})})
        self.resp = self.conn.getresponse()      # returns once the headers arrived
        self.status = self.resp.status
        self.messages: list[dict] = []
        self.ids: list[str] = []
        self.fields: list[str] = []              # retry: / comments, as sent
        self.ended = threading.Event()
        self._cv = threading.Condition()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = json.loads(self.resp.read())
            self.ended.set()

    def _read(self) -> None:
        event: dict[str, str] = {}
        try:
            for raw in iter(self.resp.readline, b""):
                line = raw.decode().rstrip("\r\n")
                if line == "":
                    if event.get("event") == "runs":
                        with self._cv:
                            self.messages.append(json.loads(event["data"]))
                            self.ids.append(event.get("id", ""))
                            self._cv.notify_all()
                    event = {}
                elif line.startswith(":") or line.startswith("retry:"):
                    self.fields.append(line)
                else:
                    name, _, value = line.partition(":")
                    event[name] = value[1:] if value.startswith(" ") else value
        except (OSError, ValueError, httpc.HTTPException):
            pass                                  # closed by close()
        finally:
            self.ended.set()
            with self._cv:
                self._cv.notify_all()

    def wait_for(self, predicate, what: str, timeout: float = WAIT_S) -> dict:
        """The first message for which ``predicate(message)`` is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cv:
            while True:
                for m in self.messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    raise AssertionError(f"no message with {what} within {timeout}s "
                                         f"(ended: {self.ended.is_set()}); got {self.messages}")
                self._cv.wait(left)

    def close(self) -> None:
        """Disconnect: the reader sees the end of the stream, then the socket closes."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        assert self.ended.wait(10)
        self.resp.close()
        self.conn.close()


def run_row(msg: dict, run_id: str) -> dict | None:
    return next((r for r in msg["runs"] if r["run_id"] == run_id), None)


def has_run(run_id: str, **want):
    def check(msg):
        r = run_row(msg, run_id)
        return r is not None and all(r[k] == v for k, v in want.items())
    return check


def live_stats(srv) -> list[dict]:
    code, body = http(srv, "GET", "/api/v1/live")
    assert code == 200
    return body["projects"]


def wait_stats(srv, expected: list[dict]) -> None:
    deadline = time.monotonic() + WAIT_S
    while (got := live_stats(srv)) != expected:
        assert time.monotonic() < deadline, f"streams {got}, expected {expected}"
        time.sleep(0.1)


def test_streams_follow_a_run_from_its_steps_to_finished_patched_and_deleted(server, tmp_path):
    srv = server
    path = f"/api/v1/projects/{ENTITY}/live-1/live"
    a = Stream(srv.http, path)       # the project has no run yet: the streams still work
    b = Stream(srv.http, path + "?since_us=0")
    try:
        for s in (a, b):
            assert s.status == 200
            assert s.resp.getheader("Content-Type").startswith("text/event-stream")
            assert "no-cache" in s.resp.getheader("Cache-Control")
        assert live_stats(srv) == [{"entity": ENTITY, "project": "live-1", "subscribers": 2}]

        run = runstream.init(project="live-1", entity=ENTITY, id="live-run", name="watched",
                             dir=str(tmp_path),
                             settings={"url": srv.grpc, "system_metrics": False})
        try:
            for step in range(5):
                run.log({"loss": 1.0 / (step + 1), "acc": step * 0.1})
            for s in (a, b):
                msg = s.wait_for(has_run("live-run", last_step=4), "live-run at step 4")
                r = run_row(msg, "live-run")
                assert r["state"] == "running" and r["name"] == "watched"
                assert r["summary"]["loss"] == pytest.approx(0.2)
                assert r["end_time_us"] == 0 and r["last_event_time_us"] > 0
                assert set(r) == {"run_id", "name", "state", "state_cause",
                                  "last_event_time_us", "last_step", "end_time_us",
                                  "summary", "hidden", "color"}
                assert msg["now_us"] > 0 and msg["deleted"] == []
        finally:
            assert run.finish(timeout=30)
        for s in (a, b):
            msg = s.wait_for(has_run("live-run", state="finished"), "live-run finished")
            r = run_row(msg, "live-run")
            assert r["last_step"] == 4 and r["end_time_us"] > 0
            assert r["state_cause"] == "finish() called, exit code 0"
        # Server-made changes (no client event) reach the streams too.
        code, _ = http(srv, "PATCH", f"/api/v1/runs/{ENTITY}/live-1/live-run",
                       {"color": "#ff0000", "hidden": True})
        assert code == 202
        for s in (a, b):
            s.wait_for(has_run("live-run", color="#ff0000", hidden=True), "the patch")
        code, _ = http(srv, "DELETE", f"/api/v1/runs/{ENTITY}/live-1/live-run")
        assert code == 202
        for s in (a, b):
            s.wait_for(lambda m: m["deleted"] == ["live-run"], "the delete")
        # One stream never goes back to an older row of a run.
        for s in (a, b):
            steps = [r["last_step"] for m in s.messages if (r := run_row(m, "live-run"))]
            assert steps == sorted(steps)
            assert s.ids == [str(m["now_us"]) for m in s.messages]

        a.close()
        wait_stats(srv, [{"entity": ENTITY, "project": "live-1", "subscribers": 1}])
    finally:
        a.close()
        b.close()
    wait_stats(srv, [])     # the last stream gone: the project's poller is gone too


def test_since_us_and_last_event_id_catch_up_on_what_changed(server, tmp_path):
    srv = server
    path = f"/api/v1/projects/{ENTITY}/live-2/live"
    t0_us = time.time_ns() // 1000
    run = runstream.init(project="live-2", entity=ENTITY, id="caught-up", dir=str(tmp_path),
                         settings={"url": srv.grpc, "system_metrics": False})
    for step in range(3):
        run.log({"x": step})
    assert run.finish(timeout=30)
    q = QueryClient(srv.grpc, srv.http, ENTITY)
    try:
        q.wait_states("live-2", {"caught-up": "finished"})
    finally:
        q.close()

    for s in (Stream(srv.http, f"{path}?since_us={t0_us}"),
              Stream(srv.http, path, headers={"Last-Event-ID": str(t0_us)})):
        try:
            msg = s.wait_for(has_run("caught-up", state="finished"), "the caught-up run")
            assert run_row(msg, "caught-up")["last_step"] == 2
            assert msg["now_us"] >= t0_us
            assert any(f.startswith("retry:") for f in s.fields)
        finally:
            s.close()
    wait_stats(srv, [])


@pytest.mark.parametrize("query", ["since_us=soon", "since_us=-1", "since_us=1.5",
                                   f"since_us={2**63}"])
def test_malformed_since_us_is_400(server, query):
    s = Stream(server.http, f"/api/v1/projects/{ENTITY}/live-3/live?{query}")
    assert s.status == 400 and s.body["error"]["code"] == "INVALID_ARGUMENT"
    s.close()
    assert live_stats(server) == []


def test_sigterm_ends_open_streams_and_the_server_promptly(embedded):
    srv, _ = embedded
    streams = [Stream(srv.http, f"/api/v1/projects/{ENTITY}/p{i}/live") for i in range(2)]
    try:
        assert all(s.status == 200 for s in streams)
        assert len(live_stats(srv)) == 2
        # Without ending the streams, aiohttp would wait 60 s for their handlers.
        assert srv.stop(timeout=30) == 0
        for s in streams:
            assert s.ended.wait(10)
    finally:
        for s in streams:
            s.close()
