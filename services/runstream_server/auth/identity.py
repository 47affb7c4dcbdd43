"""The identity table: the identity log (``identity.proto``) folded in memory. Pure.

Rules of the fold (records in log order; every gateway and api folds the same log, so
they agree):
- ``UserCreated``: the user exists; a repeat only sets ``admin``.
- ``KeyCreated``: the key (by its SHA-256) authenticates its user, if the user exists
  and the key id was never revoked. A repeat of the same key id changes nothing.
- ``KeyRevoked``: the key id stops authenticating, for good.
- ``TeamMembership``: adds or removes a user of a team; a team exists while it has
  members.
A record that cannot be decoded, or names an unknown user, is skipped and counted.

Access: an admin reads and writes every entity. A user writes the entity of their own
name and of their teams, and reads those plus every run marked public (``access.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from runstream.v1 import identity_pb2

KEY_PREFIX = "rsk_"
MIN_KEY_CHARS = 20          # a bootstrap key chosen by an operator: at least this long


def new_key() -> str:
    """A new API key: 32 random bytes, hex, with a recognisable prefix."""
    return KEY_PREFIX + secrets.token_hex(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str:
    """The public id of a key (shown in listings, used to revoke it)."""
    return key_hash(key)[:12]


@dataclass(frozen=True)
class Principal:
    user: str
    admin: bool
    teams: frozenset[str]
    key_id: str

    @property
    def entities(self) -> frozenset[str]:
        """The entities this principal writes (and reads in full)."""
        return self.teams | {self.user}

    def member_of(self, entity: str) -> bool:
        return self.admin or entity == self.user or entity in self.teams


@dataclass
class _Key:
    user: str
    key_id: str


@dataclass
class IdentityTable:
    users: dict[str, bool] = field(default_factory=dict)            # name → admin
    teams: dict[str, set[str]] = field(default_factory=dict)        # team → members
    revoked: set[str] = field(default_factory=set)                  # key ids
    skipped: int = 0
    applied: int = 0        # records applied: the table's version (it changes with it)
    _keys: dict[str, _Key] = field(default_factory=dict)            # sha256 → key

    def apply(self, value: bytes) -> None:
        try:
            rec = identity_pb2.IdentityRecord.FromString(value)
        except Exception:   # noqa: BLE001 - a foreign record is skipped, never fatal
            self.skipped += 1
            return
        kind = rec.WhichOneof("change")
        if kind == "user_created":
            u = rec.user_created
            if not u.name:
                self.skipped += 1
                return
            self.users[u.name] = u.admin
        elif kind == "key_created":
            k = rec.key_created
            if k.user not in self.users or not k.sha256_hex or not k.key_id:
                self.skipped += 1
                return
            if k.key_id not in self.revoked and k.sha256_hex not in self._keys:
                self._keys[k.sha256_hex] = _Key(k.user, k.key_id)
        elif kind == "key_revoked":
            kid = rec.key_revoked.key_id
            self.revoked.add(kid)
            for h, k in list(self._keys.items()):
                if k.key_id == kid:
                    del self._keys[h]
        elif kind == "team_membership":
            m = rec.team_membership
            if m.user not in self.users or not m.team:
                self.skipped += 1
                return
            members = self.teams.setdefault(m.team, set())
            if m.member:
                members.add(m.user)
            else:
                members.discard(m.user)
                if not members:
                    del self.teams[m.team]
        else:
            self.skipped += 1
            return
        self.applied += 1

    def authenticate(self, key: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None for anything else."""
        if not key:
            return None
        k = self._keys.get(key_hash(key))
        if k is None:
            return None
        return self.principal(k.user, k.key_id)

    def principal(self, user: str, key_id: str = "") -> Principal | None:
        if user not in self.users:
            return None
        teams = frozenset(t for t, members in self.teams.items() if user in members)
        return Principal(user, self.users[user], teams, key_id)

    def key_owner(self, key_id: str) -> str | None:
        for k in self._keys.values():
            if hmac.compare_digest(k.key_id, key_id):
                return k.user
        return None

    def has_key(self, key: str) -> bool:
        return key_hash(key) in self._keys

    def has_admin(self) -> bool:
        return any(self.users.values())


def user_created(name: str, admin: bool, time_us: int, by: str = "") -> bytes:
    return identity_pb2.IdentityRecord(
        time_us=time_us, by=by,
        user_created=identity_pb2.UserCreated(name=name, admin=admin)).SerializeToString()


def key_created(user: str, key: str, time_us: int, by: str = "",
                description: str = "") -> bytes:
    return identity_pb2.IdentityRecord(
        time_us=time_us, by=by, key_created=identity_pb2.KeyCreated(
            key_id=key_id_of(key), user=user, sha256_hex=key_hash(key),
            description=description)).SerializeToString()


def key_revoked(key_id: str, time_us: int, by: str) -> bytes:
    return identity_pb2.IdentityRecord(
        time_us=time_us, by=by,
        key_revoked=identity_pb2.KeyRevoked(key_id=key_id)).SerializeToString()


def team_membership(team: str, user: str, member: bool, time_us: int, by: str) -> bytes:
    return identity_pb2.IdentityRecord(
        time_us=time_us, by=by, team_membership=identity_pb2.TeamMembership(
            team=team, user=user, member=member)).SerializeToString()
