"""LRU actor services and the periodic saver: in process over an embedded backend (saves
and loads are real SQLite, timers run on a task.Clock), the region services' business
methods, and GM grants to offline players surviving a rolecity restart (real processes)."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.datafix import DataFixer
from rltwist.ecs.entity import Entity
from rltwist.launcher import LocalCluster
from rltwist.nodes.common.lru import (
    Actor,
    EntityNotFound,
    LoadFailed,
    LRUGroup,
    SaveFailed,
    UnknownAction,
    action,
)
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.mail.service import MailActor
from rltwist.nodes.rolecity.service import NameIndex, RoleCityActor
from rltwist.storage import (
    Document,
    EmbeddedBackend,
    InvalidDocument,
    Key,
    StaleGeneration,
    StorageTimeout,
)
from tests.util import wait_for

INTERVAL = 300.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Counter(Actor):
    """A test kind: one counter per id."""

    kind = "counter"
    collection = "counters"

    def __init__(self) -> None:
        self.gate: defer.Deferred[None] | None = None

    @action
    def add(self, entity: Entity, n: int) -> int:
        return entity.incr("n", n)

    @action
    def get(self, entity: Entity) -> int:
        return int(entity.get("n", 0))

    @action(save=True)
    def add_durably(self, entity: Entity, n: int) -> int:
        return entity.incr("n", n)

    @action
    async def add_after_gate(self, entity: Entity, n: int) -> int:
        assert self.gate is not None
        await self.gate
        return entity.incr("n", n)


class Guarded(Counter):
    """Ids must be created explicitly."""

    kind = "guarded"
    collection = "guarded"
    auto_create = False

    @action(creates=True)
    def make(self, entity: Entity, ok: bool) -> str:
        if not ok:
            raise ValueError("refused")
        entity["n"] = 0
        return "made"

    @action(creates=True)
    def make_nothing(self, entity: Entity) -> str:
        return "declined"


class Recording:
    """A backend wrapper that counts loads, can fail saves, and records what was resident
    in the group when each save started."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.loads: dict[Key, int] = {}
        self.fail_saves = False
        self.fail_loads = False
        self.saves: list[list[Key]] = []
        self.resident_at_save: list[set[Key]] = []
        self.group: LRUGroup | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def get_entity(self, collection: str, id: Key) -> Any:
        self.loads[id] = self.loads.get(id, 0) + 1
        if self.fail_loads:
            raise StorageTimeout("test: loads fail")
        return await self.backend.get_entity(collection, id)

    async def save_entities(self, collection: str,
                            items: Sequence[tuple[Key, Document, int]]) -> Any:
        self.saves.append([i[0] for i in items])
        if self.group is not None:
            self.resident_at_save.append({k for w in self.group.workers for k in w.slots})
        if self.fail_saves:
            raise StorageTimeout("test: saves fail")
        return await self.backend.save_entities(collection, items)


class StorageCase(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "region1.sqlite3")
        self.backend = self.open_backend()
        self.db = Recording(self.backend)
        self.clock = task.Clock()

    def open_backend(self) -> EmbeddedBackend:
        b = EmbeddedBackend(self.path)
        self.addCleanup(lambda: defer.ensureDeferred(b.close()))
        return b

    def group(self, actor: Actor | None = None, *, workers: int = 2, capacity: int = 100,
              generation: int | None = None, start: bool = True, **kw: Any) -> LRUGroup:
        g = LRUGroup(actor or Counter(), self.db, router="testrouter", worker="w",  # type: ignore[arg-type]
                     workers=workers, capacity=capacity, interval=INTERVAL, clock=self.clock,
                     registry=CollectorRegistry(), generation=generation, **kw)
        self.db.group = g
        if start:
            g.startService()
            self.addCleanup(lambda: g.running and g.stopService())
        return g

    async def stored_is(self, id: Key, n: int) -> bool:
        return bool(await self.stored(id) == n)

    async def stored(self, id: Key, collection: str = "counters") -> Any:
        doc = await self.backend.get(collection, id)
        return None if doc is None else doc["attrs"].get("n")


