"""Where the cities of a merged map go on the target map: the target map's own placement.

:func:`world_placer` builds the :class:`~rltwist.merge.core.CityPlacer` ``rl-merge`` hands
to the merge: it loads the target map's stored entities into a
:class:`~rltwist.nodes.map.state.WorldState` of the target map's size (``[map]`` of the
config) and places each moved city as the map node places a new one
(``rltwist.game.worldsystem`` ``place_city``: the spiral from the map centre at
``cities.spacing`` of ``etc/game/world.toml``, the target's terrain, from the target's
placement cursor), so merged cities land where the target map would have put new ones and
never on a taken or blocked tile.

The world map's modules are imported when the placer is built: a version without them
has no placer (``None``), and a merged map with cities then refuses the merge.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from twisted.logger import Logger

from rltwist.config import Config
from rltwist.ecs.entity import Entity
from rltwist.merge.core import WORLD_META, CityPlacer
from rltwist.storage import Key

log = Logger()

DEFAULT_SPACING = 3
#: world documents that are not on the map (tombstones, march lines)
NOT_ON_MAP = frozenset({"deleted", "march"})


def _spacing(config: Config) -> int:
    """``cities.spacing`` of the world table the nodes read (``<hotreload.root>/etc/game``)."""
    path = os.path.join(config.hotreload.root, "etc", "game", "world.toml")
    try:
        with open(path, "rb") as f:
            return int(tomllib.load(f).get("cities", {}).get("spacing", DEFAULT_SPACING))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return DEFAULT_SPACING


def world_placer(config: Config, sid: int) -> CityPlacer | None:
    """The placement of map *sid* (the merge's target), or None without world support."""
    try:
        from rltwist.ecs import import_system
        from rltwist.nodes.map.state import WorldState
        map_for = getattr(config, "map").map_for  # noqa: B009  ([map] comes with the world)
        world_system = import_system("rltwist.game.worldsystem", service="merge")
    except (ImportError, AttributeError) as e:
        log.info("no world placement in this version ({e})", e=e)
        return None
    settings = map_for(sid)
    spacing = _spacing(config)

    def place(target: list[tuple[Key, dict[str, Any]]], count: int
              ) -> tuple[list[tuple[int, int]], dict[str, Any]]:
        state = WorldState(sid, settings.width, settings.height, settings.block)
        cursor = 0
        for key, doc in target:
            attrs = doc.get("attrs") or {}
            if key == WORLD_META:
                cursor = int(attrs.get("city_cursor", 0))
                continue
            if attrs.get("kind") in NOT_ON_MAP or not isinstance(key, int):
                continue
            try:
                state.add(Entity.from_doc({**doc, "_id": key}), quiet=True)
            except (ValueError, KeyError, TypeError):
                continue  # the map node skips such an entity at load too
        tiles: list[tuple[int, int]] = []
        for _ in range(count):
            placed = world_system.place_city(state, int(settings.seed or 0), cursor, spacing)
            if placed is None:
                break
            x, y, cursor = placed
            tiles.append((x, y))
            state.add(Entity(state.new_id(), attrs={"kind": "city", "x": x, "y": y,
                                                    "owner": 0}), quiet=True)
        return tiles, {"city_cursor": cursor}

    return place
