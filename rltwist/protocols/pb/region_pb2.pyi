from . import errors_pb2 as _errors_pb2
from . import map_pb2 as _map_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegionInfo(_message.Message):
    __slots__ = ("sid", "opened_ms")
    SID_FIELD_NUMBER: _ClassVar[int]
    OPENED_MS_FIELD_NUMBER: _ClassVar[int]
    sid: int
    opened_ms: int
    def __init__(self, sid: _Optional[int] = ..., opened_ms: _Optional[int] = ...) -> None: ...

class RegionList(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "regions", "recommended")
        CODE_FIELD_NUMBER: _ClassVar[int]
        REGIONS_FIELD_NUMBER: _ClassVar[int]
        RECOMMENDED_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        regions: _containers.RepeatedCompositeFieldContainer[RegionInfo]
        recommended: int
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., regions: _Optional[_Iterable[_Union[RegionInfo, _Mapping]]] = ..., recommended: _Optional[int] = ...) -> None: ...
    def __init__(self) -> None: ...

class MoveCity(_message.Message):
    __slots__ = ("target_sid", "x", "y")
    class Response(_message.Message):
        __slots__ = ("code", "map_id", "city")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MAP_ID_FIELD_NUMBER: _ClassVar[int]
        CITY_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        map_id: int
        city: _map_pb2.MapEntity
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., map_id: _Optional[int] = ..., city: _Optional[_Union[_map_pb2.MapEntity, _Mapping]] = ...) -> None: ...
    TARGET_SID_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    target_sid: int
    x: int
    y: int
    def __init__(self, target_sid: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ...) -> None: ...
