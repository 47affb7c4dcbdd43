"""Saved workspaces: the web UI's view settings per project and user.

A workspace is whatever JSON object the UI keeps (hidden runs, colours, sort, grouping,
filters, runs visualized, columns); the server checks its size and shape only. Saving
appends a ``WorkspaceSaved`` server event to the event log (``Mutations.save_workspace``:
seq 0, empty run id, log key ``workspace_key(entity, project)``); the projector folds it
into the ``workspaces`` table (migration 0005), so a read shows it within about one
projector batch and a replay of the log rebuilds it. This module holds the pure checks
and the read.

Contracts:
- ``user``: 1-128 characters, not blank, no control characters (C0, DEL, C1). It is an
  opaque name chosen by the caller (until API keys exist).
- ``state``: a JSON object; stored compact (key order kept, ``NaN``/``Infinity``
  refused), at most ``MAX_STATE_BYTES`` bytes of UTF-8 in that form.
- Bad input raises ``PermanentError`` (HTTP 400). Reading a workspace never saved gives
  ``{"user": user, "state": {}, "updated_us": 0}``. Neither checks that the project has
  runs: a workspace may be saved before its first run.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..common.errors import PermanentError
from ..store.client import run_query, validate_database

MAX_USER_CHARS = 128
MAX_STATE_BYTES = 256 * 1024
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def workspace_key(entity: str, project: str) -> str:
    """The event-log key of every save of a project's workspaces (one partition).

    Run ids cannot contain ``/``, so this key never names a run's partition key."""
    return f"{entity}/{project}/workspace"


def validate_user(user: Any) -> str:
    """``user`` if it is 1-128 characters, not blank and free of control characters."""
    if user is None or user == "":
        raise PermanentError("user is required (1-128 characters)")
    if not isinstance(user, str):
        raise PermanentError("user must be a string")
    if len(user) > MAX_USER_CHARS:
        raise PermanentError(f"user longer than {MAX_USER_CHARS} characters")
    if not user.strip():
        raise PermanentError("user is blank")
    if _CONTROL_CHARS.search(user):
        raise PermanentError("user contains a control character")
    try:
        user.encode("utf-8")
    except UnicodeEncodeError:
        raise PermanentError("user holds an unpaired surrogate") from None
    return user


def state_to_json(state: Any) -> str:
    """The stored text of ``state``: compact JSON of an object, at most MAX_STATE_BYTES."""
    if not isinstance(state, dict):
        raise PermanentError("state must be a JSON object")
    try:
        text = json.dumps(state, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:
        raise PermanentError("state holds NaN or Infinity, which JSON does not allow") from None
    except (TypeError, RecursionError):
        raise PermanentError("state is not a JSON value (or is nested too deeply)") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PermanentError("state holds an unpaired surrogate (\\ud800-\\udfff) in a "
                             "string") from None
    if size > MAX_STATE_BYTES:
        raise PermanentError(f"state is {size} bytes as JSON; at most {MAX_STATE_BYTES} "
                             f"({MAX_STATE_BYTES // 1024} KiB)")
    return text


def workspace_from_json(body: Any) -> tuple[Any, Any]:
    """The PUT body ``{"user": u, "state": {...}}`` → ``(user, state)``.

    Checks the body's shape only (an object with exactly these fields); the values are
    checked by ``validate_user`` / ``state_to_json`` (``Mutations.save_workspace``)."""
    if not isinstance(body, dict):
        raise PermanentError('the body must be a JSON object {"user": "...", "state": {...}}')
    unknown = set(body) - {"user", "state"}
    if unknown:
        raise PermanentError(f"unknown fields {sorted(unknown)}; known: ['state', 'user']")
    if "user" not in body:
        raise PermanentError("user is required (1-128 characters)")
    if "state" not in body:
        raise PermanentError("state is required (a JSON object)")
    return body["user"], body["state"]


class WorkspaceQueries:
    """Reads of the ``workspaces`` table (bound parameters only). Blocking: run it on
    the store thread (``StoreAccess.call``)."""

    def __init__(self, client: Any, database: str) -> None:
        self.client = client
        self.db = validate_database(database)

    def get(self, entity: str, project: str, user: str) -> dict[str, Any]:
        """``{"user", "state", "updated_us"}`` of the latest save (``{}`` and 0 if none).

        ``user`` is checked here (``PermanentError``); entity and project are data only."""
        user = validate_user(user)
        res = run_query(
            self.client,
            "SELECT state_json, toUnixTimestamp64Micro(updated_time) AS updated_us "
            f"FROM {self.db}.workspaces FINAL "
            "WHERE entity = {entity:String} AND project = {project:String} "
            "AND `user` = {user:String} LIMIT 1",
            {"entity": entity, "project": project, "user": user}, "reading a workspace")
        rows = res.result_rows
        if not rows:
            return {"user": user, "state": {}, "updated_us": 0}
        state_json, updated_us = rows[0]
        return {"user": user, "state": json.loads(state_json), "updated_us": int(updated_us)}
