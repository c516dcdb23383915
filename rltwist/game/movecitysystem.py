"""Move-city system: the rules of MoveCity (issue 14 "Move city"; docs/world.md "Moving a
city") — what the role node checks before it starts a move, what the move's transfer does
to the player, how long the source map waits before it tries an unreachable target again.

Nothing here does I/O or keeps state; the role feature (``rltwist.features.movecity``)
and the map's saga (``rltwist.nodes.map.movecity``) call these through ``import_system``
so ``POST /hotfix`` changes them. The table is ``etc/game/movecity.toml``
(``sharedata().snapshot["movecity"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rltwist.ecs.system import System
from rltwist.game.tables import RESOURCES
from rltwist.protocols import pb

__all__ = ["BACKOFF_MAX", "MoveCitySystem", "system"]

E = pb.ErrorCode
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
MAX_COORD = 1 << 20


class MoveCitySystem(System):
    """MoveCity's rules (module docstring)."""

    def cost(self, table: Mapping[str, Any] | None) -> dict[str, int]:
        """What one move costs (``[cost]`` of the table; nothing without a table)."""
        if table is None:
            return {}
        return {k: int(v) for k, v in (table.get("cost") or {}).items() if int(v) > 0}

    def check_start(self, entity: Any, mapid: int, target: int, x: int, y: int,
                    cost: Mapping[str, int]) -> int:
        """The role node's checks before a move starts: 0, or the refusal code. The
        source map checks the marches and the city; the target map checks the tile."""
        if not 0 <= x < MAX_COORD or not 0 <= y < MAX_COORD or target <= 0:
            return int(E.BAD_REQUEST)
        if target == mapid:
            return int(E.MOVE_BAD_REGION)
        if any(int(entity.get(res, 0)) < amount for res, amount in cost.items()):
            return int(E.MOVE_NO_RESOURCES)
        return 0

    def apply_moved(self, entity: Any, items: Mapping[str, Any]) -> None:
        """Apply the move's transfer to the player: ``mapid`` becomes the target map,
        ``prevmapid`` the source (march returns left there are still pulled from it), the
        cost is taken (down to 0 of a resource spent since the start: the city has moved,
        the move cannot fail now), and the move's request id is forgotten."""
        mapid, src = int(items["mapid"]), int(items["from"])
        if mapid <= 0:
            raise ValueError(f"bad mapid {mapid!r}")
        entity["mapid"] = mapid
        entity["prevmapid"] = src
        for res, amount in (items.get("cost") or {}).items():
            if res in RESOURCES and amount:
                entity[res] = max(0, int(entity.get(res, 0)) - int(amount))
        pending = entity.get("movecity")
        if pending and pending.get("req") == items.get("req"):
            entity["movecity"] = None

    def backoff(self, attempt: int) -> float:
        """Seconds before try *attempt* (1, 2, ...) of a step whose other map did not
        answer: 0.5 s doubling up to 30 s."""
        return float(min(BACKOFF_MAX, BACKOFF_FIRST * (2 ** max(0, attempt - 1))))


system = MoveCitySystem()
