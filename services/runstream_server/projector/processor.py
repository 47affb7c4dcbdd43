"""The fold: event-log records → rows for ClickHouse. Pure: no I/O, no clock, no randomness.

Everything here is a deterministic function of (the run states before, the record bytes,
the record's log position). Replaying the same log over the same starting states gives
the same rows, and replaying a log over states that already contain it gives no rows at
all (workspace saves excepted: they have no state; see "Workspaces"). The projector loop
around it does the I/O (consume, load states, insert, commit).

Inputs
    A record is a ``LogRecord``: the events of one ingest request of one run, plus the
    gateway's receive time, which applies to every event without its own
    ``server_time_us``. The *server time* of an event is ``event.server_time_us`` if set,
    else ``record.server_time_us``. Run state is keyed by ``RunKey(entity, project,
    run_id)``.

The caller must pre-load states
    ``fold_record`` creates a state for a run it has no state for. So before folding, the
    caller puts into ``states`` every run of the record that exists in the store
    (``StoreWriter.load_states(run_ids)``; the log key of a record is its run id, so no
    decoding is needed for that). A missing state means "new run".

Rules, in the order they are checked for each event (invariants 2 and 4 of DESIGN.md):

1. Identity: an event with an empty run_id, project or entity is ignored (``invalid``),
   except a ``workspace_saved`` with an empty run_id (see "Workspaces": it belongs to no
   run, and none of the rules below apply to it). A ``log`` with a step above
   ``limits.MAX_STEP`` (refused by the gateway, so written by something else) is
   ignored the same way, before any rule below.
2. Position: if the run's state says it already applied a record at a position
   ``(partition, offset) >= `` this one (same partition), every event of this record for
   that run is skipped (``replayed``). Replaying the log over existing tables therefore
   changes nothing. Positions of different partitions are not compared (the partition
   count of a topic never changes in a deployment; see docs).
3. Client events (``seq > 0``), any body but ``crashed`` and ``workspace_saved`` (those
   are skipped as ``invalid``):
   - ``seq <= last_seq``: a duplicate or a late arrival; skipped entirely: no history
     rows, no state change (``duplicates``). Per-run order is the client's seq order,
     and the log preserves it, so an event that comes after a higher seq was applied
     is a re-send of something already applied, or arrived after the run moved on.
   - ``seq > last_seq + 1``: a gap (an event was lost or is late): applied anyway; the
     number of skipped seqs is added to ``seq_gaps`` (a new run's first seq N counts
     N - 1). A missing seq that arrives later is then late, and skipped by the previous
     rule. A ``run_start`` never counts a gap: a client session begins with it, and a
     resuming client starts its seqs above every seq the run may already have (at its
     clock in µs, see the client's resume), so none of its events is a duplicate.
   - Every applied client event sets ``last_seq = seq`` and ``last_event_time`` = its
     server time. If the run was ``crashed`` it becomes ``running`` again, with cause
     ``sent <kind> seq N after crash`` (invariant 5) — except ``process_exited``, which
     says the process is gone (it leaves a crashed run crashed). Finished and failed runs keep
     their state (a late heartbeat racing finish() must not revive them); only
     ``run_start`` with ``resumed`` reopens them.
   - A run without a state is created by its first applied client event, whatever the
     body: state ``running``, name = run id, start time = that event's server time,
     cause ``started`` (RunStart) or ``first event was <kind> seq N (no RunStart seen)``
     (the RunStart was lost, or arrived after a later seq and was skipped as late).
4. Server events (``seq == 0``):
   - ``crashed`` applies only to a ``running`` run whose ``last_seq == crashed.after_seq``;
     otherwise it is stale (the run sent something after the reaper decided, or it was
     already finished) and skipped (``stale``).
   - ``run_patch``, ``delete`` and ``stop_requested`` always apply (UI/API actions made
     by the server; they also apply with ``seq > 0`` when a client sends them).
   - They never create a run: for a run without a state they are skipped (``orphans``).
   - Other bodies with seq 0 (``workspace_saved`` with a run id included) are invalid
     and skipped.
   Server events do not touch ``last_seq`` or ``last_event_time`` (they are not run
   activity).
5. Every applied event (client or server) sets the run's applied position to this
   record's position and increments ``version`` by one, so versions strictly increase
   per run and are a function of the log alone. Skipped events change nothing.

Bodies
    run_start: name (if given; a new run is named after its id), notes, tags, group,
      job_type, sweep_id (each if non-empty), privacy (if specified; default private),
      config merged in, metadata as JSON, start time = ``start_time_us`` or server time
      (a resumed run keeps its first start time); state running, cause ``started`` or
      ``resumed``; a resumed run's end time and exit code are cleared.
    log: one ``history_numeric`` row per number (value stored as float64 bit for bit:
      NaN payloads, infinities and -0.0 included), one ``history_other`` row per other
      value (JSON text as sent); ts = client time (server time when the client sent 0),
      clamped to the DateTime64 range. ``last_step`` = the highest step logged. Each
      logged number sets its key's summary by the key's summary mode (below; by
      default summary[key] = the last value); a key moves between ``summary`` and
      ``summary_other`` when its type changes. A key in both maps of one event ends up
      in ``summary_other``. Other (JSON) values follow "last" (or "none").
    config_update: set (canonical JSON) / remove keys.
    summary_update: numbers / others set, ``removed`` deleted from both maps. This is an
      explicit override of the shown value only: it lasts until the key is logged again
      and does not touch the key's aggregate.
    define_metric: an empty name is ignored. A non-empty ``summary`` becomes the mode
      of the name or glob (``summary_modes``), a non-empty ``step_metric`` its x axis
      (``step_metrics``); empty fields leave them unchanged. For every key in the
      summary or with an aggregate whose mode this changes: its aggregate restarts,
      seeded with its current numeric summary value (a define_metric sent after values
      were logged aggregates from the last of them on); mode "none" removes the key
      from the summary. Re-sending the same definition (a resumed script) changes
      nothing.

Summary modes
    The mode of a key is that of its exact name in ``summary_modes``, else of the
    longest matching glob pattern (``*``, ``?``, ``[...]``; equal lengths: the smaller
    pattern text), else "last". Per logged number v:
      last: summary = v.                 none: the key has no summary.
      min, max: the smallest / largest value; NaN is skipped (NaN is shown only while
        every value logged was NaN).
      first: the first value logged (NaN included); later values change nothing.
      mean: the mean of the values other than NaN (NaN while there is none).
      Unknown modes count as "last". The aggregate lives in ``summary_count`` (values
      aggregated) and ``summary_agg`` (min / max / first value, or the sum for mean).
    heartbeat, artifact_logged (for now), unknown future bodies: liveness only.
    finish: exit 0 → finished (``finish() called, exit code 0``), else failed
      (``exit code N``); end time = server time. A run with a pending stop request
      ends ``killed`` instead, whatever the exit code: cause ``stopped by <who> at
      <time>`` (+ ``, exit code N`` when not 0). A finish of a run that is already
      finished, failed or killed changes nothing (the first one stands; a resumed
      session reopens the run with run_start first). A crashed run is revived by the
      finish (rule 3) and ends by it.
    process_exited (written by the client's upload helper when the training process
      ended without finishing the run): a ``running`` run becomes crashed at once,
      cause ``process exited without finish (pid N on host H), seen by the uploader``
      (+ ``: <reason>``), end time = server time; with a pending stop request it ends
      ``killed`` as with ``crashed``. Finished, failed, killed and crashed runs keep
      their state. Any later client event revives the run (the rule above).
    crashed: state crashed, cause = reason (or ``no event for X s since <last seen>``)
      + ``, detected by <detector>``; end time = last seen. With a pending stop
      request: ``killed``, cause ``stopped by <who> at <time>; the process ended
      without finishing (<crash cause>)``.
    run_patch: name, notes, tags (when ``set_tags``), privacy, hidden, color.
    delete: ``deleted = 1`` (the run disappears from queries; its state is kept so a
      later event does not resurrect it).
    stop_requested: a running run without a pending stop request records one
      (``stop_requested_by``, ``stop_requested_time`` = server time); the state stays
      running until the client's Finish (or a Crashed) ends it ``killed``. A stop
      request for a run that is not running changes nothing (but is applied, so
      position and version advance). run_start clears a pending request.

Workspaces
    ``workspace_saved`` (made by the api: seq 0, empty run_id, entity and project set,
    log key ``<entity>/<project>/workspace``) is one ``workspaces`` row: entity, project,
    ``user``, ``state_json`` as saved, ``updated_time`` = server time, and the record's
    position (``log_partition``, ``log_offset``; the offset is the table's version). It
    creates and touches no run, has no state and no seq rules: every save of a
    project's workspaces is in the key's one partition, so the save latest in the log
    has the highest offset and wins (in a batch, and in the table read with FINAL); a
    replay writes identical rows, which collapse. Skipped as ``invalid``: seq > 0, an
    empty entity, project or user, or a ``state_json`` that is not a JSON object.

JSON: config values are stored canonical (sorted keys, no spaces; text that is not JSON
becomes a JSON string) so that the equality filter of the query API can compare text.
History and summary "other" values are stored as the client sent them.

Failure of a write: ``fold_record`` mutates the states in place (the batch holds
references). If the insert of a batch fails, the caller must drop those states from its
cache (reload them from the store) and fold again from the committed offsets.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from runstream.v1 import events_pb2, views_pb2

from ..common.limits import MAX_STEP
from .log_layout import decode_numbers

HISTORY_NUMERIC = "history_numeric"
HISTORY_OTHER = "history_other"
RUNS = "runs"
WORKSPACES = "workspaces"
# The write order: run states last.
TABLES = (HISTORY_NUMERIC, HISTORY_OTHER, WORKSPACES, RUNS)

# DateTime64(6) holds 1900-01-01 .. 2299-12-31; client clocks are clamped into
# [epoch, 2299-12-31 23:59:59.999999] so that one bad clock never poisons a batch.
MAX_TIME_US = 10_413_791_999_999_999

_PRIVACY = {
    events_pb2.PRIVACY_PRIVATE: "private",
    events_pb2.PRIVACY_PUBLIC: "public",
}
_SERVER_BODIES = frozenset({"crashed", "run_patch", "delete", "stop_requested"})
_NOT_CLIENT_BODIES = frozenset({"crashed", "workspace_saved"})


# Map columns of the runs table kept for define_metric (migration 0003).
_SUMMARY_MODE_MAPS = ("summary_modes", "step_metrics", "summary_count", "summary_agg")


class RunKey(NamedTuple):
    entity: str
    project: str
    run_id: str


class WorkspaceKey(NamedTuple):
    entity: str
    project: str
    user: str


class WorkspaceRow(NamedTuple):
    """One ``workspaces`` row: a user's saved workspace of a project (see "Workspaces")."""

    entity: str
    project: str
    user: str
    state_json: str
    updated_time: int     # µs, server time of the save
    log_partition: int
    log_offset: int       # the row's version: the latest save in the log wins


