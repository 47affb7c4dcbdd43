from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentityRecord(_message.Message):
    __slots__ = ("time_us", "by", "user_created", "key_created", "key_revoked", "team_membership")
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    USER_CREATED_FIELD_NUMBER: _ClassVar[int]
    KEY_CREATED_FIELD_NUMBER: _ClassVar[int]
    KEY_REVOKED_FIELD_NUMBER: _ClassVar[int]
    TEAM_MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    time_us: int
    by: str
    user_created: UserCreated
    key_created: KeyCreated
    key_revoked: KeyRevoked
    team_membership: TeamMembership
    def __init__(self, time_us: _Optional[int] = ..., by: _Optional[str] = ..., user_created: _Optional[_Union[UserCreated, _Mapping]] = ..., key_created: _Optional[_Union[KeyCreated, _Mapping]] = ..., key_revoked: _Optional[_Union[KeyRevoked, _Mapping]] = ..., team_membership: _Optional[_Union[TeamMembership, _Mapping]] = ...) -> None: ...

class UserCreated(_message.Message):
    __slots__ = ("name", "admin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ...) -> None: ...

class KeyCreated(_message.Message):
    __slots__ = ("key_id", "user", "sha256_hex", "description")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SHA256_HEX_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    user: str
    sha256_hex: str
    description: str
    def __init__(self, key_id: _Optional[str] = ..., user: _Optional[str] = ..., sha256_hex: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class KeyRevoked(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class TeamMembership(_message.Message):
    __slots__ = ("team", "user", "member")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    team: str
    user: str
    member: bool
    def __init__(self, team: _Optional[str] = ..., user: _Optional[str] = ..., member: _Optional[bool] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Principal(_message.Message):
    __slots__ = ("user", "admin", "teams", "key_id")
    USER_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    user: str
    admin: bool
    teams: _containers.RepeatedScalarFieldContainer[str]
    key_id: str
    def __init__(self, user: _Optional[str] = ..., admin: _Optional[bool] = ..., teams: _Optional[_Iterable[str]] = ..., key_id: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("name", "admin", "teams")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    teams: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ..., teams: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("user", "description")
    USER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    user: str
    description: str
    def __init__(self, user: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class CreatedKey(_message.Message):
    __slots__ = ("user", "key_id", "key")
    USER_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    user: str
    key_id: str
    key: str
    def __init__(self, user: _Optional[str] = ..., key_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("key_id", "user")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    user: str
    def __init__(self, key_id: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class SetTeamMemberRequest(_message.Message):
    __slots__ = ("team", "user", "member")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    team: str
    user: str
    member: bool
    def __init__(self, team: _Optional[str] = ..., user: _Optional[str] = ..., member: _Optional[bool] = ...) -> None: ...
