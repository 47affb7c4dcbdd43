"""Turning user values into event fields: numbers stay float64, everything else JSON."""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``a/b`` keys, as in W&B."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def as_number(v: Any) -> float | None:
    """The float64 of a numeric value (bools and numpy scalars included), or None."""
    if isinstance(v, float):
        return v
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if type(v).__module__ == "numpy" and getattr(v, "shape", None) == () \
            and getattr(getattr(v, "dtype", None), "kind", None) == "b":
        return 1.0 if v else 0.0   # numpy.bool_ is not a numbers.Real
    if isinstance(v, numbers.Real):
        try:
            return float(v)
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def to_json(v: Any) -> str:
    """JSON text of any value; what JSON cannot express is stored as its str()."""
    try:
        return json.dumps(v, allow_nan=True, default=str)
    except (TypeError, ValueError):
        return json.dumps(str(v))


def split(data: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, others-as-JSON) of a log dict, nested dicts flattened."""
    return split_flat(flatten(data))


def split_flat(flat: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(numbers, others-as-JSON) of an already flattened dict."""
    nums: dict[str, float] = {}
    others: dict[str, str] = {}
    for k, v in flat.items():
        n = as_number(v)
        if n is not None:
            nums[str(k)] = n
        else:
            others[str(k)] = to_json(v)
    return nums, others


def same_value(a: Any, b: Any) -> bool:
    """Whether a config value is unchanged: ``==`` where it gives a plain True (so 1 and
    1.0 are the same), else equal JSON text (NaN, numpy arrays, objects)."""
    if a is b:
        return True
    try:
        eq = a == b
        if isinstance(eq, bool) and eq:
            return True
    except Exception:  # noqa: BLE001 - user types may raise anything from __eq__
        pass
    return to_json(a) == to_json(b)


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of ``flatten`` where it is unambiguous: ``a/b`` → ``{"a": {"b": ...}}``.

    A key with an empty part, or whose prefix already holds a non-dict value, stays flat.
    """
    out: dict[str, Any] = {}
    for key in sorted(flat):
        parts = key.split("/")
        node: dict[str, Any] | None = out
        if all(parts):
            for p in parts[:-1]:
                nxt = node.setdefault(p, {})
                if not isinstance(nxt, dict):
                    node = None
                    break
                node = nxt
        else:
            node = None
        if node is None or parts[-1] in node:
            out[key] = flat[key]
        else:
            node[parts[-1]] = flat[key]
    return out


class KeysAsAttributes:
    """Attribute access to a mapping's keys (``obj.lr`` is ``obj["lr"]``), as wandb's
    config and summary allow. Names starting with "_" stay ordinary attributes when set;
    the class defines ``_kind`` for error messages and item access for the rest."""

    _kind = "mapping"

    def __setattr__(self, key: str, value: Any) -> None:
        if key.startswith("_"):
            object.__setattr__(self, key, value)
        else:
            self[key] = value

    def __delattr__(self, key: str) -> None:
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{self._kind} has no key {key!r}") from None