def clamp_time_us(t: int) -> int:
    """``t`` limited to what a ``DateTime64(6, 'UTC')`` column stores."""
    return 0 if t < 0 else MAX_TIME_US if t > MAX_TIME_US else t


def canonical_json(text: str) -> str:
    """One spelling per JSON value: sorted keys, no spaces. Non-JSON text → a JSON string."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return json.dumps(text, ensure_ascii=False)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _iso(t_us: int) -> str:
    t = datetime.fromtimestamp(clamp_time_us(t_us) / 1e6, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + "Z"


@dataclass
class RunState:
    """The state of one run: what the ``runs`` table holds, one row per version."""

    entity: str
    project: str
    run_id: str
    name: str = ""
    state: str = "running"
    state_cause: str = ""
    notes: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""
    job_type: str = ""
    sweep_id: str = ""
    privacy: str = "private"
    config: dict[str, str] = field(default_factory=dict)           # key → canonical JSON
    summary: dict[str, float] = field(default_factory=dict)
    summary_other: dict[str, str] = field(default_factory=dict)    # key → JSON text
    summary_modes: dict[str, str] = field(default_factory=dict)    # name or glob → mode
    step_metrics: dict[str, str] = field(default_factory=dict)     # name or glob → x metric
    summary_count: dict[str, int] = field(default_factory=dict)    # values aggregated per key
    summary_agg: dict[str, float] = field(default_factory=dict)    # min/max/first, or sum (mean)
    last_step: int = -1          # highest step of an applied Log; -1 before the first
    # The numeric keys logged at last_step so far; None when unknown (a state loaded from
    # the store). Not a column (a ClassVar default, shadowed per instance): it only tells
    # a step's keys logged by separate events (system metrics, then the user's values)
    # from a rewrite of a point, which the rollup must know (``_log``).
    step_keys: ClassVar[list[str] | None] = None
    metadata_json: str = ""
    start_time: int = 0          # µs since the epoch (server time unless the client gave it)
    last_event_time: int = 0     # µs, server time of the last applied client event
    end_time: int = 0            # µs, 0 while running
    exit_code: int = 0
    hidden: bool = False
    color: str = ""
    last_seq: int = 0
    dropped_points: int = 0
    seq_gaps: int = 0            # seqs skipped over (lost or late events)
    deleted: bool = False
    stop_requested_by: str = ""  # a pending (or the last honoured) stop request
    stop_requested_time: int = 0  # µs, server time of that request; 0 when none
    applied_partition: int = -1  # log position of the last applied record
    applied_offset: int = -1
    version: int = 0

    @property
    def key(self) -> RunKey:
        return RunKey(self.entity, self.project, self.run_id)

    def to_row(self) -> dict[str, Any]:
        """The ``runs`` row: column name → value (times as int µs, maps sorted by key)."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["tags"] = list(self.tags)
        row["deleted"] = int(self.deleted)
        row["config"] = dict(sorted(self.config.items()))
        row["summary"] = dict(sorted(self.summary.items()))
        row["summary_other"] = dict(sorted(self.summary_other.items()))
        for name in _SUMMARY_MODE_MAPS:
            row[name] = dict(sorted(getattr(self, name).items()))
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunState:
        """Inverse of ``to_row``; times may also be given as ``<name>_us`` ints."""
        kw: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in row:
                kw[f.name] = row[f.name]
            elif f.name + "_us" in row:
                kw[f.name] = row[f.name + "_us"]
        for name in ("start_time", "last_event_time", "end_time"):
            v = kw.get(name)
            if isinstance(v, datetime):   # a DateTime64 read back raw (naive = UTC)
                if v.tzinfo is None:
                    v = v.replace(tzinfo=UTC)
                kw[name] = round(v.timestamp() * 1e6)
        for name in ("tags",):
            kw[name] = list(kw.get(name) or [])
        for name in ("config", "summary", "summary_other", *_SUMMARY_MODE_MAPS):
            kw[name] = dict(kw.get(name) or {})
        kw["hidden"] = bool(kw.get("hidden", False))
        kw["deleted"] = bool(kw.get("deleted", False))
        return cls(**kw)


