"""Result codes returned by game systems to the client-facing handlers."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ErrCode"]


class ErrCode(IntEnum):
    """0 is success; the hundreds group codes by system."""

    OK = 0

    NAME_TOO_SHORT = 101
    NAME_TOO_LONG = 102
    NAME_BAD_CHAR = 103
    NAME_FORBIDDEN = 104
    NAME_UNCHANGED = 105

    RES_UNKNOWN = 201
    RES_BAD_AMOUNT = 202
    RES_NOT_ENOUGH = 203

    BUILDING_UNKNOWN = 301
    BUILDING_MAX_LEVEL = 302
