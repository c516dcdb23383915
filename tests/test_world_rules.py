"""World rules without processes (issue 13 "World"): terrain as documented for clients,
the ``[map]`` config, the world table's validator, the placement spiral and the refresh
plan, the MapMyCity bot action and ``Player.mapid``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS
from rltwist.config import ConfigError, config_from_dict
from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import ShareData
from rltwist.game import terrain
from rltwist.game.tables import VALIDATORS, validate_world
from rltwist.game.worldsystem import WorldSystem, spiral
from rltwist.nodes.role.agent import Player
from rltwist.protocols import pb
from tests.test_world import world_table

M64 = (1 << 64) - 1
GAME_TABLES = Path(__file__).resolve().parent.parent / "etc" / "game"


def doc_terrain(seed: int, x: int, y: int) -> str:
    """docs/world.md "Map", transcribed step by step as a client would."""
    def mix(v: int) -> int:
        v ^= v >> 30
        v = (v * 0xBF58476D1CE4E5B9) % 2**64
        v ^= v >> 27
        v = (v * 0x94D049BB133111EB) % 2**64
        return v ^ (v >> 31)

    def noise(s: int, a: int, b: int) -> int:
        return mix(s ^ mix(a * 2**32 + b)) % 65536

    def field(s: int) -> int:
        cx, fx, cy, fy = x // 8, x % 8, y // 8, y % 8
        top = noise(s, cx, cy) * (8 - fx) + noise(s, cx + 1, cy) * fx
        bottom = noise(s, cx, cy + 1) * (8 - fx) + noise(s, cx + 1, cy + 1) * fx
        return (top * (8 - fy) + bottom * fy) // 64

    s = seed % 2**64
    e = field(s)
    if e < 17000:
        return "water"
    if e >= 48000:
        return "mountain"
    return "forest" if field(s ^ 0x5DEECE66D) >= 36000 else "plains"


class Terrain(unittest.TestCase):
    def test_terrain_is_the_documented_pure_function(self) -> None:
        for seed in (0, 1, 2, 12345, M64):
            for x in range(0, 512, 7):
                for y in range(0, 512, 11):
                    self.assertEqual(terrain.terrain(seed, x, y), doc_terrain(seed, x, y),
                                     (seed, x, y))
        # pinned values: a change of the algorithm breaks every client's map
        self.assertEqual(terrain.mix(1), 6238072747940578789)
        self.assertEqual(terrain.noise(1, 0, 0), 1509)
        self.assertEqual([terrain.terrain(1, x, y) for x, y in
                          ((0, 0), (100, 200), (511, 511), (37, 4))],
                         ["water", "plains", "mountain", "forest"])

    def test_every_kind_of_terrain_appears_and_most_tiles_are_open(self) -> None:
        for seed in (1, 2):
            counts = Counter(terrain.terrain(seed, x, y) for x in range(0, 512, 2)
                             for y in range(0, 512, 2))
            total = sum(counts.values())
            self.assertEqual(set(counts), set(terrain.TERRAINS))
            self.assertGreater((counts["plains"] + counts["forest"]) / total, 0.6)
            for kind in terrain.TERRAINS:
                self.assertGreater(counts[kind] / total, 0.05, (seed, kind))
        self.assertTrue(terrain.blocked(1, 0, 0))  # water
        self.assertFalse(terrain.blocked(1, 100, 200))  # plains
        # regions differ
        self.assertNotEqual([terrain.terrain(1, x, 9) for x in range(64)],
                            [terrain.terrain(2, x, 9) for x in range(64)])


BASE: dict[str, Any] = {"cluster": {"secret": "12345678"}, "master": {"gm_token": "12345678"},
                        "nodes": {"master": {"port": 1, "metrics_port": 2}}}


class MapConfig(unittest.TestCase):
    def test_defaults_and_per_region_overrides(self) -> None:
        c = config_from_dict(BASE)
        m = c.map.map_for(3)
        self.assertEqual((m.width, m.height, m.block, m.seed), (512, 512, 16, 3))
        c = config_from_dict({**BASE, "map": {"width": 256, "seed": 10, "regions": {
            "2": {"height": 128, "seed": 5}, "4": {"block": 32}}}})
        self.assertEqual(c.map.map_for(1), c.map.map_for(1))
        self.assertEqual((c.map.map_for(1).width, c.map.map_for(1).seed), (256, 11))
        m2 = c.map.map_for(2)
        self.assertEqual((m2.width, m2.height, m2.seed), (256, 128, 5))
        self.assertEqual((c.map.map_for(4).block, c.map.map_for(4).seed), (32, 14))

    def test_bad_keys_are_named(self) -> None:
        with self.assertRaises(ConfigError) as e:
            config_from_dict({**BASE, "map": {"widht": 256, "block": 2,
                                              "regions": {"x": {}, "3": {"sed": 1}}}})
        message = str(e.exception)
        for part in ("map.block: must be 4..256", "map.regions.x:",
                     "map.widht: unknown key (did you mean width?)",
                     "map.regions.3.sed: unknown key (did you mean seed?)"):
            self.assertIn(part, message)


class Table(unittest.TestCase):
    def test_the_shipped_world_table_is_valid(self) -> None:
        world = ShareData(GAME_TABLES, VALIDATORS).snapshot["world"]
        self.assertEqual(list(validate_world(world)), [])
        self.assertEqual(set(world["resources"]), {"food", "gold", "oil"})

    def test_mistakes_are_named_by_key(self) -> None:
        table = dict(world_table())
        table.update(refresh_seconds=0, extra=1, cities={"spacing": 0, "x": 1},
                     resources={"wood": {}, "food": {"count": -1, "amounts": (),
                                                     "respawn_seconds": 1, "lvl": 2}},
                     monsters={"count": 1, "max_level": 0, "respawn_seconds": 1})
        keys = {k for k, _ in validate_world(table)}
        self.assertEqual(keys, {"extra", "refresh_seconds", "cities.x", "cities.spacing",
                                "resources.wood", "resources.food.lvl",
                                "resources.food.count", "resources.food.amounts",
                                "monsters.max_level"})


class Rules(unittest.TestCase):
    def test_the_spiral_visits_each_ring_once_in_order(self) -> None:
        seen = [spiral(k) for k in range(81)]
        self.assertEqual(seen[:9], [(0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0),
                                    (-1, -1), (0, -1), (1, -1)])
        self.assertEqual(len(set(seen)), 81)
        self.assertEqual(set(seen), {(i, j) for i in range(-4, 5) for j in range(-4, 5)})
        rings = [max(abs(i), abs(j)) for i, j in seen]
        self.assertEqual(rings, sorted(rings))

    def test_the_refresh_plan_respawns_due_entries_first_and_tops_up_to_the_counts(
            self) -> None:
        ws, t = WorldSystem(), world_table()
        pending = [{"what": "monster", "due_ms": 50}, {"what": "monster", "due_ms": 500},
                   {"what": "resource:wood", "due_ms": 10}]
        counts = {"monster": 3, "resource:food": 6, "resource:gold": 4}
        plan, waiting = ws.refresh_plan(counts, pending, t, 100)
        # due monster, then the one missing (5 - 3 live - 1 due - 1 waiting = 0): none
        self.assertEqual(plan, ["monster"])
        self.assertEqual(waiting, [{"what": "monster", "due_ms": 500}])
        plan, _ = ws.refresh_plan({}, [], world_table(refresh_batch=7), 0)
        self.assertEqual(len(plan), 7)  # bounded by refresh_batch
        self.assertEqual(ws.take(10, 3), (3, 7))
        self.assertEqual(ws.take(10, 30), (10, 0))
        self.assertEqual(ws.take(10, -5), (0, 10))


class RoleSide(unittest.TestCase):
    def test_map_my_city_bot_action_builds_a_valid_request(self) -> None:
        msg = ACTIONS["map_my_city"].build(SimpleNamespace())
        self.assertIsInstance(msg, pb.MapMyCity)
        self.assertEqual(pb.MapMyCity.FromString(msg.SerializeToString()), msg)

    def test_player_mapid_is_the_city_map_else_the_birth_region(self) -> None:
        userid = 77 << 16 | 2
        player = Player(SimpleNamespace(), userid, Entity(userid, 0, {}), 1, 0.0)  # type: ignore[arg-type]
        self.assertEqual(player.mapid, 2)
        player.entity["mapid"] = 5
        self.assertEqual(player.mapid, 5)


class Placement(unittest.TestCase):
    def test_ten_thousand_cities_walk_the_spiral_once(self) -> None:
        from rltwist.nodes.map.state import WorldState

        ws, state = WorldSystem(), WorldState(1, 512, 512, 16)
        checks = 0

        def is_blocked(x: int, y: int) -> bool:
            nonlocal checks
            checks += 1
            return terrain.blocked(1, x, y)

        cursor = 0
        for uid in range(1, 10_001):
            placed = ws.place_city(state, 1, cursor, 3, is_blocked)
            assert placed is not None
            x, y, cursor = placed
            state.add(Entity(state.new_id(), 0, {"kind": "city", "x": x, "y": y,
                                                 "owner": uid}), quiet=True)
        # amortized O(1): each candidate is looked at once, a quarter of them blocked
        self.assertLess(checks, 2 * 10_000)
        self.assertEqual(cursor, checks)
        self.assertEqual(len(state.cities), 10_000)