class Eviction(StorageCase):
    async def test_least_recently_used_entity_is_saved_then_dropped(self) -> None:
        g = self.group(workers=1, capacity=2)
        await g.call(1, "add", 5)
        await g.call(2, "add", 6)
        await g.call(1, "get")  # 2 is now the least recently used
        await g.call(3, "add", 7)
        worker = g.workers[0]
        await wait_for(lambda: len(worker.slots) == 2, 10, "eviction down to capacity")
        self.assertEqual(list(worker.slots), [1, 3])
        self.assertEqual(await self.stored(2), 6)
        # the save of 2 happened while 2 was still resident
        i = next(i for i, ids in enumerate(self.db.saves) if 2 in ids)
        self.assertIn(2, self.db.resident_at_save[i])
        # the next message loads it back from storage
        self.assertEqual(await g.call(2, "get"), 6)
        self.assertEqual(self.db.loads[2], 2)

    async def test_clean_entities_are_evicted_without_a_save(self) -> None:
        g = self.group(workers=1, capacity=1)
        await g.call(1, "get")  # created, never changed: nothing to store
        await g.call(2, "get")
        await wait_for(lambda: list(g.workers[0].slots) == [2], 10, "eviction of 1")
        self.assertEqual(self.db.saves, [])
        self.assertIsNone(await self.backend.get("counters", 1))

    async def test_an_eviction_whose_save_fails_keeps_the_entity_dirty_and_resident(self) -> None:
        g = self.group(workers=1, capacity=1)
        await g.call(1, "add", 5)
        self.db.fail_saves = True
        await g.call(2, "add", 1)
        await wait_for(lambda: self.db.saves, 10, "the eviction's save attempt")
        worker = g.workers[0]
        await wait_for(lambda: not worker._evicting, 10, "the eviction to give up")
        self.assertEqual(set(worker.slots), {1, 2})
        self.assertTrue(worker.slots[1].entity.dirty)
        self.assertIsNone(await self.backend.get("counters", 1))
        # a periodic round fails too, and still nothing is lost
        self.clock.advance(INTERVAL)
        await wait_for(lambda: g.saver.rounds == 1 and not g.saver._lock.locked, 10,
                       "the failing round")
        self.assertTrue(worker.slots[1].entity.dirty)
        # storage is back: the next round stores both and the next message evicts
        self.db.fail_saves = False
        self.clock.advance(INTERVAL)
        await wait_for(lambda: self.stored(1), 10, "1 stored by the next round")
        self.assertEqual(await self.stored(2), 1)
        self.assertFalse(worker.slots[1].entity.dirty)
        await g.call(3, "get")
        await wait_for(lambda: len(worker.slots) == 1, 10, "eviction after recovery")

    async def test_a_save_action_whose_save_fails_answers_an_error_and_keeps_the_change(
            self) -> None:
        g = self.group(workers=1)
        self.assertEqual(await g.call(1, "add_durably", 2), 2)
        self.assertEqual(await self.stored(1), 2)
        self.db.fail_saves = True
        with self.assertRaises(SaveFailed):
            await g.call(1, "add_durably", 3)
        entity = g.workers[0].slots[1].entity
        self.assertTrue(entity.dirty)  # applied in memory, kept for the retry
        self.assertEqual(entity.get("n"), 5)
        self.assertEqual(await self.stored(1), 2)
        self.db.fail_saves = False
        self.clock.advance(INTERVAL)
        await wait_for(lambda: self.stored_is(1, 5), 10, "the periodic round to store 5")

    async def test_an_entity_used_during_its_eviction_save_stays(self) -> None:
        g = self.group(workers=1, capacity=1)
        await g.call(1, "add", 1)
        gate: defer.Deferred[None] = defer.Deferred()
        real = self.db.save_entities

        async def held_save(collection: str, items: Any) -> Any:
            await gate
            return await real(collection, items)

        self.db.save_entities = held_save  # type: ignore[method-assign]
        await g.call(2, "get")  # starts evicting 1; its save is held
        await g.call(1, "add", 1)  # 1 is used (and changed) meanwhile
        gate.callback(None)
        worker = g.workers[0]
        await wait_for(lambda: not worker._evicting, 10, "the eviction pass to finish")
        self.assertIn(1, worker.slots)
        self.assertEqual(await g.call(1, "get"), 2)