# --- columnar accumulators -------------------------------------------------------------

_TS = pa.timestamp("us", tz="UTC")

RUNS_SCHEMA = pa.schema([
    ("entity", pa.string()), ("project", pa.string()), ("run_id", pa.string()),
    ("name", pa.string()), ("state", pa.string()), ("state_cause", pa.string()),
    ("notes", pa.string()), ("tags", pa.list_(pa.string())), ("group", pa.string()),
    ("job_type", pa.string()), ("sweep_id", pa.string()), ("privacy", pa.string()),
    ("config", pa.map_(pa.string(), pa.string())),
    ("summary", pa.map_(pa.string(), pa.float64())),
    ("summary_other", pa.map_(pa.string(), pa.string())),
    ("metadata_json", pa.string()),
    ("start_time", _TS), ("last_event_time", _TS), ("end_time", _TS),
    ("exit_code", pa.int32()), ("hidden", pa.bool_()), ("color", pa.string()),
    ("stop_requested_by", pa.string()), ("stop_requested_time", _TS),
    ("last_seq", pa.uint64()), ("dropped_points", pa.uint64()), ("seq_gaps", pa.uint64()),
    ("deleted", pa.uint8()), ("applied_partition", pa.int32()), ("applied_offset", pa.int64()),
    ("version", pa.uint64()),
    ("summary_modes", pa.map_(pa.string(), pa.string())),
    ("step_metrics", pa.map_(pa.string(), pa.string())),
    ("summary_count", pa.map_(pa.string(), pa.uint64())),
    ("summary_agg", pa.map_(pa.string(), pa.float64())),
    ("last_step", pa.int64()),
])

