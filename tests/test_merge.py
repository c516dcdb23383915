"""The merge engine (rltwist.merge.core) on storage: rules, renames, fencing, dry run,
resuming from the journal. Embedded backend here; the MongoDB variant runs the same
checks where RL_TEST_MONGO_URI is set."""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.trial import unittest

from rltwist.merge.core import JOURNAL, Merger, MergeRefused, renamed
from rltwist.storage import Backend, StaleGeneration, Upsert
from rltwist.storage.embedded import EmbeddedBackend
from tests.merge_util import befriend, seed_region

MONGO_URI = os.environ.get("RL_TEST_MONGO_URI")


class Interrupted(Exception):
    """Raised from the progress callback: stands for a crash at that point."""


class MergeEngineMixin:
    """The checks, on backends made by ``open_db``."""

    assertEqual: Any
    assertIn: Any
    assertIsNone: Any
    assertNotIn: Any
    assertTrue: Any
    assertRaises: Any
    fail: Any

    async def open_db(self, name: str) -> Backend:
        raise NotImplementedError

    async def world(self, players: int = 60) -> dict[str, Any]:
        """Regions 1 and 2 (2 is merged into 1): colliding names and guild names, mail,
        friends inside region 2 and across regions, guilds."""
        g, r, r1, r2 = [await self.open_db(n) for n in ("globaldb", "roledb", "region1",
                                                          "region2")]
        s1 = await seed_region(g, r, r1, 1, players, first_seq=1, shared_names=5,
                               guild_count=3, shared_guild_names=2)
        s2 = await seed_region(g, r, r2, 2, players, first_seq=1000, shared_names=5,
                               guild_count=3, shared_guild_names=2)
        a, b = s1.userids[7], s2.userids[7]
        await befriend(r1, a, s1.names[a], r2, b, s2.names[b])
        # a private chat history and a region chat channel of region 2
        await r2.upsert("chat_private", b, {"_id": b, "components": {"chat": {
            "pairs": {str(a): [{"text": "hi", "time_ms": 1}]}}}})
        await r2.upsert("chat_channels", "region2", {"_id": "region2", "components": {
            "chat": {"messages": [{"text": "hello region 2", "time_ms": 2}]}}})
        await r1.upsert("chat_channels", "region1", {"_id": "region1", "components": {
            "chat": {"messages": [{"text": "hello region 1", "time_ms": 1}]}}})
        return {"globaldb": g, "roledb": r, "r1": r1, "r2": r2, "s1": s1, "s2": s2,
                "a": a, "b": b}

    async def test_merge_keeps_everything_and_renames_duplicates(self) -> None:
        w = await self.world()
        r1, r2, roledb, s1, s2 = w["r1"], w["r2"], w["roledb"], w["s1"], w["s2"]
        generations = {u: (await roledb.get_entity("player", u)).generation
                       for u in s2.userids}
        aliased: list[tuple[int, int]] = []

        async def alias(f: int, t: int) -> None:
            aliased.append((f, t))

        report = await Merger(r2, r1, roledb, 2, 1, alias=alias, batch=37).run()
        j = report.to_json()
        self.assertEqual(j["step"], "done")
        self.assertEqual(aliased, [(2, 1)])
        self.assertEqual(j["players"], 60)
        self.assertEqual(j["mails"], 120)
        self.assertEqual(j["guilds"], 3)
        # the 5 shared names of region 2 are renamed by the rule, region 1 keeps its own
        shared = sorted(s2.userids[:5])
        self.assertEqual([x["userid"] for x in j["renamed_players"]], shared)
        for x in j["renamed_players"]:
            self.assertEqual(x["new"], renamed(x["old"], 2, 1))
            doc = await roledb.get("player", x["userid"])
            self.assertEqual(doc["attrs"]["name"], x["new"])
            city = await r1.get("rolecity", x["userid"])
            self.assertEqual(city["attrs"]["name"], x["new"])
            self.assertEqual((await r1.get("names", x["new"].casefold()))["owner"],
                             x["userid"])
            box = await r1.get("mailbox", x["userid"])
            titles = [m["title"] for m in box["components"]["mail"]["mails"]]
            self.assertEqual(titles.count("Your name changed: regions merged"), 1)
            self.assertEqual(titles.count("welcome 0") + titles.count("welcome 1"), 2)
        for u in s1.userids[:5]:  # the target's players keep their names and index keys
            self.assertEqual((await r1.get("names", s1.names[u]))["owner"], u)
        # guild names: guild0 and guild1 of region 2 renamed, their leaders notified
        self.assertEqual(sorted(x["new"] for x in j["renamed_guilds"]),
                         ["guild0.s2", "guild1.s2"])
        for gid, name in s2.guilds.items():
            doc = await r1.get("guild", gid)
            want = name + ".s2" if name.startswith("guild") else name
            self.assertEqual(doc["attrs"]["name"], want)
            self.assertEqual((await r1.get("guild_names", want))["owner"], gid)
            self.assertEqual(sorted(int(u) for u in doc["components"]["members"]),
                             sorted(s2.members[gid]))
        leader = s2.members[min(s2.guilds)][0]
        box = await r1.get("mailbox", leader)
        self.assertIn("Your guild's name changed: regions merged",
                      [m["title"] for m in box["components"]["mail"]["mails"]])
        # every player of region 2 is in region 1's database with mail and friends
        for u in s2.userids:
            self.assertEqual(len((await r1.get("mailbox", u))["components"]["mail"]
                                 ["mails"]) >= 2, True)
            city = await r1.get("rolecity", u)
            self.assertTrue(city["components"]["friends"]["friends"])
        # the cross-region friendship holds on both sides
        a, b = w["a"], w["b"]
        self.assertIn(str(a), (await r1.get("rolecity", b))["components"]["friends"]
                      ["friends"])
        self.assertIn(str(b), (await r1.get("rolecity", a))["components"]["friends"]
                      ["friends"])
        self.assertEqual((await r1.get("chat_private", b))["components"]["chat"]["pairs"]
                         [str(a)][0]["text"], "hi")
        # region 2's channel joined region 1's (its players chat there now)
        self.assertIsNone(await r1.get("chat_channels", "region2"))
        texts = [m["text"] for m in (await r1.get("chat_channels", "region1"))
                 ["components"]["chat"]["messages"]]
        self.assertEqual(texts, ["hello region 1", "hello region 2"])
        # the source is empty but for its journal, which names the target
        self.assertEqual(await r2.collections(), [JOURNAL])
        self.assertEqual((await r2.get(JOURNAL, "2"))["into"], 1)
        # every merged player was fenced: a stale instance's save is refused
        for u in s2.userids:
            stored = await roledb.get_entity("player", u)
            self.assertTrue(stored.generation > generations[u])
        with self.assertRaises(StaleGeneration):
            await roledb.save_entity("player", s2.userids[0], {"attrs": {"name": "x"}},
                                     generations[s2.userids[0]])
        # a second run has nothing left to do (and re-installs the alias)
        again = await Merger(r2, r1, roledb, 2, 1, alias=alias).run()
        self.assertTrue(again.already_done)
        self.assertEqual(aliased, [(2, 1), (2, 1)])

    async def test_dry_run_writes_nothing(self) -> None:
        w = await self.world(20)
        r1, r2 = w["r1"], w["r2"]
        before = {c: sorted(map(str, (k for k, _ in await r2.find(c, {}))))
                  for c in await r2.collections()}
        before1 = {c: len(await r1.find(c, {})) for c in await r1.collections()}
        report = await Merger(r2, r1, w["roledb"], 2, 1).run(dry_run=True)
        self.assertEqual(len(report.plan.player_renames), 5)
        self.assertEqual({c: sorted(map(str, (k for k, _ in await r2.find(c, {}))))
                          for c in await r2.collections()}, before)
        self.assertEqual({c: len(await r1.find(c, {})) for c in await r1.collections()},
                         before1)
        self.assertNotIn(JOURNAL, await r1.collections())

    async def test_an_interrupted_merge_resumes_to_the_same_result(self) -> None:
        # interrupt at every stage in turn, in one pair of databases, then finish
        w = await self.world(40)
        r1, r2, roledb = w["r1"], w["r2"], w["roledb"]
        for stop_at in (("fence", 1), ("copy", 2), ("copy", 5), ("remove", 1),
                        ("remove", 3)):
            seen = {"n": 0}

            def progress(step: str, coll: str, done: int, total: int,
                         stop_at: tuple[str, int] = stop_at, seen: dict[str, int] = seen
                         ) -> None:
                if step == stop_at[0]:
                    seen["n"] += 1
                    if seen["n"] == stop_at[1]:
                        raise Interrupted(stop_at)

            try:
                await Merger(r2, r1, roledb, 2, 1, progress=progress, batch=7).run()
            except Interrupted:
                pass
        report = await Merger(r2, r1, roledb, 2, 1, batch=7).run()
        self.assertEqual(report.step, "done")
        s2 = w["s2"]
        self.assertEqual(await r2.collections(), [JOURNAL])
        for u in s2.userids:
            box = await r1.get("mailbox", u)
            mails = box["components"]["mail"]["mails"]
            notices = [m for m in mails if m["title"].startswith("Your name changed")]
            self.assertEqual(len(notices), 1 if u in s2.userids[:5] else 0)
        texts = [m["text"] for m in (await r1.get("chat_channels", "region1"))
                 ["components"]["chat"]["messages"]]
        self.assertEqual(texts, ["hello region 1", "hello region 2"])  # joined once
        names = {d["owner"]: k for k, d in await r1.find("names", {})}
        for u in s2.userids:
            want = s2.names[u] + ".s2" if u in s2.userids[:5] else s2.names[u]
            self.assertEqual(names[u], want)
            self.assertEqual((await roledb.get("player", u))["attrs"]["name"], want)

    async def test_ids_in_both_regions_without_a_rule_refuse_before_writing(self) -> None:
        w = await self.world(10)
        r1, r2 = w["r1"], w["r2"]
        await r1.upsert("world_tiles", "0:0", {"owner": 1})
        await r2.upsert("world_tiles", "0:0", {"owner": 2})
        try:
            await Merger(r2, r1, w["roledb"], 2, 1, copy_unknown=True).run()
        except MergeRefused as e:
            self.assertIn("world_tiles", str(e))
        else:
            self.fail("merge of conflicting world_tiles did not refuse")
        self.assertNotIn(JOURNAL, await r1.collections())
        self.assertEqual(len(await r2.find("rolecity", {})), 10)

    async def test_unknown_collections_refuse_unless_copying_them_is_allowed(self) -> None:
        w = await self.world(10)
        r1, r2 = w["r1"], w["r2"]
        await r2.upsert("pets", 77, {"owner": w["s2"].userids[0]})
        try:
            await Merger(r2, r1, w["roledb"], 2, 1).run()
        except MergeRefused as e:
            self.assertIn("pets", str(e))
            self.assertIn("--copy-unknown", str(e))
        else:
            self.fail("a collection without a merge rule did not refuse the merge")
        self.assertNotIn(JOURNAL, await r1.collections())
        report = await Merger(r2, r1, w["roledb"], 2, 1, copy_unknown=True).run()
        self.assertEqual(report.to_json()["copied_without_rule"], ["pets"])
        self.assertEqual(await r1.get("pets", 77), {"owner": w["s2"].userids[0]})

    async def test_the_player_s_real_name_decides_not_a_stale_index_key(self) -> None:
        w = await self.world(10)
        r1, r2, roledb, s1, s2 = w["r1"], w["r2"], w["roledb"], w["s1"], w["s2"]
        # p keeps a stale key of a target player's name (a rename that crashed before it
        # released the old key); q has no index entry at all but a colliding name
        p, q = s2.userids[8], s2.userids[9]
        target_owner = s1.userids[8]
        await r2.upsert("names", s1.names[target_owner],
                        {"owner": p, "name": s1.names[target_owner], "time_ms": 1})
        await r2.delete("names", s2.names[q])
        doc = await roledb.get_entity("player", q)
        doc.doc["attrs"]["name"] = s1.names[s1.userids[9]]
        await roledb.save_entity("player", q, doc.doc, doc.generation)
        report = (await Merger(r2, r1, roledb, 2, 1).run()).to_json()
        renamed_ids = [x["userid"] for x in report["renamed_players"]]
        self.assertNotIn(p, renamed_ids)
        self.assertIn(q, renamed_ids)
        self.assertEqual(report["dropped_stale_names"], [s1.names[target_owner]])
        self.assertEqual((await r1.get("names", s1.names[target_owner]))["owner"],
                         target_owner)
        self.assertEqual((await r1.get("names", s2.names[p]))["owner"], p)
        self.assertEqual((await roledb.get("player", q))["attrs"]["name"],
                         s1.names[s1.userids[9]] + ".s2")

    async def world_maps(self, w: dict[str, Any]) -> dict[str, Any]:
        """World documents in the world node's format: map 1 with two cities and a
        resource point, map 2 with three cities of region 2's players and one of a region
        1 player who moved there, a resource point, a monster and a tombstone."""
        r1, r2, roledb, s1, s2 = w["r1"], w["r2"], w["roledb"], w["s1"], w["s2"]

        def ent(eid: int, **attrs: Any) -> dict[str, Any]:
            return {"_id": eid, "version": 0, "attrs": attrs, "components": {}}

        await r1.write_batch([
            Upsert("world", "meta", ent(0, last_id=5, city_cursor=3, spawns=1)),
            Upsert("world", 1, ent(1, kind="city", x=10, y=10, owner=s1.userids[0])),
            Upsert("world", 2, ent(2, kind="city", x=11, y=10, owner=s1.userids[1])),
            Upsert("world", 3, ent(3, kind="resource", x=12, y=10, resource="gold"))])
        movers = [s2.userids[0], s2.userids[1], s2.userids[2], s1.userids[7]]
        await r2.write_batch([
            Upsert("world", "meta", ent(0, last_id=6, city_cursor=4, spawns=2)),
            *[Upsert("world", i + 1, ent(i + 1, kind="city", x=10 + i, y=10, owner=u,
                                         name="old", level=3))
              for i, u in enumerate(movers)],
            Upsert("world", 5, ent(5, kind="resource", x=30, y=30)),
            Upsert("world", 6, ent(6, kind="monster", x=31, y=30)),
            Upsert("world", 7, ent(7, kind="deleted"))])
        for u in movers:
            stored = await roledb.get_entity("player", u)
            stored.doc["attrs"]["mapid"] = 2
            await roledb.save_entity("player", u, stored.doc, stored.generation)
        return {"movers": movers}

    async def test_cities_move_to_free_tiles_of_the_target_map(self) -> None:
        w = await self.world(20)
        m = await self.world_maps(w)
        r1, r2, roledb = w["r1"], w["r2"], w["roledb"]
        before = {u: (await roledb.get_entity("player", u)).generation for u in m["movers"]}
        asked: list[tuple[list[Any], int]] = []

        def placer(target: list[tuple[Any, dict[str, Any]]], count: int) -> Any:
            asked.append((sorted(str(k) for k, _ in target), count))
            return [(20 + i, 20) for i in range(count)], {"city_cursor": 99}

        report = (await Merger(r2, r1, roledb, 2, 1, placer=placer).run()).to_json()
        self.assertEqual(asked, [(["1", "2", "3", "meta"], 4)])
        self.assertEqual(report["cities_moved"], 4)
        self.assertEqual(report["world_dropped"], {"resource": 1, "monster": 1,
                                                   "deleted": 1})
        cities = {d["attrs"]["owner"]: (k, d["attrs"]) for k, d in await r1.find("world", {})
                  if d["attrs"].get("kind") == "city"}
        for i, u in enumerate(m["movers"]):
            eid, a = cities[u]
            self.assertEqual((eid, a["x"], a["y"], a["level"]), (6 + i, 20 + i, 20, 3))
            doc = await roledb.get_entity("player", u)
            self.assertEqual(doc.doc["attrs"]["mapid"], 1)
            self.assertTrue(doc.generation > before[u])
        # the renamed owner's city shows the new name
        self.assertEqual(cities[w["s2"].userids[0]][1]["name"],
                         w["s2"].names[w["s2"].userids[0]] + ".s2")
        meta = (await r1.get("world", "meta"))["attrs"]
        self.assertEqual((meta["last_id"], meta["city_cursor"], meta["spawns"]), (9, 99, 1))
        self.assertEqual(len(await r1.find("world", {})), 1 + 3 + 4)  # meta, map 1's, moved
        self.assertEqual(await r2.collections(), [JOURNAL])

    async def test_march_books_of_a_player_on_both_maps_are_joined(self) -> None:
        w = await self.world(10)
        r1, r2, s1, s2 = w["r1"], w["r2"], w["s1"], w["s2"]
        mover, other = s1.userids[3], s2.userids[3]  # mover's city was on map 2 once

        def book(ledger: dict[str, Any], returned: dict[str, int]) -> dict[str, Any]:
            return {"_id": 0, "version": 0, "attrs": {},
                    "components": {"ledger": ledger, "returned": returned}}

        await r1.upsert("marchbooks", mover, book({"march-m1n4": {"kind": "return"}},
                                                  {"t1": 1}))
        await r2.upsert("marchbooks", mover, book({"march-m2n9": {"kind": "return"}},
                                                  {"t2": 2}))
        await r2.upsert("marchbooks", other, book({"march-m2n5": {"kind": "troops"}}, {}))
        await Merger(r2, r1, w["roledb"], 2, 1).run()
        joined = (await r1.get("marchbooks", mover))["components"]
        self.assertEqual(sorted(joined["ledger"]), ["march-m1n4", "march-m2n9"])
        self.assertEqual(joined["returned"], {"t1": 1, "t2": 2})
        self.assertEqual(sorted((await r1.get("marchbooks", other))["components"]["ledger"]),
                         ["march-m2n5"])

    async def test_city_moves_finished_are_dropped_unfinished_ones_refuse(self) -> None:
        w = await self.world(10)
        r1, r2, s1, s2 = w["r1"], w["r2"], w["s1"], w["s2"]

        def saga(userid: int, step: str, ledger: dict[str, Any]) -> dict[str, Any]:
            return {"_id": userid, "version": 0, "components": {"ledger": ledger},
                    "attrs": {"saga": {"id": "r1", "userid": userid, "step": step,
                                       "src": 2, "dst": 1, "x": 5, "y": 5}}}

        # a move from map 2 whose transfer the player has not taken yet: live
        mover = s2.userids[2]
        await r2.upsert("movecity", mover, saga(mover, "done", {
            "movecity2-ab": {"kind": "movecity", "items": {"mapid": 1}}}))
        try:
            await Merger(r2, r1, w["roledb"], 2, 1).run()
        except MergeRefused as e:
            self.assertIn("moves of cities", str(e))
            self.assertIn(str(mover), str(e))
        else:
            self.fail("an unfinished move of a city did not refuse the merge")
        self.assertNotIn(JOURNAL, await r1.collections())
        # taken by the player (and a failed one, and one of the target's own): history only
        await r2.upsert("movecity", mover, saga(mover, "done", {}))
        await r2.upsert("movecity", s2.userids[3], saga(s2.userids[3], "failed", {}))
        await r1.upsert("movecity", s1.userids[3], saga(s1.userids[3], "done", {}))
        await Merger(r2, r1, w["roledb"], 2, 1).run()
        self.assertEqual([k for k, _ in await r1.find("movecity", {})], [s1.userids[3]])
        self.assertEqual(await r2.collections(), [JOURNAL])

    async def test_marches_out_or_no_placement_refuse_before_writing(self) -> None:
        w = await self.world(20)
        await self.world_maps(w)
        r1, r2 = w["r1"], w["r2"]
        with self.assertRaises(MergeRefused):
            await Merger(r2, r1, w["roledb"], 2, 1).run()  # cities but no placer
        await r2.upsert("world", 9, {"_id": 9, "attrs": {"kind": "march", "owner": 1}})
        try:
            await Merger(r2, r1, w["roledb"], 2, 1,
                         placer=lambda t, n: ([(0, 0)] * n, {})).run()
        except MergeRefused as e:
            self.assertIn("march lines are out", str(e))
        else:
            self.fail("a march line out did not refuse the merge")
        self.assertNotIn(JOURNAL, await r1.collections())
        self.assertEqual(len(await r2.find("world", {})), 9)

    async def test_a_region_that_received_a_merge_can_be_merged_again(self) -> None:
        # 2 -> 1, then 1 -> 3: region 2's players live in region 1's database and move
        # on with it, fenced and renamed like region 1's own
        w = await self.world(20)
        r1, r2, roledb, s2 = w["r1"], w["r2"], w["roledb"], w["s2"]
        await Merger(r2, r1, roledb, 2, 1).run()
        r3 = await self.open_db("region3")
        s3 = await seed_region(w["globaldb"], roledb, r3, 3, 10, first_seq=50_000,
                               name_prefix="x", shared_names=0)
        # a region 3 player already has the (renamed) name of a region 2 player
        taken = s2.names[s2.userids[0]] + ".s2"
        await r3.upsert("names", taken, {"owner": s3.userids[0], "name": taken})
        stored = await roledb.get_entity("player", s3.userids[0])
        stored.doc["attrs"]["name"] = taken
        await roledb.save_entity("player", s3.userids[0], stored.doc, stored.generation)
        generations = {u: (await roledb.get_entity("player", u)).generation
                       for u in s2.userids}
        report = (await Merger(r1, r3, roledb, 1, 3).run()).to_json()
        self.assertEqual(report["players"], 40)  # region 1's 20 and region 2's 20
        renamed = {x["userid"]: x["new"] for x in report["renamed_players"]}
        self.assertEqual(renamed, {s2.userids[0]: taken + ".s1"})
        for u in s2.userids:
            self.assertIsNotNone(await r3.get("rolecity", u))
            self.assertTrue((await roledb.get_entity("player", u)).generation
                            > generations[u])
        self.assertEqual(await r1.collections(), [JOURNAL])

    async def test_a_source_merged_elsewhere_is_refused(self) -> None:
        w = await self.world(10)
        r3 = await self.open_db("region3")
        await Merger(w["r2"], w["r1"], w["roledb"], 2, 1).run()
        with self.assertRaises(MergeRefused):
            await Merger(w["r2"], r3, w["roledb"], 2, 3).run()


