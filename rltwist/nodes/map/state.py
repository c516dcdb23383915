"""The in-memory world of one map node: entities and march lines indexed by tile and block.

    state = WorldState(map_id, width, height, block=16)
    state.add(entity)                  # a city / resource point / monster appears
    state.update(entity, amount=5)     # attributes change (x/y too: it moves tile)
    state.remove(entity_id)            # it disappears
    state.add_march(march)             # a march line starts (or replaces its line: a turn)
    state.remove_march(march_id)       # the march ended
    state.at(x, y)                     # the entity on a tile, or None
    state.in_blocks(blocks)            # (entities, marches) touching those blocks
    state.listeners.append(f)          # f(event, entity, blocks) after every change

World entities are :class:`~rltwist.ecs.entity.Entity` objects (so the saver saves them,
data fixes apply to them) with the attributes below; the id is an integer unique on the
map (:meth:`WorldState.new_id`), its ``Entity.id``.

    every entity: kind ("city" | "resource" | "monster" | "march"), x, y
    city:         owner (userid), name, level, guildid
    resource:     resource ("food" | "gold" | "oil"), level, amount, owner (gatherer or 0)
    monster:      level
    march:        owner, type ("gather" | "attack"), state ("outbound" | "staying" |
                  "returning"), from_x, from_y, to_x, to_y, start_ms, arrive_ms, speed
                  (tiles/s), troops; x, y are the line's start (from_x, from_y)

Blocks are squares of ``block`` tiles numbered ``by * blocks_x + bx``. A march touches the
blocks its segment crosses (:func:`blocks_of_segment`). Listeners get, after each change,
``(event, entity, blocks)`` with event one of APPEAR, UPDATE, DISAPPEAR (entities),
MARCH, MARCH_END (march lines); *blocks* are the blocks whose watchers must hear of it (for
an entity that moved: the old block and the new; for a line that turned: the old line's
blocks and the new one's). The AOI (aoiscene) is such a listener.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.protocols import pb

APPEAR, UPDATE, DISAPPEAR, MARCH, MARCH_END = "appear", "update", "disappear", "march", "march_end"

K, T, S = pb.MapEntityKind, pb.MarchType, pb.MarchState
KINDS = {"city": K.MAP_CITY, "resource": K.MAP_RESOURCE, "monster": K.MAP_MONSTER}
MARCH_TYPES = {"gather": T.MARCH_GATHER, "attack": T.MARCH_ATTACK}
MARCH_STATES = {"outbound": S.MARCH_OUTBOUND, "staying": S.MARCH_STAYING,
                "returning": S.MARCH_RETURNING}

Listener = Callable[[str, Entity, frozenset[int]], None]


def blocks_of_rect(x: int, y: int, width: int, height: int, block: int, width_tiles: int,
                   height_tiles: int) -> frozenset[int]:
    """The blocks covering the tiles [x, x+width) x [y, y+height), clamped to the map."""
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(width_tiles, x + width) - 1, min(height_tiles, y + height) - 1
    if x1 < x0 or y1 < y0:
        return frozenset()
    bxs = range(x0 // block, x1 // block + 1)
    per_row = -(-width_tiles // block)
    return frozenset(by * per_row + bx for by in range(y0 // block, y1 // block + 1)
                     for bx in bxs)


def blocks_of_segment(x0: float, y0: float, x1: float, y1: float, block: int,
                      width_tiles: int) -> frozenset[int]:
    """The blocks the segment from the centre of tile (x0, y0) to the centre of tile
    (x1, y1) touches (grid traversal over blocks: exact, every block whose closed square
    the line meets, including both ends and the four blocks around a corner the line
    passes through).

    Exact integer arithmetic: coordinates are doubled, so tile centres are the odd
    numbers ``2x + 1`` and block edges the multiples of ``2 * block``; which edge the line
    meets first is decided by cross-multiplying, never by comparing rounded floats (a
    float walk misses corners when the block is not a power of two, or the slope's
    reciprocal is not a binary fraction)."""
    per_row = -(-width_tiles // block)
    side = 2 * block
    px, py = 2 * int(x0) + 1, 2 * int(y0) + 1
    qx, qy = 2 * int(x1) + 1, 2 * int(y1) + 1
    cx, cy = px // side, py // side
    ex, ey = qx // side, qy // side
    found = {cy * per_row + cx}
    dx, dy = qx - px, qy - py
    adx, ady = abs(dx), abs(dy)
    step_x = 1 if dx > 0 else -1
    step_y = 1 if dy > 0 else -1
    # distance along each axis from the start to the next block edge the line meets
    # (centres are odd, edges even: never 0); the line meets it at t = nx / adx
    nx = ((cx + 1) * side - px) if dx > 0 else (px - cx * side)
    ny = ((cy + 1) * side - py) if dy > 0 else (py - cy * side)
    while (cx, cy) != (ex, ey):
        if ady == 0 or (adx and nx * ady < ny * adx):
            cx += step_x
            nx += side
        elif adx == 0 or ny * adx < nx * ady:
            cy += step_y
            ny += side
        else:  # through a corner: the line touches both side blocks too
            found.add(cy * per_row + cx + step_x)
            found.add((cy + step_y) * per_row + cx)
            cx += step_x
            cy += step_y
            nx += side
            ny += side
        found.add(cy * per_row + cx)
    return frozenset(found)


class WorldState:
    """Entities and march lines of one map, by id, tile and block (module docstring)."""

    def __init__(self, map_id: int, width: int, height: int, block: int = 16) -> None:
        self.map_id = map_id
        self.width, self.height, self.block = width, height, block
        self.blocks_x = -(-width // block)
        self.entities: dict[int, Entity] = {}
        self.marches: dict[int, Entity] = {}
        self.tiles: dict[tuple[int, int], int] = {}
        self.by_block: dict[int, set[int]] = {}
        self.march_blocks: dict[int, frozenset[int]] = {}
        self.marches_by_block: dict[int, set[int]] = {}
        self.cities: dict[int, int] = {}  # owner userid -> city entity id
        self.listeners: list[Listener] = []
        self.last_id = 0

    # -- ids, geometry ------------------------------------------------------------------

    def new_id(self) -> int:
        """An entity id not used on this map (the caller persists ``last_id``)."""
        self.last_id += 1
        return self.last_id

    def inside(self, x: int, y: int) -> bool:
        return 0 <= x < self.width and 0 <= y < self.height

    def block_of(self, x: int, y: int) -> int:
        return (y // self.block) * self.blocks_x + x // self.block

    def blocks_of_rect(self, x: int, y: int, width: int, height: int) -> frozenset[int]:
        return blocks_of_rect(x, y, width, height, self.block, self.width, self.height)

    def blocks_of_march(self, march: Entity) -> frozenset[int]:
        return blocks_of_segment(march["from_x"], march["from_y"], march["to_x"],
                                 march["to_y"], self.block, self.width)

    # -- entities -----------------------------------------------------------------------

    def at(self, x: int, y: int) -> Entity | None:
        eid = self.tiles.get((x, y))
        return None if eid is None else self.entities[eid]

    def city_of(self, userid: int) -> Entity | None:
        eid = self.cities.get(userid)
        return None if eid is None else self.entities.get(eid)

    def add(self, entity: Entity, *, quiet: bool = False) -> None:
        """Put *entity* on its tile (which must be free and inside the map). *quiet*: do
        not tell the listeners (loading at start)."""
        eid, x, y = int(entity.id), entity["x"], entity["y"]
        if eid in self.entities:
            raise ValueError(f"entity {eid} is on the map already")
        if not self.inside(x, y):
            raise ValueError(f"entity {eid}: tile ({x}, {y}) is outside the map")
        if (x, y) in self.tiles:
            raise ValueError(f"entity {eid}: tile ({x}, {y}) is taken")
        self.entities[eid] = entity
        self.tiles[(x, y)] = eid
        self.by_block.setdefault(self.block_of(x, y), set()).add(eid)
        if entity["kind"] == "city":
            self.cities[entity["owner"]] = eid
        self.last_id = max(self.last_id, eid)
        if not quiet:
            self._tell(APPEAR, entity, frozenset((self.block_of(x, y),)))

    def update(self, entity: Entity, **changes: Any) -> None:
        """Change attributes of an entity on the map (a move to another tile too)."""
        eid = int(entity.id)
        old = (entity["x"], entity["y"])
        new = (changes.get("x", old[0]), changes.get("y", old[1]))
        if new != old:
            if not self.inside(*new):
                raise ValueError(f"entity {eid}: tile {new} is outside the map")
            if new in self.tiles:
                raise ValueError(f"entity {eid}: tile {new} is taken")
        for key, value in changes.items():
            entity[key] = value
        blocks = {self.block_of(*old)}
        if new != old:
            del self.tiles[old]
            self.tiles[new] = eid
            self._unindex(eid, self.block_of(*old))
            nb = self.block_of(*new)
            self.by_block.setdefault(nb, set()).add(eid)
            blocks.add(nb)
        self._tell(UPDATE, entity, frozenset(blocks))

    def remove(self, eid: int) -> Entity | None:
        entity = self.entities.pop(eid, None)
        if entity is None:
            return None
        xy = (entity["x"], entity["y"])
        del self.tiles[xy]
        block = self.block_of(*xy)
        self._unindex(eid, block)
        if entity["kind"] == "city" and self.cities.get(entity["owner"]) == eid:
            del self.cities[entity["owner"]]
        self._tell(DISAPPEAR, entity, frozenset((block,)))
        return entity

    def _unindex(self, eid: int, block: int) -> None:
        members = self.by_block.get(block)
        if members is not None:
            members.discard(eid)
            if not members:
                del self.by_block[block]

    # -- marches ------------------------------------------------------------------------

    def add_march(self, march: Entity, *, quiet: bool = False) -> None:
        """Start the line of *march*, or replace its earlier line (a turn): watchers of the
        old line's blocks and of the new one's hear of it."""
        mid = int(march.id)
        old = self.march_blocks.get(mid, frozenset())
        for b in old:
            self._unindex_march(mid, b)
        blocks = self.blocks_of_march(march)
        self.marches[mid] = march
        self.march_blocks[mid] = blocks
        for b in blocks:
            self.marches_by_block.setdefault(b, set()).add(mid)
        self.last_id = max(self.last_id, mid)
        if not quiet:
            self._tell(MARCH, march, old | blocks)

    def remove_march(self, mid: int) -> Entity | None:
        march = self.marches.pop(mid, None)
        if march is None:
            return None
        blocks = self.march_blocks.pop(mid)
        for b in blocks:
            self._unindex_march(mid, b)
        self._tell(MARCH_END, march, blocks)
        return march

    def _unindex_march(self, mid: int, block: int) -> None:
        members = self.marches_by_block.get(block)
        if members is not None:
            members.discard(mid)
            if not members:
                del self.marches_by_block[block]

    # -- views --------------------------------------------------------------------------

    def in_blocks(self, blocks: Iterable[int]) -> tuple[list[Entity], list[Entity]]:
        """The entities on, and the march lines touching, *blocks* (each once)."""
        entities: list[Entity] = []
        mids: set[int] = set()
        for b in blocks:
            ids = self.by_block.get(b)
            if ids:
                entities.extend(self.entities[i] for i in ids)
            m = self.marches_by_block.get(b)
            if m:
                mids.update(m)
        return entities, [self.marches[i] for i in mids]

    def _tell(self, event: str, entity: Entity, blocks: frozenset[int]) -> None:
        for listener in list(self.listeners):
            listener(event, entity, blocks)


def entity_pb(entity: Entity) -> Any:
    """The client's MapEntity of a world entity."""
    return pb.MapEntity(
        id=int(entity.id), kind=KINDS.get(entity["kind"], K.MAP_ENTITY_UNSPECIFIED),
        x=entity["x"], y=entity["y"], owner_user_id=entity.get("owner", 0) or 0,
        owner_name=entity.get("name", "") or "", level=entity.get("level", 0) or 0,
        resource=entity.get("resource", "") or "", amount=int(entity.get("amount", 0) or 0),
        guild_id=entity.get("guildid", 0) or 0)


def march_pb(march: Entity) -> Any:
    """The client's MarchLine of a march."""
    return pb.MarchLine(
        march_id=int(march.id), owner_user_id=march["owner"],
        type=MARCH_TYPES.get(march["type"], T.MARCH_TYPE_UNSPECIFIED),
        state=MARCH_STATES.get(march["state"], S.MARCH_STATE_UNSPECIFIED),
        from_x=march["from_x"], from_y=march["from_y"], to_x=march["to_x"],
        to_y=march["to_y"], start_ms=int(march["start_ms"]), arrive_ms=int(march["arrive_ms"]),
        speed=float(march.get("speed", 0.0)), troops=int(march.get("troops", 0)))