WORKSPACES_SCHEMA = pa.schema([
    ("entity", pa.string()), ("project", pa.string()), ("user", pa.string()),
    ("state_json", pa.string()), ("updated_time", _TS),
    ("log_partition", pa.int32()), ("log_offset", pa.uint64()),
])


class _History:
    """Rows of one history table, stored as segments (one per Log event) + per-point lists.

    Appending a Log event costs three C-level ``extend`` calls; the run/step/time/seq
    columns are expanded with ``numpy.repeat`` only when the batch is converted.
    """

    __slots__ = ("runs", "run_index", "segs", "keys", "values", "numeric")

    # One segment = these uint64 fields, interleaved in ``segs`` (times are clamped to
    # >= 0, so every field fits).
    _SEG_FIELDS = 6      # run index, step, ts, seq, point count, rewrite

    def __init__(self, numeric: bool) -> None:
        self.numeric = numeric
        self.runs: list[RunKey] = []
        self.run_index: dict[RunKey, int] = {}
        self.segs = array("Q")
        self.keys: list[str] = []
        self.values: array | list[str] = array("d") if numeric else []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, run: RunKey, step: int, ts: int, seq: int, keys: list[str], values,
            rewrite: bool = False) -> None:
        """One Log event's points: ``keys`` and ``values`` (floats, or JSON texts) in step.
        ``rewrite``: some of them may replace earlier points of their step (numeric only:
        the ``rewrite`` column, migration 0007)."""
        if not keys:
            return
        self.keys.extend(keys)
        self.values.extend(values)
        i = self.run_index.get(run)
        if i is None:
            i = self.run_index[run] = len(self.runs)
            self.runs.append(run)
        self.segs.extend((i, step, ts, seq, len(keys), rewrite))

    def to_arrow(self) -> pa.Table:
        segs = (np.frombuffer(self.segs, dtype=np.uint64) if self.segs
                else np.zeros(0, np.uint64)).reshape(-1, self._SEG_FIELDS)
        lens = segs[:, 4].astype(np.int64)

        def rep(col: int, dtype) -> np.ndarray:
            return np.repeat(segs[:, col].astype(dtype), lens)

        run_idx = rep(0, np.int64)

        def ident(pos: int) -> pa.DictionaryArray:
            uniq: dict[str, int] = {}
            codes = np.array([uniq.setdefault(r[pos], len(uniq)) for r in self.runs],
                             dtype=np.int32)
            return pa.DictionaryArray.from_arrays(pa.array(codes[run_idx] if len(codes) else
                                                           np.zeros(0, np.int32)),
                                                  pa.array(list(uniq), pa.string()))

        extra = {}
        if self.numeric:
            vals = pa.array(np.frombuffer(self.values, dtype=np.float64)
                            if len(self.values) else np.zeros(0, np.float64))
            vname = "value"
            extra["rewrite"] = pa.array(rep(5, np.uint8))
        else:
            vals = pa.array(self.values, pa.string())
            vname = "value_json"
        return pa.table({
            "entity": ident(0),
            "project": ident(1),
            "run_id": ident(2),
            "key": pa.array(self.keys, pa.string()).dictionary_encode(),
            "step": pa.array(rep(1, np.uint64)),
            "ts": pa.array(rep(2, np.int64)).cast(_TS),
            vname: vals,
            "seq": pa.array(rep(3, np.uint64)),
            **extra,
        })


