"""Building system: building levels in the role's ``building`` component.

Upgrades pay the ``building_costs`` table through the role system (reached via the
registry, so a hotfix of either system is picked up here).  Build times (``seconds``) are
in the table but not modelled yet: an upgrade completes at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.ecs.registry import import_system
from rltwist.ecs.system import System
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import RESOURCES

__all__ = ["BuildingSystem", "system"]

rolesystem = import_system("rltwist.game.rolesystem")


class BuildingSystem(System):
    name = "building"

    def level(self, entity: Entity, building: str) -> int:
        """Current level of ``building`` (0 = not built)."""
        return entity.components.get(self.name, {}).get(building, 0)

    def upgrade(self, entity: Entity, building: str, tables: Mapping[str, Any]) -> ErrCode:
        """Pay for and raise ``building`` by one level (level 1 = build it)."""
        levels = tables["building_costs"].get(building)
        if levels is None:
            return ErrCode.BUILDING_UNKNOWN
        target = self.level(entity, building) + 1
        if target > len(levels):
            return ErrCode.BUILDING_MAX_LEVEL
        entry = levels[target - 1]
        code = rolesystem.spend_resources(
            entity, {res: entry[res] for res in RESOURCES if res in entry}
        )
        if code == ErrCode.OK:
            self.component(entity)[building] = target
            entity.mark_dirty()
        return code


system = BuildingSystem()
