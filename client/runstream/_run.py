"""A run: the unit of tracked computation."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from . import _values
from ._config import Config
from ._summary import MODES, Summary
from .v1 import events_pb2

log = logging.getLogger("runstream")

MAX_KEY_CHARS = 256        # the gateway's limit for metric, config and summary keys


def _now_us() -> int:
    return time.time_ns() // 1_000


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
    ``log`` gets), ``out_of_order_steps``, ``resumed``, ``mode``, ``dir``, ``exit_code``
    (after ``finish``). Setting ``name``, ``notes`` or ``tags`` sends a ``RunPatch``.

    ``log`` never blocks on the network: it builds the event, journals it and returns.
    ``finish`` waits (up to the finish timeout) until the server acknowledged every
    event of the run.

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
                 stored_summary: Mapping[str, Any] | None = None) -> None:
        self._sender = sender
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

    # -- events ------------------------------------------------------------------------
    def _event(self) -> events_pb2.Event:
        return events_pb2.Event(run_id=self.id, project=self.project, entity=self.entity,
                                seq=next(self._seq), client_time_us=_now_us())

    def _publish(self, ev: events_pb2.Event) -> int:
        self._sender.publish(self.id, ev.seq, ev.SerializeToString())
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
        self._sender.register_heartbeat(self.id, self._heartbeat)

    def _heartbeat(self) -> None:
        with self._lock:
            if self._finished:
                return
            ev = self._event()
            ev.heartbeat.SetInParent()
            self._publish(ev)

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
        if self._finished:
            self._writable("log()")
            return
        if not isinstance(data, Mapping):
            raise TypeError(f"log() takes a dict, got {type(data).__name__}")
        with self._lock:
            if step is not None:
                step = int(step)
                if step < 0:
                    raise ValueError("step must be >= 0")
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
        flat = _values.flatten(data)
        nums, others = _values.split_flat(flat)
        ev = self._event()
        lg = ev.log
        lg.step = step
        lg.numbers.update(nums)
        for k, j in others.items():
            lg.others[k].json = j
        self._publish(ev)
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
        """End the run: 0 → finished, non-zero → failed. Returns True when all was acked.

        Waits up to ``timeout`` (default: the finish timeout setting) for the server.
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
        self._sender.unregister_heartbeat(self.id)
        from . import _state
        _state.forget(self)
        wait = self._sender.settings.finish_timeout_s if timeout is None else timeout
        ok = self._sender.deliver(self.id, seq, wait)
        if not ok:
            log.warning("runstream: run %s finished locally but %d event(s) were not "
                        "acknowledged by %s within %.0f s", self.id,
                        self._sender.journal.unacked(self.id), self._sender.settings.url, wait)
        return ok

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
