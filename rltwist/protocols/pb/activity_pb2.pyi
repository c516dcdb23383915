from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActivityEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTIVITY_STARTED: _ClassVar[ActivityEvent]
    ACTIVITY_ENDED: _ClassVar[ActivityEvent]
    ACTIVITY_EXTENDED: _ClassVar[ActivityEvent]
ACTIVITY_STARTED: ActivityEvent
ACTIVITY_ENDED: ActivityEvent
ACTIVITY_EXTENDED: ActivityEvent

class Activity(_message.Message):
    __slots__ = ("id", "kind", "title", "start_ms", "end_ms", "regions", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: str
    title: str
    start_ms: int
    end_ms: int
    regions: _containers.RepeatedScalarFieldContainer[int]
    params: _containers.ScalarMap[str, int]
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[str] = ..., title: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., regions: _Optional[_Iterable[int]] = ..., params: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ActivityList(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "activities")
        CODE_FIELD_NUMBER: _ClassVar[int]
        ACTIVITIES_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        activities: _containers.RepeatedCompositeFieldContainer[Activity]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., activities: _Optional[_Iterable[_Union[Activity, _Mapping]]] = ...) -> None: ...
    def __init__(self) -> None: ...

class ActivityNotify(_message.Message):
    __slots__ = ("event", "activity")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    event: ActivityEvent
    activity: Activity
    def __init__(self, event: _Optional[_Union[ActivityEvent, str]] = ..., activity: _Optional[_Union[Activity, _Mapping]] = ...) -> None: ...