@dataclass
class FoldStats:
    """What happened to the events folded into a batch (for metrics and logs)."""

    records: int = 0
    undecodable: int = 0      # records whose bytes are not a LogRecord
    applied: int = 0
    replayed: int = 0         # skipped: the record's position was already applied
    duplicates: int = 0       # skipped: client seq <= last_seq
    stale: int = 0            # skipped: Crashed that no longer holds
    orphans: int = 0          # skipped: server event for a run without state
    invalid: int = 0          # skipped: missing identity, or a body not allowed with its seq
    gaps: int = 0             # applied events that followed a gap


class RowBatch:
    """Rows produced by folding records, ready for one insert per table."""

    def __init__(self) -> None:
        self.numeric = _History(numeric=True)
        self.other = _History(numeric=False)
        self.runs: dict[RunKey, RunState] = {}   # latest state per run touched by the batch
        # The latest save per workspace folded into the batch.
        self.workspaces: dict[WorkspaceKey, WorkspaceRow] = {}
        self.stats = FoldStats()

    def rows(self) -> dict[str, int]:
        """Row count per table."""
        return {HISTORY_NUMERIC: len(self.numeric), HISTORY_OTHER: len(self.other),
                WORKSPACES: len(self.workspaces), RUNS: len(self.runs)}

    def total_rows(self) -> int:
        return len(self.numeric) + len(self.other) + len(self.workspaces) + len(self.runs)

    def __bool__(self) -> bool:
        return self.total_rows() > 0

    def to_arrow(self, table: str) -> pa.Table:
        if table == HISTORY_NUMERIC:
            return self.numeric.to_arrow()
        if table == HISTORY_OTHER:
            return self.other.to_arrow()
        if table == RUNS:
            rows = [s.to_row() for s in self.runs.values()]
            cols: dict[str, list] = {name: [r[name] for r in rows] for name in RUNS_SCHEMA.names}
            for name in ("config", "summary", "summary_other", *_SUMMARY_MODE_MAPS):
                cols[name] = [list(m.items()) for m in cols[name]]
            for name in ("start_time", "last_event_time", "end_time"):
                cols[name] = [clamp_time_us(t) for t in cols[name]]
            return pa.Table.from_pydict(cols, schema=RUNS_SCHEMA)
        if table == WORKSPACES:
            rows = list(self.workspaces.values())
            cols = {name: [getattr(r, name) for r in rows] for name in WORKSPACES_SCHEMA.names}
            cols["updated_time"] = [clamp_time_us(t) for t in cols["updated_time"]]
            return pa.Table.from_pydict(cols, schema=WORKSPACES_SCHEMA)
        raise ValueError(f"unknown table {table!r}")


# --- the fold ----------------------------------------------------------------------------

def decode_record(value: bytes) -> events_pb2.LogRecord | None:
    """The record, or None when the bytes are not a LogRecord."""
    rec = events_pb2.LogRecord()
    try:
        rec.ParseFromString(value)
    except (DecodeError, ValueError):
        return None
    return rec


def fold_record(states: MutableMapping[RunKey, RunState],
                record: bytes | events_pb2.LogRecord,
                partition: int, offset: int, batch: RowBatch) -> None:
    """Apply one log record at ``(partition, offset)`` to ``states``, adding rows to ``batch``."""
    stats = batch.stats
    stats.records += 1
    if isinstance(record, (bytes, bytearray, memoryview)):
        raw = bytes(record)
        fast = _decode_fast(raw)
        if fast is not None:
            _fold_events(states, *fast, partition, offset, batch)
            return
        rec = decode_record(raw)
        if rec is None:
            stats.undecodable += 1
            return
    else:
        rec = record
    _fold_events(states, rec.events, None, rec.server_time_us, partition, offset, batch)


def _decode_fast(raw: bytes) -> tuple[list, list, int] | None:
    """``(event views, decoded Log bodies, record time)`` of a record made of Log events
    of numbers (and heartbeats) only, each Log body decoded by ``log_layout``; None for
    any other record, which takes the general parse (``decode_record``). Both give the
    same fold: the views hold every field of the record and its events but the bodies,
    and ``decode_numbers`` accepts only bodies it reads exactly as the full parse would."""
    try:
        view = views_pb2.LogRecordView.FromString(raw)
    except (DecodeError, ValueError):
        return None
    events = view.events
    logs: list = []
    for ev in events:
        kind = ev.WhichOneof("body")
        if kind == "log":
            d = decode_numbers(ev.log)
            if d is None:
                return None
            logs.append(d)
        elif kind == "heartbeat" and not ev.heartbeat:
            logs.append(None)
        else:
            return None
    return events, logs, view.server_time_us


