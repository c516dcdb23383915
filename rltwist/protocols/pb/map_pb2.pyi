from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MapEntityKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MAP_ENTITY_UNSPECIFIED: _ClassVar[MapEntityKind]
    MAP_CITY: _ClassVar[MapEntityKind]
    MAP_RESOURCE: _ClassVar[MapEntityKind]
    MAP_MONSTER: _ClassVar[MapEntityKind]

class MarchType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARCH_TYPE_UNSPECIFIED: _ClassVar[MarchType]
    MARCH_GATHER: _ClassVar[MarchType]
    MARCH_ATTACK: _ClassVar[MarchType]

class MarchState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MARCH_STATE_UNSPECIFIED: _ClassVar[MarchState]
    MARCH_OUTBOUND: _ClassVar[MarchState]
    MARCH_STAYING: _ClassVar[MarchState]
    MARCH_RETURNING: _ClassVar[MarchState]
MAP_ENTITY_UNSPECIFIED: MapEntityKind
MAP_CITY: MapEntityKind
MAP_RESOURCE: MapEntityKind
MAP_MONSTER: MapEntityKind
MARCH_TYPE_UNSPECIFIED: MarchType
MARCH_GATHER: MarchType
MARCH_ATTACK: MarchType
MARCH_STATE_UNSPECIFIED: MarchState
MARCH_OUTBOUND: MarchState
MARCH_STAYING: MarchState
MARCH_RETURNING: MarchState

class MapInfo(_message.Message):
    __slots__ = ("map_id", "width", "height", "seed", "block")
    MAP_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BLOCK_FIELD_NUMBER: _ClassVar[int]
    map_id: int
    width: int
    height: int
    seed: int
    block: int
    def __init__(self, map_id: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., block: _Optional[int] = ...) -> None: ...

class MapEntity(_message.Message):
    __slots__ = ("id", "kind", "x", "y", "owner_user_id", "owner_name", "level", "resource", "amount", "guild_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    OWNER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_NAME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    kind: MapEntityKind
    x: int
    y: int
    owner_user_id: int
    owner_name: str
    level: int
    resource: str
    amount: int
    guild_id: int
    def __init__(self, id: _Optional[int] = ..., kind: _Optional[_Union[MapEntityKind, str]] = ..., x: _Optional[int] = ..., y: _Optional[int] = ..., owner_user_id: _Optional[int] = ..., owner_name: _Optional[str] = ..., level: _Optional[int] = ..., resource: _Optional[str] = ..., amount: _Optional[int] = ..., guild_id: _Optional[int] = ...) -> None: ...

class MarchLine(_message.Message):
    __slots__ = ("march_id", "owner_user_id", "type", "state", "from_x", "from_y", "to_x", "to_y", "start_ms", "arrive_ms", "speed", "troops")
    MARCH_ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_USER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_X_FIELD_NUMBER: _ClassVar[int]
    FROM_Y_FIELD_NUMBER: _ClassVar[int]
    TO_X_FIELD_NUMBER: _ClassVar[int]
    TO_Y_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    ARRIVE_MS_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    TROOPS_FIELD_NUMBER: _ClassVar[int]
    march_id: int
    owner_user_id: int
    type: MarchType
    state: MarchState
    from_x: int
    from_y: int
    to_x: int
    to_y: int
    start_ms: int
    arrive_ms: int
    speed: float
    troops: int
    def __init__(self, march_id: _Optional[int] = ..., owner_user_id: _Optional[int] = ..., type: _Optional[_Union[MarchType, str]] = ..., state: _Optional[_Union[MarchState, str]] = ..., from_x: _Optional[int] = ..., from_y: _Optional[int] = ..., to_x: _Optional[int] = ..., to_y: _Optional[int] = ..., start_ms: _Optional[int] = ..., arrive_ms: _Optional[int] = ..., speed: _Optional[float] = ..., troops: _Optional[int] = ...) -> None: ...

class MapView(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    class Response(_message.Message):
        __slots__ = ("code", "info", "blocks", "added_blocks", "removed_blocks", "entities", "marches", "removed_marches")
        CODE_FIELD_NUMBER: _ClassVar[int]
        INFO_FIELD_NUMBER: _ClassVar[int]
        BLOCKS_FIELD_NUMBER: _ClassVar[int]
        ADDED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
        REMOVED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
        ENTITIES_FIELD_NUMBER: _ClassVar[int]
        MARCHES_FIELD_NUMBER: _ClassVar[int]
        REMOVED_MARCHES_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        info: MapInfo
        blocks: _containers.RepeatedScalarFieldContainer[int]
        added_blocks: _containers.RepeatedScalarFieldContainer[int]
        removed_blocks: _containers.RepeatedScalarFieldContainer[int]
        entities: _containers.RepeatedCompositeFieldContainer[MapEntity]
        marches: _containers.RepeatedCompositeFieldContainer[MarchLine]
        removed_marches: _containers.RepeatedScalarFieldContainer[int]
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., info: _Optional[_Union[MapInfo, _Mapping]] = ..., blocks: _Optional[_Iterable[int]] = ..., added_blocks: _Optional[_Iterable[int]] = ..., removed_blocks: _Optional[_Iterable[int]] = ..., entities: _Optional[_Iterable[_Union[MapEntity, _Mapping]]] = ..., marches: _Optional[_Iterable[_Union[MarchLine, _Mapping]]] = ..., removed_marches: _Optional[_Iterable[int]] = ...) -> None: ...
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class MapViewClear(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    def __init__(self) -> None: ...

class MapMyCity(_message.Message):
    __slots__ = ()
    class Response(_message.Message):
        __slots__ = ("code", "info", "city")
        CODE_FIELD_NUMBER: _ClassVar[int]
        INFO_FIELD_NUMBER: _ClassVar[int]
        CITY_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        info: MapInfo
        city: MapEntity
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ..., info: _Optional[_Union[MapInfo, _Mapping]] = ..., city: _Optional[_Union[MapEntity, _Mapping]] = ...) -> None: ...
    def __init__(self) -> None: ...

class MapNotify(_message.Message):
    __slots__ = ("map_id", "appeared", "updated", "disappeared", "marches", "marches_ended", "reset")
    MAP_ID_FIELD_NUMBER: _ClassVar[int]
    APPEARED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    DISAPPEARED_FIELD_NUMBER: _ClassVar[int]
    MARCHES_FIELD_NUMBER: _ClassVar[int]
    MARCHES_ENDED_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    map_id: int
    appeared: _containers.RepeatedCompositeFieldContainer[MapEntity]
    updated: _containers.RepeatedCompositeFieldContainer[MapEntity]
    disappeared: _containers.RepeatedScalarFieldContainer[int]
    marches: _containers.RepeatedCompositeFieldContainer[MarchLine]
    marches_ended: _containers.RepeatedScalarFieldContainer[int]
    reset: bool
    def __init__(self, map_id: _Optional[int] = ..., appeared: _Optional[_Iterable[_Union[MapEntity, _Mapping]]] = ..., updated: _Optional[_Iterable[_Union[MapEntity, _Mapping]]] = ..., disappeared: _Optional[_Iterable[int]] = ..., marches: _Optional[_Iterable[_Union[MarchLine, _Mapping]]] = ..., marches_ended: _Optional[_Iterable[int]] = ..., reset: _Optional[bool] = ...) -> None: ...
