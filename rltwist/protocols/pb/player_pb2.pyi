from . import errors_pb2 as _errors_pb2
from . import options_pb2 as _options_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlayerBasics(_message.Message):
    __slots__ = ("level", "exp", "vip", "avatar", "power", "gold", "food", "oil", "map_id", "city_x", "city_y", "guild_id", "create_time_ms")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EXP_FIELD_NUMBER: _ClassVar[int]
    VIP_FIELD_NUMBER: _ClassVar[int]
    AVATAR_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    GOLD_FIELD_NUMBER: _ClassVar[int]
    FOOD_FIELD_NUMBER: _ClassVar[int]
    OIL_FIELD_NUMBER: _ClassVar[int]
    MAP_ID_FIELD_NUMBER: _ClassVar[int]
    CITY_X_FIELD_NUMBER: _ClassVar[int]
    CITY_Y_FIELD_NUMBER: _ClassVar[int]
    GUILD_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    level: int
    exp: int
    vip: int
    avatar: int
    power: int
    gold: int
    food: int
    oil: int
    map_id: int
    city_x: int
    city_y: int
    guild_id: int
    create_time_ms: int
    def __init__(self, level: _Optional[int] = ..., exp: _Optional[int] = ..., vip: _Optional[int] = ..., avatar: _Optional[int] = ..., power: _Optional[int] = ..., gold: _Optional[int] = ..., food: _Optional[int] = ..., oil: _Optional[int] = ..., map_id: _Optional[int] = ..., city_x: _Optional[int] = ..., city_y: _Optional[int] = ..., guild_id: _Optional[int] = ..., create_time_ms: _Optional[int] = ...) -> None: ...

class Rename(_message.Message):
    __slots__ = ("name",)
    class Response(_message.Message):
        __slots__ = ("code",)
        CODE_FIELD_NUMBER: _ClassVar[int]
        code: _errors_pb2.ErrorCode
        def __init__(self, code: _Optional[_Union[_errors_pb2.ErrorCode, str]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