class Loading(StorageCase):
    async def test_100_concurrent_first_messages_share_one_load(self) -> None:
        g = self.group()
        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(g.call(7, "add", 1)) for _ in range(100)])
        self.assertEqual(self.db.loads, {7: 1})
        self.assertEqual(sorted(results), list(range(1, 101)))
        self.assertEqual(results, list(range(1, 101)))  # run one at a time, in arrival order

    async def test_messages_to_one_entity_run_one_at_a_time(self) -> None:
        actor = Counter()
        actor.gate = defer.Deferred()
        g = self.group(actor)
        first = defer.Deferred.fromCoroutine(g.call(1, "add_after_gate", 10))
        second = defer.Deferred.fromCoroutine(g.call(1, "add", 1))
        self.assertFalse(second.called)
        actor.gate.callback(None)
        self.assertEqual(await first, 10)
        self.assertEqual(await second, 11)

    async def test_a_failed_load_fails_its_waiters_and_the_next_message_retries(self) -> None:
        g = self.group()
        self.db.fail_loads = True
        calls = [defer.Deferred.fromCoroutine(g.call(3, "get")) for _ in range(5)]
        for d in calls:
            with self.assertRaises(LoadFailed):
                await d
        self.assertEqual(self.db.loads[3], 1)
        self.assertEqual(g.resident(), 0)
        self.db.fail_loads = False
        self.assertEqual(await g.call(3, "get"), 0)

    async def test_unknown_actions_and_missing_entities_are_typed_errors(self) -> None:
        g = self.group(Guarded())
        with self.assertRaises(UnknownAction):
            await g.call(1, "nosuch")
        with self.assertRaises(EntityNotFound):
            await g.call(1, "get")
        with self.assertRaises(ValueError):
            await g.call(1, "make", False)
        with self.assertRaises(EntityNotFound):  # the refused creation left nothing behind
            await g.call(1, "get")
        self.assertEqual(await g.call(1, "make_nothing"), "declined")
        with self.assertRaises(EntityNotFound):
            await g.call(1, "get")
        self.assertEqual(await g.call(1, "make", True), "made")
        self.assertEqual(await g.call(1, "add", 2), 2)
        await g.flush()
        self.assertEqual(await self.stored(1, "guarded"), 2)

    async def test_data_fixes_run_on_load_once_and_new_entities_start_fixed(self) -> None:
        fixes = self.mktemp()
        os.makedirs(fixes)
        with open(os.path.join(fixes, "0001_start_at_100.py"), "w") as f:
            f.write(textwrap.dedent("""\
                TARGET_VERSION = 1
                def fix(entity):
                    entity["n"] = entity.get("n", 0) + 100
                """))
        await self.backend.upsert("counters", 1, Entity(1, 0, {"n": 1}).to_doc())
        g = self.group(fixer=DataFixer(fixes, kind="counter"))
        self.assertEqual(await g.call(1, "get"), 101)
        self.assertEqual(await g.call(2, "get"), 0)  # new: created at the latest version
        await g.flush()
        doc = await self.backend.get("counters", 1)
        self.assertEqual((doc["version"], doc["attrs"]["n"]), (1, 101))
        self.assertEqual(sorted(e.id for e in g.entities()), [1, 2])
        # loaded again (by a new group): the fix does not run twice
        g2 = self.group(fixer=DataFixer(fixes, kind="counter"))
        self.assertEqual(await g2.call(1, "get"), 101)


