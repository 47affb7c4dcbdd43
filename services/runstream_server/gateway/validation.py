"""Pure checks of an ingest request. Raises ``InvalidEvent`` (a PermanentError)."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import unknown_fields
from runstream.v1 import events_pb2, ingest_pb2

from ..common import limits
from ..common.errors import PermanentError

# define_metric's summary mode: known modes are short; unknown ones are kept (and count
# as "last") so that a newer client's modes are not refused, but not at any length.
MAX_SUMMARY_MODE_CHARS = 64
# IngestRequest field numbers reserved for LogRecord (ingest.proto): the request's bytes
# are forwarded as a record, so a client setting one would rewrite or break the record.
_RECORD_FIELDS = range(2, 15)
# Bodies only the server may create (the reaper's Crashed; the api's WorkspaceSaved).
_SERVER_ONLY = frozenset({"crashed", "workspace_saved"})


class InvalidEvent(PermanentError):
    def __init__(self, message: str, run_id: str = "", seq: int = 0) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.seq = seq


@dataclass(frozen=True, slots=True)
class RunSlice:
    """The events of one run inside a request: indexes into ``request.events``."""

    run_id: str
    indexes: tuple[int, ...]
    max_seq: int


def _check_name(what: str, value: str, run_id: str) -> None:
    if not value:
        raise InvalidEvent(f"{what} is empty", run_id)
    if len(value) > limits.MAX_ID_CHARS:
        raise InvalidEvent(f"{what} longer than {limits.MAX_ID_CHARS} characters", run_id)
    if limits.NAME_FORBIDDEN.search(value):
        raise InvalidEvent(f"{what} {value!r} contains one of / \\ # ? % : or a control character",
                           run_id)


def _check_keys(what: str, keys, run_id: str, seq: int) -> None:
    # Cheap C-level passes over the keys: no per-point Python work beyond len().
    n = len(keys)
    if n == 0:
        return
    if n > limits.MAX_KEYS_PER_EVENT:
        raise InvalidEvent(f"{what} has {n} keys; the limit is {limits.MAX_KEYS_PER_EVENT}",
                           run_id, seq)
    lengths = list(map(len, keys))
    if min(lengths) == 0:
        raise InvalidEvent(f"{what} has an empty key", run_id, seq)
    if max(lengths) > limits.MAX_KEY_CHARS:
        raise InvalidEvent(f"{what} has a key longer than {limits.MAX_KEY_CHARS} characters",
                           run_id, seq)


def _check_identity(ev: events_pb2.Event) -> None:
    """The run id, project and entity of a run's first event in a request."""
    run_id = ev.run_id
    if not limits.RUN_ID_RE.match(run_id):
        raise InvalidEvent(f"run_id {run_id[:200]!r} must be 1-128 characters of A-Z a-z 0-9 _ . -",
                           run_id[:200])
    _check_name("project", ev.project, run_id)
    _check_name("entity", ev.entity, run_id)


def _check_body(ev: events_pb2.Event, kind: str | None, run_id: str, seq: int) -> None:
    """Every body but ``log`` (checked inline by ``validate_request``, the hot path)."""
    if kind is None:
        raise InvalidEvent("event has no body", run_id, seq)
    if kind in _SERVER_ONLY:
        raise InvalidEvent(f"{kind} events are made by the server only", run_id, seq)
    if kind == "config_update":
        _check_keys("config", ev.config_update.set, run_id, seq)
    elif kind == "summary_update":
        _check_keys("summary", ev.summary_update.numbers, run_id, seq)
        _check_keys("summary", ev.summary_update.others, run_id, seq)
    elif kind == "run_start":
        _check_keys("config", ev.run_start.config, run_id, seq)
    elif kind == "define_metric":
        dm = ev.define_metric
        _check_keys("define_metric", [dm.name], run_id, seq)
        if len(dm.step_metric) > limits.MAX_KEY_CHARS:
            raise InvalidEvent(f"define_metric step_metric longer than {limits.MAX_KEY_CHARS} "
                               "characters", run_id, seq)
        if len(dm.summary) > MAX_SUMMARY_MODE_CHARS:
            raise InvalidEvent(f"define_metric summary longer than {MAX_SUMMARY_MODE_CHARS} "
                               "characters", run_id, seq)


def validate_request(request: ingest_pb2.IngestRequest) -> list[RunSlice]:
    """Check every event; return the request's events grouped by run, in order.

    All or nothing: one bad event rejects the whole request, so a request is either
    appended entirely or not at all. Within a run, seq must strictly increase.
    """
    for f in unknown_fields.UnknownFieldSet(request):     # top level only; ~0.2 µs
        if f.field_number in _RECORD_FIELDS:
            raise InvalidEvent(f"IngestRequest field {f.field_number} is reserved (2-14 belong "
                               "to the log record the request is forwarded as)")
    events = request.events
    if len(events) > limits.MAX_EVENTS_PER_REQUEST:
        raise InvalidEvent(f"{len(events)} events in one request; the limit is "
                           f"{limits.MAX_EVENTS_PER_REQUEST}")
    # Per run: [project, entity, indexes, last seq]. Identity (run id, project, entity)
    # is checked once per run per request, then compared: the loop below runs once per
    # event of every request, so it does as little Python work per event as it can.
    runs: dict[str, list] = {}
    max_keys = limits.MAX_KEYS_PER_EVENT
    max_chars = limits.MAX_KEY_CHARS
    max_step = limits.MAX_STEP
    for i, ev in enumerate(events):
        rid = ev.run_id
        seq = ev.seq
        acc = runs.get(rid)
        if acc is None:
            _check_identity(ev)
            if seq == 0:
                raise InvalidEvent("seq must start at 1 (seq 0 is reserved for the server)", rid)
            runs[rid] = acc = [ev.project, ev.entity, [i], seq]
        else:
            if seq <= acc[3]:
                raise InvalidEvent(f"seq {seq} after {acc[3]}: seq must strictly increase per run",
                                   rid, seq)
            if ev.project != acc[0] or ev.entity != acc[1]:
                raise InvalidEvent("a run's events must all have the same project and entity",
                                   rid, seq)
            acc[2].append(i)
            acc[3] = seq
        if ev.server_time_us:
            raise InvalidEvent("server_time_us is set by the server; leave it 0", rid, seq)
        kind = ev.WhichOneof("body")
        if kind == "log":
            # C-level checks only: no key is longer (in UTF-8 bytes, so in characters)
            # than the whole body, and an empty key is one lookup. The full, slower check
            # runs only when these cannot rule a problem out.
            lg = ev.log
            if lg.step > max_step:
                raise InvalidEvent(f"log step {lg.step} is above the limit {max_step}", rid, seq)
            nums, others = lg.numbers, lg.others
            if (len(nums) + len(others) > max_keys or "" in nums or "" in others
                    or lg.ByteSize() > max_chars):
                _check_keys("log", nums, rid, seq)
                _check_keys("log", others, rid, seq)
        else:
            _check_body(ev, kind, rid, seq)
    return [RunSlice(rid, tuple(acc[2]), acc[3]) for rid, acc in runs.items()]
