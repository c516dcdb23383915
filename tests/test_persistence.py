"""Player data on role nodes: rename, periodic save, crash, clean restart and fencing —
real processes, real Redis, embedded storage."""

from __future__ import annotations

from typing import Any

from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.login_util import LoginCase, offline
from tests.util import equals, node_is, wait_for

E = pb.ErrorCode


class Persistence(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]
    overrides = {"storage": {"save_interval": 0.5}}

    async def stored(self, userid: int) -> dict[str, Any] | None:
        db = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            entity = await db.get_entity("player", userid)
            return entity.doc if entity is not None else None
        finally:
            await db.close()

    async def stored_name(self, userid: int) -> str | None:
        doc = await self.stored(userid)
        return doc["attrs"].get("name") if doc else None

    async def rename(self, client: Any, name: str) -> int:
        return (await client.request(pb.Rename(name=name))).code

    async def test_rename_is_checked_unique_and_survives_logout_and_login(self) -> None:
        host, port = self.login_address()
        a = self.client("anna")
        await a.play(host, port)
        self.assertEqual(await self.rename(a, "Anna"), E.OK)
        self.assertEqual(await self.rename(a, "x"), E.NAME_INVALID)
        b = self.client("bert")
        await b.play(host, port)
        self.assertEqual(await self.rename(b, "anna"), E.NAME_TAKEN)  # case-folded
        self.assertEqual(await self.rename(b, "Bert"), E.OK)
        self.assertEqual(await self.rename(a, "Anna2"), E.OK)  # frees "Anna"
        self.assertEqual(await self.rename(b, "Anna"), E.OK)
        a.close()
        await wait_for(lambda: offline(self, a.login_response.userid), 10, "anna's logout")
        again = self.client("anna")
        auth = await again.play(host, port)
        self.assertEqual(auth.name, "Anna2")

    async def test_periodic_save_survives_a_role_node_sigkill(self) -> None:
        host, port = self.login_address()
        c = self.client("carl")
        await c.play(host, port)
        userid = c.login_response.userid
        self.assertEqual(await self.rename(c, "Carl"), E.OK)
        await wait_for(lambda: equals(self.stored_name(userid), "Carl"), 10,
                       "the periodic save to store the new name")
        node = "role1" if c.login_response.port == self.lc.node_config("role1")[
            "client_port"] else "role2"
        await self.lc.nodes[node].kill()
        await wait_for(lambda: offline(self, userid), 15,
                       f"master to clear carl after {node} was killed")
        again = self.client("carl")
        auth = await again.play(host, port)
        self.assertEqual(auth.name, "Carl")

    async def test_a_frozen_old_instance_cannot_overwrite_newer_data(self) -> None:
        host, port = self.login_address()
        old = self.client("dora")
        await old.play(host, port)
        userid = old.login_response.userid
        self.assertEqual(await self.rename(old, "DoraOld"), E.OK)
        await wait_for(lambda: equals(self.stored_name(userid), "DoraOld"), 10,
                       "the first save")
        old_node = "role1" if old.login_response.port == self.lc.node_config("role1")[
            "client_port"] else "role2"
        # a rename is durable at its OK; the old instance's later, unsaved changes (the
        # rename's clean-up) are pending when its node freezes
        self.assertEqual(await self.rename(old, "DoraStale"), E.OK)
        proc = self.lc.nodes[old_node]
        proc.pause()
        self.addCleanup(proc.resume)
        await wait_for(lambda: node_is(self.lc, old_node, "down"), 15,
                       f"master to mark the frozen {old_node} down")
        new = self.client("dora")
        auth = await new.play(host, port)
        self.assertEqual(auth.name, "DoraStale")
        self.assertNotEqual(new.login_response.port, old.login_response.port)
        self.assertEqual(await self.rename(new, "DoraNew"), E.OK)
        await wait_for(lambda: equals(self.stored_name(userid), "DoraNew"), 10,
                       "the new instance's save")
        proc.resume()
        await wait_for(lambda: node_is(self.lc, old_node, "up"), 15,
                       f"{old_node} to be back")
        # the old instance is dropped; whatever it still had to save is refused (the
        # generation claimed at the new Auth is newer): the owner's data stands
        await old.closed
        self.assertEqual(await self.stored_name(userid), "DoraNew")
        self.assertEqual((await new.request(pb.Heartbeat())).code, E.OK)


    async def test_gm_grants_reach_online_and_offline_players(self) -> None:
        host, port = self.login_address()
        c = self.client("gina")
        auth = await c.play(host, port)
        userid, gold = c.login_response.userid, auth.basics.gold

        async def grant(amount: int) -> dict[str, Any]:
            status, body = await self.lc.gm("POST", "/call", {
                "node": "rolecity1", "service": "rolerouter", "method": "grant",
                "args": [userid, {"gold": amount}]})
            self.assertEqual(status, 200, body)
            return body["result"]

        async def online_gold(node: str) -> int | None:
            _, body = await self.lc.gm("POST", "/call", {
                "node": node, "service": "gateway", "method": "player_info",
                "args": [userid]})
            info = body.get("result")
            return info["attrs"]["gold"] if info else None

        result = await grant(100)
        self.assertIn(result["online"], ("role1", "role2"))
        await wait_for(lambda: equals(online_gold(result["online"]), gold + 100), 10,
                       "the online player to take the grant")
        c.close()
        await wait_for(lambda: offline(self, userid), 10, "gina's logout")
        result = await grant(50)
        self.assertIsNone(result["online"])
        again = self.client("gina")
        auth = await again.play(host, port)
        self.assertEqual(auth.basics.gold, gold + 150)