class PeriodicSave(StorageCase):
    async def test_dirty_entities_are_saved_every_interval_and_only_then(self) -> None:
        g = self.group()
        for i in range(10):
            await g.call(i, "add", i + 1)
        self.clock.advance(INTERVAL - 1)
        self.assertEqual(self.db.saves, [])
        self.clock.advance(1)
        await wait_for(lambda: g.saver.rounds == 1 and not g.saver._lock.locked, 10,
                       "the first round")
        self.assertEqual([await self.stored(i) for i in range(10)], list(range(1, 11)))
        self.assertEqual(len(self.db.saves), 1)
        # nothing changed: the next round writes nothing; one change: one entity written
        self.clock.advance(INTERVAL)
        await wait_for(lambda: g.saver.rounds == 2, 10, "the second round")
        self.assertEqual(len(self.db.saves), 1)
        await g.call(4, "add", 100)
        self.clock.advance(INTERVAL)
        await wait_for(lambda: len(self.db.saves) == 2 and not g.saver._lock.locked, 10,
                       "the third round")
        self.assertEqual(self.db.saves[1], [4])
        self.assertEqual(await self.stored(4), 105)

    async def test_stopping_the_group_saves_everything(self) -> None:
        g = self.group(start=False)
        g.startService()
        await g.call(1, "add", 3)
        await g.stopService()
        self.assertEqual(await self.stored(1), 3)

    async def test_a_newer_instance_fences_off_an_older_ones_saves(self) -> None:
        old = self.group()
        await old.call(1, "add", 1)
        await old.flush()
        new = self.group()
        self.assertGreater(await new.generation(), await old.generation())
        await new.call(1, "add", 10)
        await new.flush()
        await old.call(1, "add", 1000)  # a stale copy in the older process
        report = await old.flush()
        self.assertEqual(report.stale, [1])
        self.assertEqual(await self.stored(1), 11)
        self.assertEqual(old.resident(), 0)  # dropped; the next message reloads
        self.assertEqual(await old.call(1, "get"), 11)


class SaverBatches(StorageCase):
    def saver(self, entities: list[tuple[Entity, int]], **kw: Any) -> Saver:
        s = Saver(self.db, "things", lambda: entities, interval=INTERVAL,  # type: ignore[arg-type]
                  clock=self.clock, registry=CollectorRegistry(), **kw)
        return s

    async def test_batches_and_acknowledged_entities_only(self) -> None:
        await self.backend.save_entity("things", 3, {"_id": 3}, 9)
        entities = [(Entity(i, attrs={"v": i}), 1) for i in range(5)]
        stale: list[Key] = []
        s = self.saver(entities, batch_size=2, on_stale=lambda e, err: stale.append(e.id))
        report = await s.flush()
        self.assertEqual(self.db.saves, [[0, 1], [2, 3], [4]])
        self.assertEqual((report.saved, report.stale), ([0, 1, 2, 4], [3]))
        self.assertEqual(stale, [3])
        self.assertEqual([e.dirty for e, _ in entities], [False, False, False, True, False])

    async def test_one_unstorable_entity_does_not_hold_back_its_batch(self) -> None:
        entities = [(Entity(i, attrs={"v": i}), 0) for i in range(3)]
        entities[1][0]["v"] = 2**70  # a plain int, but outside what storage accepts
        report = await self.saver(entities).flush()
        self.assertEqual((report.saved, report.failed), ([0, 2], [1]))
        self.assertTrue(entities[1][0].dirty)
        self.assertEqual(len(self.flushLoggedErrors(InvalidDocument)), 1)

    async def test_a_change_during_the_save_keeps_the_entity_dirty(self) -> None:
        e = Entity(1, attrs={"v": 1})
        s = self.saver([(e, 0)])
        d = defer.Deferred.fromCoroutine(s.flush())
        e["v"] = 2  # after the snapshot, before storage answered
        await d
        self.assertTrue(e.dirty)
        await s.flush()
        self.assertFalse(e.dirty)
        self.assertEqual((await self.backend.get("things", 1))["attrs"]["v"], 2)

    async def test_stale_refusal_is_counted(self) -> None:
        registry = CollectorRegistry()
        await self.backend.save_entity("things", 1, {"_id": 1}, 5)
        e = Entity(1)
        s = Saver(self.db, "things", lambda: [(e, 4)], clock=self.clock,  # type: ignore[arg-type]
                  registry=registry, name="players")
        report = await s.flush()
        self.assertEqual(report.stale, [1])
        self.assertEqual(registry.get_sample_value("rl_saver_stale_total",
                                                   {"saver": "players"}), 1.0)
        self.assertIsInstance(StaleGeneration("things", 1, 4, 5), Exception)


