"""The access rules of the api's reads and changes (``auth/access.py`` says who may do
what; this applies it to the queries). Blocking: call on the store thread.

What a caller may not see answers exactly as what does not exist (the same
``NotFoundError`` and message), so a private project or run cannot be probed.
"""

from __future__ import annotations

from typing import Any

from ..auth.access import require_member
from ..auth.identity import Principal
from ..common.errors import NotFoundError
from .names import validate_identity
from .queries import Queries


def project_public_only(q: Queries, p: Principal, entity: str, project: str) -> bool:
    """Whether ``p`` reads only the public runs of the project (not a member). Raises
    ``NotFoundError`` for a non-member when the project has no public run."""
    if p.member_of(entity):
        return False
    q.require_project(entity, project, public_only=True)
    return True


def visible_run(q: Queries, p: Principal, entity: str, project: str,
                run_id: str) -> dict[str, Any]:
    """The run as ``Queries.get_run``, if ``p`` may read it; else ``NotFoundError``."""
    validate_identity(entity, project, run_id)
    run = q.get_run(entity, project, run_id)
    if not p.member_of(entity) and run["privacy"] != "public":
        raise NotFoundError(f"run {entity}/{project}/{run_id} not found")
    return run


def changeable_run(q: Queries, p: Principal, entity: str, project: str,
                   run_id: str) -> dict[str, Any]:
    """The run, if ``p`` may change it: ``NotFoundError`` if ``p`` cannot even see it,
    ``PermissionDeniedError`` if it can (a public run of another entity)."""
    run = visible_run(q, p, entity, project, run_id)
    require_member(p, entity)
    return run


def members_of(p: Principal) -> list[str] | None:
    """The entities whose private runs ``p`` sees (``None``: every entity, an admin)."""
    return None if p.admin else sorted(p.entities)
