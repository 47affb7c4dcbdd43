"""Changes to runs (rename, notes, tags, privacy, hide, colour, delete, stop), and saved
workspaces.

The api never writes run state: a change is validated (``PermanentError`` for bad input,
nothing appended), checked against the projected state (``NotFoundError`` for an unknown
or deleted run, ``ConflictError`` for stopping a run that is not running) and appended
to the event log as a server event (seq 0, key = run id): ``RunPatch``, ``Delete`` or
``StopRequested``. The projector folds it like every other event, so reads show it
within one projector batch.

A stop is also appended to the *control log* (see ``gateway/control.py``): every gateway
tails it and pushes ``Control.stop_run`` to the streams carrying the run, which is how
the request reaches the running script within a second or two. The event-log record is
appended first, so the client's Finish (its answer to the stop) always follows the
``StopRequested`` in the run's partition and the fold ends the run ``killed``.

A workspace save (``save_workspace``, see ``api/workspaces.py``) is checked the same way
(no store lookup: a project's workspace may be saved before its first run) and appended
as ``WorkspaceSaved`` (seq 0, empty run id, key ``<entity>/<project>/workspace``).

The pure parts (``validate_*``, ``patch_from_json``) are used by both the gRPC Runs
service and the HTTP API.
"""

from __future__ import annotations

import re
from typing import Any

from runstream.v1 import events_pb2

from ..auth.identity import Principal
from ..common.clock import now_us
from ..common.errors import ConflictError, PermanentError, PermissionDeniedError
from ..eventlog import EventLog
from . import authz
from .names import validate_identity, validate_project
from .queries import Queries
from .store_access import StoreAccess
from .workspaces import state_to_json, validate_user, workspace_key

MAX_NAME_CHARS = 128
MAX_NOTES_CHARS = 64 * 1024
MAX_TAGS = 100
MAX_TAG_CHARS = 64
MAX_REQUESTED_BY_CHARS = 128
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")   # tab and newline allowed in notes
_LINE_BREAKS = re.compile(r"[\t\n]")
_COLOR_RE = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})\Z")
_PRIVACY_NAMES = {"private": events_pb2.PRIVACY_PRIVATE, "public": events_pb2.PRIVACY_PUBLIC}
PATCH_FIELDS = ("name", "notes", "tags", "privacy", "hidden", "color")


def _single_line(what: str, value: str, max_chars: int, allow_empty: bool = False) -> str:
    if not allow_empty and not value.strip():
        raise PermanentError(f"{what} is empty")
    if len(value) > max_chars:
        raise PermanentError(f"{what} longer than {max_chars} characters")
    if _CONTROL_CHARS.search(value) or _LINE_BREAKS.search(value):
        raise PermanentError(f"{what} contains a control character")
    return value


def validate_patch(patch: events_pb2.RunPatch) -> events_pb2.RunPatch:
    """A checked, normalised copy of ``patch`` (colour in lower case, tags deduplicated)."""
    out = events_pb2.RunPatch()
    changed = False
    if patch.HasField("name"):
        out.name = _single_line("name", patch.name, MAX_NAME_CHARS)
        changed = True
    if patch.HasField("notes"):
        if len(patch.notes) > MAX_NOTES_CHARS:
            raise PermanentError(f"notes longer than {MAX_NOTES_CHARS} characters")
        if _CONTROL_CHARS.search(patch.notes):
            raise PermanentError("notes contain a control character")
        out.notes = patch.notes
        changed = True
    if patch.set_tags:
        if len(patch.tags) > MAX_TAGS:
            raise PermanentError(f"{len(patch.tags)} tags; at most {MAX_TAGS}")
        seen: dict[str, None] = {}
        for t in patch.tags:
            seen.setdefault(_single_line("tag", t, MAX_TAG_CHARS), None)
        out.tags.extend(seen)
        out.set_tags = True
        changed = True
    elif patch.tags:
        raise PermanentError("tags given without set_tags (set_tags=true replaces the list)")
    if patch.privacy != events_pb2.PRIVACY_UNSPECIFIED:
        if patch.privacy not in _PRIVACY_NAMES.values():
            raise PermanentError(f"unknown privacy value {patch.privacy}")
        out.privacy = patch.privacy
        changed = True
    if patch.HasField("hidden"):
        out.hidden = patch.hidden
        changed = True
    if patch.HasField("color"):
        if patch.color and not _COLOR_RE.match(patch.color):
            raise PermanentError(f"color {patch.color[:50]!r} must be #rgb or #rrggbb "
                                 "(hex), or empty for the default")
        out.color = patch.color.lower()
        changed = True
    if not changed:
        raise PermanentError("the patch changes nothing: give at least one of "
                             + ", ".join(PATCH_FIELDS))
    return out


