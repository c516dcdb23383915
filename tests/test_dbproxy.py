"""dbproxy: a node's database as a service. In process over loopback TCP (every operation,
storage errors arriving typed), and the regiondb shared by the four real processes of a
region writing at once."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from rltwist.cluster import Cluster, RemoteError
from rltwist.config import ClusterSettings
from rltwist.launcher import DEV_SECRET, LocalCluster, free_ports
from rltwist.nodes.common.dbproxy import (
    DBClient,
    DBProxy,
    database_for,
)
from rltwist.storage import (
    Delete,
    DuplicateKey,
    EmbeddedBackend,
    InvalidDocument,
    StaleGeneration,
    StoredEntity,
    Update,
    Upsert,
)
from tests.util import make_cluster

REGION = ["map1", "guild1", "mail1", "rolecity1"]


class DatabaseOfEachNodeKind(unittest.TestCase):
    def test_kinds_map_to_the_seed_databases(self) -> None:
        self.assertEqual(database_for("role", 3), "roledb")
        for kind in ("map", "guild", "mail", "rolecity"):
            self.assertEqual(database_for(kind, 7), "region7")
        self.assertEqual(database_for("logiccenter", None), "globaldb")
        self.assertIsNone(database_for("master", None))
        self.assertIsNone(database_for("login", 1))


class RemoteDatabase(unittest.TestCase):
    """Node "a" uses node "b"'s dbproxy through DBClient and through raw calls."""

    timeout = 60

    def setUp(self) -> None:
        port_a, port_b = free_ports(2)
        self.backend = EmbeddedBackend(os.path.join(self.mktemp(), "region1.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(self.backend.close()))
        self.a = make_cluster("a", port_a, {"b": ("127.0.0.1", port_b)})
        self.b = make_cluster("b", port_b, {"a": ("127.0.0.1", port_a)})
        self.b.register(DBProxy(self.backend, "region1"))
        for c in (self.a, self.b):
            c.startService()
            self.addCleanup(c.stopService)
        self.db = DBClient(self.a, "b", timeout=10)

    async def test_crud_find_upsert_and_counter(self) -> None:
        db = self.db
        await db.insert("players", 1, {"name": "ann", "lvl": 3})
        self.assertEqual(await db.get("players", 1), {"name": "ann", "lvl": 3})
        self.assertIsNone(await db.get("players", 2))
        self.assertTrue(await db.update("players", 1, {"lvl": 4, "stats.hp": 10}))
        self.assertFalse(await db.update("players", 2, {"lvl": 1}))
        await db.upsert("players", 2, {"name": "bob", "lvl": 4})
        await db.ensure_index("players", "lvl")
        found = sorted(await db.find("players", {"lvl": 4}))
        self.assertEqual([i for i, _ in found], [1, 2])
        self.assertEqual(found[0][1]["stats"], {"hp": 10})
        self.assertEqual(len(await db.find("players", {}, limit=1)), 1)
        self.assertTrue(await db.delete("players", 2))
        self.assertFalse(await db.delete("players", 2))
        self.assertEqual([await db.incr("seq") for _ in range(3)], [1, 2, 3])
        self.assertEqual(await db.incr("seq", 10), 13)
        self.assertEqual(await self.a.call("b", "dbproxy", "info"),
                         {"db": "region1", "backend": self.backend.description})

    async def test_batched_writes_apply_in_order(self) -> None:
        await self.db.write_batch([
            Upsert("items", "x", {"n": 1}), Update("items", "x", {"n": 2}),
            Upsert("items", "y", {"n": 3}), Delete("items", "y")])
        self.assertEqual(await self.backend.get("items", "x"), {"n": 2})
        self.assertIsNone(await self.backend.get("items", "y"))
        with self.assertRaises(RemoteError) as e:
            await self.a.call("b", "dbproxy", "write_batch", [["drop", "items", "x"]])
        self.assertEqual(e.exception.kind, "InvalidDocument")
        self.flushLoggedErrors(InvalidDocument)

    async def test_storage_errors_come_back_typed(self) -> None:
        await self.db.insert("names", "ann", {"owner": 1})
        with self.assertRaises(DuplicateKey) as dup:
            await self.db.insert("names", "ann", {"owner": 2})
        self.assertEqual((dup.exception.collection, dup.exception.id), ("names", "ann"))
        with self.assertRaises(RemoteError) as raw:
            await self.a.call("b", "dbproxy", "insert", "names", "ann", {"owner": 2})
        self.assertEqual((raw.exception.kind, raw.exception.node, raw.exception.method),
                         ("DuplicateKey", "b", "insert"))
        with self.assertRaises(InvalidDocument):
            await self.db.insert("bad$name", 1, {})
        with self.assertRaises(InvalidDocument):
            await self.db.upsert("players", 1, ["a document is a dict"])  # type: ignore[arg-type]
        # the serving node logs each failed handler
        self.assertEqual(len(self.flushLoggedErrors(DuplicateKey)), 2)
        self.assertEqual(len(self.flushLoggedErrors(InvalidDocument)), 2)

    async def test_fenced_saves(self) -> None:
        db = self.db
        await db.save_entity("player", 9, {"v": 1}, 5)
        with self.assertRaises(StaleGeneration) as stale:
            await db.save_entity("player", 9, {"v": 0}, 4)
        self.assertEqual((stale.exception.given, stale.exception.stored), (4, 5))
        self.flushLoggedErrors(StaleGeneration)
        refused = await db.save_entities("player", [(9, {"v": 2}, 6), (10, {"v": 1}, 0),
                                                    (9, {"v": 3}, 1)])
        self.assertIsNone(refused[0])
        self.assertIsNone(refused[1])
        assert refused[2] is not None
        self.assertEqual(refused[2].stored, 6)
        stored = await db.get_entity("player", 9)
        assert stored is not None
        self.assertEqual((stored.doc, stored.generation), ({"v": 2}, 6))


    async def test_generation_claims(self) -> None:
        db = self.db
        self.assertEqual(await db.claim_generation("player", 9, 3, {"gold": 1}),
                         StoredEntity({"gold": 1}, 3))
        await db.save_entity("player", 9, {"gold": 2}, 3)
        for generation in (3, 2):
            with self.assertRaises(StaleGeneration) as stale:
                await db.claim_generation("player", 9, generation, {"gold": 0})
            self.assertEqual((stale.exception.collection, stale.exception.id,
                              stale.exception.given, stale.exception.stored),
                             ("player", 9, generation, 3))
        self.assertEqual(await db.claim_generation("player", 9, 4), StoredEntity({"gold": 2}, 4))
        with self.assertRaises(StaleGeneration):
            await db.save_entity("player", 9, {"gold": 666}, 3)  # the fenced old instance
        self.assertEqual(await self.backend.get_entity("player", 9), StoredEntity({"gold": 2}, 4))
        self.assertEqual(await db.claim_generation("player", "new", 1), StoredEntity({}, 1))
        with self.assertRaises(InvalidDocument):
            await db.claim_generation("player", 10, -1)
        # A refusal is an answer, not a failed handler: nothing for the serving node to log.
        self.assertEqual(self.flushLoggedErrors(StaleGeneration), [])
        self.flushLoggedErrors(InvalidDocument)


class SharedRegionDatabase(unittest.TestCase):
    """map1, guild1, mail1 and rolecity1 write to region1 at the same time."""

    timeout = 180

    async def test_four_region_processes_write_concurrently_without_loss(self) -> None:
        names = ["master", *REGION]
        # rolecity holds at most 3 x 5 players: more than that are evicted (saved) on the way
        lc = LocalCluster(self.mktemp(), names,
                          overrides={"lru.agent": {"workers": 3, "capacity": 5}})
        self.addCleanup(lc.stop_all)
        await lc.start(*names)
        await lc.wait_up(names)
        # the test talks to each node directly, as one more cluster member
        tester = Cluster("tester", ClusterSettings(secret=DEV_SECRET.encode(),
                                                   call_timeout=60.0),
                         {n: lc.address(n) for n in REGION})
        tester.startService()
        self.addCleanup(tester.stopService)

        missing = []
        for node in REGION:
            try:
                await tester.call(node, "dbproxy", "info")
            except RemoteError as e:
                if e.kind != "UnknownService":
                    raise
                missing.append(node)
        writers = [n for n in REGION if n not in missing]
        calls, batch = 40, 5

        def write(node: str, i: int) -> defer.Deferred[Any]:
            ops = [["upsert", "shared", f"{node}-{i}-{j}",
                    {"node": node, "i": i, "j": j, "pad": "x" * 200}] for j in range(batch)]
            return defer.gatherResults([
                tester.call(node, "dbproxy", "write_batch", ops),
                tester.call(node, "dbproxy", "incr", "hits"),
            ])

        uids = [(100 + k) << 16 | 1 for k in range(30)]
        work = [write(n, i) for i in range(calls) for n in writers]
        work += [tester.call("rolecity1", "rolerouter", "call", u, "add_resources",
                             {"gold": k + 1}) for k, u in enumerate(uids)]
        work += [tester.call("mail1", "mailrouter", "call", u, "deliver",
                             {"from": 1, "title": f"m{k}"}) for k, u in enumerate(uids)]
        work += [tester.call("guild1", "guildrouter", "create", u, f"g{k}")
                 for k, u in enumerate(uids[:10])]
        results = await defer.gatherResults(work)
        guildids = results[-10:]
        for router, node in (("mailrouter", "mail1"), ("rolerouter", "rolecity1")):
            self.assertEqual((await tester.call(node, router, "flush"))["failed"], 0)

        # every write is there, read back through one process's dbproxy
        reader = writers[0]
        docs = dict(await tester.call(reader, "dbproxy", "find", "shared", {}))
        self.assertEqual(len(docs), len(writers) * calls * batch)
        for n in writers:
            for i in range(calls):
                for j in range(batch):
                    self.assertEqual(docs[f"{n}-{i}-{j}"],
                                     {"node": n, "i": i, "j": j, "pad": "x" * 200})
        self.assertEqual(await tester.call(reader, "dbproxy", "incr", "hits", 0),
                         len(writers) * calls)
        # what the LRU services saved is visible to the others
        for k, u in enumerate(uids):
            doc = await tester.call("map1" if "map1" in writers else reader, "dbproxy", "get",
                                    "rolecity", u)
            self.assertEqual(doc["attrs"]["gold"], k + 1)
            got = await tester.call("rolecity1", "rolerouter", "call", u, "get")
            self.assertEqual(got["resources"]["gold"], k + 1)
            mails = await tester.call("mail1", "mailrouter", "call", u, "list")
            self.assertEqual([m["title"] for m in mails], [f"m{k}"])
        stats = await tester.call("rolecity1", "rolerouter", "stats")
        self.assertEqual(len(stats["workers"]), 3)
        self.assertLessEqual(stats["resident"], 15 + 3)  # an eviction pass may be running
        self.assertGreaterEqual(stats["evicted"], 30 - 18)
        for k, gid in enumerate(guildids):
            info = await tester.call("guild1", "guildrouter", "call", gid, "info")
            self.assertEqual((info["name"], info["owner"]), (f"g{k}", uids[k]))
            doc = await tester.call(reader, "dbproxy", "get", "guild", gid)
            self.assertEqual(doc["attrs"]["name"], f"g{k}")

        # and the file is sound once every process has closed it
        await lc.stop_all()
        path = os.path.join(lc.run_dir, "data", "region1.sqlite3")
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("PRAGMA integrity_check").fetchone(), ("ok",))
        finally:
            conn.close()
        if missing:
            raise unittest.SkipTest(
                f"{', '.join(missing)} serve no dbproxy yet (install_common must call "
                f"install_dbproxy); the other region processes were checked")