def _fold_events(states: MutableMapping[RunKey, RunState], events, logs: list | None,
                 record_time: int, partition: int, offset: int, batch: RowBatch) -> None:
    """The rules of the module docstring over one record's events: full ``Event``
    messages (``logs`` None), or the views and decoded Log bodies of ``_decode_fast``."""
    stats = batch.stats
    # Per run: was this record already applied (decided once, before any event applies)?
    replayed: dict[RunKey, bool] = {}
    key = RunKey("", "", "")     # the previous event's run (a record is mostly one run)
    for i, ev in enumerate(events):
        run_id, project, entity = ev.run_id, ev.project, ev.entity
        if not (run_id and project and entity):
            if not run_id and ev.HasField("workspace_saved"):
                _workspace_saved(ev, ev.server_time_us or record_time, partition, offset,
                                 batch)
            else:
                stats.invalid += 1
            continue
        if run_id != key.run_id or project != key.project or entity != key.entity:
            key = RunKey(entity, project, run_id)
        st = states.get(key)
        skip = replayed.get(key)
        if skip is None:
            skip = (st is not None and st.applied_partition == partition
                    and offset <= st.applied_offset)
            replayed[key] = skip
        if skip:
            stats.replayed += 1
            continue
        kind = ev.WhichOneof("body")
        if kind == "log" and (ev.log.step if logs is None else logs[i][0]) > MAX_STEP:
            stats.invalid += 1          # the gateway refuses these; a foreign writer did not
            continue
        now = ev.server_time_us or record_time
        seq = ev.seq
        if seq > 0:
            if kind in _NOT_CLIENT_BODIES:
                stats.invalid += 1
                continue
            if st is None:
                st = states[key] = RunState(entity, project, run_id, name=run_id,
                                            start_time=now)
                st.state_cause = ("started" if kind == "run_start" else
                                  f"first event was {kind or 'event'} seq {seq} "
                                  "(no RunStart seen)")
                if seq > 1 and kind != "run_start":
                    st.seq_gaps = seq - 1
                    stats.gaps += 1
            elif seq <= st.last_seq:
                stats.duplicates += 1
                continue
            elif seq > st.last_seq + 1 and kind != "run_start":
                st.seq_gaps += seq - st.last_seq - 1
                stats.gaps += 1
            if st.state == "crashed" and kind != "process_exited":
                st.state = "running"
                st.state_cause = f"sent {kind or 'event'} seq {seq} after crash"
                st.end_time = 0
            st.last_seq = seq
            st.last_event_time = now
        else:
            if kind not in _SERVER_BODIES:
                stats.invalid += 1
                continue
            if st is None:
                stats.orphans += 1
                continue
            if kind == "crashed" and not (st.state == "running"
                                          and ev.crashed.after_seq == st.last_seq):
                stats.stale += 1
                continue
        if logs is not None:
            d = logs[i]
            if d is not None:
                step, keys, values = d
                _log_points(st, key, step, clamp_time_us(ev.client_time_us or now), seq,
                            keys, values, (), (), batch)
        elif kind is not None:
            _APPLY[kind](st, ev, now, batch)
        st.applied_partition = partition
        st.applied_offset = offset
        st.version += 1
        batch.runs[key] = st
        stats.applied += 1


def fold_records(states: MutableMapping[RunKey, RunState],
                 records: Iterable[tuple[int, int, bytes]], batch: RowBatch) -> None:
    """``fold_record`` for each ``(partition, offset, value)``, in the given order."""
    for partition, offset, value in records:
        fold_record(states, value, partition, offset, batch)