class RegionActors(StorageCase):
    async def test_rolecity_agent_grants_resources_and_records_the_name(self) -> None:
        g = self.group(RoleCityActor())
        uid = 5 << 16 | 1
        self.assertEqual(await g.call(uid, "get"),
                         {"userid": uid, "name": "", "resources": {"gold": 0, "food": 0,
                                                                   "oil": 0}})
        r = await g.call(uid, "add_resources", {"gold": 100, "oil": 5})
        self.assertEqual(r, {"code": 0, "resources": {"gold": 100, "food": 0, "oil": 5}})
        self.assertEqual((await g.call(uid, "add_resources", {"gold": -1}))["code"], 202)
        self.assertEqual((await g.call(uid, "set_name", "Alice"))["code"], 0)
        # add_resources saves before it replies: the grant is in storage already
        doc = await self.backend.get("rolecity", uid)
        self.assertEqual(doc["attrs"]["gold"], 100)

    async def test_names_are_unique_under_concurrent_reservations(self) -> None:
        names = NameIndex(self.backend)
        other = NameIndex(self.open_backend())  # another process's connection to the file
        results = await defer.gatherResults([
            defer.Deferred.fromCoroutine((names if i % 2 else other).reserve("alice", i))
            for i in range(20)])
        self.assertEqual(results.count(True), 1)
        owner = results.index(True)
        self.assertEqual(await names.lookup("alice"), owner)
        self.assertTrue(await names.reserve("alice", owner))  # idempotent for the owner
        self.assertFalse(await names.release("alice", owner + 1))
        self.assertTrue(await names.release("alice", owner))
        self.assertTrue(await names.reserve("alice", 99))

    async def test_mailbox_deliver_list_read(self) -> None:
        g = self.group(MailActor())
        uid = 7 << 16 | 1
        self.assertEqual(await g.call(uid, "list"), [])
        r1 = await g.call(uid, "deliver", {"from": 1, "title": "hi", "body": "b1", "key": "k"})
        self.assertEqual(r1, {"mailid": 1, "duplicate": False})
        self.assertEqual(await g.call(uid, "deliver", {"title": "again", "key": "k"}),
                         {"mailid": 1, "duplicate": True})
        await g.call(uid, "deliver", {"title": "second", "attachments": {"gold": 5}})
        listed = await g.call(uid, "list")
        self.assertEqual([(m["id"], m["read"], m["attachments"]) for m in listed],
                         [(2, False, True), (1, False, False)])
        self.assertEqual((await g.call(uid, "read", 1))["body"], "b1")
        self.assertTrue((await g.call(uid, "list"))[1]["read"])
        self.assertIsNone(await g.call(uid, "read", 99))
        with self.assertRaises(ValueError):
            await g.call(uid, "deliver", {"title": ""})
        await g.flush()
        doc = await self.backend.get("mailbox", uid)
        self.assertEqual(len(doc["components"]["mail"]["mails"]), 2)