class EmbeddedMergeTests(MergeEngineMixin, unittest.TestCase):
    async def open_db(self, name: str) -> Backend:
        if not hasattr(self, "_dir"):
            self._dir = self.mktemp()
        b = EmbeddedBackend(os.path.join(self._dir, f"{name}.sqlite3"))
        self.addCleanup(b.close)
        return b


class MongoMergeTests(MergeEngineMixin, unittest.TestCase):
    if not MONGO_URI:
        skip = "RL_TEST_MONGO_URI is not set: no MongoDB server for the merge's MongoDB run"

    async def open_db(self, name: str) -> Backend:
        from rltwist.storage.mongodb import MongoBackend

        assert MONGO_URI is not None
        if not hasattr(self, "_prefix"):
            self._prefix = f"rltwist_merge_{uuid.uuid4().hex[:8]}_"
        b = MongoBackend(MONGO_URI, self._prefix + name, timeout=10)

        async def drop() -> None:
            try:
                await b._conn.drop_database(b.db_name)
            finally:
                await b.close()

        from twisted.internet import defer
        self.addCleanup(lambda: defer.ensureDeferred(drop()))
        return b


class MongoOnFakeMergeTests(MergeEngineMixin, unittest.TestCase):
    """The merge through MongoBackend's own code (layout, bulk writes, listing
    collections), with txmongo replaced by the fake of tests/test_storage.py. Not a
    substitute for MongoMergeTests against a real server."""

    async def open_db(self, name: str) -> Backend:
        from rltwist.storage.mongodb import MongoBackend
        from tests.test_storage import FakeConnection

        if not hasattr(self, "_connection"):
            self._connection = FakeConnection()
        b = MongoBackend("mongodb://fake", name, connection=self._connection)  # type: ignore[arg-type]
        self.addCleanup(b.close)
        return b


