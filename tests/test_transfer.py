"""The transfer API (ledger -> inbox, two steps, idempotent, resumable), the player fence,
rolecity's fenced transfer and name-index handlers, and the fenced rolecache — in process,
over embedded backends (real SQLite), with crashes simulated at every step."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.nodes.common import transfer
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.lru import LRUGroup
from rltwist.nodes.common.playerfence import PlayerFence
from rltwist.nodes.common.rolecache import RoleCache
from rltwist.nodes.common.transfer import Receiver
from rltwist.nodes.rolecity.service import RoleCityActor, RoleRouter
from rltwist.storage import EmbeddedBackend, StaleGeneration

UID = 9 << 16 | 1


def grant_applier(entity: Entity, entry: dict[str, Any]) -> None:
    """What the role gateway does with a grant: add the resources."""
    if entry["kind"] != "grant":
        raise ValueError(f"unknown transfer kind {entry['kind']!r}")
    for res, n in entry["items"].items():
        entity.incr(res, n)


class LedgerAndInbox(unittest.TestCase):
    def test_take_marks_and_hands_untaken_entries_and_rehands_them_to_newer_generations(
            self) -> None:
        src = Entity(UID)
        a = transfer.add(src, "rolecity", "grant", {"gold": 5}, now_ms=1)
        b = transfer.add(src, "rolecity", "grant", {"oil": 2}, now_ms=2)
        self.assertTrue(a.startswith("rolecity-") and a != b)
        self.assertEqual(transfer.take(src, UID, 3), [
            {"id": a, "kind": "grant", "items": {"gold": 5}},
            {"id": b, "kind": "grant", "items": {"oil": 2}}])
        self.assertEqual(transfer.entries(src)[a]["taken_by"], [UID, 3])
        # the same generation again (a retry): handed again; a newer one takes them over
        self.assertEqual([e["id"] for e in transfer.take(src, UID, 3)], [a, b])
        self.assertEqual([e["id"] for e in transfer.take(src, UID, 4)], [a, b])
        self.assertEqual(transfer.entries(src)[b]["taken_by"], [UID, 4])
        # an older generation gets nothing taken by a newer one, another taker neither
        self.assertEqual(transfer.take(src, UID, 3), [])
        self.assertEqual(transfer.take(src, UID + 1, 9), [])
        # confirm deletes only what (taker, generation or older) took
        self.assertEqual(transfer.confirm(src, UID, 3, [a]), 0)
        self.assertEqual(transfer.confirm(src, UID, 4, [a, "rolecity-gone"]), 1)
        self.assertEqual(list(transfer.entries(src)), [b])

    def test_an_entry_never_taken_is_not_deleted_by_a_confirm(self) -> None:
        src = Entity(UID)
        a = transfer.add(src, "rolecity", "grant", {"gold": 5})
        self.assertEqual(transfer.confirm(src, UID, 7, [a]), 0)
        self.assertIn(a, transfer.entries(src))

    def test_accept_is_true_only_the_first_time_and_forget_drops_the_id(self) -> None:
        dst = Entity(UID)
        self.assertTrue(transfer.accept(dst, "rolecity-1"))
        self.assertFalse(transfer.accept(dst, "rolecity-1"))
        self.assertTrue(transfer.accept(dst, "mail-1"))
        self.assertEqual(transfer.applied(dst, "rolecity"), ["rolecity-1"])
        self.assertEqual(transfer.forget(dst, ["rolecity-1"]), 1)
        self.assertEqual(transfer.applied(dst), ["mail-1"])

    def test_a_ledger_is_bounded(self) -> None:
        src = Entity(UID)
        for i in range(transfer.MAX_ENTRIES):
            transfer.add(src, "rolecity", "grant", {"gold": 1}, transfer_id=f"rolecity-{i}")
        with self.assertRaises(transfer.LedgerFull):
            transfer.add(src, "rolecity", "grant", {"gold": 1})
        # an id already there is an idempotent retry, not a new entry
        self.assertEqual(transfer.add(src, "rolecity", "grant", {"gold": 1},
                                      transfer_id="rolecity-3"), "rolecity-3")

    def test_bad_ids_and_generations_are_refused(self) -> None:
        for bad in (None, 5, "", "a.b", "$x", "x" * 200):
            with self.assertRaises(transfer.BadTransfer):
                transfer.check_ids([bad])
        with self.assertRaises(transfer.BadTransfer):
            transfer.take(Entity(1), 1, -1)
        with self.assertRaises(transfer.BadTransfer):
            transfer.new_transfer_id("role-city")


# -- crash at any step: a model of the two owners and their storage ---------------------


class Crash(Exception):
    """The process that reached this step died (its memory is lost)."""


class World:
    """A source (rolecity: the ledger, saved before each answer) and a destination (the
    player, saved fenced by generation) with a stored copy each; crashes revert memory."""

    def __init__(self) -> None:
        self.source = Entity(UID)
        self.stored_source = self.source.to_doc()
        self.player = Entity(UID, attrs={"gold": 0})
        self.stored_player = self.player.to_doc()
        self.stored_generation = 0
        self.generation = 0
        self.crash_at: str | None = None
        self.receiver = Receiver("rolecity", grant_applier, step="grant")
        self.granted = 0

    def maybe_crash(self, site: str) -> None:
        if self.crash_at == site:
            self.crash_at = None
            raise Crash(site)

    def login(self) -> None:
        """A new instance: claim a newer generation, then load the stored player."""
        self.generation = self.stored_generation + 1
        self.stored_generation = self.generation
        self.player = Entity.from_doc(self.stored_player)

    def restart_source(self) -> None:
        self.source = Entity.from_doc(self.stored_source)

    def grant(self, gold: int) -> None:
        transfer.add(self.source, "rolecity", "grant", {"gold": gold})
        self.stored_source = self.source.to_doc()
        self.granted += gold

    def fence(self, generation: int) -> None:
        if generation < self.stored_generation:
            raise StaleGeneration("player", UID, generation, self.stored_generation)

    async def take(self, generation: int) -> list[dict[str, Any]]:
        self.fence(generation)
        handed = transfer.take(self.source, UID, generation)
        self.maybe_crash("source_take_before_save")
        self.stored_source = self.source.to_doc()
        self.maybe_crash("source_take_after_save")
        return handed

    async def confirm(self, generation: int, ids: list[str]) -> int:
        self.fence(generation)
        self.maybe_crash("source_confirm_before_delete")
        n = transfer.confirm(self.source, UID, generation, ids)
        self.stored_source = self.source.to_doc()
        self.maybe_crash("source_confirm_after_save")
        return n

    async def save(self, player: Entity, generation: int) -> bool:
        if self.crash_at == "player_save_fails":
            self.crash_at = None
            return False
        if generation < self.stored_generation:
            return False
        self.stored_player = player.to_doc()
        return True

    async def pull(self) -> transfer.Pulled:
        player, gen = self.player, self.generation
        return await self.receiver.pull(
            player, take=lambda: self.take(gen), save=lambda: self.save(player, gen),
            confirm=lambda ids: self.confirm(gen, ids))


DEST_SITES = ("after_grant_take", "after_grant_apply", "after_confirm")
SOURCE_SITES = ("source_take_before_save", "source_take_after_save",
                "source_confirm_before_delete", "source_confirm_after_save")
SITES = (None, *DEST_SITES, *SOURCE_SITES, "player_save_fails")


class CrashAnywhere(unittest.TestCase):
    """Every pair of crash sites in two successive pulls (plus a third, clean one): the
    grant is applied exactly once and both sides end empty."""

    def setUp(self) -> None:
        self.patch(transfer, "crashpoint", self._crashpoint)
        self.world: World | None = None

    def _crashpoint(self, name: str) -> None:
        assert self.world is not None
        self.world.maybe_crash(name)

    async def pull_surviving(self, world: World) -> None:
        """One pull; a crash of either side is followed by what happens in production."""
        try:
            real_confirm = world.confirm

            async def confirm_then_maybe_die(generation: int, ids: list[str]) -> int:
                n = await real_confirm(generation, ids)
                world.maybe_crash("after_confirm")  # the player's node dies before forget
                return n

            world.confirm = confirm_then_maybe_die  # type: ignore[method-assign]
            await world.pull()
        except Crash as crash:
            if str(crash) in DEST_SITES:
                world.login()  # role node died: the player logs in again elsewhere
            else:
                world.restart_source()  # rolecity died: restarted from its storage
        finally:
            world.confirm = real_confirm  # type: ignore[method-assign]

    async def test_a_grant_is_applied_exactly_once_whatever_two_crashes_happen(self) -> None:
        checked = 0
        for first, second in itertools.product(SITES, repeat=2):
            world = self.world = World()
            world.login()
            world.grant(100)
            world.crash_at = first
            await self.pull_surviving(world)
            world.grant(10)
            world.crash_at = second
            await self.pull_surviving(world)
            world.crash_at = None
            await world.pull()
            await world.pull()  # a later pull forgets ids the source no longer holds
            ok = await world.save(world.player, world.generation)
            where = f"crashes at {first} then {second}"
            self.assertTrue(ok, where)
            self.assertEqual(world.player["gold"], 110, where)
            self.assertEqual(Entity.from_doc(world.stored_player)["gold"], 110, where)
            self.assertEqual(transfer.entries(Entity.from_doc(world.stored_source)), {}, where)
            self.assertEqual(transfer.applied(world.player), [], where)
            checked += 1
        self.assertEqual(checked, len(SITES) ** 2)
        print(f"\n  transfer crash schedules checked: {checked}, violations: 0")

    async def test_a_stale_instance_cannot_apply_for_good(self) -> None:
        world = self.world = World()
        world.login()
        stale_player, stale_gen = world.player, world.generation
        world.grant(100)
        handed = await world.take(stale_gen)
        world.login()  # a newer login claims before the stale instance applies
        transfer.accept(stale_player, handed[0]["id"])
        grant_applier(stale_player, handed[0])
        self.assertFalse(await world.save(stale_player, stale_gen))  # fenced by storage
        with self.assertRaises(StaleGeneration):
            await world.confirm(stale_gen, [handed[0]["id"]])
        await world.pull()
        self.assertEqual(Entity.from_doc(world.stored_player)["gold"], 100)
        self.assertEqual(transfer.entries(world.source), {})

    async def test_overlapping_pulls_of_one_player_apply_once(self) -> None:
        world = self.world = World()
        world.login()
        world.grant(100)
        gate: defer.Deferred[None] = defer.Deferred()
        real_take = world.take

        async def slow_take(generation: int) -> list[dict[str, Any]]:
            handed = await real_take(generation)
            await gate
            return handed

        world.take = slow_take  # type: ignore[method-assign]
        first = defer.Deferred.fromCoroutine(world.pull())
        # a second Receiver object (a caller that makes one per pull) is serialized too
        world.receiver = Receiver("rolecity", grant_applier, step="grant")
        second = defer.Deferred.fromCoroutine(world.pull())
        gate.callback(None)
        results = await defer.gatherResults([first, second])
        self.assertEqual(world.player["gold"], 100)
        self.assertEqual(sum(len(r.applied) for r in results), 1)

    async def test_an_entry_whose_apply_raises_stays_at_the_source(self) -> None:
        world = self.world = World()
        world.login()
        transfer.add(world.source, "rolecity", "troops", {"archers": 5})
        world.grant(7)
        result = await world.pull()
        self.assertEqual(len(result.failed), 1)
        self.assertEqual(world.player["gold"], 7)
        self.flushLoggedErrors(ValueError)
        self.assertEqual([e["kind"] for e in transfer.entries(world.source).values()],
                         ["troops"])
        self.assertEqual(transfer.applied(world.player), [])


# -- rolecity: fenced transfers and names over real storage -----------------------------


class Gated:
    """A backend wrapper: counts player-generation reads and can hold name inserts."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.reads = 0
        self.hold_inserts: defer.Deferred[None] | None = None
        self.held = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def get_entity(self, collection: str, id: Any) -> Any:
        self.reads += 1
        return await self.backend.get_entity(collection, id)

    async def insert(self, collection: str, id: Any, doc: Any) -> None:
        if self.hold_inserts is not None:
            self.held += 1
            await self.hold_inserts
        await self.backend.insert(collection, id, doc)