class RestartedRegionNodes(unittest.TestCase):
    """rolecity1 and mail1 as real processes, reached the way GM tools reach them."""

    timeout = 120

    async def call(self, lc: LocalCluster, node: str, service: str, method: str,
                   *args: Any) -> Any:
        status, body = await lc.gm("POST", "/call", {
            "node": node, "service": service, "method": method, "args": list(args)},
            timeout=20)
        self.assertEqual(status, 200, body)
        return body["result"]

    async def test_gm_grants_and_mail_survive_restarts(self) -> None:
        names = ["master", "mail1", "rolecity1"]
        lc = LocalCluster(self.mktemp(), names)
        self.addCleanup(lc.stop_all)
        await lc.start(*names)
        await lc.wait_up(names)
        uid = 42 << 16 | 1
        r = await self.call(lc, "rolecity1", "rolerouter", "call", uid, "add_resources",
                            {"gold": 100})
        self.assertEqual(r["resources"]["gold"], 100)
        # deliver is not saved at once: the stop's final flush stores it
        await self.call(lc, "mail1", "mailrouter", "call", uid, "deliver",
                        {"from": 0, "title": "welcome", "body": "hello"})
        self.assertEqual(await lc.nodes["rolecity1"].stop(), 0)
        self.assertEqual(await lc.nodes["mail1"].stop(), 0)
        await lc.start("mail1", "rolecity1")
        await lc.wait_up(names)
        got = await self.call(lc, "rolecity1", "rolerouter", "call", uid, "get")
        self.assertEqual(got["resources"]["gold"], 100)
        mails = await self.call(lc, "mail1", "mailrouter", "call", uid, "list")
        self.assertEqual([m["title"] for m in mails], ["welcome"])

        # add_resources saves before it replies: even a SIGKILL right after keeps it
        await self.call(lc, "rolecity1", "rolerouter", "call", uid, "add_resources",
                        {"gold": 5, "food": 7})
        await lc.nodes["rolecity1"].kill()
        await lc.start("rolecity1")
        await lc.wait_up(names)
        got = await self.call(lc, "rolecity1", "rolerouter", "call", uid, "get")
        self.assertEqual((got["resources"]["gold"], got["resources"]["food"]), (105, 7))
        stats = await self.call(lc, "rolecity1", "rolerouter", "stats")
        self.assertEqual(stats["resident"], 1)
        self.assertGreaterEqual(stats["generation"], 3)

    async def test_rolecity_runs_data_fixes_on_load_and_on_resident_players(self) -> None:
        root = os.path.abspath(self.mktemp())
        shutil.copytree(os.path.join(REPO, "etc", "game"), os.path.join(root, "etc", "game"))
        os.makedirs(os.path.join(root, "hotfix", "codefix"))
        fixes = os.path.join(root, "hotfix", "datafix", "rolecity")
        os.makedirs(fixes)
        write_fix(fixes, 1, 'entity["gold"] = entity.get("gold", 0) + 1000')
        names = ["master", "rolecity1"]
        lc = LocalCluster(self.mktemp(), names, overrides={"hotreload": {"root": root}})
        self.addCleanup(lc.stop_all)
        uid, other = 43 << 16 | 1, 44 << 16 | 1
        # players stored before the fix shipped (version 0)
        db = EmbeddedBackend(os.path.join(lc.run_dir, "data", "region1.sqlite3"))
        for u in (uid, other):
            await db.upsert("rolecity", u, Entity(u, 0, {"gold": 5}).to_doc())
        await db.close()
        await lc.start(*names)
        await lc.wait_up(names)

        got = await self.call(lc, "rolecity1", "rolerouter", "call", uid, "get")
        self.assertEqual(got["resources"]["gold"], 1005)
        # a fix shipped while the player is resident runs through GM's POST /datafix
        write_fix(fixes, 2, 'entity["gold"] = entity["gold"] * 2')
        status, body = await lc.gm("POST", "/datafix", {"kinds": ["rolecity"]}, timeout=30)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["totals"]["rolecity"], {"entities": 1, "fixed": 1, "failed": 0})
        got = await self.call(lc, "rolecity1", "rolerouter", "call", uid, "get")
        self.assertEqual(got["resources"]["gold"], 2010)
        # a player loaded from now on gets both fixes; each ran once per player
        got = await self.call(lc, "rolecity1", "rolerouter", "call", other, "get")
        self.assertEqual(got["resources"]["gold"], 2010)
        self.assertEqual(await lc.nodes["rolecity1"].stop(), 0)
        await lc.start("rolecity1")
        await lc.wait_up(names)
        for u in (uid, other):
            got = await self.call(lc, "rolecity1", "rolerouter", "call", u, "get")
            self.assertEqual(got["resources"]["gold"], 2010)

def write_fix(directory: str, version: int, body: str) -> None:
    with open(os.path.join(directory, f"{version:04d}_fix.py"), "w") as f:
        f.write(f"TARGET_VERSION = {version}\n\ndef fix(entity):\n    {body}\n")
