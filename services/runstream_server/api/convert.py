"""Query results (plain dicts named like query.proto fields) → protos and JSON."""

from __future__ import annotations

import math
from typing import Any

from runstream.v1 import query_pb2


def run_view(d: dict[str, Any]) -> query_pb2.RunView:
    fields = query_pb2.RunView.DESCRIPTOR.fields_by_name
    return query_pb2.RunView(**{k: v for k, v in d.items() if k in fields and v is not None})


def series(d: dict[str, Any]) -> query_pb2.Series:
    fields = query_pb2.Series.DESCRIPTOR.fields_by_name
    return query_pb2.Series(**{k: v for k, v in d.items() if k in fields and v is not None})


def json_number(x: float) -> float | str:
    """JSON has no NaN or infinities: they travel as the strings JavaScript's Number() reads."""
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return "NaN"
    return "Infinity" if x > 0 else "-Infinity"


def jsonable(value: Any) -> Any:
    """Make query results JSON-safe (non-finite floats as strings)."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and type(value[0]) is float:
            try:
                if all(map(math.isfinite, value)):   # a chart's numbers: checked in C
                    return value
            except (TypeError, OverflowError):       # not all (float-sized) numbers
                pass
        return [jsonable(v) for v in value]
    return value
