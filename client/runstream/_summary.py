"""``run.summary``: one value per metric, as on the run page.

The server computes the stored summary (the projector's fold, so a killed client still
gets the right one); this object is the client's own view of it, computed by the same
rules from what this process logged:

- By default a key's summary is the **last value logged** (in log order, whatever its
  step).
- ``run.define_metric(name, summary="min"|"max"|"mean"|"first"|"none")`` changes that
  for the name or glob (``"val/*"``): min/max skip NaN, mean is the mean of the values
  other than NaN, first keeps the first value, none leaves the key out of the summary.
- ``run.summary[k] = v`` (or ``summary.update({...})``, or ``summary.k = v``) sets an
  explicit value (a ``SummaryUpdate`` event). It **lasts until ``k`` is logged again**;
  then the key follows its mode again (the min/max/mean aggregate is not disturbed by
  the override). Nested dicts are flattened (``a/b``) like logged values.
- ``del run.summary[k]`` removes the key (until it is logged again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from fnmatch import fnmatchcase
from typing import Any

from . import _values

MODES = ("last", "min", "max", "mean", "first", "none")
_AGG_MODES = frozenset({"min", "max", "mean", "first"})
_GLOB_CHARS = frozenset("*?[")

# Sends (numbers, others as JSON, removed keys) for the run.
SendFn = Callable[[dict[str, float], dict[str, str], list[str]], None]


def mode_of(modes: Mapping[str, str], key: str) -> str:
    """The mode of ``key``: its exact name, else the longest matching glob (ties: the
    smaller pattern), else "last" (the projector's rule)."""
    m = modes.get(key)
    if m is not None:
        return m
    best = None
    for p in modes:
        if not _GLOB_CHARS.isdisjoint(p) and fnmatchcase(key, p) and (
                best is None or len(p) > len(best) or (len(p) == len(best) and p < best)):
            best = p
    return "last" if best is None else modes[best]


class Summary(_values.KeysAsAttributes, MutableMapping):
    _kind = "summary"

    def __init__(self, send: SendFn | None = None,
                 initial: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_values", dict(initial or {}))
        object.__setattr__(self, "_modes", {})     # name or glob → mode
        object.__setattr__(self, "_agg", {})       # key → [count, min/max/first or sum]
        object.__setattr__(self, "_send", send)
        object.__setattr__(self, "_lock", threading.Lock())

    # -- fed by the run --------------------------------------------------------------
    def _observe(self, flat: Mapping[str, Any]) -> None:
        """Values of one logged step (flattened)."""
        if not self._modes:
            self._values.update(flat)
            return
        with self._lock:
            for k, v in flat.items():
                self._observe_one(k, v)

    def _observe_one(self, k: str, v: Any) -> None:
        m = mode_of(self._modes, k)
        if m == "none":
            self._values.pop(k, None)
            return
        x = _values.as_number(v) if m in _AGG_MODES else None
        if x is None:
            self._values[k] = v
            return
        agg = self._agg.setdefault(k, [0, 0.0])
        n, a = agg
        if m == "first":
            if n == 0:
                agg[:] = [1, x]
            self._values[k] = agg[1]
            return
        if x != x:
            self._values[k] = x if n == 0 else (a / n if m == "mean" else a)
            return
        if n == 0:
            a = x
        elif m == "min":
            a = x if x < a else a
        elif m == "max":
            a = x if x > a else a
        else:
            a += x
        agg[:] = [n + 1, a]
        self._values[k] = a / (n + 1) if m == "mean" else a

    def _define(self, name: str, mode: str) -> None:
        """A define_metric: same rules as the projector (re-seed keys whose mode changes)."""
        with self._lock:
            if self._modes.get(name) == mode:
                return
            keys = sorted(set(self._values) | set(self._agg))
            before = {k: mode_of(self._modes, k) for k in keys}
            self._modes[name] = mode
            for k in keys:
                m = mode_of(self._modes, k)
                if m == before[k]:
                    continue
                self._agg.pop(k, None)
                if m == "none":
                    self._values.pop(k, None)
                elif m in _AGG_MODES:
                    x = _values.as_number(self._values.get(k))
                    if x is not None and (x == x or m == "first"):
                        self._agg[k] = [1, x]

    # -- writing ---------------------------------------------------------------------
    def update(self, d: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Set explicit summary values (one event)."""
        data = dict(d or {})
        data.update(kwargs)
        if not data:
            return
        flat = _values.flatten(data)
        nums, others = _values.split_flat(flat)
        with self._lock:
            self._values.update(flat)
        if self._send is not None:
            self._send(nums, others, [])

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._values[key]
        if self._send is not None:
            self._send({}, {}, [key])

    # -- reading ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._values[key]


    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Summary({self._values!r})"
