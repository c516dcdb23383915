from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GuildRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUILD_MEMBER: _ClassVar[GuildRole]
    GUILD_OFFICER: _ClassVar[GuildRole]
    GUILD_LEADER: _ClassVar[GuildRole]

class GuildEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUILD_EVENT_UNSPECIFIED: _ClassVar[GuildEvent]
    GUILD_JOINED: _ClassVar[GuildEvent]
    GUILD_LEFT: _ClassVar[GuildEvent]
    GUILD_KICKED: _ClassVar[GuildEvent]
    GUILD_ROLE_CHANGED: _ClassVar[GuildEvent]
    GUILD_DISBANDED: _ClassVar[GuildEvent]
    GUILD_LEADER_CHANGED: _ClassVar[GuildEvent]
    GUILD_APPLIED: _ClassVar[GuildEvent]
    GUILD_APPLY_REJECTED: _ClassVar[GuildEvent]
GUILD_MEMBER: GuildRole
GUILD_OFFICER: GuildRole
GUILD_LEADER: GuildRole
GUILD_EVENT_UNSPECIFIED: GuildEvent
GUILD_JOINED: GuildEvent
GUILD_LEFT: GuildEvent
GUILD_KICKED: GuildEvent
GUILD_ROLE_CHANGED: GuildEvent
GUILD_DISBANDED: GuildEvent
GUILD_LEADER_CHANGED: GuildEvent
GUILD_APPLIED: GuildEvent
GUILD_APPLY_REJECTED: GuildEvent

class GuildMember(_message.Message):
    __slots__ = ("user_id", "name", "region", "role", "online", "joined_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    JOINED_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    name: str
    region: int
    role: GuildRole
    online: bool
    joined_ms: int
    def __init__(self, user_id: _Optional[int] = ..., name: _Optional[str] = ..., region: _Optional[int] = ..., role: _Optional[_Union[GuildRole, str]] = ..., online: _Optional[bool] = ..., joined_ms: _Optional[int] = ...) -> None: ...

class GuildApplication(_message.Message):
    __slots__ = ("user_id", "name", "region", "time_ms")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    name: str
    region: int
    time_ms: int
    def __init__(self, user_id: _Optional[int] = ..., name: _Optional[str] = ..., region: _Optional[int] = ..., time_ms: _Optional[int] = ...) -> None: ...

class GuildSummary(_message.Message):
    __slots__ = ("guild_id", "name", "region", "members", "max_members", "open", "leader_id")
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    guild_id: int
    name: str
    region: int
    members: int
    max_members: int
    open: bool
    leader_id: int
    def __init__(self, guild_id: _Optional[int] = ..., name: _Optional[str] = ..., region: _Optional[int] = ..., members: _Optional[int] = ..., max_members: _Optional[int] = ..., open: _Optional[bool] = ..., leader_id: _Optional[int] = ...) -> None: ...

class GuildCreate(_message.Message):
    __slots__ = ("name", "open")
    class Response(_message.Message):
        __slots__ = ("code", "guild_id")
        CODE_FIELD_NUMBER: _ClassVar[int]
        GUILD_ID_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        guild_id: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., guild_id: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    open: bool
    def __init__(self, name: _Optional[str] = ..., open: _Optional[bool] = ...) -> None: ...

class GuildJoin(_message.Message):
    __slots__ = ("guild_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    guild_id: int
    def __init__(self, guild_id: _Optional[int] = ...) -> None: ...

class GuildApply(_message.Message):
    __slots__ = ("guild_id",)
    class Response(_message.Message):
        __slots__ = ("code", "joined")
        CODE_FIELD_NUMBER: _ClassVar[int]
        JOINED_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        joined: bool
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., joined: _Optional[bool] = ...) -> None: ...
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    guild_id: int
    def __init__(self, guild_id: _Optional[int] = ...) -> None: ...

class GuildApprove(_message.Message):
    __slots__ = ("user_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GuildRejectApply(_message.Message):
    __slots__ = ("user_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GuildLeave(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    def __init__(self) -> None: ...

class GuildKick(_message.Message):
    __slots__ = ("user_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GuildSetRole(_message.Message):
    __slots__ = ("user_id", "role")
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    role: GuildRole
    def __init__(self, user_id: _Optional[int] = ..., role: _Optional[_Union[GuildRole, str]] = ...) -> None: ...

class GuildTransferLeader(_message.Message):
    __slots__ = ("user_id",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GuildDisband(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    def __init__(self) -> None: ...

class GuildInfo(_message.Message):
    __slots__ = ("guild_id",)
    class Response(_message.Message):
        __slots__ = ("code", "guild", "members", "applications")
        CODE_FIELD_NUMBER: _ClassVar[int]
        GUILD_FIELD_NUMBER: _ClassVar[int]
        MEMBERS_FIELD_NUMBER: _ClassVar[int]
        APPLICATIONS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        guild: GuildSummary
        members: _containers.RepeatedCompositeFieldContainer[GuildMember]
        applications: _containers.RepeatedCompositeFieldContainer[GuildApplication]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., guild: _Optional[_Union[GuildSummary, _Mapping]] = ..., members: _Optional[_Iterable[_Union[GuildMember, _Mapping]]] = ..., applications: _Optional[_Iterable[_Union[GuildApplication, _Mapping]]] = ...) -> None: ...
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    guild_id: int
    def __init__(self, guild_id: _Optional[int] = ...) -> None: ...

class GuildList(_message.Message):
    __slots__ = ("region", "offset")
    class Response(_message.Message):
        __slots__ = ("code", "guilds")
        CODE_FIELD_NUMBER: _ClassVar[int]
        GUILDS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        guilds: _containers.RepeatedCompositeFieldContainer[GuildSummary]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., guilds: _Optional[_Iterable[_Union[GuildSummary, _Mapping]]] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    region: int
    offset: int
    def __init__(self, region: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class GuildSearch(_message.Message):
    __slots__ = ("region", "name")
    class Response(_message.Message):
        __slots__ = ("code", "guilds")
        CODE_FIELD_NUMBER: _ClassVar[int]
        GUILDS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        guilds: _containers.RepeatedCompositeFieldContainer[GuildSummary]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., guilds: _Optional[_Iterable[_Union[GuildSummary, _Mapping]]] = ...) -> None: ...
    REGION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    region: int
    name: str
    def __init__(self, region: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class GuildNotify(_message.Message):
    __slots__ = ("guild_id", "event", "user_id", "by_user_id", "role", "guild_name")
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    BY_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GUILD_NAME_FIELD_NUMBER: _ClassVar[int]
    guild_id: int
    event: GuildEvent
    user_id: int
    by_user_id: int
    role: GuildRole
    guild_name: str
    def __init__(self, guild_id: _Optional[int] = ..., event: _Optional[_Union[GuildEvent, str]] = ..., user_id: _Optional[int] = ..., by_user_id: _Optional[int] = ..., role: _Optional[_Union[GuildRole, str]] = ..., guild_name: _Optional[str] = ...) -> None: ...
