from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FriendState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRIENDSHIP_NONE: _ClassVar[FriendState]
    FRIENDSHIP_PENDING: _ClassVar[FriendState]
    FRIENDSHIP_FRIENDS: _ClassVar[FriendState]

class FriendEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRIEND_EVENT_REQUEST: _ClassVar[FriendEvent]
    FRIEND_EVENT_ACCEPTED: _ClassVar[FriendEvent]
    FRIEND_EVENT_REMOVED: _ClassVar[FriendEvent]
FRIENDSHIP_NONE: FriendState
FRIENDSHIP_PENDING: FriendState
FRIENDSHIP_FRIENDS: FriendState
FRIEND_EVENT_REQUEST: FriendEvent
FRIEND_EVENT_ACCEPTED: FriendEvent
FRIEND_EVENT_REMOVED: FriendEvent

class FriendInfo(_message.Message):
    __slots__ = ("userid", "name", "region", "online", "last_seen_ms", "since_ms")
    USERID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    userid: int
    name: str
    region: int
    online: bool
    last_seen_ms: int
    since_ms: int
    def __init__(self, userid: _Optional[int] = ..., name: _Optional[str] = ..., region: _Optional[int] = ..., online: _Optional[bool] = ..., last_seen_ms: _Optional[int] = ..., since_ms: _Optional[int] = ...) -> None: ...

class FriendRequest(_message.Message):
    __slots__ = ("to_userid", "region", "name")
    class Response(_message.Message):
        __slots__ = ("code", "state", "userid")
        CODE_FIELD_NUMBER: _ClassVar[int]
        STATE_FIELD_NUMBER: _ClassVar[int]
        USERID_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        state: FriendState
        userid: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., state: _Optional[_Union[FriendState, str]] = ..., userid: _Optional[int] = ...) -> None: ...
    TO_USERID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    to_userid: int
    region: int
    name: str
    def __init__(self, to_userid: _Optional[int] = ..., region: _Optional[int] = ..., name: _Optional[str] = ...) -> None: ...

class FriendAccept(_message.Message):
    __slots__ = ("from_userid", "all")
    class Response(_message.Message):
        __slots__ = ("code", "accepted")
        CODE_FIELD_NUMBER: _ClassVar[int]
        ACCEPTED_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        accepted: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., accepted: _Optional[_Iterable[int]] = ...) -> None: ...
    FROM_USERID_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    from_userid: int
    all: bool
    def __init__(self, from_userid: _Optional[int] = ..., all: _Optional[bool] = ...) -> None: ...

class FriendReject(_message.Message):
    __slots__ = ("from_userid",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    FROM_USERID_FIELD_NUMBER: _ClassVar[int]
    from_userid: int
    def __init__(self, from_userid: _Optional[int] = ...) -> None: ...

class FriendRemove(_message.Message):
    __slots__ = ("userid",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USERID_FIELD_NUMBER: _ClassVar[int]
    userid: int
    def __init__(self, userid: _Optional[int] = ...) -> None: ...

class FriendBlock(_message.Message):
    __slots__ = ("userid",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USERID_FIELD_NUMBER: _ClassVar[int]
    userid: int
    def __init__(self, userid: _Optional[int] = ...) -> None: ...

class FriendUnblock(_message.Message):
    __slots__ = ("userid",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    USERID_FIELD_NUMBER: _ClassVar[int]
    userid: int
    def __init__(self, userid: _Optional[int] = ...) -> None: ...

class FriendList(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "friends", "requests_in", "requests_out", "blocked", "cap")
        CODE_FIELD_NUMBER: _ClassVar[int]
        FRIENDS_FIELD_NUMBER: _ClassVar[int]
        REQUESTS_IN_FIELD_NUMBER: _ClassVar[int]
        REQUESTS_OUT_FIELD_NUMBER: _ClassVar[int]
        BLOCKED_FIELD_NUMBER: _ClassVar[int]
        CAP_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        friends: _containers.RepeatedCompositeFieldContainer[FriendInfo]
        requests_in: _containers.RepeatedCompositeFieldContainer[FriendInfo]
        requests_out: _containers.RepeatedCompositeFieldContainer[FriendInfo]
        blocked: _containers.RepeatedScalarFieldContainer[int]
        cap: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., friends: _Optional[_Iterable[_Union[FriendInfo, _Mapping]]] = ..., requests_in: _Optional[_Iterable[_Union[FriendInfo, _Mapping]]] = ..., requests_out: _Optional[_Iterable[_Union[FriendInfo, _Mapping]]] = ..., blocked: _Optional[_Iterable[int]] = ..., cap: _Optional[int] = ...) -> None: ...
    def __init__(self) -> None: ...

class FriendNotify(_message.Message):
    __slots__ = ("event", "peer")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    event: FriendEvent
    peer: FriendInfo
    def __init__(self, event: _Optional[_Union[FriendEvent, str]] = ..., peer: _Optional[_Union[FriendInfo, _Mapping]] = ...) -> None: ...
