"""The world map across processes (issue 13 "World"): players of two regions get their
cities on their birth maps at the first entry, MapMyCity answers them, and the map node
gives back cities, resource points and monsters after a kill -9 (everything the last
periodic save had) and after an ordered stop (everything). Real processes, real TCP,
real Redis, real SQLite."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from twisted.internet import defer

from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.social_util import SocialCase
from tests.util import wait_for

E = pb.ErrorCode
REPO = Path(__file__).resolve().parent.parent


class WorldCase(SocialCase):
    async def entities(self, node: str, kind: str | None = None) -> list[list[Any]]:
        rows: list[list[Any]] = await self.probe.cluster.call(node, "world", "entities", kind,
                                                              timeout=10)
        return rows

    async def summary(self, node: str) -> dict[str, Any]:
        s: dict[str, Any] = await self.probe.cluster.call(node, "world", "summary", timeout=10)
        return s

    async def my_city(self, client: Any) -> Any:
        """MapMyCity, asked again while the map node is still coming back (RETRY_LATER)."""
        answers: list[Any] = []

        async def answered() -> bool:
            r = await client.request(pb.MapMyCity())
            if r.code == E.RETRY_LATER:
                return False
            answers.append(r)
            return True

        await wait_for(answered, 30, f"MapMyCity of {client.openid} to be answered")
        self.assertEqual(answers[0].code, E.OK)
        return answers[0]

    async def city_rows(self, node: str, userid: int) -> list[list[Any]]:
        return [r for r in await self.entities(node, "city") if r[4] == userid]

    async def stored(self, sid: int) -> list[list[Any]]:
        """What region *sid*'s database holds of the world (read while the map is down),
        in the form of ``entities``: proof the map saved it rather than seeding it anew."""
        db = EmbeddedBackend(os.path.join(self.lc.run_dir, "data", f"region{sid}.sqlite3"))
        try:
            rows = await db.find("world", {})
        finally:
            await defer.ensureDeferred(db.close())
        out = []
        for eid, doc in rows:
            a = doc.get("attrs", {})
            if eid != "meta" and a.get("kind") != "deleted":
                out.append([eid, a.get("kind"), a.get("x"), a.get("y"), a.get("owner", 0),
                            a.get("level", 0), a.get("amount", 0)])
        return sorted(out)

    async def player_doc(self, userid: int) -> dict[str, Any]:
        """The player's document as stored in roledb (what the next Auth loads)."""
        db = EmbeddedBackend(os.path.join(self.lc.run_dir, "data", "roledb.sqlite3"))
        try:
            doc = await db.get("player", userid)
        finally:
            await defer.ensureDeferred(db.close())
        assert doc is not None
        return doc

    async def restart(self, node: str) -> None:
        await self.lc.start(node)
        await self.lc.wait_up(self.names)