def _workspace_saved(ev: events_pb2.Event, now: int, partition: int, offset: int,
                     batch: RowBatch) -> None:
    """A workspace save: one ``workspaces`` row, no run (see "Workspaces")."""
    ws = ev.workspace_saved
    if ev.seq or not (ev.entity and ev.project and ws.user and _is_json_object(ws.state_json)):
        batch.stats.invalid += 1
        return
    batch.workspaces[WorkspaceKey(ev.entity, ev.project, ws.user)] = WorkspaceRow(
        ev.entity, ev.project, ws.user, ws.state_json, now, partition, offset)
    batch.stats.applied += 1


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _run_start(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    rs = ev.run_start
    if rs.name:
        st.name = rs.name
    for attr in ("notes", "group", "job_type", "sweep_id"):
        v = getattr(rs, attr)
        if v:
            setattr(st, attr, v)
    if rs.tags:
        st.tags = list(rs.tags)
    if rs.privacy in _PRIVACY:
        st.privacy = _PRIVACY[rs.privacy]
    for k, v in rs.config.items():
        st.config[k] = canonical_json(v.json)
    if rs.HasField("metadata"):
        st.metadata_json = json_format.MessageToJson(
            rs.metadata, preserving_proto_field_name=True, indent=None, sort_keys=True)
    start = rs.start_time_us or now
    if rs.resumed:
        if not st.start_time or start < st.start_time:
            st.start_time = start
        st.state_cause = "resumed"
        st.end_time = 0
        st.exit_code = 0
    else:
        st.start_time = start
        st.state_cause = "started"
    st.state = "running"
    st.stop_requested_by = ""          # a (re)started run has no pending stop
    st.stop_requested_time = 0


def _log(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    lg = ev.log
    numbers = lg.numbers
    others = lg.others
    # Iterating the map and indexing it are C calls; its keys()/values()/items() views
    # and dict.update(map) iterate in Python and cost twice as much (the hot path).
    keys = list(numbers)
    other_keys = list(others)
    _log_points(st, st.key, lg.step, clamp_time_us(ev.client_time_us or now), ev.seq,
                keys, list(map(numbers.__getitem__, keys)),
                other_keys, [others[k].json for k in other_keys], batch)


def _log_points(st: RunState, run: RunKey, step: int, ts: int, seq: int, keys: list[str],
                values, other_keys: list[str], texts, batch: RowBatch) -> None:
    """A Log event of run ``run`` (``st.key``): its numbers (``keys``/``values``) and other
    values (``other_keys``/JSON ``texts``) at ``step``; ``keys`` is not mutated and may be
    shared."""
    if keys:
        if step > st.last_step:
            rewrite = False
            st.step_keys = keys
        elif step == st.last_step and st.step_keys is not None \
                and set(st.step_keys).isdisjoint(keys):
            rewrite = False
            st.step_keys = st.step_keys + keys
        else:       # a point of this step may exist already: its block takes the exact path
            rewrite = True
        batch.numeric.add(run, step, ts, seq, keys, values, rewrite)
        if st.summary_modes:
            _summarize(st, keys, values)
        else:
            st.summary.update(zip(keys, values, strict=True))
        if st.summary_other:
            pop = st.summary_other.pop
            for k in keys:
                pop(k, None)
    if other_keys:
        batch.other.add(run, step, ts, seq, other_keys, texts)
        st.summary_other.update(zip(other_keys, texts, strict=True))
        pop = st.summary.pop
        for k in other_keys:
            pop(k, None)
        if st.summary_modes:
            modes, globs = st.summary_modes, _globs(st.summary_modes)
            for k in other_keys:
                if _mode_of(modes, globs, k) == "none":
                    st.summary_other.pop(k, None)
    if step > st.last_step:
        st.last_step = step
        if not keys:
            st.step_keys = []


_AGG_MODES = frozenset({"min", "max", "mean", "first"})
_GLOB_CHARS = frozenset("*?[")


def _globs(modes: Mapping[str, str]) -> list[str]:
    return [p for p in modes if not _GLOB_CHARS.isdisjoint(p)]


def _mode_of(modes: Mapping[str, str], globs: list[str], key: str) -> str:
    """The summary mode of ``key``: its exact name, else the longest matching glob."""
    m = modes.get(key)
    if m is not None:
        return m
    best = None
    for p in globs:
        if fnmatchcase(key, p) and (best is None or len(p) > len(best)
                                    or (len(p) == len(best) and p < best)):
            best = p
    return "last" if best is None else modes[best]


def _summarize(st: RunState, keys: list[str], values: list[float]) -> None:
    """Summary of logged numbers for a run with summary modes (see "Summary modes")."""
    modes = st.summary_modes
    globs = _globs(modes)
    summary, count, agg = st.summary, st.summary_count, st.summary_agg
    for k, v in zip(keys, values, strict=True):
        m = _mode_of(modes, globs, k)
        if m not in _AGG_MODES:
            if m == "none":
                summary.pop(k, None)
            else:
                summary[k] = v
            continue
        n = count.get(k, 0)
        if m == "first":
            if n == 0:
                count[k] = 1
                agg[k] = v
            summary[k] = agg[k]
            continue
        if v != v:                       # NaN: skipped by min, max and mean
            if n == 0:
                summary[k] = v
            else:
                summary[k] = agg[k] / n if m == "mean" else agg[k]
            continue
        if n == 0:
            a = v
        else:
            a = agg[k]
            if m == "min":
                a = v if v < a else a
            elif m == "max":
                a = v if v > a else a
            else:
                a += v
        count[k] = n + 1
        agg[k] = a
        summary[k] = a / (n + 1) if m == "mean" else a


def _define_metric(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    dm = ev.define_metric
    name = dm.name
    if not name:
        return
    if dm.step_metric:
        st.step_metrics[name] = dm.step_metric
    if not dm.summary or st.summary_modes.get(name) == dm.summary:
        return
    keys = sorted(set(st.summary) | set(st.summary_other) | set(st.summary_count))
    modes = st.summary_modes
    globs = _globs(modes)
    before = {k: _mode_of(modes, globs, k) for k in keys}
    modes[name] = dm.summary
    globs = _globs(modes)
    for k in keys:
        m = _mode_of(modes, globs, k)
        if m == before[k]:
            continue
        st.summary_count.pop(k, None)
        st.summary_agg.pop(k, None)
        if m == "none":
            st.summary.pop(k, None)
            st.summary_other.pop(k, None)
        elif m in _AGG_MODES:
            x = st.summary.get(k)
            if x is not None and (x == x or m == "first"):
                st.summary_count[k] = 1
                st.summary_agg[k] = x


def _config_update(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    cu = ev.config_update
    for k, v in cu.set.items():
        st.config[k] = canonical_json(v.json)
    for k in cu.removed:
        st.config.pop(k, None)


def _summary_update(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    su = ev.summary_update
    for k, x in su.numbers.items():
        st.summary[k] = x
        st.summary_other.pop(k, None)
    for k, v in su.others.items():
        st.summary_other[k] = v.json
        st.summary.pop(k, None)
    for k in su.removed:
        st.summary.pop(k, None)
        st.summary_other.pop(k, None)


def _nothing(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    """Heartbeat (liveness is recorded for every client event), ArtifactLogged."""


def _stop_pending(st: RunState) -> bool:
    return st.state == "running" and st.stop_requested_time > 0


def _stopped_cause(st: RunState) -> str:
    return f"stopped by {st.stop_requested_by} at {_iso(st.stop_requested_time)}"


def _stop_requested(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    if st.state == "running" and not st.stop_requested_time:
        st.stop_requested_by = ev.stop_requested.requested_by or "unknown"
        st.stop_requested_time = max(1, now)


def _finish(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    if st.state in _FINISHED_STATES:
        return                      # a second finish of one session: the first one stands
    code = ev.finish.exit_code
    killed = _stop_pending(st)
    st.exit_code = code
    st.end_time = now
    if killed:
        st.state = "killed"
        st.state_cause = _stopped_cause(st) + (f", exit code {code}" if code else "")
    elif code == 0:
        st.state = "finished"
        st.state_cause = "finish() called, exit code 0"
    else:
        st.state = "failed"
        st.state_cause = f"exit code {code}"


_FINISHED_STATES = frozenset({"finished", "failed", "killed"})


def _ended_unfinished(st: RunState, cause: str, end_time: int) -> None:
    """The run's process ended without finishing: ``killed`` if a stop was pending,
    else ``crashed``."""
    if _stop_pending(st):
        st.state = "killed"
        st.state_cause = f"{_stopped_cause(st)}; the process ended without finishing ({cause})"
    else:
        st.state = "crashed"
        st.state_cause = cause
    st.end_time = end_time


def _crashed(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    cr = ev.crashed
    last_seen = cr.last_seen_us or st.last_event_time
    if cr.reason:
        cause = cr.reason
    else:
        silent_s = max(0, now - last_seen) / 1e6
        cause = f"no event for {silent_s:.1f} s since {_iso(last_seen)}"
    if cr.detector:
        cause += f", detected by {cr.detector}"
    _ended_unfinished(st, cause, last_seen)


def _process_exited(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    if st.state != "running":
        return
    pe = ev.process_exited
    cause = (f"process exited without finish (pid {pe.pid} on host {pe.hostname or '?'}), "
             "seen by the uploader")
    if pe.reason:
        cause += f": {pe.reason}"
    _ended_unfinished(st, cause, now)


def _run_patch(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    p = ev.run_patch
    if p.HasField("name"):
        st.name = p.name
    if p.HasField("notes"):
        st.notes = p.notes
    if p.set_tags:
        st.tags = list(p.tags)
    if p.privacy in _PRIVACY:
        st.privacy = _PRIVACY[p.privacy]
    if p.HasField("hidden"):
        st.hidden = p.hidden
    if p.HasField("color"):
        st.color = p.color


def _delete(st: RunState, ev: events_pb2.Event, now: int, batch: RowBatch) -> None:
    st.deleted = True


# A body added to the proto after this code was built parses as an unknown field, so
# WhichOneof gives None: such a client event counts as liveness only.
_APPLY = {
    "run_start": _run_start,
    "log": _log,
    "config_update": _config_update,
    "summary_update": _summary_update,
    "heartbeat": _nothing,
    "finish": _finish,
    "crashed": _crashed,
    "run_patch": _run_patch,
    "delete": _delete,
    "stop_requested": _stop_requested,
    "artifact_logged": _nothing,
    "define_metric": _define_metric,
    "process_exited": _process_exited,
}

__all__ = [
    "HISTORY_NUMERIC", "HISTORY_OTHER", "RUNS", "WORKSPACES", "TABLES", "RUNS_SCHEMA",
    "WORKSPACES_SCHEMA", "MAX_TIME_US", "RunKey", "RunState", "RowBatch", "FoldStats",
    "WorkspaceKey", "WorkspaceRow", "canonical_json", "clamp_time_us",
    "decode_record", "fold_record", "fold_records",
]
