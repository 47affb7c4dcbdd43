"""Who is calling, and what they may do: the access rules of every endpoint.

Authentication: the API key comes as ``authorization: Bearer <key>`` (gRPC metadata or
HTTP header) or, for the web UI, the ``runstream_key`` cookie set by ``/api/v1/login``.
A missing, unknown or revoked key is ``UnauthenticatedError``.

Authorisation (``docs/security.md``):
- write (ingest, run changes): the principal is an admin or a member of the entity
  (``Principal.member_of``); otherwise ``PermissionDeniedError`` for ingest, and for
  run changes ``NotFoundError`` unless the run is visible (then permission denied);
- read: members see every run of the entity; everyone else with a valid key sees only
  runs marked public. What is not visible answers exactly as what does not exist.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..common.errors import PermissionDeniedError, UnauthenticatedError
from .identity import IdentityTable, Principal

COOKIE = "runstream_key"
UNAUTHENTICATED = ("missing, unknown or revoked API key: send 'authorization: Bearer <key>' "
                   "(RUNSTREAM_API_KEY)")
_BEARER = "bearer "


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for k, v in metadata or ():
        if k == "authorization" and isinstance(v, str) and v[:7].lower() == _BEARER:
            return v[7:].strip()
    return ""


def key_from_header(value: str | None) -> str:
    if value and value[:7].lower() == _BEARER:
        return value[7:].strip()
    return ""


def authenticate(table: IdentityTable, key: str) -> Principal:
    principal = table.authenticate(key)
    if principal is None:
        raise UnauthenticatedError(UNAUTHENTICATED)
    return principal


def require_member(principal: Principal, entity: str) -> None:
    if not principal.member_of(entity):
        raise PermissionDeniedError(f"user {principal.user} may not write entity {entity}")


def require_admin(principal: Principal) -> None:
    if not principal.admin:
        raise PermissionDeniedError(f"user {principal.user} is not an admin")