class CleanRestart(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]

    async def test_names_survive_an_ordered_shutdown_and_restart(self) -> None:
        host, port = self.login_address()
        c = self.client("emil")
        await c.play(host, port)
        self.assertEqual((await c.request(pb.Rename(name="Emil"))).code, E.OK)
        status, _ = await self.lc.gm("POST", "/shutdown")
        self.assertEqual(status, 202)
        codes = {n: await self.lc.nodes[n].wait_exit(60) for n in self.names}
        self.assertEqual(codes, dict.fromkeys(self.names, 0))
        await self.lc.start(*self.names)
        await self.lc.wait_up(self.names)
        await self.wait_logins_available()
        again = self.client("emil")
        auth = await again.play(host, port)
        self.assertEqual(auth.name, "Emil")

    async def test_sigterm_of_a_role_node_saves_its_online_players(self) -> None:
        c = self.client("fred")
        await c.play(*self.login_address())
        self.assertEqual((await c.request(pb.Rename(name="Fred"))).code, E.OK)
        self.assertEqual(await self.lc.nodes["role1"].stop(), 0)  # save_interval is 300 s
        db = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            entity = await db.get_entity("player", c.login_response.userid)
        finally:
            await db.close()
        self.assertEqual(entity.doc["attrs"]["name"], "Fred")


# -- GM grants are transfers: a crash at any step neither loses nor doubles one -----------

CRASH_ENV = "RLTWIST_TEST_FLAGS", "RLTWIST_CRASH_POINTS"


def armed(point: str) -> dict[str, str]:
    return {CRASH_ENV[0]: "crashpoints", CRASH_ENV[1]: point}


