"""Viewport AOI rules (issue 13 "Viewport AOI"): which blocks a view covers, what a view
move adds and drops, what a watcher is sent, and the client's side of the bargain.

Used by the ``aoiscene`` and ``aoibroadcast`` services of map nodes
(:mod:`rltwist.nodes.map.aoi`) through ``import_system`` (``POST /hotfix`` changes the
rules in running nodes). Every method is pure: the caller passes the map's
:class:`~rltwist.nodes.map.state.WorldState` and the watcher's blocks.

The rules, as docs/world.md "Viewport" states them for client programmers:

* a view is the rectangle [x, x + width) x [y, y + height) of tiles, clamped to the map;
  width and height are 1..``MAX_VIEW_WIDTH`` / ``MAX_VIEW_HEIGHT``, (x, y) inside the map,
  else BAD_REQUEST;
* it covers the blocks its tiles are on; a view move answers the entities of the blocks
  that became visible, the march lines touching those blocks but none of the blocks that
  stayed visible (the client has those), the blocks that left, and the march lines that
  touch none of the blocks of the new view (``removed_marches``);
* a change reaches the watchers of the blocks the change concerns; for each watcher an
  entity is "visible" when its tile is on one of the watcher's blocks, a march line when
  it touches one of them; a notify holds, per entity or line changed since the last one,
  either its current state (visible) or its id in ``disappeared`` / ``marches_ended``
  (gone, or moved out of the view).

:class:`ClientView` is the client's model of those rules (the property tests and the bot
use it): clients apply the MapView answer and every MapNotify the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rltwist.ecs.system import System
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.ecs.entity import Entity
    from rltwist.nodes.map.state import WorldState

__all__ = ["MAX_VIEW_HEIGHT", "MAX_VIEW_WIDTH", "AoiSystem", "ClientView", "system"]

E = pb.ErrorCode

#: Largest view, in tiles (a 64 x 64 view covers at most 5 x 5 blocks of 16 tiles): what
#: one MapView can make the map node gather and keep sending.
MAX_VIEW_WIDTH = 64
MAX_VIEW_HEIGHT = 64


class AoiSystem(System):
    name = "aoi"

    def view_blocks(self, x: int, y: int, width: int, height: int,
                    state: WorldState) -> tuple[int, frozenset[int]]:
        """``(OK, blocks)`` of the view [x, x + width) x [y, y + height) clamped to the
        map, or ``(BAD_REQUEST, empty)`` for an empty or too large rectangle or a corner
        outside the map."""
        for v in (x, y, width, height):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                return E.BAD_REQUEST, frozenset()
        if not 0 < width <= MAX_VIEW_WIDTH or not 0 < height <= MAX_VIEW_HEIGHT:
            return E.BAD_REQUEST, frozenset()
        if not state.inside(x, y):
            return E.BAD_REQUEST, frozenset()
        return E.OK, state.blocks_of_rect(x, y, width, height)

    def view_move(self, old: frozenset[int], new: frozenset[int],
                  ) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
        """``(added, removed, kept)`` blocks when a view covering *old* moves to *new*."""
        return new - old, old - new, old & new

    def snapshot(self, state: WorldState, added: Iterable[int], kept: frozenset[int],
                 ) -> tuple[list[Entity], list[Entity]]:
        """What a view move sends: the entities on the *added* blocks and the march lines
        touching them but none of the *kept* blocks (the client has those already)."""
        entities, marches = state.in_blocks(added)
        if kept:
            mb = state.march_blocks
            marches = [m for m in marches if mb[int(m.id)].isdisjoint(kept)]
        return entities, marches

    def dropped_marches(self, state: WorldState, removed: Iterable[int],
                        blocks: frozenset[int]) -> list[int]:
        """The march lines a client drops when its view leaves *removed* for *blocks*:
        those touching a removed block and none of *blocks*."""
        _, marches = state.in_blocks(removed)
        mb = state.march_blocks
        return sorted(int(m.id) for m in marches if mb[int(m.id)].isdisjoint(blocks))

    def entity_visible(self, state: WorldState, eid: int,
                       blocks: frozenset[int]) -> Entity | None:
        """The entity *eid* if it is on the map on one of *blocks*, else None."""
        entity = state.entities.get(eid)
        if entity is None or state.block_of(entity["x"], entity["y"]) not in blocks:
            return None
        return entity

    def march_visible(self, state: WorldState, mid: int,
                      blocks: frozenset[int]) -> Entity | None:
        """The march *mid* if its line touches one of *blocks*, else None."""
        march = state.marches.get(mid)
        if march is None or state.march_blocks[mid].isdisjoint(blocks):
            return None
        return march


system = AoiSystem()


class ClientView:
    """A client's copy of what its view shows, kept by the documented rules: apply each
    MapView answer (:meth:`view`), MapViewClear (:meth:`clear`) and MapNotify
    (:meth:`notify`) in the order they arrive."""

    def __init__(self) -> None:
        self.entities: dict[int, Any] = {}
        self.marches: dict[int, Any] = {}
        self.blocks: frozenset[int] = frozenset()
        self.block = 16
        self.per_row = 32

    def block_of(self, x: int, y: int) -> int:
        return (y // self.block) * self.per_row + x // self.block

    def view(self, answer: Any) -> None:
        """Apply a MapView answer (OK only): drop the entities on the removed blocks and
        the listed march lines, then take the snapshot."""
        info = answer.info
        if info.block:
            self.block = info.block
            self.per_row = -(-info.width // info.block)
        removed = set(answer.removed_blocks)
        if removed:
            for eid in [i for i, e in self.entities.items()
                        if self.block_of(e.x, e.y) in removed]:
                del self.entities[eid]
        for mid in answer.removed_marches:
            self.marches.pop(mid, None)
        self.blocks = frozenset(answer.blocks)
        for e in answer.entities:
            self.entities[e.id] = e
        for m in answer.marches:
            self.marches[m.march_id] = m

    def clear(self) -> None:
        """MapViewClear answered: nothing is watched any more."""
        self.entities.clear()
        self.marches.clear()
        self.blocks = frozenset()

    def notify(self, note: Any) -> None:
        """Apply a MapNotify: appeared/updated and marches are upserts by id,
        disappeared and marches_ended removals; ``reset`` drops everything first."""
        if note.reset:
            self.entities.clear()
            self.marches.clear()
        for e in note.appeared:
            self.entities[e.id] = e
        for e in note.updated:
            self.entities[e.id] = e
        for eid in note.disappeared:
            self.entities.pop(eid, None)
        for m in note.marches:
            self.marches[m.march_id] = m
        for mid in note.marches_ended:
            self.marches.pop(mid, None)

    def ids(self) -> tuple[dict[int, Any], dict[int, Any]]:
        """``({entity id: (x, y, ...)}, {march id: (from, to, ...)})`` to compare with
        the server's."""
        return ({i: entity_key(e) for i, e in self.entities.items()},
                {i: march_key(m) for i, m in self.marches.items()})


def entity_key(e: Any) -> tuple[Any, ...]:
    """The fields of a MapEntity a comparison looks at."""
    return (e.id, e.kind, e.x, e.y, e.owner_user_id, e.level, e.resource, e.amount)


def march_key(m: Any) -> tuple[Any, ...]:
    """The fields of a MarchLine a comparison looks at."""
    return (m.march_id, m.state, m.from_x, m.from_y, m.to_x, m.to_y, m.start_ms,
            m.arrive_ms)


def visible_now(state: WorldState, blocks: frozenset[int],
                ) -> tuple[dict[int, Any], dict[int, Any]]:
    """What a client watching *blocks* must hold now (the server's side of
    :meth:`ClientView.ids`)."""
    from rltwist.nodes.map.state import entity_pb, march_pb

    entities, marches = state.in_blocks(blocks)
    return ({int(e.id): entity_key(entity_pb(e)) for e in entities},
            {int(m.id): march_key(march_pb(m)) for m in marches})

