"""A run: the unit of tracked computation."""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import _values
from ._config import Config
from ._encode import LogEncoder
from ._summary import MODES, Summary
from ._wal import WalLockedError, WalWriter
from .v1 import events_pb2

log = logging.getLogger("runstream")

MAX_KEY_CHARS = 256        # the gateway's limit for metric, config and summary keys
MAX_STEP = 2**63 - 1       # the gateway's limit for a step (run state keeps it as Int64)
JOURNAL_SUBDIR = "runstream-runs"   # not an importable name: it can never shadow a package


def journal_root(base: str) -> str:
    """Where the journals of runs started with ``dir=base`` go."""
    return os.path.abspath(os.path.join(base, JOURNAL_SUBDIR))


def open_journal(base: str, run_id: str) -> tuple[WalWriter, str]:
    """The run's journal: ``<base>/runstream-runs/run-<id>/`` (an existing one is continued).

    If another live process (or run of this one) writes that journal, a directory of
    this process is used beside it (``run-<id>-<pid>-<n>``); if the directory cannot be
    written, one under the temporary directory (with a warning). If nothing can be
    written, the writer keeps a bounded memory overflow (see ``_wal.py``).
    """
    roots = [journal_root(base),
             os.path.join(tempfile.gettempdir(), f"runstream-{os.getuid()}")]
    first: tuple[WalWriter, str] | None = None
    for root in roots:
        for i in range(100):
            name = f"run-{run_id}" if i == 0 else f"run-{run_id}-{os.getpid()}-{i}"
            path = os.path.join(root, name)
            try:
                w = WalWriter(path)
            except WalLockedError:
                continue
            if not w.disk_errors:
                if first is not None:
                    log.warning("runstream: cannot write the run's journal in %s (%s); "
                                "using %s", os.path.dirname(first[1]), first[0].last_error,
                                path)
                    first[0].close()
                elif i:
                    log.warning("runstream: journal %s is in use by another process; "
                                "using %s", os.path.join(root, f"run-{run_id}"), path)
                return w, path
            if first is None:
                first = (w, path)
            else:
                w.close()
            break
    if first is None:
        raise RuntimeError(f"no journal directory for run {run_id}")
    return first


_time_ns = time.time_ns


def _now_us() -> int:
    return _time_ns() // 1_000


class MetricDefinition(NamedTuple):
    """What ``define_metric`` recorded (empty fields: left as they were)."""

    name: str
    summary: str
    step_metric: str


