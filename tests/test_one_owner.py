"""One owner, nothing lost — real processes, real Redis, embedded storage: the generation
claim at Auth (a frozen old instance that wakes first writes nothing; generations keep
rising after Redis loses its keys), a logout whose final save fails (the player is kept,
the save retried, nothing lost) and crash-safe rename (a role node SIGKILLed at a step of a
rename leaves one owner per name and no name reserved for ever)."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from rltwist.protocols import pb
from rltwist.redis import LOGOUT
from rltwist.storage import EmbeddedBackend
from tests.login_util import LoginCase, offline
from tests.util import metrics_text, node_is, wait_for

E = pb.ErrorCode
CRASH = {"RLTWIST_TEST_FLAGS": "crashpoints"}


class _Stored:
    lc: Any

    async def stored(self, userid: int, db: str = "roledb", coll: str = "player") -> Any:
        backend = EmbeddedBackend(str(self.lc.run_dir / "data" / f"{db}.sqlite3"))
        try:
            return await backend.get_entity(coll, userid)
        finally:
            await backend.close()

    async def stored_name(self, userid: int) -> str | None:
        entity = await self.stored(userid)
        return entity.doc["attrs"].get("name") if entity else None

    def node_of(self, client: Any) -> str:
        port = client.login_response.port
        return next(n for n in ("role1", "role2")
                    if n in self.lc.nodes and self.lc.node_config(n)["client_port"] == port)


class GenerationClaim(_Stored, LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]
    # no periodic save during the test: only the flows' own saves write
    overrides = {"storage": {"save_interval": 300.0}}

    async def test_a_frozen_instance_that_wakes_before_the_new_one_saved_writes_nothing(
            self) -> None:
        host, port = self.login_address()
        old = self.client("fred")
        await old.play(host, port)
        userid = old.login_response.userid
        self.assertEqual((await old.request(pb.Rename(name="Fred"))).code, E.OK)
        first = await self.stored(userid)
        old_node = self.node_of(old)
        proc = self.lc.nodes[old_node]
        proc.pause()
        self.addCleanup(proc.resume)
        await wait_for(lambda: node_is(self.lc, old_node, "down"), 15,
                       f"master to mark the frozen {old_node} down")
        new = self.client("fred")
        auth = await new.play(host, port)
        self.assertEqual(auth.name, "Fred")
        self.assertNotEqual(self.node_of(new), old_node)
        # claimed in storage before Auth answered, although the new one saved nothing yet
        claimed = await self.stored(userid)
        self.assertGreater(claimed.generation, first.generation)
        proc.resume()  # the old instance wakes first and tries to save and leave
        await old.closed
        await wait_for(lambda: node_is(self.lc, old_node, "up"), 15, f"{old_node} back")
        after = await self.stored(userid)
        self.assertEqual(after.generation, claimed.generation)
        self.assertEqual(after.doc, claimed.doc)
        # the owner still writes
        self.assertEqual((await new.request(pb.Rename(name="Fred2"))).code, E.OK)
        self.assertEqual(await self.stored_name(userid), "Fred2")

    async def test_generations_keep_rising_after_redis_loses_its_keys(self) -> None:
        host, port = self.login_address()
        c = self.client("gus")
        await c.play(host, port)
        userid = c.login_response.userid
        self.assertEqual((await c.request(pb.Rename(name="Gus"))).code, E.OK)
        c.close()
        await wait_for(lambda: offline(self, userid), 10, "gus's logout")
        before = (await self.stored(userid)).generation
        await self.state.client.execute("FLUSHALL")
        await self.wait_logins_available()
        again = self.client("gus")
        auth = await again.play(host, port)
        self.assertEqual(auth.name, "Gus")
        self.assertGreater((await self.stored(userid)).generation, before)
        # its saves are accepted (before the fix every one was refused as stale)
        self.assertEqual((await again.request(pb.Rename(name="Gus2"))).code, E.OK)
        again.close()
        await wait_for(lambda: offline(self, userid), 10, "gus's second logout")
        third = self.client("gus")
        self.assertEqual((await third.play(host, port)).name, "Gus2")


class FinalSaveRetried(_Stored, LoginCase):
    """A logout whose final save fails keeps the player until storage takes it."""

    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    # a locked database fails a save after storage.timeout; no periodic save meanwhile
    overrides = {"storage": {"save_interval": 300.0, "timeout": 1.0}}

    async def test_a_logout_whose_save_fails_keeps_the_player_until_storage_is_back(
            self) -> None:
        host, port = self.login_address()
        c = self.client("jo")
        await c.play(host, port)
        userid = c.login_response.userid
        self.assertEqual((await c.request(pb.Rename(name="Jo"))).code, E.OK)
        # the rename's clean-up (its intent cleared) is dirty: the final save must write it
        lock = sqlite3.connect(str(self.lc.run_dir / "data" / "roledb.sqlite3"), timeout=10,
                               isolation_level=None)
        self.addCleanup(lock.close)
        lock.execute("BEGIN EXCLUSIVE")  # storage "down" for the role node's writes
        c.close()
        await wait_for(lambda: self._retries_at_least(2), 30,
                       "role1 to retry the failing final save twice")
        # the player is still held: Redis keeps LOGOUT and a new login must wait
        user = await self.state.get_user(userid)
        self.assertEqual(user.state if user else None, LOGOUT)
        retry = self.client("jo")
        self.assertEqual((await retry.login(host, port)).code, E.RETRY_LATER)
        lock.execute("ROLLBACK")  # storage is back
        await wait_for(lambda: offline(self, userid), 60,
                       "the logout to finish once storage is back")
        stored = await self.stored(userid)
        self.assertEqual(stored.doc["attrs"]["name"], "Jo")
        self.assertFalse(stored.doc["components"].get("rename"))  # the dirty part landed
        again = self.client("jo")
        self.assertEqual((await again.play(host, port)).name, "Jo")

    async def _retries_at_least(self, n: int) -> bool:
        text = await metrics_text(self.lc, "role1")
        m = re.search(r"^rl_role_final_save_retries_total ([0-9.]+)$", text, re.M)
        return m is not None and float(m.group(1)) >= n


class _RenameCrash(_Stored, LoginCase):
    """A role node dies at one step of a rename; afterwards names agree with the player."""

    point = ""
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    overrides = {"storage": {"save_interval": 300.0}}
    expect_new_name = False  # True for a crash after the player was saved

    def setUp(self) -> Any:
        self.node_env = {"role1": {**CRASH, "RLTWIST_CRASH_POINTS": self.point}}
        return super().setUp()

    async def owner_of(self, name: str) -> Any:
        from rltwist.game.rolesystem import RoleSystem

        entity = await self.stored(RoleSystem().name_key(name), "region1", "names")
        return None if entity is None else entity.doc.get("owner")

    async def test_names_agree_with_the_player_after_the_crash(self) -> None:
        host, port = self.login_address()
        c = self.client("hal")
        await c.play(host, port)
        userid = c.login_response.userid
        self.assertEqual((await c.request(pb.Rename(name="Hal0"))).code, E.OK)  # step 1st time
        proc = self.lc.nodes["role1"]
        reply = c.request(pb.Rename(name="Hal"))  # the node dies at the step's 2nd time
        reply.addErrback(lambda f: None)
        await proc.wait_exit(20)
        self.assertFalse(proc.running)
        await wait_for(lambda: node_is(self.lc, "role1", "down"), 15, "role1 marked down")
        proc.env.pop("RLTWIST_CRASH_POINTS")
        await self.lc.start("role1")
        await self.wait_logins_available()
        again = self.client("hal")
        auth = await again.play(host, port)
        kept, freed = ("Hal", "Hal0") if self.expect_new_name else ("Hal0", "Hal")
        self.assertEqual(auth.name, kept)
        self.assertEqual(await self.stored_name(userid), kept)
        await wait_for(lambda: self._owner_is(kept, userid), 10, f"{kept} to be hal's")
        await wait_for(lambda: self._owner_is(freed, None), 10, f"{freed} to be free")
        # nobody is stuck: another player takes the freed name, not the kept one
        other = self.client("ivy")
        await other.play(host, port)
        self.assertEqual((await other.request(pb.Rename(name=kept))).code, E.NAME_TAKEN)
        self.assertEqual((await other.request(pb.Rename(name=freed))).code, E.OK)

    async def _owner_is(self, name: str, owner: Any) -> bool:
        return bool(await self.owner_of(name) == owner)


class RenameCrashAfterIntent(_RenameCrash):
    """The steps after it (reserve, save) are covered in tests/test_persistence.py."""

    point = "after_rename_intent@2"


del _RenameCrash
