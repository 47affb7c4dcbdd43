"""``run.config``: the run's hyper-parameters, dict- and attribute-like, as in wandb.

    run.config.lr = 0.01                 # or run.config["lr"] = 0.01
    run.config.update({"batch": 64, "arch": {"layers": 4}})
    run.config.update({"lr": 0.02}, allow_val_change=True)

Every change is one ``ConfigUpdate`` event (``update`` of several keys is one event).
Nested dicts are kept nested here and stored flattened (``arch/layers``) by the server;
replacing a nested dict removes its keys that the new one lacks. Changing a key that
already holds a different value raises ``ConfigError`` unless ``allow_val_change=True``
(setting the same value again is allowed and sends nothing). Values are stored as JSON;
what JSON cannot express is stored as its ``str()``.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import _values

# Sends (set: flattened key → JSON text, removed: flattened keys) for the run.
SendFn = Callable[[dict[str, str], list[str]], None]


class ConfigError(ValueError):
    """A config key was changed to a different value without ``allow_val_change=True``."""


def _as_mapping(d: Any) -> Mapping[str, Any]:
    if d is None:
        return {}
    if isinstance(d, Mapping):
        return d
    if isinstance(d, argparse.Namespace):
        return vars(d)
    if hasattr(d, "__dict__"):
        return {k: v for k, v in vars(d).items() if not k.startswith("_")}
    raise TypeError(f"config takes a dict or an argparse.Namespace, got {type(d).__name__}")


class Config(_values.KeysAsAttributes):
    """The config of one run. Reading never touches the network; writing journals an event."""

    _kind = "config"

    def __init__(self, items: Mapping[str, Any] | None = None, send: SendFn | None = None) -> None:
        object.__setattr__(self, "_items", {str(k): v for k, v in _as_mapping(items).items()})
        object.__setattr__(self, "_send", send)
        object.__setattr__(self, "_lock", threading.RLock())

    # -- writing ---------------------------------------------------------------------
    def update(self, d: Any = None, allow_val_change: bool = False, **kwargs: Any) -> None:
        """Set several keys at once (one event). All or nothing: if one key would change
        without ``allow_val_change``, ``ConfigError`` is raised and nothing is set."""
        new = {str(k): v for k, v in _as_mapping(d).items()}
        new.update(kwargs)
        with self._lock:
            changes = {k: v for k, v in new.items()
                       if k not in self._items or not _values.same_value(self._items[k], v)}
            if not allow_val_change:
                bad = [k for k in changes if k in self._items]
                if bad:
                    k = bad[0]
                    raise ConfigError(
                        f"config key {k!r} already holds {self._items[k]!r}; refusing to change "
                        f"it to {changes[k]!r} (use config.update({{{k!r}: ...}}, "
                        "allow_val_change=True) to change it)")
            if not changes:
                return
            set_json: dict[str, str] = {}
            removed: list[str] = []
            for k, v in changes.items():
                new_flat = _values.flatten({k: v})
                if k in self._items:
                    old_flat = _values.flatten({k: self._items[k]})
                    removed += [f for f in old_flat if f not in new_flat]
                set_json.update((f, _values.to_json(x)) for f, x in new_flat.items())
                self._items[k] = v
            if self._send is not None:
                self._send(set_json, removed)

    def setdefaults(self, d: Any) -> None:
        """Set the keys of ``d`` that are not set yet."""
        with self._lock:
            self.update({k: v for k, v in _as_mapping(d).items() if str(k) not in self._items})

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        with self._lock:
            old = self._items.pop(key)
            if self._send is not None:
                self._send({}, list(_values.flatten({key: old})))

    # -- reading ---------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._items[key]


    def get(self, key: str, default: Any = None) -> Any:
        return self._items.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def keys(self):
        return self._items.keys()

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()

    def as_dict(self) -> dict[str, Any]:
        return dict(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Config({self._items!r})"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._items))