class CitiesAfterAKill(WorldCase):
    # a periodic world save every second: what a kill -9 may lose is bounded by it
    overrides = {"storage": {"save_interval": 1.0}}

    async def test_cities_on_birth_maps_and_the_world_survive_a_kill_of_the_map_node(
            self) -> None:
        a, b = await self.players_apart(1, 2)
        # placed at the first entry, before the player asked for anything
        for client, node in ((a, "map1"), (b, "map2")):
            async def placed(c: Any = client, n: str = node) -> bool:
                return len(await self.city_rows(n, c.userid)) == 1
            await wait_for(placed, 20, f"{client.openid}'s city on {node}")
        self.assertEqual(await self.city_rows("map1", b.userid), [])  # birth maps only
        for client, mapid in ((a, 1), (b, 2)):  # the player records its city's map
            async def recorded(c: Any = client, m: int = mapid) -> bool:
                return (await self.player_doc(c.userid))["attrs"].get("mapid") == m
            await wait_for(recorded, 20, f"{client.openid}'s saved mapid {mapid}")
        ra, rb = await self.my_city(a), await self.my_city(b)
        self.assertEqual((ra.info.map_id, rb.info.map_id), (1, 2))
        self.assertEqual((ra.info.width, ra.info.height, ra.info.block), (512, 512, 16))
        self.assertNotEqual(ra.info.seed, rb.info.seed)  # regions have their own terrain
        self.assertEqual(ra.city.owner_user_id, a.userid)
        self.assertEqual(ra.city.kind, pb.MapEntityKind.MAP_CITY)
        [row] = await self.city_rows("map1", a.userid)
        self.assertEqual(row[:4], [ra.city.id, "city", ra.city.x, ra.city.y])

        # what the map shows of a city follows a rename and a guild at once, not at the
        # owner's next login: a watcher of the city's tile is told (here the owner itself)
        def city_update(check: Any) -> Any:
            return lambda m: any(e.id == ra.city.id and check(e) for e in m.updated)

        await self.request_ok(a, pb.MapView(x=max(0, ra.city.x - 4), y=max(0, ra.city.y - 4),
                                            width=8, height=8))
        shown = f"shown{a.userid % 100000}"
        await self.request_ok(a, pb.Rename(name=shown))
        await self.wait_push(a, pb.MapNotify, city_update(lambda e: e.owner_name == shown))
        g = await self.request_ok(a, pb.GuildCreate(name=f"G{a.userid % 100000}", open=True))
        await self.wait_push(a, pb.MapNotify,
                             city_update(lambda e: e.guild_id == g.guild_id != 0))
        await self.request_ok(a, pb.MapViewClear())
        s = await self.summary("map1")
        self.assertEqual((s["resources"], s["monsters"]), (650, 300))  # etc/game/world.toml

        async def saved() -> bool:
            return (await self.summary("map1"))["dirty"] == 0
        await wait_for(saved, 20, "a periodic save of map1 with nothing left dirty")
        before = await self.entities("map1")
        self.assertLess(await self.lc.nodes["map1"].kill(), 0)
        self.assertEqual(await self.stored(1), before)
        await self.restart("map1")
        after = await self.entities("map1")
        self.assertEqual(after, before)  # cities, resource points, monsters: all back
        self.assertGreater((await self.summary("map1"))["generation"], s["generation"])
        again = await self.my_city(a)
        self.assertEqual((again.city.id, again.city.x, again.city.y),
                         (ra.city.id, ra.city.x, ra.city.y))
        # a second login neither moves nor duplicates the city
        await self.relogin(a)
        third = await self.my_city(a)
        self.assertEqual((third.city.id, third.city.x, third.city.y),
                         (ra.city.id, ra.city.x, ra.city.y))
        self.assertEqual(len(await self.city_rows("map1", a.userid)), 1)
        self.assertEqual(len(await self.entities("map1", "city")),
                         len([r for r in before if r[1] == "city"]))


class CitiesAfterAnOrderedStop(WorldCase):
    """The default save interval (300 s): only the stop's own save can keep the world.
    World data fixes come from this test's own hotfix root."""

    async def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
        self.fixes = root / "hotfix" / "datafix" / "world"
        self.fixes.mkdir(parents=True)
        self.overrides = {"hotreload": {"root": str(root), "hotfix_interval": 0,
                                        "config_interval": 0}}
        await super().setUp()

    async def test_an_online_data_fix_then_an_ordered_stop_and_start_lose_nothing(
            self) -> None:
        a = await self.player(2)
        r = await self.my_city(a)
        self.assertEqual(r.info.map_id, 2)
        monsters = {row[0]: row[5] for row in await self.entities("map2", "monster")}
        # online data fix (POST /datafix): every monster of the running maps, once
        (self.fixes / "0001_stronger_monsters.py").write_text(
            "TARGET_VERSION = 1\n"
            "def fix(entity):\n"
            "    if entity.get('kind') == 'monster':\n"
            "        entity['level'] = entity['level'] + 100\n")
        status, answer = await self.lc.gm("POST", "/datafix", {"kinds": ["world"]},
                                          timeout=30)
        self.assertEqual(status, 200, answer)
        report = answer["nodes"]["map2"]["kinds"]["world"]
        self.assertEqual((report["fixed"], report["failed"]), (report["entities"], 0))
        fixed = {row[0]: row[5] for row in await self.entities("map2", "monster")}
        self.assertEqual(fixed, {eid: level + 100 for eid, level in monsters.items()})

        s = await self.summary("map2")
        self.assertGreater(s["dirty"], 0)  # seeded points and the fix wait for a save
        before = await self.entities("map2")
        self.assertEqual(await self.lc.nodes["map2"].stop(), 0)
        self.assertEqual(await self.stored(2), before)
        await self.restart("map2")
        self.assertEqual(await self.entities("map2"), before)  # the fix ran once only
        self.assertEqual((await self.summary("map2"))["dirty"], 0)
        again = await self.my_city(a)
        self.assertEqual((again.city.id, again.city.x, again.city.y),
                         (r.city.id, r.city.x, r.city.y))
