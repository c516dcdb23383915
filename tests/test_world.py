"""The map's World service without processes (issue 13 "World"): the methods the AOI and
march parts call, persistence (periodic and shutdown saves, crash loss bounded by the last
save, tombstones, ids never reused, fencing), data fixes on load and online, city
placement, resource points and monsters refreshed on one timer. A real SQLite backend,
a task.Clock for the map's time."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.config import MapSettings
from rltwist.ecs.datafix import DataFixer
from rltwist.ecs.entity import Entity
from rltwist.game.tables import validate_world
from rltwist.game.terrain import blocked
from rltwist.nodes.map.state import APPEAR, DISAPPEAR, UPDATE
from rltwist.nodes.map.world import COLLECTION, World
from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.util import wait_for

E = pb.ErrorCode
SEED = 7


def world_table(**over: Any) -> dict[str, Any]:
    """A small world table (validated like etc/game/world.toml)."""
    table: dict[str, Any] = {
        "refresh_seconds": 5, "refresh_batch": 1000, "cities": {"spacing": 3},
        "resources": {"food": {"count": 6, "amounts": (100, 200), "respawn_seconds": 60},
                      "gold": {"count": 4, "amounts": (50,), "respawn_seconds": 60}},
        "monsters": {"count": 5, "max_level": 3, "respawn_seconds": 30},
    }
    table.update(over)
    assert list(validate_world(table)) == []
    return table


def fake_node(sid: int = 1) -> Any:
    return SimpleNamespace(me=SimpleNamespace(number=sid), cluster=None)


class WorldHarness(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.path = os.path.join(self.dir, "region1.sqlite3")
        self.fix_dir = os.path.join(self.dir, "datafix-world")
        os.makedirs(self.fix_dir)
        self.clock = task.Clock()
        self.table = world_table()

    def backend(self) -> EmbeddedBackend:
        b = EmbeddedBackend(self.path)
        self.addCleanup(lambda: defer.ensureDeferred(b.close()))
        return b

    def world(self, *, size: int = 128, start: bool = True, **kw: Any) -> World:
        w = World(fake_node(), backend=kw.pop("backend", None) or self.backend(),
                  clock=self.clock, settings=MapSettings(size, size, 16, SEED),
                  tables=lambda: self.table, fixer=DataFixer(self.fix_dir, "world"),
                  save_interval=10.0, **kw)
        self.addCleanup(self._stop, w)
        return w

    async def started(self, **kw: Any) -> World:
        w = self.world(**kw)
        await w.start()
        return w

    @staticmethod
    def _stop(w: World) -> Any:
        w.stopping = True
        if w._refresh_call is not None and w._refresh_call.active():
            w._refresh_call.cancel()
        if w._save_loop.running:
            w._save_loop.stop()

    @staticmethod
    def snapshot(w: World) -> dict[int, dict[str, Any]]:
        return {eid: dict(e.attrs) for eid, e in w.state.entities.items()}


class Interface(WorldHarness):
    """now_ms, save_now, add_entity, remove_entity, city_of, take_resource, defeat, occupy."""

    async def test_the_methods_the_aoi_and_march_parts_call(self) -> None:
        w = await self.started()
        events: list[tuple[str, int]] = []
        w.state.listeners.append(lambda ev, e, blocks: events.append((ev, int(e.id))))
        self.clock.advance(12.5)
        self.assertEqual(w.now_ms(), 12500)

        point = next(e for e in w.state.entities.values() if e["kind"] == "resource")
        amount = point["amount"]
        self.assertEqual(w.take_resource(point, 30), 30)
        self.assertEqual(point["amount"], amount - 30)
        w.occupy(point, 42)
        self.assertEqual(point["owner"], 42)
        w.occupy(point, 0)
        self.assertEqual(point["owner"], 0)
        self.assertEqual(w.take_resource(point, 10**9), amount - 30)  # all that is left
        self.assertNotIn(int(point.id), w.state.entities)  # depleted: gone
        self.assertEqual(w.take_resource(point, 5), 0)  # a stale reference takes nothing
        pending = w.meta["pending"]
        self.assertEqual(pending, [{"what": f"resource:{point['resource']}",
                                    "due_ms": 12500 + 60_000}])

        monster = next(e for e in w.state.entities.values() if e["kind"] == "monster")
        w.defeat(monster)
        self.assertNotIn(int(monster.id), w.state.entities)
        self.assertEqual(w.meta["pending"][-1], {"what": "monster", "due_ms": 12500 + 30_000})

        march = Entity(w.new_id(), 0, {"kind": "march", "owner": 9, "type": "gather",
                                       "state": "outbound", "from_x": 1, "from_y": 1,
                                       "to_x": 40, "to_y": 3, "start_ms": 0,
                                       "arrive_ms": 5000, "speed": 2.0, "troops": 10,
                                       "x": 1, "y": 1})
        w.add_entity(march)
        self.assertIs(w.state.marches[int(march.id)], march)
        self.assertIs(w.remove_entity(int(march.id)), march)
        self.assertNotIn(int(march.id), w.state.marches)

        self.assertIsNone(w.city_of(5))
        r = await w.ensure_city(5, "five")
        self.assertEqual(r["code"], E.OK)
        self.assertEqual(int(w.city_of(5).id), pb.MapEntity.FromString(r["city"]).id)
        self.assertIn((UPDATE, int(point.id)), events)
        self.assertIn((DISAPPEAR, int(point.id)), events)
        self.assertIn((APPEAR, int(w.city_of(5).id)), events)

        # save_now: durable when it fires True
        self.assertTrue(w.take_resource(
            next(e for e in w.state.entities.values() if e["kind"] == "resource"), 1))
        p2 = next(e for e in w.state.entities.values() if e.dirty and e["kind"] == "resource")
        self.assertTrue(await w.save_now([p2]))
        stored = await w.backend.get(COLLECTION, int(p2.id))
        self.assertEqual(stored["attrs"]["amount"], p2["amount"])
        self.assertFalse(p2.dirty)

    async def test_a_stand_in_node_without_storage_gets_a_ready_in_memory_world(self) -> None:
        w = World(fake_node(3))
        self.assertTrue(w.ready.called)
        self.assertEqual((w.map_id, w.state.width, w.state.height, w.seed), (3, 512, 512, 3))
        self.assertTrue(await w.save_now([]))


class Persistence(WorldHarness):
    async def test_a_restart_after_a_periodic_save_brings_the_world_back(self) -> None:
        a = await self.started()
        counts = (6 + 4, 5)
        kinds = [e["kind"] for e in a.state.entities.values()]
        self.assertEqual((kinds.count("resource"), kinds.count("monster")), counts)
        for uid in (11, 12, 13):
            self.assertEqual((await a.ensure_city(uid, f"p{uid}"))["code"], E.OK)
        point = next(e for e in a.state.entities.values() if e["kind"] == "resource")
        a.take_resource(point, 10**9)  # depleted: a tombstone, a respawn pending
        march = Entity(a.new_id(), 0, {"kind": "march", "owner": 11, "type": "attack",
                                       "state": "outbound", "from_x": 2, "from_y": 2,
                                       "to_x": 9, "to_y": 9, "start_ms": 0,
                                       "arrive_ms": 9000, "speed": 1.0, "troops": 5,
                                       "x": 2, "y": 2})
        a.state.add_march(march)  # as the march part does, straight on the state
        x, y = next((x, y) for x in range(128) for y in range(128)
                    if a.state.at(x, y) is None and not blocked(SEED, x, y))
        gone = Entity(a.new_id(), 0, {"kind": "monster", "level": 1, "x": x, "y": y})
        a.add_entity(gone)
        a.remove_entity(int(gone.id))
        # the periodic save: one timer, every save_interval
        self.clock.advance(10)
        await wait_for(lambda: a.saver.rounds >= 1 and not a.tombstones, 10,
                       "the periodic world save and its tombstone purge")
        saved = self.snapshot(a)
        last_id = a.state.last_id
        # changes after the last save are what a kill -9 may lose, nothing more
        late = next(e for e in a.state.entities.values() if e["kind"] == "monster")
        a.defeat(late)

        b = await self.started()  # a "restarted process": a new World on the same storage
        self.assertEqual(self.snapshot(b), saved)
        self.assertEqual(set(b.state.marches), {int(march.id)})
        self.assertEqual(dict(b.state.marches[int(march.id)].attrs), dict(march.attrs))
        self.assertEqual(b.state.city_of(12)["name"], "p12")
        self.assertEqual(b.meta["pending"][0]["what"], f"resource:{point['resource']}")
        self.assertGreaterEqual(b.state.last_id, last_id)
        self.assertGreater(b.new_id(), int(gone.id))  # ids are never reused
        self.assertEqual(b.generation, a.generation + 1)
        rows = dict(await b.backend.find(COLLECTION, {}))
        self.assertNotIn(int(gone.id), rows)  # removed entities are deleted in storage
        self.assertNotIn(int(point.id), rows)
        # the old instance is fenced off: its saves no longer land
        a.state.update(a.city_of(11), name="stale")
        self.assertFalse(await a.save_now([a.city_of(11)]))
        self.assertTrue(a.fenced)
        stored = await b.backend.get(COLLECTION, int(a.city_of(11).id))
        self.assertEqual(stored["attrs"]["name"], "p11")  # the stale write did not land
        # and from then on it writes and deletes nothing
        a.defeat(next(e for e in a.state.entities.values() if e["kind"] == "monster"))
        self.assertFalse((await a._save_round()).ok)
        self.assertFalse(await a.save_now([]))
        self.assertEqual(dict(await b.backend.find(COLLECTION, {})).keys(), rows.keys())

    async def test_an_ordered_stop_loses_nothing(self) -> None:
        a = await self.started()
        await a._save_round()
        self.assertEqual((await a.ensure_city(21, "x"))["code"], E.OK)
        res = next(e for e in a.state.entities.values() if e["kind"] == "resource")
        a.take_resource(res, 1)
        a.defeat(next(e for e in a.state.entities.values() if e["kind"] == "monster"))
        self.assertGreater((await a.summary())["dirty"], 0)
        await a.stop()  # the node stops: final save
        self.assertEqual((await a.summary())["dirty"], 0)
        b = await self.started()
        self.assertEqual(self.snapshot(b), self.snapshot(a))
        self.assertEqual(b.meta["pending"], a.meta["pending"])

    async def test_save_all_raises_when_storage_does_not_take_everything(self) -> None:
        a = await self.started()
        await a.backend.close()
        with self.assertRaises(RuntimeError):
            await a.save_all()
        self.assertTrue(any(e.dirty for e in a.state.entities.values()))

    async def test_data_fixes_run_at_load_and_online(self) -> None:
        a = await self.started()
        self.assertEqual(a.fixer.latest_version, 0)
        await a.stop()
        with open(os.path.join(self.fix_dir, "0001_level_floor.py"), "w") as f:
            f.write("TARGET_VERSION = 1\n"
                    "def fix(entity):\n"
                    "    if entity.get('kind') == 'monster':\n"
                    "        entity['level'] = max(2, entity.get('level', 0))\n"
                    "    entity['fixed'] = 1\n")
        b = await self.started()  # a new process loads the scripts and fixes at load
        monsters = [e for e in b.state.entities.values() if e["kind"] == "monster"]
        self.assertTrue(monsters)
        self.assertTrue(all(e["level"] >= 2 and e.version == 1 for e in monsters))
        self.assertTrue(all(e.get("fixed") == 1 for e in b.state.entities.values()))
        # new entities start at the latest version: no fix runs on fresh data
        self.assertEqual((await b.ensure_city(31, "c"))["code"], E.OK)
        self.assertEqual(b.city_of(31).version, 1)
        self.assertNotIn("fixed", b.city_of(31).attrs)
        # online (what POST /datafix runs through the hotfix service's providers)
        with open(os.path.join(self.fix_dir, "0002_rename.py"), "w") as f:
            f.write("TARGET_VERSION = 2\n"
                    "def fix(entity):\n"
                    "    if entity.get('kind') == 'city':\n"
                    "        entity['name'] = entity.get('name', '') + '!'\n")
        b.fixer.load()
        reports = [b.fixer.apply_fixes(e) for e in b.online_entities()]
        self.assertTrue(all(r.ok for r in reports))
        self.assertEqual(b.city_of(31)["name"], "c!")
        await b.stop()
        c = await self.started()
        self.assertEqual(c.city_of(31)["name"], "c!")  # fixed once, saved
        self.assertEqual(c.city_of(31).version, 2)


class Cities(WorldHarness):
    async def test_cities_spiral_out_from_the_centre_on_free_unblocked_tiles(self) -> None:
        w = await self.started(size=256)
        placed = {}
        for uid in range(1, 401):
            r = await w.ensure_city(uid, f"p{uid}")
            self.assertEqual(r["code"], E.OK)
            city = pb.MapEntity.FromString(r["city"])
            placed[uid] = (city.x, city.y)
            self.assertFalse(blocked(SEED, city.x, city.y))
        self.assertEqual(len(set(placed.values())), 400)
        # idempotent: asking again moves nothing and places nothing
        again = await w.ensure_city(7, "p7")
        self.assertEqual((pb.MapEntity.FromString(again["city"]).x,
                          pb.MapEntity.FromString(again["city"]).y), placed[7])
        self.assertEqual((await w.summary())["cities"], 400)
        # near the centre first: the first city is closer than the last
        def dist(xy: tuple[int, int]) -> int:
            return max(abs(xy[0] - 128), abs(xy[1] - 128))
        self.assertLess(dist(placed[1]), dist(placed[400]))
        self.assertLessEqual(max(dist(p) for p in placed.values()), 3 * 14)
        # deterministic: same seed, same occupancy -> same tiles
        self.table = world_table(resources={}, monsters={"count": 0, "max_level": 1,
                                                         "respawn_seconds": 1})
        tiles = []
        for name in ("x", "y"):
            self.path = os.path.join(self.dir, f"{name}.sqlite3")
            other = await self.started(size=256)
            answers = [await other.ensure_city(uid, "") for uid in (1, 2, 3)]
            tiles.append([(c.x, c.y) for c in (pb.MapEntity.FromString(a["city"])
                                                for a in answers)])
        self.assertEqual(tiles[0], tiles[1])
        self.assertEqual(len(set(tiles[0])), 3)

    async def test_a_city_that_could_not_be_saved_is_answered_retry_later_then_kept(
            self) -> None:
        w = await self.started()
        await w.backend.close()
        r = await w.ensure_city(3, "three")
        self.assertEqual(r["code"], E.RETRY_LATER)
        city = w.city_of(3)
        self.assertIsNotNone(city)
        w.backend = w.saver.backend = self.backend()  # storage is back
        r = await w.ensure_city(3, "three")
        self.assertEqual(r["code"], E.OK)
        self.assertEqual(pb.MapEntity.FromString(r["city"]).id, int(city.id))

    async def test_a_full_map_answers_map_full(self) -> None:
        self.table = world_table(resources={}, monsters={"count": 0, "max_level": 1,
                                                         "respawn_seconds": 1})
        w = await self.started(size=16)
        free = sum(1 for x in range(16) for y in range(16) if not blocked(SEED, x, y))
        for uid in range(1, free + 1):
            self.assertEqual((await w.ensure_city(uid, ""))["code"], E.OK)
        self.assertEqual((await w.ensure_city(free + 1, ""))["code"], E.MAP_FULL)


class Refresh(WorldHarness):
    async def test_one_timer_seeds_and_respawns_elsewhere_after_the_delay(self) -> None:
        w = await self.started()
        self.assertEqual((await w.summary())["resources"], 10)
        calls = [c for c in self.clock.getDelayedCalls()]
        self.assertEqual(len(calls), 2)  # the refresh timer and the periodic save
        monster = next(e for e in w.state.entities.values() if e["kind"] == "monster")
        where, last = (monster["x"], monster["y"]), w.state.last_id
        w.defeat(monster)
        self.assertEqual((await w.summary())["monsters"], 4)
        self.clock.advance(25)  # not due yet (30 s)
        self.assertEqual((await w.summary())["monsters"], 4)
        self.clock.advance(10)
        s = await w.summary()
        self.assertEqual((s["monsters"], s["pending_respawns"]), (5, 0))
        new = [e for e in w.state.entities.values() if e["kind"] == "monster"
               and int(e.id) > last]
        self.assertEqual(len(new), 1)
        self.assertNotEqual((new[0]["x"], new[0]["y"]), where)
        self.assertTrue(1 <= new[0]["level"] <= 3)
        # a raised count is topped up at the next refresh; a lowered one removes nothing
        self.table = world_table(monsters={"count": 8, "max_level": 3, "respawn_seconds": 30})
        self.clock.advance(5)
        self.assertEqual((await w.summary())["monsters"], 8)
        self.table = world_table(monsters={"count": 1, "max_level": 3, "respawn_seconds": 30})
        self.clock.advance(5)
        self.assertEqual((await w.summary())["monsters"], 8)
        refresh = [c for c in self.clock.getDelayedCalls() if c.func == w._refresh_tick]
        self.assertEqual(len(refresh), 1)  # one timer for the map, not one per entity


class Metrics(WorldHarness):
    async def test_entity_counts_and_unsaved_entities_are_gauges(self) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        from rltwist.nodes.map.world import WorldCollector

        w = await self.started()
        registry = CollectorRegistry()
        registry.register(WorldCollector(w))

        def scrape() -> str:
            return generate_latest(registry).decode()

        text = scrape()
        self.assertIn('rl_world_entities{kind="resource"} 10.0', text)
        self.assertIn('rl_world_entities{kind="monster"} 5.0', text)
        self.assertIn('rl_world_entities{kind="city"} 0.0', text)
        self.assertIn("rl_world_unsaved 16.0", text)  # 15 seeded + meta
        await w._save_round()
        self.assertIn("rl_world_unsaved 0.0", scrape())