class GrantCrashCase(LoginCase):
    """One role node, its region's rolecity and the node named in ``node_env`` armed to
    die at one step of a grant's transfer (issue 10 item 8)."""

    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]

    async def gm_call(self, node: str, service: str, method: str, *args: Any) -> Any:
        status, body = await self.lc.gm("POST", "/call", {
            "node": node, "service": service, "method": method, "args": list(args)},
            timeout=20)
        self.assertEqual(status, 200, body)
        return body["result"]

    async def ledger(self, userid: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.gm_call(
            "rolecity1", "rolerouter", "call", userid, "transfers")
        return result

    async def restart_disarmed(self, name: str) -> None:
        proc = self.lc.nodes[name]
        for key in CRASH_ENV:
            proc.env.pop(key, None)
        await self.lc.start(name)
        await self.lc.wait_up(self.names)
        await self.wait_logins_available()

    async def grant_and_die(self, client: Any, dying: str) -> tuple[int, int, str]:
        """Log *client* in, grant it 100 gold while online, wait for *dying* to die at its
        crash point; return (userid, gold before the grant, transfer id)."""
        auth = await client.play(*self.login_address())
        userid, gold = client.login_response.userid, auth.basics.gold
        result = await self.gm_call("rolecity1", "rolerouter", "grant", userid, {"gold": 100})
        self.assertEqual((result["code"], result["online"]), (0, "role1"))
        code = await self.lc.nodes[dying].wait_exit(30)
        self.assertEqual(code, -9, f"{dying} should have died at its crash point")
        return userid, gold, result["transfer_id"]

    async def relogin_gold(self, openid: str, userid: int) -> int:
        await wait_for(lambda: offline(self, userid), 30, f"{openid} to be offline")
        again = self.client(openid)
        auth = await again.play(*self.login_address())
        return int(auth.basics.gold)


class GrantRolecityDiesBeforeClear(GrantCrashCase):
    node_env = {"rolecity1": armed("before_grant_clear")}

    async def test_a_grant_applied_and_saved_is_not_applied_again_after_rolecity_died(
            self) -> None:
        c = self.client("hana")
        userid, gold, tid = await self.grant_and_die(c, "rolecity1")
        info = await self.gm_call("role1", "gateway", "player_info", userid)
        self.assertEqual(info["attrs"]["gold"], gold + 100)  # applied before the confirm
        await self.restart_disarmed("rolecity1")
        ledger = await self.ledger(userid)
        self.assertEqual([(e["id"], e["taken_by"][0]) for e in ledger], [(tid, userid)])
        c.close()
        self.assertEqual(await self.relogin_gold("hana", userid), gold + 100)
        await wait_for(lambda: equals(self.ledger(userid), []), 10,
                       "the re-handed, already applied grant to be confirmed")


class GrantRolecityDiesAfterTake(GrantCrashCase):
    node_env = {"rolecity1": armed("after_ledger_take")}

    async def test_a_grant_taken_but_never_answered_is_applied_at_the_next_login(
            self) -> None:
        c = self.client("ivan")
        userid, gold, tid = await self.grant_and_die(c, "rolecity1")
        await self.restart_disarmed("rolecity1")
        self.assertEqual([e["id"] for e in await self.ledger(userid)], [tid])
        c.close()
        self.assertEqual(await self.relogin_gold("ivan", userid), gold + 100)
        await wait_for(lambda: equals(self.ledger(userid), []), 10, "the grant's confirm")


class GrantRoleDiesAfterTake(GrantCrashCase):
    node_env = {"role1": armed("after_grant_take")}

    async def test_a_grant_taken_by_an_instance_that_died_goes_to_the_next_one(
            self) -> None:
        c = self.client("jana")
        userid, gold, tid = await self.grant_and_die(c, "role1")
        self.assertEqual([e["id"] for e in await self.ledger(userid)], [tid])
        await wait_for(lambda: node_is(self.lc, "role1", "down"), 20,
                       "master to mark the dead role1 down")
        await self.restart_disarmed("role1")
        self.assertEqual(await self.relogin_gold("jana", userid), gold + 100)
        await wait_for(lambda: equals(self.ledger(userid), []), 10, "the grant's confirm")


class GrantRoleDiesAfterApply(GrantCrashCase):
    node_env = {"role1": armed("after_grant_apply")}

    async def test_a_grant_saved_with_the_player_is_not_applied_twice(self) -> None:
        c = self.client("karl")
        userid, gold, tid = await self.grant_and_die(c, "role1")
        stored = await self.stored(userid)
        assert stored is not None
        self.assertEqual(stored["attrs"]["gold"], gold + 100)  # saved before the crash
        await wait_for(lambda: node_is(self.lc, "role1", "down"), 20,
                       "master to mark the dead role1 down")
        await self.restart_disarmed("role1")
        self.assertEqual([e["id"] for e in await self.ledger(userid)], [tid])
        self.assertEqual(await self.relogin_gold("karl", userid), gold + 100)
        await wait_for(lambda: equals(self.ledger(userid), []), 10, "the grant's confirm")

    async def stored(self, userid: int) -> dict[str, Any] | None:
        db = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            entity = await db.get_entity("player", userid)
            return entity.doc if entity is not None else None
        finally:
            await db.close()


# -- rename: a crash between its steps leaves no name shared and none held forever ---------


class RenameCrashCase(GrantCrashCase):
    """The gateway's rename is reserve new -> save player -> release old -> set_name; the
    role node dies at one step and the player's next load reconciles the name index with
    the saved name (issue 10 item 10)."""

    async def owner(self, name: str) -> Any:
        return await self.gm_call("rolecity1", "rolerouter", "lookup_name", name.casefold())

    async def die_renaming(self, client: Any, first: str | None, second: str) -> int:
        await client.play(*self.login_address())
        if first is not None:
            self.assertEqual((await client.request(pb.Rename(name=first))).code, E.OK)
        client.request(pb.Rename(name=second)).addErrback(lambda _: None)  # never answered
        self.assertEqual(await self.lc.nodes["role1"].wait_exit(30), -9,
                         "role1 should have died at its crash point")
        userid = int(client.login_response.userid)
        await wait_for(lambda: node_is(self.lc, "role1", "down"), 20,
                       "master to mark the dead role1 down")
        await self.restart_disarmed("role1")
        return userid


class RenameDiesAfterReserve(RenameCrashCase):
    node_env = {"role1": armed("after_reserve_name@2")}

    async def test_a_name_reserved_but_never_saved_is_released_at_the_next_login(
            self) -> None:
        c = self.client("lena")
        userid = await self.die_renaming(c, "Lena", "Lenora")
        self.assertEqual(await self.owner("Lenora"), userid)  # the crash left it reserved
        again = self.client("lena")
        await wait_for(lambda: offline(self, userid), 30, "lena to be offline")
        auth = await again.play(*self.login_address())
        self.assertEqual(auth.name, "Lena")
        self.assertIsNone(await self.owner("Lenora"))
        self.assertEqual(await self.owner("Lena"), userid)
        other = self.client("otto")
        await other.play(*self.login_address())
        self.assertEqual((await other.request(pb.Rename(name="Lenora"))).code, E.OK)


class RenameDiesAfterSave(RenameCrashCase):
    node_env = {"role1": armed("after_rename_save@2")}

    async def test_an_old_name_never_released_is_released_at_the_next_login(self) -> None:
        c = self.client("mia")
        userid = await self.die_renaming(c, "Mia", "Mira")
        self.assertEqual((await self.owner("Mia"), await self.owner("Mira")), (userid, userid))
        again = self.client("mia")
        await wait_for(lambda: offline(self, userid), 30, "mia to be offline")
        auth = await again.play(*self.login_address())
        self.assertEqual(auth.name, "Mira")
        self.assertIsNone(await self.owner("Mia"))
        self.assertEqual(await self.owner("Mira"), userid)
        other = self.client("olga")
        await other.play(*self.login_address())
        self.assertEqual((await other.request(pb.Rename(name="Mira"))).code, E.NAME_TAKEN)
        self.assertEqual((await other.request(pb.Rename(name="Mia"))).code, E.OK)