class FakeCluster:
    """What rolerouter uses of its cluster: the node's services and send."""

    def __init__(self, cache: RoleCache, sent: list[tuple[Any, ...]]) -> None:
        self.services = {"rolecache": cache}
        self.sent = sent

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.sent.append((node, service, method, *args))


class RoleCityCase(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        root = self.mktemp()
        os.makedirs(root)
        self.region = self.backend(os.path.join(root, "region1.sqlite3"))
        self.region_gated = Gated(self.region)
        self.roledb = Gated(self.backend(os.path.join(root, "roledb.sqlite3")))
        self.fence = PlayerFence(self.roledb, registry=CollectorRegistry())  # type: ignore[arg-type]
        self.group = LRUGroup(RoleCityActor(self.fence), self.region_gated,  # type: ignore[arg-type]
                              router="rolerouter", worker="agent", workers=2, capacity=100,
                              interval=300.0, clock=task.Clock(), registry=CollectorRegistry(),
                              generation=1,
                              router_cls=lambda g: RoleRouter(g, self.fence))
        self.group.startService()
        self.addCleanup(lambda: self.group.running and self.group.stopService())
        router = self.group.router
        assert isinstance(router, RoleRouter)
        self.router = router
        self.cache = RoleCache(on_generation=self.fence.observe)
        self.sent: list[tuple[Any, ...]] = []
        router.cluster = FakeCluster(self.cache, self.sent)  # type: ignore[assignment]

    def backend(self, path: str) -> EmbeddedBackend:
        b = EmbeddedBackend(path)
        self.addCleanup(lambda: defer.ensureDeferred(b.close()))
        return b

    async def claim(self, userid: int, generation: int, name: str = "") -> None:
        """What Auth does on the role node: the player's document now carries *generation*."""
        doc = {"_id": userid, "version": 0, "attrs": {"name": name}, "components": {}}
        await self.roledb.backend.save_entity("player", userid, doc, generation)

    async def stored_ledger(self, userid: int) -> dict[str, Any]:
        doc = await self.region.get("rolecity", userid)
        return {} if doc is None else doc["components"].get("ledger", {})


class RoleCityTransfers(RoleCityCase):
    async def test_grant_take_confirm_each_saved_before_the_answer(self) -> None:
        await self.claim(UID, 3)
        r = await self.router.grant(UID, {"gold": 100})
        self.assertEqual((r["code"], r["pending"], r["online"]), (0, {"gold": 100}, None))
        tid = r["transfer_id"]
        self.assertEqual((await self.stored_ledger(UID))[tid]["taken_by"], None)
        handed = await self.router.take_transfers(UID, 3)
        self.assertEqual(handed, [{"id": tid, "kind": "grant", "items": {"gold": 100}}])
        self.assertEqual((await self.stored_ledger(UID))[tid]["taken_by"], [UID, 3])
        self.assertEqual(await self.router.confirm_transfers(UID, 3, [tid]), 1)
        self.assertEqual(await self.stored_ledger(UID), {})
        self.assertEqual(await self.router.confirm_transfers(UID, 3, [tid]), 0)  # idempotent

    async def test_a_newer_generation_is_handed_what_an_older_one_took(self) -> None:
        await self.claim(UID, 3)
        tid = (await self.router.grant(UID, {"oil": 5}))["transfer_id"]
        await self.router.take_transfers(UID, 3)
        await self.claim(UID, 4)  # the instance of 3 died; a new login claimed 4
        handed = await self.router.take_transfers(UID, 4)
        self.assertEqual([e["id"] for e in handed], [tid])
        self.assertEqual((await self.stored_ledger(UID))[tid]["taken_by"], [UID, 4])

    async def test_take_and_confirm_of_a_stale_generation_are_refused(self) -> None:
        await self.claim(UID, 3)
        tid = (await self.router.grant(UID, {"gold": 1}))["transfer_id"]
        await self.router.take_transfers(UID, 3)
        await self.claim(UID, 5)
        with self.assertRaises(StaleGeneration):
            await self.router.take_transfers(UID, 3)
        reads = self.roledb.reads
        with self.assertRaises(StaleGeneration):
            await self.router.confirm_transfers(UID, 4, [tid])
        self.assertEqual(self.roledb.reads, reads, "a known-stale generation costs no read")
        self.assertEqual((await self.stored_ledger(UID))[tid]["taken_by"], [UID, 3])

    async def test_a_grant_to_an_online_player_tells_its_role_node(self) -> None:
        self.cache.set(UID, "role2", 3)
        r = await self.router.grant(UID, {"food": 9})
        self.assertEqual(r["online"], "role2")
        self.assertEqual(self.sent, [("role2", "gateway", "apply_grants", UID)])

    async def test_a_rolecache_set_teaches_the_fence_a_newer_generation(self) -> None:
        await self.claim(UID, 3)
        await self.router.grant(UID, {"food": 1})
        self.cache.set(UID, "role2", 6)
        reads = self.roledb.reads
        with self.assertRaises(StaleGeneration):
            await self.router.take_transfers(UID, 3)
        self.assertEqual(self.roledb.reads, reads)

    async def test_an_empty_ledger_answers_every_auth_without_a_fence_read(self) -> None:
        await self.claim(UID, 3)
        reads = self.roledb.reads
        self.assertEqual(await self.router.take_transfers(UID, 3), [])
        self.assertEqual(await self.router.take_transfers(UID, 2), [])  # stale: nothing either
        self.assertEqual(self.roledb.reads, reads)

    async def test_grants_stored_by_the_previous_version_are_taken_as_one_transfer(
            self) -> None:
        old = Entity(UID, attrs={"userid": UID, "name": "", "server_id": 1},
                     components={"grants": {"gold": 30, "food": 2}})
        await self.region.upsert("rolecity", UID, old.to_doc())
        await self.claim(UID, 2)
        handed = await self.router.take_transfers(UID, 2)
        self.assertEqual([(e["kind"], e["items"]) for e in handed],
                         [("grant", {"gold": 30, "food": 2})])
        doc = await self.region.get("rolecity", UID)
        self.assertNotIn("grants", doc["components"])

    async def test_bad_grants_are_refused_without_a_transfer(self) -> None:
        for bad in ({}, {"gems": 1}, {"gold": 0}, {"gold": True}, [1]):
            r = await self.router.grant(UID, bad)
            self.assertEqual(r["code"], 202, bad)
        self.assertEqual(await self.stored_ledger(UID), {})


class NameReconcile(RoleCityCase):
    """The gateway's rename: reserve new (fenced) -> save player -> release old (fenced) ->
    set_name; a crash between any two steps is repaired by reconcile at the next load."""

    A, B = 21 << 16 | 1, 22 << 16 | 1

    async def owner(self, key: str) -> Any:
        return await self.router.lookup_name(key)

    async def test_crash_after_reserving_the_new_name_releases_it(self) -> None:
        await self.claim(self.A, 1)
        self.assertTrue(await self.router.reserve_name("old", self.A, "Old", 1))
        self.assertTrue(await self.router.reserve_name("new", self.A, "New", 1))
        # the role node died before saving the player with "New": the document says "Old"
        await self.claim(self.A, 2, name="Old")
        r = await self.router.reconcile_names(self.A, 2, "Old")
        self.assertEqual((r["released"], r["reserved"], r["conflict"]), (["new"], False, None))
        self.assertIsNone(await self.owner("new"))
        self.assertEqual(await self.owner("old"), self.A)
        self.assertEqual((await self.group.call(self.A, "get"))["name"], "Old")

    async def test_crash_after_saving_the_new_name_releases_the_old_one(self) -> None:
        await self.claim(self.A, 1)
        self.assertTrue(await self.router.reserve_name("old", self.A, "Old", 1))
        self.assertTrue(await self.router.reserve_name("new", self.A, "New", 1))
        await self.claim(self.A, 2, name="New")  # saved, died before releasing "old"
        r = await self.router.reconcile_names(self.A, 2, "New")
        self.assertEqual(r["released"], ["old"])
        self.assertIsNone(await self.owner("old"))
        self.assertEqual(await self.owner("new"), self.A)
        self.assertEqual((await self.group.call(self.A, "get"))["name"], "New")

    async def test_a_name_lost_from_the_index_is_reserved_again(self) -> None:
        await self.claim(self.A, 1, name="Anna")
        r = await self.router.reconcile_names(self.A, 1, "Anna")
        self.assertEqual((r["key"], r["reserved"]), ("anna", True))
        self.assertEqual(await self.owner("anna"), self.A)
        again = await self.router.reconcile_names(self.A, 1, "Anna")
        self.assertEqual((again["released"], again["reserved"]), ([], False))

    async def test_two_players_racing_for_a_name_leave_one_owner(self) -> None:
        await self.claim(self.A, 1, name="Ann")
        await self.claim(self.B, 1, name="Bob")
        await self.router.reconcile_names(self.A, 1, "Ann")
        await self.router.reconcile_names(self.B, 1, "Bob")
        won = await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.router.reserve_name("zed", u, "Zed", 1))
            for u in (self.A, self.B)])
        self.assertEqual(sorted(won), [False, True])
        winner, loser = (self.A, self.B) if won[0] else (self.B, self.A)
        # the winner saves "Zed" and dies before releasing; the loser keeps its old name
        await self.claim(winner, 2, name="Zed")
        loser_name = "Ann" if loser == self.A else "Bob"
        await self.router.reconcile_names(winner, 2, "Zed")
        await self.router.reconcile_names(loser, 1, loser_name)
        self.assertEqual(await self.owner("zed"), winner)
        self.assertIsNone(await self.owner("ann" if winner == self.A else "bob"))
        self.assertEqual(await self.owner(loser_name.lower()), loser)

    async def test_a_name_held_by_another_player_is_reported_as_a_conflict(self) -> None:
        await self.claim(self.A, 1, name="Ann")
        await self.claim(self.B, 1, name="Ann")  # should never happen; must not be hidden
        await self.router.reconcile_names(self.A, 1, "Ann")
        r = await self.router.reconcile_names(self.B, 1, "Ann")
        self.assertEqual((r["reserved"], r["conflict"]), (False, self.A))
        self.assertEqual(await self.owner("ann"), self.A)

    async def test_an_empty_name_releases_everything(self) -> None:
        await self.claim(self.A, 1)
        await self.router.reserve_name("x1", self.A, "X1", 1)
        r = await self.router.reconcile_names(self.A, 1, "")
        self.assertEqual((r["released"], r["key"]), (["x1"], None))

    async def test_stale_name_writes_are_refused(self) -> None:
        await self.claim(self.A, 1)
        await self.router.reserve_name("old", self.A, "Old", 1)
        await self.claim(self.A, 2, name="Old")
        with self.assertRaises(StaleGeneration):
            await self.router.reserve_name("new", self.A, "New", 1)
        with self.assertRaises(StaleGeneration):
            await self.router.release_name("old", self.A, 1)
        with self.assertRaises(StaleGeneration):
            await self.router.reconcile_names(self.A, 1, "")
        self.assertIsNone(await self.owner("new"))
        self.assertEqual(await self.owner("old"), self.A)

    async def test_a_stale_reserve_in_flight_during_reconcile_is_cleaned_up(self) -> None:
        """The old instance's fence check passed, its insert is slow; the new owner claims
        and reconciles meanwhile: the reconcile waits for the insert and releases it."""
        await self.claim(self.A, 1, name="Old")
        await self.router.reconcile_names(self.A, 1, "Old")
        locks = self.router.name_locks = RecordingLock()
        self.region_gated.hold_inserts = gate = defer.Deferred()
        stale = defer.Deferred.fromCoroutine(
            self.router.reserve_name("late", self.A, "Late", 1))
        await _until(lambda: self.region_gated.held == 1)
        await self.claim(self.A, 2, name="Old")
        fresh = defer.Deferred.fromCoroutine(self.router.reconcile_names(self.A, 2, "Old"))
        # the reconcile runs as far as it can: to its end, or to the player's name lock
        await _until(lambda: fresh.called or locks.attempts.count(self.A) == 2)
        self.region_gated.hold_inserts = None
        gate.callback(None)
        self.assertTrue(await stale)
        r = await fresh
        self.assertEqual(r["released"], ["late"])
        self.assertIsNone(await self.owner("late"))


