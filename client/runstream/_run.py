"""A run: the unit of tracked computation."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from . import _values
from .v1 import events_pb2

log = logging.getLogger("runstream")


def _now_us() -> int:
    return time.time_ns() // 1_000


class Run:
    """One run. Made by ``runstream.init``; use ``log`` and ``finish``.

    ``log`` never blocks on the network: it builds the event, journals it in memory and
    returns. ``finish`` waits (up to the finish timeout) until the server acknowledged
    every event of the run.
    """

    def __init__(self, *, sender, run_id: str, project: str, entity: str, name: str,
                 config: dict[str, Any], url: str) -> None:
        self._sender = sender
        self.id = run_id
        self.project = project
        self.entity = entity
        self.name = name or run_id
        self.config = dict(config)
        self.url = url
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._step = 0
        self._pending: dict[str, Any] = {}
        self._finished = False
        self.exit_code: int | None = None

    # -- events ------------------------------------------------------------------
    def _event(self) -> events_pb2.Event:
        return events_pb2.Event(run_id=self.id, project=self.project, entity=self.entity,
                                seq=next(self._seq), client_time_us=_now_us())

    def _publish(self, ev: events_pb2.Event) -> int:
        self._sender.publish(self.id, ev.seq, ev.SerializeToString())
        return ev.seq

    def _start(self, *, notes: str | None, tags: list[str] | None, group: str | None,
               job_type: str | None, metadata: events_pb2.RunMetadata, resumed: bool) -> None:
        with self._lock:
            ev = self._event()
            rs = ev.run_start
            rs.name = self.name
            rs.notes = notes or ""
            rs.tags.extend(tags or [])
            rs.group = group or ""
            rs.job_type = job_type or ""
            rs.resumed = resumed
            rs.start_time_us = ev.client_time_us
            rs.metadata.CopyFrom(metadata)
            for k, v in _values.flatten(self.config).items():
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

    # -- public API ----------------------------------------------------------------
    @property
    def step(self) -> int:
        return self._step

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record ``data`` at the current step (or ``step``); ``commit=False`` accumulates.

        Numbers (int, float, bool, numpy scalars; NaN and infinities too) become metric
        points; other values are stored as JSON. Nested dicts are flattened to ``a/b``.
        """
        if self._finished:
            log.warning("runstream: log() after finish() is ignored (run %s)", self.id)
            return
        if not isinstance(data, Mapping):
            raise TypeError(f"log() takes a dict, got {type(data).__name__}")
        with self._lock:
            if step is not None:
                step = int(step)
                if step < 0:
                    raise ValueError("step must be >= 0")
                if step != self._step and self._pending:
                    self._flush_locked()
                self._step = step
            self._pending.update(data)
            if commit:
                self._flush_locked()
                self._step += 1

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        nums, others = _values.split(self._pending)
        self._pending = {}
        ev = self._event()
        lg = ev.log
        lg.step = self._step
        lg.numbers.update(nums)
        for k, j in others.items():
            lg.others[k].json = j
        self._publish(ev)

    def finish(self, exit_code: int | None = None, timeout: float | None = None) -> bool:
        """End the run: 0 → finished, non-zero → failed. Returns True when all was acked.

        Waits up to ``timeout`` (default: the finish timeout setting) for the server.
        Calling it twice does nothing the second time.
        """
        with self._lock:
            if self._finished:
                return True
            self._flush_locked()
            self._finished = True
            self.exit_code = 0 if exit_code is None else int(exit_code)
            ev = self._event()
            ev.finish.exit_code = self.exit_code
            seq = self._publish(ev)
        self._sender.unregister_heartbeat(self.id)
        wait = self._sender.settings.finish_timeout_s if timeout is None else timeout
        ok = self._sender.deliver(self.id, seq, wait)
        if not ok:
            log.warning("runstream: run %s finished locally but %d event(s) were not "
                        "acknowledged by %s within %.0f s", self.id,
                        self._sender.journal.unacked(self.id), self._sender.settings.url, wait)
        from . import _state
        _state.forget(self)
        return ok

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            code = 0
        elif issubclass(exc_type, KeyboardInterrupt):
            code = 255
        elif issubclass(exc_type, SystemExit):
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            code = 1
        self.finish(exit_code=code)
        return False

    def __repr__(self) -> str:
        return f"<Run {self.entity}/{self.project}/{self.id} name={self.name!r}>"
