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
    """(numbers, others-as-JSON) of a flattened log dict."""
    nums: dict[str, float] = {}
    others: dict[str, str] = {}
    for k, v in flatten(data).items():
        n = as_number(v)
        if n is not None:
            nums[str(k)] = n
        else:
            others[str(k)] = to_json(v)
    return nums, others