class WorldPlacement(unittest.TestCase):
    """rl-merge's placement of moved cities is the target map's own (spiral, terrain,
    spacing, cursor): free, unblocked, distinct tiles. Runs where the world map's modules
    are part of the tree."""

    def test_moved_cities_get_free_unblocked_distinct_tiles(self) -> None:
        from rltwist.config import load_config
        from rltwist.merge.world import world_placer

        config = load_config(os.path.join(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))), "etc", "cluster.toml"))
        place = world_placer(config, 1)
        if place is None:
            raise unittest.SkipTest("the world map's modules are not in this tree: no "
                                    "placement (a merged map with cities refuses)")
        from rltwist.game.terrain import blocked

        settings = getattr(config, "map").map_for(1)  # noqa: B009
        cx, cy = settings.width // 2, settings.height // 2
        target = [("meta", {"attrs": {"last_id": 3, "city_cursor": 0}}),
                  (1, {"attrs": {"kind": "city", "x": cx, "y": cy, "owner": 5}}),
                  (2, {"attrs": {"kind": "deleted"}})]
        tiles, meta = place(target, 200)
        self.assertEqual(len(set(tiles)), 200)
        self.assertNotIn((cx, cy), tiles)
        self.assertFalse([t for t in tiles if blocked(int(settings.seed or 0), *t)])
        self.assertTrue(all(0 <= x < settings.width and 0 <= y < settings.height
                            for x, y in tiles))
        self.assertTrue(meta["city_cursor"] >= 200)
        # from the cursor it left, the next city goes where a 201st would have gone
        more, _ = place(target, 201)
        again, _ = place([*target[1:], ("meta", {"attrs": {"city_cursor": meta["city_cursor"]}}),
                          *[(100 + i, {"attrs": {"kind": "city", "x": x, "y": y, "owner": 7}})
                            for i, (x, y) in enumerate(tiles)]], 1)
        self.assertEqual(again, more[200:])
