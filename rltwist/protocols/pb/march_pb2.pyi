from . import errors_pb2 as _errors_pb2
from . import map_pb2 as _map_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MarchEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARCH_EVENT_UNSPECIFIED: _ClassVar[MarchEvent]
    MARCH_GATHERING: _ClassVar[MarchEvent]
    MARCH_RETURNING_HOME: _ClassVar[MarchEvent]
    MARCH_HOME: _ClassVar[MarchEvent]
MARCH_EVENT_UNSPECIFIED: MarchEvent
MARCH_GATHERING: MarchEvent
MARCH_RETURNING_HOME: MarchEvent
MARCH_HOME: MarchEvent

class TroopCount(_message.Message):
    __slots__ = ("type", "count")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    type: str
    count: int
    def __init__(self, type: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class MarchInfo(_message.Message):
    __slots__ = ("line", "troops", "load", "target_id")
    class LoadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LINE_FIELD_NUMBER: _ClassVar[int]
    TROOPS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    line: _map_pb2.MarchLine
    troops: _containers.RepeatedCompositeFieldContainer[TroopCount]
    load: _containers.ScalarMap[str, int]
    target_id: int
    def __init__(self, line: _Optional[_Union[_map_pb2.MarchLine, _Mapping]] = ..., troops: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ..., load: _Optional[_Mapping[str, int]] = ..., target_id: _Optional[int] = ...) -> None: ...

class MarchStart(_message.Message):
    __slots__ = ("type", "target_x", "target_y", "troops")
    class Response(_message.Message):
        __slots__ = ("code", "march", "home_troops")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MARCH_FIELD_NUMBER: _ClassVar[int]
        HOME_TROOPS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        march: MarchInfo
        home_troops: _containers.RepeatedCompositeFieldContainer[TroopCount]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., march: _Optional[_Union[MarchInfo, _Mapping]] = ..., home_troops: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_X_FIELD_NUMBER: _ClassVar[int]
    TARGET_Y_FIELD_NUMBER: _ClassVar[int]
    TROOPS_FIELD_NUMBER: _ClassVar[int]
    type: _map_pb2.MarchType
    target_x: int
    target_y: int
    troops: _containers.RepeatedCompositeFieldContainer[TroopCount]
    def __init__(self, type: _Optional[_Union[_map_pb2.MarchType, str]] = ..., target_x: _Optional[int] = ..., target_y: _Optional[int] = ..., troops: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ...) -> None: ...

class MarchRecall(_message.Message):
    __slots__ = ("march_id",)
    class Response(_message.Message):
        __slots__ = ("code", "march")
        CODE_FIELD_NUMBER: _ClassVar[int]
        MARCH_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        march: MarchInfo
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., march: _Optional[_Union[MarchInfo, _Mapping]] = ...) -> None: ...
    MARCH_ID_FIELD_NUMBER: _ClassVar[int]
    march_id: int
    def __init__(self, march_id: _Optional[int] = ...) -> None: ...

class MarchList(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "home_troops", "marches", "city")
        CODE_FIELD_NUMBER: _ClassVar[int]
        HOME_TROOPS_FIELD_NUMBER: _ClassVar[int]
        MARCHES_FIELD_NUMBER: _ClassVar[int]
        CITY_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        home_troops: _containers.RepeatedCompositeFieldContainer[TroopCount]
        marches: _containers.RepeatedCompositeFieldContainer[MarchInfo]
        city: _map_pb2.MapEntity
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., home_troops: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ..., marches: _Optional[_Iterable[_Union[MarchInfo, _Mapping]]] = ..., city: _Optional[_Union[_map_pb2.MapEntity, _Mapping]] = ...) -> None: ...
    def __init__(self) -> None: ...

class MarchTargets(_message.Message):
    __slots__ = ("x", "y", "radius", "around_city")
    class Response(_message.Message):
        __slots__ = ("code", "targets")
        CODE_FIELD_NUMBER: _ClassVar[int]
        TARGETS_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        targets: _containers.RepeatedCompositeFieldContainer[_map_pb2.MapEntity]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., targets: _Optional[_Iterable[_Union[_map_pb2.MapEntity, _Mapping]]] = ...) -> None: ...
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    AROUND_CITY_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    radius: int
    around_city: bool
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., radius: _Optional[int] = ..., around_city: _Optional[bool] = ...) -> None: ...

class MarchNotify(_message.Message):
    __slots__ = ("event", "march")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MARCH_FIELD_NUMBER: _ClassVar[int]
    event: MarchEvent
    march: MarchInfo
    def __init__(self, event: _Optional[_Union[MarchEvent, str]] = ..., march: _Optional[_Union[MarchInfo, _Mapping]] = ...) -> None: ...

class BattleReportNotify(_message.Message):
    __slots__ = ("march_id", "monster_id", "monster_level", "x", "y", "won", "rounds", "seed", "troops_before", "troops_lost", "monster_troops", "monster_lost", "rewards", "time_ms")
    class RewardsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MARCH_ID_FIELD_NUMBER: _ClassVar[int]
    MONSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MONSTER_LEVEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WON_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TROOPS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TROOPS_LOST_FIELD_NUMBER: _ClassVar[int]
    MONSTER_TROOPS_FIELD_NUMBER: _ClassVar[int]
    MONSTER_LOST_FIELD_NUMBER: _ClassVar[int]
    REWARDS_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    march_id: int
    monster_id: int
    monster_level: int
    x: int
    y: int
    won: bool
    rounds: int
    seed: int
    troops_before: _containers.RepeatedCompositeFieldContainer[TroopCount]
    troops_lost: _containers.RepeatedCompositeFieldContainer[TroopCount]
    monster_troops: int
    monster_lost: int
    rewards: _containers.ScalarMap[str, int]
    time_ms: int
    def __init__(self, march_id: _Optional[int] = ..., monster_id: _Optional[int] = ..., monster_level: _Optional[int] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., won: _Optional[bool] = ..., rounds: _Optional[int] = ..., seed: _Optional[int] = ..., troops_before: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ..., troops_lost: _Optional[_Iterable[_Union[TroopCount, _Mapping]]] = ..., monster_troops: _Optional[int] = ..., monster_lost: _Optional[int] = ..., rewards: _Optional[_Mapping[str, int]] = ..., time_ms: _Optional[int] = ...) -> None: ...
