from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from . import player_pb2 as _player_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KickReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KICK_UNSPECIFIED: _ClassVar[KickReason]
    KICK_LOGIN_ELSEWHERE: _ClassVar[KickReason]
    KICK_HEARTBEAT_TIMEOUT: _ClassVar[KickReason]
    KICK_SERVER_SHUTDOWN: _ClassVar[KickReason]
    KICK_GM: _ClassVar[KickReason]
    KICK_PROTOCOL_ERROR: _ClassVar[KickReason]
KICK_UNSPECIFIED: KickReason
KICK_LOGIN_ELSEWHERE: KickReason
KICK_HEARTBEAT_TIMEOUT: KickReason
KICK_SERVER_SHUTDOWN: KickReason
KICK_GM: KickReason
KICK_PROTOCOL_ERROR: KickReason

class Login(_message.Message):
    __slots__ = ("openid", "token", "device_id", "os", "server_id", "version")
    class Response(_message.Message):
        __slots__ = ("code", "userid", "host", "port", "secret")
        CODE_FIELD_NUMBER: _ClassVar[int]
        USERID_FIELD_NUMBER: _ClassVar[int]
        HOST_FIELD_NUMBER: _ClassVar[int]
        PORT_FIELD_NUMBER: _ClassVar[int]
        SECRET_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        userid: int
        host: str
        port: int
        secret: str
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., userid: _Optional[int] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., secret: _Optional[str] = ...) -> None: ...
    OPENID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    openid: str
    token: str
    device_id: str
    os: str
    server_id: int
    version: str
    def __init__(self, openid: _Optional[str] = ..., token: _Optional[str] = ..., device_id: _Optional[str] = ..., os: _Optional[str] = ..., server_id: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("userid", "secret")
    class Response(_message.Message):
        __slots__ = ("code", "userid", "name", "server_id", "basics", "server_time_ms")
        CODE_FIELD_NUMBER: _ClassVar[int]
        USERID_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        SERVER_ID_FIELD_NUMBER: _ClassVar[int]
        BASICS_FIELD_NUMBER: _ClassVar[int]
        SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        userid: int
        name: str
        server_id: int
        basics: _player_pb2.PlayerBasics
        server_time_ms: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., userid: _Optional[int] = ..., name: _Optional[str] = ..., server_id: _Optional[int] = ..., basics: _Optional[_Union[_player_pb2.PlayerBasics, _Mapping]] = ..., server_time_ms: _Optional[int] = ...) -> None: ...
    USERID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    userid: int
    secret: str
    def __init__(self, userid: _Optional[int] = ..., secret: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "server_time_ms")
        CODE_FIELD_NUMBER: _ClassVar[int]
        SERVER_TIME_MS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        server_time_ms: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., server_time_ms: _Optional[int] = ...) -> None: ...
    def __init__(self) -> None: ...

class KickNotify(_message.Message):
    __slots__ = ("reason", "code")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    code: KickReason
    def __init__(self, reason: _Optional[str] = ..., code: _Optional[_Union[KickReason, str]] = ...) -> None: ...