class Run:
    """One run. Made by ``runstream.init``.

    Attributes: ``id``, ``name``, ``project``, ``entity``, ``path`` (entity/project/id),
    ``url``, ``config`` (see ``_config.Config``), ``summary`` (see ``_summary.Summary``),
    ``tags``, ``notes``, ``group``, ``job_type``, ``step`` (the step the next committed
    ``log`` gets), ``out_of_order_steps``, ``dropped_events``, ``resumed``, ``mode``,
    ``dir``, ``exit_code`` (after ``finish``). Setting ``name``, ``notes`` or ``tags``
    sends a ``RunPatch``.

    ``journal_dir`` is the run's journal (``<dir>/runstream-runs/run-<id>/``; empty for
    a disabled run). ``log`` never blocks on the network: it encodes the event, copies
    it into the journal and returns; the upload happens elsewhere (``_sender.py``,
    ``_helper.py``). ``finish`` waits (up to the finish timeout) until the server
    acknowledged every event of the run.

    Steps: every committed ``log`` uses the current step and then adds 1;
    ``commit=False`` accumulates into the current step. An explicit ``step`` higher than
    the current one first writes what was accumulated, then moves to it. An explicit
    ``step`` **lower** than the current one is never dropped: it is written at once as
    an update of that past step (values of other keys at that step stay; a key logged
    again at that step replaces its value there, and becomes the key's latest value for
    the summary), the current step does not move back, ``commit=False`` has no effect
    for it, ``out_of_order_steps`` counts it, and the first one logs a warning.
    """

    def __init__(self, *, sender, run_id: str, project: str, entity: str, name: str,
                 config: Mapping[str, Any] | None, url: str, notes: str = "",
                 tags: tuple[str, ...] | list[str] = (), group: str = "", job_type: str = "",
                 mode: str = "online", dir: str | None = None, resumed: bool = False,
                 first_seq: int = 1, first_step: int = 0,
                 stored_config: Mapping[str, Any] | None = None,
                 stored_summary: Mapping[str, Any] | None = None,
                 journal: WalWriter | None = None, journal_dir: str = "") -> None:
        self._sender = sender
        # The journal (``_wal.py``): every event is in it before the call that made it
        # returns. None: a disabled run, which records nothing.
        self._journal = journal
        self.journal_dir = journal_dir
        self._enc = LogEncoder(run_id, project, entity)
        self._hb_seq = -1           # keeper thread: the last seq seen, and since when
        self._hb_since = 0.0
        self.id = run_id
        self.project = project
        self.entity = entity
        self._name = name or run_id
        self._notes = notes or ""
        self._tags = tuple(tags or ())
        self.group = group or ""
        self.job_type = job_type or ""
        self.url = url
        self.mode = mode
        self.dir = dir
        self.resumed = resumed
        self._seq = itertools.count(first_seq)
        self._lock = threading.RLock()
        self._step = first_step
        self._pending: dict[str, Any] = {}
        self._finished = False
        self._detached = False
        self._warned_late = False
        self.out_of_order_steps = 0
        self.exit_code: int | None = None
        # The config given to init travels in the RunStart (no ConfigUpdate); a resumed
        # run starts from the stored config (unflattened), the given keys over it.
        self._init_config = Config(config)._items if config else {}
        self.config = Config(_values.unflatten(stored_config) if stored_config else None,
                             send=self._send_config)
        self.config._items.update(self._init_config)
        self.summary = Summary(send=self._send_summary, initial=stored_summary)
        self._metrics: dict[str, MetricDefinition] = {}

    # -- identity ------------------------------------------------------------------
    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = str(value)
        self._patch(name=self._name)

    @property
    def notes(self) -> str:
        return self._notes

    @notes.setter
    def notes(self, value: str) -> None:
        self._notes = str(value or "")
        self._patch(notes=self._notes)

    @property
    def tags(self) -> tuple[str, ...]:
        return self._tags

    @tags.setter
    def tags(self, value) -> None:
        self._tags = tuple(str(t) for t in (value or ()))
        self._patch(tags=list(self._tags), set_tags=True)

    @property
    def step(self) -> int:
        return self._step

    @property
    def dropped_events(self) -> int:
        """Events of this run its journal could not keep: the disk failed (full,
        read-only) and the bounded memory overflow was full, so the oldest log events
        were dropped (never start, config, summary or finish events; ``_wal.py``). The
        server counts what it never received in the run's ``seq_gaps``."""
        j = self._journal
        return j.dropped_events if j is not None else 0

    # -- events ------------------------------------------------------------------------
    def _event(self) -> events_pb2.Event:
        return events_pb2.Event(run_id=self.id, project=self.project, entity=self.entity,
                                seq=next(self._seq), client_time_us=_now_us())

    def _publish(self, ev: events_pb2.Event, pinned: bool = True) -> int:
        """Journal a rare event (start, config, summary, finish...): ``pinned``, so a
        full disk's bounded memory overflow never drops it."""
        j = self._journal
        if j is not None:
            j.append(ev.seq, ev.SerializeToString(), pinned)
        return ev.seq

    def _writable(self, what: str) -> bool:
        if not self._finished:
            return True
        if self._detached:
            if not self._warned_late:
                self._warned_late = True
                log.warning("runstream: %s on run %s in a forked child is ignored: the run "
                            "belongs to the parent process (call runstream.init() in the "
                            "child for a run of its own)", what, self.id)
        else:
            log.warning("runstream: %s after finish() is ignored (run %s)", what, self.id)
        return False

    def _start(self, *, metadata: events_pb2.RunMetadata) -> None:
        with self._lock:
            ev = self._event()
            rs = ev.run_start
            rs.name = self._name
            rs.notes = self._notes
            rs.tags.extend(self._tags)
            rs.group = self.group
            rs.job_type = self.job_type
            rs.resumed = self.resumed
            rs.start_time_us = ev.client_time_us
            rs.metadata.CopyFrom(metadata)
            for k, v in _values.flatten(self._init_config).items():
                rs.config[str(k)].json = _values.to_json(v)
            self._publish(ev)
        if self._journal is not None:
            self._sender.register(self)
        from . import _system
        _system.start_for(self)

    def _heartbeat(self) -> None:
        with self._lock:
            if self._finished:
                return
            ev = self._event()
            ev.heartbeat.SetInParent()
            self._publish(ev, pinned=False)

    def _tick(self, now: float) -> None:
        """The keeper thread (``_state.py``), every ``heartbeat_interval_s / 4`` (at most
        1 s): journal upkeep, and a heartbeat when the run journaled nothing for a
        heartbeat interval. Nothing in ``log()`` itself."""
        j = self._journal
        if j is None or self._finished:
            return
        j.maintain()
        if self.mode != "online":
            return
        last = j.last_seq
        if last != self._hb_seq:
            self._hb_seq = last
            self._hb_since = now
        elif now - self._hb_since >= self._sender.settings.heartbeat_interval_s:
            self._heartbeat()

    def _log_system(self, data: Mapping[str, Any]) -> None:
        """System metrics (``_system.py``): one Log event at the current step, which does
        not move; what ``commit=False`` accumulated stays pending."""
        with self._lock:
            if self._finished or not data:
                return
            self._emit_locked(self._step, data)

    def _patch(self, **fields) -> None:
        with self._lock:
            if not self._writable("changing the run"):
                return
            ev = self._event()
            p = ev.run_patch
            for k, v in fields.items():
                if k == "tags":
                    p.tags.extend(v)
                else:
                    setattr(p, k, v)
            self._publish(ev)

    def _send_config(self, set_json: dict[str, str], removed: list[str]) -> None:
        with self._lock:
            if not self._writable("a config change"):
                return
            ev = self._event()
            cu = ev.config_update
            for k, j in set_json.items():
                cu.set[k].json = j
            cu.removed.extend(removed)
            self._publish(ev)

    def _send_summary(self, numbers: dict[str, float], others: dict[str, str],
                      removed: list[str]) -> None:
        with self._lock:
            if not self._writable("a summary change"):
                return
            ev = self._event()
            su = ev.summary_update
            su.numbers.update(numbers)
            for k, j in others.items():
                su.others[k].json = j
            su.removed.extend(removed)
            self._publish(ev)

    # -- public API ----------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record ``data`` at the current step (or ``step``); ``commit=False`` accumulates.

        Numbers (int, float, bool, numpy scalars; NaN and infinities too) become metric
        points; other values are stored as JSON. Nested dicts are flattened to ``a/b``.
        See the class docstring for the step rules.
        """
        if step is None and commit and type(data) is dict:
            # The usual call, inlined (it is most of what a training loop costs us):
            # straight to the journal, no copy into _pending. See _emit_locked.
            with self._lock:
                if not self._pending and not self._finished:
                    j = self._journal
                    if data and j is not None:
                        seq = next(self._seq)
                        b, flat = self._enc.encode(seq, _time_ns() // 1_000, self._step, data)
                        j.append(seq, b)
                        self.summary._observe(flat)
                    elif data:
                        self._emit_locked(self._step, data)
                    self._step += 1
                    return
        if self._finished:
            self._writable("log()")
            return
        if type(data) is not dict and not isinstance(data, Mapping):
            raise TypeError(f"log() takes a dict, got {type(data).__name__}")
        with self._lock:
            if step is None and commit and not self._pending:
                if data:
                    self._emit_locked(self._step, data)
                self._step += 1
                return
            if step is not None:
                step = int(step)
                if step < 0:
                    raise ValueError("step must be >= 0")
                if step > MAX_STEP:
                    raise ValueError(f"step must be <= {MAX_STEP}")
                if step < self._step:
                    self._past_step_locked(step, data)
                    return
                if step > self._step:
                    if self._pending:
                        self._flush_locked()
                    self._step = step
            self._pending.update(data)
            if commit:
                self._flush_locked()
                self._step += 1

    def _past_step_locked(self, step: int, data: Mapping[str, Any]) -> None:
        self.out_of_order_steps += 1
        if self.out_of_order_steps == 1:
            log.warning("runstream: run %s: log(step=%d) is lower than the current step %d; "
                        "written as an update of step %d (counted in "
                        "run.out_of_order_steps; further ones are not reported)",
                        self.id, step, self._step, step)
        if data:
            self._emit_locked(step, data)

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        data = self._pending
        self._pending = {}
        self._emit_locked(self._step, data)

    def _emit_locked(self, step: int, data: Mapping[str, Any]) -> None:
        # The hot path: hand-rolled Event bytes (``_encode.py``) copied into the mapped
        # journal (``_wal.py``): no protobuf object, no system call, no lock but the run's.
        j = self._journal
        if j is None:
            self.summary._observe(_values.flatten(data))
            return
        seq = next(self._seq)
        b, flat = self._enc.encode(seq, _time_ns() // 1_000, step, data)
        j.append(seq, b)
        self.summary._observe(flat)

    def define_metric(self, name: str, summary: str | None = None,
                      step_metric: str | None = None, *, step_sync: bool | None = None,
                      hidden: bool | None = None, goal: str | None = None,
                      overwrite: bool | None = None) -> MetricDefinition:
        """How the summary of ``name`` (or of every key matching a glob like ``"val/*"``)
        is computed: ``summary`` is "last" (the default), "min", "max", "mean", "first"
        or "none"; ``None`` leaves it as it is. ``step_metric`` names the metric to
        plot it against. The server folds the definition (so a killed client still gets
        the right summary); ``run.summary`` follows the same rules locally. An exact
        name wins over a glob, a longer glob over a shorter one. ``step_sync``,
        ``hidden``, ``goal`` and ``overwrite`` are accepted for wandb compatibility and
        ignored.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("define_metric() needs a metric name")
        if len(name) > MAX_KEY_CHARS:
            raise ValueError(f"metric name longer than {MAX_KEY_CHARS} characters")
        mode = "" if summary is None else str(summary).strip().lower()
        if mode and mode not in MODES:
            raise ValueError(f"define_metric(summary={summary!r}): use one of "
                             f"{', '.join(MODES)} (one mode per metric)")
        sm = "" if step_metric is None else str(step_metric)
        if len(sm) > MAX_KEY_CHARS:
            raise ValueError(f"step_metric longer than {MAX_KEY_CHARS} characters")
        with self._lock:
            if self._writable("define_metric()"):
                ev = self._event()
                dm = ev.define_metric
                dm.name = name
                dm.summary = mode
                dm.step_metric = sm
                self._publish(ev)
            if mode:
                self.summary._define(name, mode)
            prev = self._metrics.get(name)
            d = MetricDefinition(name, mode or (prev.summary if prev else ""),
                                 sm or (prev.step_metric if prev else ""))
            self._metrics[name] = d
            return d

    def finish(self, exit_code: int | None = None, timeout: float | None = None,
               quiet: bool | None = None) -> bool:
        """End the run: 0 → finished, non-zero → failed. Returns True when all was acked
        (offline and disabled runs: True once journaled).

        Waits up to ``timeout`` (default: the finish timeout setting) for the server,
        never longer, and never raises a network error: what is not acknowledged by
        then stays in the journal, uploaded in the background (by the helper process,
        for up to ``drain_timeout_s`` after this process ends) or by ``runstream sync``.
        Calling it twice does nothing the second time. ``quiet`` is accepted for wandb
        compatibility.
        """
        with self._lock:
            if self._finished:
                return not self._detached
            self._flush_locked()
            self._finished = True
            self.exit_code = 0 if exit_code is None else int(exit_code)
            ev = self._event()
            ev.finish.exit_code = self.exit_code
            seq = self._publish(ev)
        from . import _system
        _system.stop_for(self)
        from . import _state
        _state.forget(self)
        return self._close_journal(seq, timeout)

    def _close_journal(self, seq: int, timeout: float | None) -> bool:
        """After the Finish (``seq``) was journaled: wait (bounded) for the server, close
        the journal, delete it once everything was acknowledged."""
        j = self._journal
        if j is None:
            return True
        if self.mode != "online":
            j.close()
            self._warn_dropped(j)
            if self.mode == "offline":
                log.warning("runstream: run %s was recorded offline in %s; upload it with: "
                            "runstream sync %s", self.id, self.journal_dir,
                            os.path.dirname(os.path.dirname(self.journal_dir)))
            return True
        s = self._sender.settings
        wait = max(0.0, s.finish_timeout_s if timeout is None else float(timeout))
        try:
            ok = self._sender.wait_acked(self, seq, wait)
        except Exception:
            log.exception("runstream: waiting for the upload of run %s", self.id)
            ok = False
        acked = 0 if ok else self._sender.acked(self)
        j.close()
        self._warn_dropped(j)
        if ok:
            self._sender.release(self)
            from ._helper import remove_journal
            remove_journal(self.journal_dir)
        else:
            log.warning("runstream: run %s finished locally, but %s acknowledged its events "
                        "only up to seq %d of %d within %.0f s; the rest stays in %s and is "
                        "uploaded in the background (runstream sync %s uploads what is left)",
                        self.id, s.url, acked, seq, wait, self.journal_dir,
                        self.journal_dir)
        return ok

    def _warn_dropped(self, j: WalWriter) -> None:
        if j.dropped_events:
            log.warning("runstream: run %s: %d event(s) were lost: the journal %s could not "
                        "be written (%s) and its memory bound was reached (the server "
                        "shows what it never received as the run's seq_gaps)", self.id,
                        j.dropped_events, self.journal_dir, j.last_error)

    def _detach_after_fork(self) -> None:
        """In a forked child: this copy of the parent's run must never send anything."""
        self._finished = True
        self._detached = True
        self._lock = threading.RLock()     # the parent's lock may have been held at fork

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from ._state import exit_code_of
        if exc_type is None:
            code = 0
        elif issubclass(exc_type, KeyboardInterrupt):
            code = 255
        elif issubclass(exc_type, SystemExit):
            code = exit_code_of(exc.code)
        else:
            code = 1
        self.finish(exit_code=code)
        return False

    def __repr__(self) -> str:
        return f"<Run {self.entity}/{self.project}/{self.id} name={self._name!r}>"
