"""Processes for end-to-end tests: runstream servers and client scripts, really started."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from runstream.v1 import query_pb2, query_pb2_grpc

from tests.fixtures.identity import auth_headers, auth_metadata

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLIENT_SCRIPT = Path(__file__).with_name("client_script.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``runstream <command> ...`` as a child process; parses the addresses it prints.
    Its /metrics is on a free port (``metrics``: the URL) unless ``env`` says otherwise:
    several processes of a test share the machine."""

    def __init__(self, args: list[str], *, log_path: Path, env: dict | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "RUNSTREAM_METRICS_PORT": "0",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.grpc = ""
        self.http = ""
        self.metrics = ""
        self._lines: list[str] = []

    def start(self, timeout: float = 120) -> ServerProcess:
        self._lines = []
        self.proc = subprocess.Popen([str(BIN / "runstream"), *self.args], env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump():
            with open(self.log_path, "a") as f:
                for line in self.proc.stdout:
                    f.write(line)
                    f.flush()
                    self._lines.append(line)
                    m = re.search(r"gRPC listening on (\S+)", line)
                    if m:
                        self.grpc = m.group(1)
                    m = re.search(r"HTTP listening on (\S+)", line)
                    if m:
                        self.http = m.group(1)
                    m = re.search(r"metrics listening on (\S+)", line)
                    if m:
                        self.metrics = m.group(1)
                    if "runstream: ready" in line:
                        ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            self.kill()
            raise RuntimeError(f"runstream {self.args[0]} did not start:\n{self.output()}")
        return self

    def output(self) -> str:
        return "".join(self._lines[-80:])

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            msg = f"runstream {self.args[0]} ignored SIGTERM:\n{self.output()}"
            raise AssertionError(msg) from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)


def run_client(url: str, *, run_id: str, project: str, steps: int, metrics: int,
               exit_code: int = 0, env: dict | None = None, extra: list[str] | None = None,
               wait: bool = True) -> subprocess.Popen:
    """Start tests/e2e/client_script.py; wait for it unless ``wait`` is False."""
    cmd = [sys.executable, str(CLIENT_SCRIPT), "--run-id", run_id, "--project", project,
           "--steps", str(steps), "--metrics", str(metrics), "--exit-code", str(exit_code),
           *(extra or [])]
    e = {**os.environ, "RUNSTREAM_URL": url, "PYTHONUNBUFFERED": "1", **(env or {})}
    p = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == exit_code, f"client exited {p.returncode}:\n{out}"
    return p


def expected_value(step: int, k: int) -> float:
    """The value client_script.py logs for metric k at step (tests recompute it)."""
    return (k + 1) / (step + 1) + step * 1e-6


# -- reading back -------------------------------------------------------------------

def http(srv, method: str, path: str, body=None, key: str | None = None) -> tuple[int, object]:
    """(status, JSON body) of one HTTP/JSON API call to ``srv``; 4xx/5xx answers too.
    Sent with the session's admin key unless ``key`` is given ("" sends none)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.http + path, data=data, method=method,
                                 headers=auth_headers(key))
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class AuthInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor,
                      grpc.UnaryStreamClientInterceptor):
    """Adds the given metadata (the API key) to every call of a channel."""

    def __init__(self, metadata) -> None:
        self._md = tuple(metadata)

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + self._md)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def authed_channel(address: str, options=None, key: str | None = None) -> grpc.Channel:
    """A plaintext channel whose calls carry the session's admin key (or ``key``)."""
    return grpc.intercept_channel(grpc.insecure_channel(address, options=options),
                                  AuthInterceptor(auth_metadata(key)))


class QueryClient:
    """gRPC and HTTP reads of one api process."""

    def __init__(self, grpc_addr: str, http_addr: str, entity: str) -> None:
        # Raw histories of flat-out runs exceed gRPC's 4 MiB default message size.
        self.channel = grpc.insecure_channel(
            grpc_addr, options=[("grpc.max_receive_message_length", 256 << 20)])
        self.stub = query_pb2_grpc.QueryStub(
            grpc.intercept_channel(self.channel, AuthInterceptor(auth_metadata())))
        self.http = http_addr
        self.entity = entity

    def close(self) -> None:
        self.channel.close()

    def http_get(self, path: str):
        req = urllib.request.Request(self.http + path, headers=auth_headers())
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def runs(self, project: str) -> list[query_pb2.RunView]:
        return list(self.stub.ListRuns(query_pb2.ListRunsRequest(
            entity=self.entity, project=project, limit=1000, sort_by="name")).runs)

    def run(self, project: str, run_id: str) -> query_pb2.RunView:
        return self.stub.GetRun(query_pb2.GetRunRequest(entity=self.entity, project=project,
                                                        run_id=run_id))

    def history(self, project: str, run_id: str, keys=(), buckets: int = 0):
        resp = self.stub.GetHistory(query_pb2.GetHistoryRequest(
            entity=self.entity, project=project, run_id=run_id, keys=list(keys),
            buckets=buckets))
        return {s.key: s for s in resp.series}

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except grpc.RpcError as e:
                last = e
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def wait_states(self, project: str, states: dict[str, str], timeout: float = 120):
        def check():
            got = {r.run_id: r.state for r in self.runs(project)}
            return got if all(got.get(k) == v for k, v in states.items()) else None
        return self.wait_for(check, timeout, f"states {states}")

    def snapshot(self, project: str) -> dict:
        """Every answer the query API gives about a project, for equality checks."""
        out = {}
        for r in self.runs(project):
            view = query_pb2.RunView()
            view.CopyFrom(r)
            hist = self.history(project, r.run_id)
            out[r.run_id] = {
                "run": view.SerializeToString(deterministic=True),
                "history": {k: (list(s.step), [v.hex() for v in s.value], s.total_points)
                            for k, s in sorted(hist.items())},
            }
        return out


# -- speaking the ingest protocol directly ------------------------------------------

def make_events(run_id: str, project: str, entity: str, steps: int, metrics: int,
                finish: bool = True) -> list:
    """A run's events as a client would make them: start, one log per step, finish."""
    from runstream.v1 import events_pb2
    evs = []
    seq = 0

    def ev():
        nonlocal seq
        seq += 1
        return events_pb2.Event(run_id=run_id, project=project, entity=entity, seq=seq,
                                client_time_us=1_700_000_000_000_000 + seq * 1000)

    e = ev()
    e.run_start.name = run_id
    e.run_start.config["lr"].json = "0.5"
    evs.append(e)
    for step in range(steps):
        e = ev()
        e.log.step = step
        for k in range(metrics):
            e.log.numbers[f"m{k}"] = expected_value(step, k)
        evs.append(e)
    if finish:
        e = ev()
        e.finish.exit_code = 0
        evs.append(e)
    return evs


def send_events(url: str, events: list, batch: int = 100, timeout: float = 60) -> list:
    """Send ``events`` over one Ingest stream in batches; return every response."""
    from runstream.v1 import ingest_pb2, ingest_pb2_grpc

    def requests():
        for i in range(0, len(events), batch):
            yield ingest_pb2.IngestRequest(events=events[i:i + batch], batch_id=i // batch + 1)

    with grpc.insecure_channel(url) as ch:
        responses = list(ingest_pb2_grpc.IngestStub(ch).Stream(requests(), timeout=timeout,
                                                               metadata=auth_metadata()))
    return responses
