from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[ErrorCode]
    BAD_TOKEN: _ClassVar[ErrorCode]
    LOGIN_IN_PROGRESS: _ClassVar[ErrorCode]
    RETRY_LATER: _ClassVar[ErrorCode]
    NOT_AVAILABLE: _ClassVar[ErrorCode]
    BAD_SECRET: _ClassVar[ErrorCode]
    BAD_REQUEST: _ClassVar[ErrorCode]
    NAME_INVALID: _ClassVar[ErrorCode]
    NAME_TAKEN: _ClassVar[ErrorCode]
    INTERNAL: _ClassVar[ErrorCode]
    BAD_SERVER_ID: _ClassVar[ErrorCode]
    VERSION_TOO_OLD: _ClassVar[ErrorCode]
    TIMEOUT: _ClassVar[ErrorCode]
    RATE_LIMITED: _ClassVar[ErrorCode]
    NO_SUCH_PLAYER: _ClassVar[ErrorCode]
    CHAT_TEXT_INVALID: _ClassVar[ErrorCode]
    CHAT_MUTED: _ClassVar[ErrorCode]
    CHAT_NOT_IN_GUILD: _ClassVar[ErrorCode]
    CHAT_BLOCKED: _ClassVar[ErrorCode]
    GUILD_NAME_INVALID: _ClassVar[ErrorCode]
    GUILD_NAME_TAKEN: _ClassVar[ErrorCode]
    GUILD_NOT_FOUND: _ClassVar[ErrorCode]
    GUILD_ALREADY_IN_GUILD: _ClassVar[ErrorCode]
    GUILD_NOT_IN_GUILD: _ClassVar[ErrorCode]
    GUILD_FULL: _ClassVar[ErrorCode]
    GUILD_CLOSED: _ClassVar[ErrorCode]
    GUILD_NO_PERMISSION: _ClassVar[ErrorCode]
    GUILD_NO_APPLICATION: _ClassVar[ErrorCode]
    GUILD_LEADER_CANNOT_LEAVE: _ClassVar[ErrorCode]
    GUILD_NOT_ENOUGH_RESOURCES: _ClassVar[ErrorCode]
    GUILD_BAD_ROLE: _ClassVar[ErrorCode]
    GUILD_NOT_A_MEMBER: _ClassVar[ErrorCode]
    GUILD_TOO_MANY_APPLICATIONS: _ClassVar[ErrorCode]
OK: ErrorCode
BAD_TOKEN: ErrorCode
LOGIN_IN_PROGRESS: ErrorCode
RETRY_LATER: ErrorCode
NOT_AVAILABLE: ErrorCode
BAD_SECRET: ErrorCode
BAD_REQUEST: ErrorCode
NAME_INVALID: ErrorCode
NAME_TAKEN: ErrorCode
INTERNAL: ErrorCode
BAD_SERVER_ID: ErrorCode
VERSION_TOO_OLD: ErrorCode
TIMEOUT: ErrorCode
RATE_LIMITED: ErrorCode
NO_SUCH_PLAYER: ErrorCode
CHAT_TEXT_INVALID: ErrorCode
CHAT_MUTED: ErrorCode
CHAT_NOT_IN_GUILD: ErrorCode
CHAT_BLOCKED: ErrorCode
GUILD_NAME_INVALID: ErrorCode
GUILD_NAME_TAKEN: ErrorCode
GUILD_NOT_FOUND: ErrorCode
GUILD_ALREADY_IN_GUILD: ErrorCode
GUILD_NOT_IN_GUILD: ErrorCode
GUILD_FULL: ErrorCode
GUILD_CLOSED: ErrorCode
GUILD_NO_PERMISSION: ErrorCode
GUILD_NO_APPLICATION: ErrorCode
GUILD_LEADER_CANNOT_LEAVE: ErrorCode
GUILD_NOT_ENOUGH_RESOURCES: ErrorCode
GUILD_BAD_ROLE: ErrorCode
GUILD_NOT_A_MEMBER: ErrorCode
GUILD_TOO_MANY_APPLICATIONS: ErrorCode