class RecordingLock(KeyedLock):
    """Records every acquisition attempt (to see a coroutine reach a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Any] = []

    def __call__(self, key: Any) -> Any:
        self.attempts.append(key)
        return super().__call__(key)


async def _until(check: Callable[[], bool]) -> None:
    from tests.util import wait_for

    await wait_for(check, 10, "the condition")


class FencedRoleCache(unittest.TestCase):
    def test_an_older_set_is_ignored_and_a_clear_needs_node_and_generation(self) -> None:
        seen: list[tuple[int, int]] = []
        cache = RoleCache(on_generation=lambda u, g: seen.append((u, g)))
        self.assertTrue(cache.set(UID, "role1", 4))
        self.assertTrue(cache.set(UID, "role2", 5))  # a newer login elsewhere
        self.assertFalse(cache.set(UID, "role1", 4))  # the old set arriving late
        self.assertEqual(cache.get(UID), "role2")
        self.assertFalse(cache.clear(UID, "role1", 4))  # the old logout
        self.assertFalse(cache.clear(UID, "role2", 4))
        self.assertEqual(cache.get(UID), "role2")
        self.assertTrue(cache.clear(UID, "role2", 5))
        self.assertIsNone(cache.get(UID))
        self.assertFalse(cache.set(UID, "role1", 4))  # still refused after the clear
        self.assertEqual(seen, [(UID, 4), (UID, 5)])

    def test_the_two_argument_forms_of_older_role_nodes_still_work(self) -> None:
        cache = RoleCache()
        cache.set(UID, "role1")
        self.assertEqual(cache.get(UID), "role1")
        self.assertFalse(cache.clear(UID, "role2"))
        self.assertTrue(cache.clear(UID, "role1"))
        self.assertIsNone(cache.get(UID))
        cache.set(UID, "role1", 3)
        self.assertTrue(cache.clear(UID, "role1"))

    def test_node_down_drops_its_players(self) -> None:
        cache = RoleCache()
        cache.set(1, "role1", 1)
        cache.set(2, "role2", 1)
        self.assertEqual(cache.node_down("role1"), 1)
        self.assertEqual((cache.get(1), cache.get(2)), (None, "role2"))
