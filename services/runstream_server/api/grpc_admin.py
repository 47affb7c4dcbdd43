"""The gRPC Admin service (identity.proto): users, teams and API keys.

Changes are appended to the identity log and answered once this process folded them
(``IdentityWatcher.append``), so the caller's next request sees them here; other
processes see them within about one poll of the log. Errors become status codes here.
"""

from __future__ import annotations

from runstream.v1 import identity_pb2, identity_pb2_grpc

from ..auth import identity
from ..auth.access import require_admin
from ..auth.identity import Principal
from ..auth.watcher import IdentityWatcher
from ..common import limits, status
from ..common.clock import now_us
from ..common.errors import NotFoundError, PermanentError
from ..common.status import TRANSLATED
from .grpc_query import principal_of

MAX_DESCRIPTION_CHARS = 256


def _check_name(what: str, name: str) -> str:
    """User and team names become entities (they own projects); the run-id characters
    are a subset of what an entity allows, and safe in URLs and key listings."""
    if not limits.RUN_ID_RE.match(name):
        raise PermanentError(f"{what} {name!r} must be 1-128 characters of A-Z a-z 0-9 _ . -")
    return name


def _view(p: Principal) -> identity_pb2.Principal:
    return identity_pb2.Principal(user=p.user, admin=p.admin, teams=sorted(p.teams),
                                  key_id=p.key_id)


class AdminService(identity_pb2_grpc.AdminServicer):
    def __init__(self, watcher: IdentityWatcher) -> None:
        self._w = watcher

    async def _run(self, context, fn, request):
        p = await principal_of(context, self._w.table)
        try:
            return await fn(p, request)
        except TRANSLATED as e:
            await status.abort(context, e)

    async def WhoAmI(self, request, context):
        async def fn(p, _):
            return _view(p)
        return await self._run(context, fn, request)

    async def CreateUser(self, request, context):
        return await self._run(context, self._create_user, request)

    async def _create_user(self, p: Principal, req) -> identity_pb2.CreatedKey:
        require_admin(p)
        name = _check_name("user", req.name)
        teams = [_check_name("team", t) for t in req.teams]
        table = self._w.table
        if name in table.teams:
            raise PermanentError(f"{name} is a team; users and teams share one namespace")
        for t in teams:
            if t in table.users:
                raise PermanentError(f"{t} is a user, not a team")
        key = identity.new_key()
        t_us = now_us()
        await self._w.append(
            identity.user_created(name, req.admin, t_us, p.user),
            identity.key_created(name, key, t_us, p.user, "created with the user"),
            *(identity.team_membership(t, name, True, t_us, p.user) for t in teams))
        return identity_pb2.CreatedKey(user=name, key_id=identity.key_id_of(key), key=key)

    async def CreateKey(self, request, context):
        return await self._run(context, self._create_key, request)

    async def _create_key(self, p: Principal, req) -> identity_pb2.CreatedKey:
        user = req.user or p.user
        if user != p.user:
            require_admin(p)
        if user not in self._w.table.users:
            raise NotFoundError(f"user {user} not found")
        if len(req.description) > MAX_DESCRIPTION_CHARS:
            raise PermanentError(f"description longer than {MAX_DESCRIPTION_CHARS} characters")
        key = identity.new_key()
        await self._w.append(identity.key_created(user, key, now_us(), p.user,
                                                  req.description))
        return identity_pb2.CreatedKey(user=user, key_id=identity.key_id_of(key), key=key)

    async def RevokeKey(self, request, context):
        return await self._run(context, self._revoke_key, request)

    async def _revoke_key(self, p: Principal, req) -> identity_pb2.RevokeKeyResponse:
        owner = self._w.table.key_owner(req.key_id) if req.key_id else None
        # Someone else's key id answers as an unknown one: key ids cannot be probed.
        if owner is None or (owner != p.user and not p.admin):
            raise NotFoundError(f"no key {req.key_id!r} of yours")
        await self._w.append(identity.key_revoked(req.key_id, now_us(), p.user))
        return identity_pb2.RevokeKeyResponse(key_id=req.key_id, user=owner)

    async def SetTeamMember(self, request, context):
        return await self._run(context, self._set_member, request)

    async def _set_member(self, p: Principal, req) -> identity_pb2.Principal:
        require_admin(p)
        team = _check_name("team", req.team)
        if team in self._w.table.users:
            raise PermanentError(f"{team} is a user, not a team")
        if req.user not in self._w.table.users:
            raise NotFoundError(f"user {req.user} not found")
        await self._w.append(identity.team_membership(team, req.user, req.member, now_us(),
                                                      p.user))
        member = self._w.table.principal(req.user)
        if member is None:
            raise NotFoundError(f"user {req.user} not found")
        return _view(member)
