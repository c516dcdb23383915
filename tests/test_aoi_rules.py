"""Viewport rules (issue 13 "Viewport AOI"): view rectangle -> blocks (capped, clamped,
bad views refused), view move -> added/removed blocks, the snapshot of the added blocks
(entities and march lines), and what a watcher is sent for a change."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.game.aoisystem import MAX_VIEW_HEIGHT, MAX_VIEW_WIDTH, system
from rltwist.nodes.map.state import WorldState
from rltwist.protocols import pb

E = pb.ErrorCode


def city(state: WorldState, x: int, y: int, owner: int = 1) -> Entity:
    e = Entity(state.new_id(), attrs={"kind": "city", "x": x, "y": y, "owner": owner,
                                      "name": f"c{owner}", "level": 1, "guildid": 0})
    state.add(e)
    return e


def march(state: WorldState, fx: int, fy: int, tx: int, ty: int) -> Entity:
    m = Entity(state.new_id(), attrs={
        "kind": "march", "owner": 1, "type": "gather", "state": "outbound", "x": fx,
        "y": fy, "from_x": fx, "from_y": fy, "to_x": tx, "to_y": ty, "start_ms": 0,
        "arrive_ms": 1000, "speed": 1.0, "troops": 10})
    state.add_march(m)
    return m


class ViewBlocks(unittest.TestCase):
    def setUp(self) -> None:
        self.state = WorldState(1, 512, 512, 16)

    def test_a_view_covers_the_blocks_of_its_tiles(self) -> None:
        code, blocks = system.view_blocks(0, 0, 30, 20, self.state)
        self.assertEqual(code, E.OK)
        self.assertEqual(blocks, frozenset({0, 1, 32, 33}))
        # one tile further right reaches a third column of blocks
        _, blocks = system.view_blocks(3, 0, 30, 20, self.state)
        self.assertEqual(blocks, frozenset({0, 1, 2, 32, 33, 34}))

    def test_a_view_over_the_edge_is_clamped_to_the_map(self) -> None:
        code, blocks = system.view_blocks(500, 505, 30, 20, self.state)
        self.assertEqual(code, E.OK)
        self.assertEqual(blocks, frozenset({31 * 32 + 31}))

    def test_bad_views_are_refused(self) -> None:
        bad = [(0, 0, 0, 10), (0, 0, 10, 0), (0, 0, MAX_VIEW_WIDTH + 1, 10),
               (0, 0, 10, MAX_VIEW_HEIGHT + 1), (512, 0, 10, 10), (0, 512, 10, 10),
               (-1, 0, 10, 10), (0, 0, True, 10), (0, 0, 1.5, 10)]
        for view in bad:
            code, blocks = system.view_blocks(*view, self.state)  # type: ignore[arg-type]
            self.assertEqual((code, blocks), (E.BAD_REQUEST, frozenset()), view)
        code, _ = system.view_blocks(0, 0, MAX_VIEW_WIDTH, MAX_VIEW_HEIGHT, self.state)
        self.assertEqual(code, E.OK)

    def test_a_capped_view_covers_at_most_five_by_five_blocks(self) -> None:
        _, blocks = system.view_blocks(15, 15, MAX_VIEW_WIDTH, MAX_VIEW_HEIGHT, self.state)
        self.assertEqual(len(blocks), 25)


class ViewMove(unittest.TestCase):
    def setUp(self) -> None:
        self.state = WorldState(1, 512, 512, 16)

    def test_a_move_adds_the_blocks_that_became_visible_and_drops_those_that_left(self) -> None:
        _, old = system.view_blocks(0, 0, 30, 20, self.state)
        _, new = system.view_blocks(16, 0, 30, 20, self.state)
        added, removed, kept = system.view_move(old, new)
        self.assertEqual(added, frozenset({2, 34}))
        self.assertEqual(removed, frozenset({0, 32}))
        self.assertEqual(kept, frozenset({1, 33}))
        self.assertEqual(system.view_move(old, old), (frozenset(), frozenset(), old))

    def test_the_snapshot_holds_the_added_blocks_and_only_new_march_lines(self) -> None:
        s = self.state
        inside = city(s, 40, 5, owner=1)        # block 2: becomes visible
        kept_city = city(s, 20, 5, owner=2)     # block 1: stays visible
        left = city(s, 3, 3, owner=3)           # block 0: leaves
        through = march(s, 20, 3, 40, 3)        # blocks 1, 2: the client has it
        new_line = march(s, 40, 8, 60, 8)       # blocks 2, 3: new to the client
        gone_line = march(s, 2, 2, 5, 30)       # blocks 0, 32: leaves with the view
        stays = march(s, 2, 2, 20, 2)           # blocks 0, 1: still touches block 1
        _, old = system.view_blocks(0, 0, 30, 20, s)
        _, new = system.view_blocks(16, 0, 30, 20, s)
        added, removed, kept = system.view_move(old, new)
        ents, lines = system.snapshot(s, added, kept)
        self.assertEqual({int(e.id) for e in ents}, {int(inside.id)})
        self.assertEqual({int(m.id) for m in lines}, {int(new_line.id)})
        self.assertNotIn(int(through.id), {int(m.id) for m in lines})
        self.assertEqual(system.dropped_marches(s, removed, new), [int(gone_line.id)])
        # the first view sends everything it covers
        ents, lines = system.snapshot(s, old, frozenset())
        self.assertEqual({int(e.id) for e in ents},
                         {int(kept_city.id), int(left.id)})
        self.assertEqual({int(m.id) for m in lines},
                         {int(through.id), int(gone_line.id), int(stays.id)})

    def test_visibility_of_a_changed_entity_or_line_for_one_watcher(self) -> None:
        s = self.state
        c = city(s, 40, 5)
        m = march(s, 40, 8, 60, 8)
        view = frozenset({2})
        self.assertIs(system.entity_visible(s, int(c.id), view), c)
        self.assertIs(system.march_visible(s, int(m.id), view), m)
        s.update(c, x=100)                                   # moved out of the view
        self.assertIsNone(system.entity_visible(s, int(c.id), view))
        s.remove_march(int(m.id))
        self.assertIsNone(system.march_visible(s, int(m.id), view))
        self.assertIsNone(system.entity_visible(s, 9999, view))
