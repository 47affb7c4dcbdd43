"""Resuming a run: ask the server where the run stands (``Query.GetRun``), bounded.

``init(id=..., resume=...)`` calls ``lookup`` once, with a deadline (``LOOKUP_TIMEOUT_S``,
so that ``init`` stays within 2 s with the server down). The Query service is asked at
``settings.query_url`` (``RUNSTREAM_API_URL``, as ``runstream.Api()``), default
``settings.url``: the embedded server serves Ingest and Query on one port; in a
distributed deployment point it at an ``api`` process.

Outcomes: the run's stored state (``Found``), ``None`` (the server says it does not
exist, or was deleted), or ``Unreachable`` (no answer in time, no Query service, any
other error). What ``init`` makes of them is in ``runstream.init``'s docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grpc

from ._channel import channel
from .v1 import query_pb2, query_pb2_grpc

LOOKUP_TIMEOUT_S = 1.5


class ResumeError(RuntimeError):
    """``resume="must"`` for a run that does not exist, or ``"never"`` for one that does."""


class Unreachable(Exception):
    """The server could not say whether the run exists."""


@dataclass
class Found:
    state: str
    last_seq: int
    last_step: int                              # -1: nothing logged yet
    config: dict[str, Any] = field(default_factory=dict)     # flattened key → value
    summary: dict[str, Any] = field(default_factory=dict)    # flattened key → value


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def lookup(url: str, entity: str, project: str, run_id: str,
           timeout: float = LOOKUP_TIMEOUT_S, metadata=()) -> Found | None:
    """The stored state of the run, ``None`` if it does not exist; raises ``Unreachable``."""
    try:
        with channel(url) as ch:
            view = query_pb2_grpc.QueryStub(ch).GetRun(
                query_pb2.GetRunRequest(entity=entity, project=project, run_id=run_id),
                timeout=timeout, metadata=metadata)
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.NOT_FOUND:
            return None
        detail = e.details() if hasattr(e, "details") else str(e)
        raise Unreachable(f"{code.name if code else 'error'}: {detail}") from None
    except Exception as e:  # noqa: BLE001 - a bad address must not raise into init
        raise Unreachable(str(e)) from None
    summary: dict[str, Any] = {k: _json(v) for k, v in view.summary_other.items()}
    summary.update(view.summary)
    return Found(state=view.state, last_seq=view.last_seq, last_step=view.last_step,
                 config={k: _json(v) for k, v in view.config.items()}, summary=summary)
