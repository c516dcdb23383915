from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatChannel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHAT_WORLD: _ClassVar[ChatChannel]
    CHAT_REGION: _ClassVar[ChatChannel]
    CHAT_GUILD: _ClassVar[ChatChannel]
    CHAT_PRIVATE: _ClassVar[ChatChannel]
CHAT_WORLD: ChatChannel
CHAT_REGION: ChatChannel
CHAT_GUILD: ChatChannel
CHAT_PRIVATE: ChatChannel

class ChatMessage(_message.Message):
    __slots__ = ("channel", "from_userid", "from_name", "from_region", "text", "time_ms", "to_userid", "guild_id", "region")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    FROM_USERID_FIELD_NUMBER: _ClassVar[int]
    FROM_NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_REGION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TO_USERID_FIELD_NUMBER: _ClassVar[int]
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    channel: ChatChannel
    from_userid: int
    from_name: str
    from_region: int
    text: str
    time_ms: int
    to_userid: int
    guild_id: int
    region: int
    def __init__(self, channel: _Optional[_Union[ChatChannel, str]] = ..., from_userid: _Optional[int] = ..., from_name: _Optional[str] = ..., from_region: _Optional[int] = ..., text: _Optional[str] = ..., time_ms: _Optional[int] = ..., to_userid: _Optional[int] = ..., guild_id: _Optional[int] = ..., region: _Optional[int] = ...) -> None: ...

class ChatSend(_message.Message):
    __slots__ = ("channel", "text", "to_userid")
    class Response(_message.Message):
        __slots__ = ("code", "time_ms", "muted_until_ms")
        CODE_FIELD_NUMBER: _ClassVar[int]
        TIME_MS_FIELD_NUMBER: _ClassVar[int]
        MUTED_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        time_ms: int
        muted_until_ms: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., time_ms: _Optional[int] = ..., muted_until_ms: _Optional[int] = ...) -> None: ...
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TO_USERID_FIELD_NUMBER: _ClassVar[int]
    channel: ChatChannel
    text: str
    to_userid: int
    def __init__(self, channel: _Optional[_Union[ChatChannel, str]] = ..., text: _Optional[str] = ..., to_userid: _Optional[int] = ...) -> None: ...

class ChatHistory(_message.Message):
    __slots__ = ("channel", "peer_userid")
    class Response(_message.Message):
        __slots__ = ("code", "messages")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MESSAGES_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ...) -> None: ...
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PEER_USERID_FIELD_NUMBER: _ClassVar[int]
    channel: ChatChannel
    peer_userid: int
    def __init__(self, channel: _Optional[_Union[ChatChannel, str]] = ..., peer_userid: _Optional[int] = ...) -> None: ...

class ChatNotify(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: ChatMessage
    def __init__(self, message: _Optional[_Union[ChatMessage, _Mapping]] = ...) -> None: ...