def patch_from_json(body: Any) -> events_pb2.RunPatch:
    """The HTTP PATCH body ``{name, notes, tags, privacy, hidden, color}`` → RunPatch.

    Fields that are missing or ``null`` are left unchanged. Raises ``PermanentError``.
    """
    if not isinstance(body, dict):
        raise PermanentError("the body must be a JSON object")
    unknown = set(body) - set(PATCH_FIELDS)
    if unknown:
        raise PermanentError(f"unknown fields {sorted(unknown)}; known: {list(PATCH_FIELDS)}")
    p = events_pb2.RunPatch()
    for name in ("name", "notes", "color"):
        v = body.get(name)
        if v is None:
            continue
        if not isinstance(v, str):
            raise PermanentError(f"{name} must be a string")
        setattr(p, name, v)
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise PermanentError("tags must be a list of strings")
        p.tags.extend(tags)
        p.set_tags = True
    privacy = body.get("privacy")
    if privacy is not None:
        if privacy not in _PRIVACY_NAMES:
            raise PermanentError(f"privacy must be one of {sorted(_PRIVACY_NAMES)}")
        p.privacy = _PRIVACY_NAMES[privacy]
    hidden = body.get("hidden")
    if hidden is not None:
        if not isinstance(hidden, bool):
            raise PermanentError("hidden must be true or false")
        p.hidden = hidden
    return p


def validate_requested_by(requested_by: str, default: str) -> str:
    if not requested_by:
        return default
    return _single_line("requested_by", requested_by, MAX_REQUESTED_BY_CHARS)


def server_record(event: events_pb2.Event, writer: str,
                  key: str | None = None) -> tuple[bytes, bytes]:
    """The (key, value) event-log record of one server event (key: the run id by default)."""
    rec = events_pb2.LogRecord(events=[event], server_time_us=event.server_time_us,
                               gateway=writer)
    return (event.run_id if key is None else key).encode(), rec.SerializeToString()


class Mutations:
    """Appends validated changes; ``control_log`` carries stops to the gateways."""

    def __init__(self, event_log: EventLog, control_log: EventLog | None, store: StoreAccess,
                 queries: Queries, instance: str) -> None:
        self._log = event_log
        self._control = control_log
        self._store = store
        self._q = queries
        self._writer = f"api:{instance}"

    def _event(self, entity: str, project: str, run_id: str) -> events_pb2.Event:
        return events_pb2.Event(run_id=run_id, project=project, entity=entity, seq=0,
                                server_time_us=now_us())

    async def _existing(self, p: Principal, entity: str, project: str,
                        run_id: str) -> dict[str, Any]:
        validate_identity(entity, project, run_id)
        return await self._store.call(authz.changeable_run, self._q, p, entity, project,
                                      run_id)

    async def _append(self, ev: events_pb2.Event) -> events_pb2.Event:
        await self._log.append([server_record(ev, self._writer)])
        return ev

    async def update(self, p: Principal, entity: str, project: str, run_id: str,
                     patch: events_pb2.RunPatch) -> events_pb2.Event:
        clean = validate_patch(patch)
        await self._existing(p, entity, project, run_id)
        ev = self._event(entity, project, run_id)
        ev.run_patch.CopyFrom(clean)
        return await self._append(ev)

    async def delete(self, p: Principal, entity: str, project: str,
                     run_id: str) -> events_pb2.Event:
        await self._existing(p, entity, project, run_id)
        ev = self._event(entity, project, run_id)
        ev.delete.SetInParent()
        return await self._append(ev)

    async def stop(self, p: Principal, entity: str, project: str, run_id: str,
                   requested_by: str) -> events_pb2.Event:
        who = validate_requested_by(requested_by, p.user)
        run = await self._existing(p, entity, project, run_id)
        if run["state"] != "running":
            raise ConflictError(f"run {entity}/{project}/{run_id} is {run['state']}; "
                                "only a running run can be stopped")
        ev = self._event(entity, project, run_id)
        ev.stop_requested.requested_by = who
        await self._append(ev)              # the record first: see the module docstring
        if self._control is not None:
            await self._control.append([server_record(ev, self._writer)])
        return ev

    async def save_workspace(self, p: Principal, entity: str, project: str, user: str,
                             state: Any) -> events_pb2.Event:
        """Append ``WorkspaceSaved`` for ``user``'s workspace of ``entity/project``.

        ``state`` is a JSON object (``api/workspaces.py`` has the limits); returns the
        appended event once the log holds it. Raises ``PermanentError`` for bad input.
        Anyone who can read the project saves their own workspace of it (``user`` empty:
        the caller's); only an admin saves someone else's.
        """
        validate_project(entity, project)
        user = validate_user(user or p.user)
        if user != p.user and not p.admin:
            raise PermissionDeniedError(f"user {p.user} may not save the workspace of {user}")
        if not p.member_of(entity):          # NotFoundError unless the project is public
            await self._store.call(authz.project_public_only, self._q, p, entity, project)
        state_json = state_to_json(state)
        ev = events_pb2.Event(run_id="", project=project, entity=entity, seq=0,
                              server_time_us=now_us())
        ev.workspace_saved.user = user
        ev.workspace_saved.state_json = state_json
        await self._log.append([server_record(ev, self._writer,
                                              key=workspace_key(entity, project))])
        return ev
