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
    MAIL_NOT_FOUND: _ClassVar[ErrorCode]
    MAIL_TEXT_INVALID: _ClassVar[ErrorCode]
    MAIL_NO_ATTACHMENTS: _ClassVar[ErrorCode]
    MAIL_ALREADY_CLAIMED: _ClassVar[ErrorCode]
    GIFT_INVALID: _ClassVar[ErrorCode]
    GIFT_NOT_ENOUGH: _ClassVar[ErrorCode]
    GIFT_DAILY_LIMIT: _ClassVar[ErrorCode]
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
MAIL_NOT_FOUND: ErrorCode
MAIL_TEXT_INVALID: ErrorCode
MAIL_NO_ATTACHMENTS: ErrorCode
MAIL_ALREADY_CLAIMED: ErrorCode
GIFT_INVALID: ErrorCode
GIFT_NOT_ENOUGH: ErrorCode
GIFT_DAILY_LIMIT: ErrorCode
