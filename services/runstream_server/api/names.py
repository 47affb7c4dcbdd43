"""Entity, project and run id as the gateway accepts them (common/limits.py), checked
where the API takes them: a malformed name is ``PermanentError`` (INVALID_ARGUMENT /
400), never a lookup that answers "not found"."""

from __future__ import annotations

from ..common import limits
from ..common.errors import PermanentError


def validate_identity(entity: str, project: str, run_id: str) -> None:
    if not limits.RUN_ID_RE.match(run_id or ""):
        raise PermanentError(f"run_id {run_id[:200]!r} must be 1-128 characters of "
                             "A-Z a-z 0-9 _ . -")
    validate_project(entity, project)


def validate_project(entity: str, project: str) -> None:
    """Entity and project names as the gateway accepts them (``PermanentError`` if not)."""
    for what, value in (("entity", entity), ("project", project)):
        if not value:
            raise PermanentError(f"{what} is empty")
        if len(value) > limits.MAX_ID_CHARS:
            raise PermanentError(f"{what} longer than {limits.MAX_ID_CHARS} characters")
        if limits.NAME_FORBIDDEN.search(value):
            raise PermanentError(f"{what} {value!r} contains one of / \\ # ? % : or a "
                                 "control character")
