"""Role system: a player's name and resources.

The name and resources are basic attributes of the role entity (``entity["name"]``,
``entity["gold"]`` …, as in the seed's role entity).  Name uniqueness is not checked here:
the caller reserves ``name_key(name)`` in storage between ``check_name`` and ``rename``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.ecs.system import System
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import RESOURCES, char_class

__all__ = ["RoleSystem", "system"]


class RoleSystem(System):
    name = "role"

    def normalize_name(self, name: str) -> str:
        """The form a name is checked and stored in (Unicode NFC)."""
        return unicodedata.normalize("NFC", name)

    def name_key(self, name: str) -> str:
        """Key for the uniqueness index: names equal up to case/width share one key."""
        return unicodedata.normalize("NFKC", name).casefold()

    def check_name(self, name: str, tables: Mapping[str, Any]) -> ErrCode:
        """Check ``name`` against the ``name_rules`` table (length, characters, words).

        Wide characters (CJK, kana, hangul) count ``wide_char_width`` towards the length.
        """
        rules = tables["name_rules"]
        name = self.normalize_name(name)
        allowed = set(rules["charsets"])
        extra = rules.get("extra_chars", "")
        wide_width = rules.get("wide_char_width", 1)
        length = 0
        for i, ch in enumerate(name):
            cls = char_class(ch)
            if cls is not None and cls[0] in allowed:
                length += wide_width if cls[1] else 1
            elif ch in extra and i > 0:
                length += 1
            else:
                return ErrCode.NAME_BAD_CHAR
        if length < rules["min_length"]:
            return ErrCode.NAME_TOO_SHORT
        if length > rules["max_length"]:
            return ErrCode.NAME_TOO_LONG
        key = self.name_key(name)
        if any(word.casefold() in key for word in rules.get("forbidden", ())):
            return ErrCode.NAME_FORBIDDEN
        return ErrCode.OK

    def rename(self, entity: Entity, name: str, tables: Mapping[str, Any]) -> ErrCode:
        """Validate ``name`` and set it on the role; uniqueness is the caller's job."""
        name = self.normalize_name(name)
        if name == entity.get("name"):
            return ErrCode.NAME_UNCHANGED
        code = self.check_name(name, tables)
        if code == ErrCode.OK:
            entity["name"] = name
        return code

    def resources(self, entity: Entity) -> dict[str, int]:
        """The role's resource amounts (missing ones are 0)."""
        return {res: entity.get(res, 0) for res in RESOURCES}

    def _check_amounts(self, amounts: Mapping[str, int]) -> ErrCode:
        for res, amount in amounts.items():
            if res not in RESOURCES:
                return ErrCode.RES_UNKNOWN
            if type(amount) is not int or amount < 0:
                return ErrCode.RES_BAD_AMOUNT
        return ErrCode.OK

    def add_resources(self, entity: Entity, amounts: Mapping[str, int]) -> ErrCode:
        """Add non-negative ``amounts`` ({"gold": 100, ...}); all or nothing."""
        code = self._check_amounts(amounts)
        if code == ErrCode.OK:
            for res, amount in amounts.items():
                if amount:
                    entity.incr(res, amount)
        return code

    def spend_resources(self, entity: Entity, costs: Mapping[str, int]) -> ErrCode:
        """Take ``costs`` if the role has all of them; otherwise change nothing."""
        code = self._check_amounts(costs)
        if code != ErrCode.OK:
            return code
        if any(entity.get(res, 0) < amount for res, amount in costs.items()):
            return ErrCode.RES_NOT_ENOUGH
        for res, amount in costs.items():
            if amount:
                entity.incr(res, -amount)
        return ErrCode.OK


system = RoleSystem()
