"""rolecity's side of the grant transfers with a real rolecity process, driven the way a role
node drives it (take_transfers / confirm_transfers with the instance's generation, here
through GM's /call), killed at its crash points; the player's claimed generation is
written into the role database as Auth does."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from rltwist.launcher import LocalCluster
from rltwist.storage import EmbeddedBackend

UID = 77 << 16 | 1
CRASH_ENV = "RLTWIST_TEST_FLAGS", "RLTWIST_CRASH_POINTS"


class LedgerCase(unittest.TestCase):
    timeout = 120
    names = ["master", "rolecity1"]
    crash_point = ""

    async def setUp(self) -> None:
        self.lc = LocalCluster(self.mktemp(), self.names)
        self.addCleanup(self.lc.stop_all)
        self.lc.process("rolecity1").env.update(
            {CRASH_ENV[0]: "crashpoints", CRASH_ENV[1]: self.crash_point})
        await self.lc.start(*self.names)
        await self.lc.wait_up(self.names)

    async def gm_call(self, method: str, *args: Any) -> tuple[int, Any]:
        return await self.lc.gm("POST", "/call", {
            "node": "rolecity1", "service": "rolerouter", "method": method,
            "args": list(args)}, timeout=20)

    async def ok(self, method: str, *args: Any) -> Any:
        status, body = await self.gm_call(method, *args)
        self.assertEqual(status, 200, body)
        return body["result"]

    async def claim(self, generation: int) -> None:
        """What Auth does: the player's document in roledb carries *generation*."""
        db = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            await db.save_entity("player", UID, {"_id": UID, "attrs": {}, "components": {}},
                                 generation)
        finally:
            await db.close()

    async def dies(self) -> None:
        code = await self.lc.nodes["rolecity1"].wait_exit(20)
        self.assertEqual(code, -9, "rolecity1 should have died at its crash point")

    async def restart_disarmed(self) -> None:
        proc = self.lc.nodes["rolecity1"]
        for key in CRASH_ENV:
            proc.env.pop(key, None)
        await self.lc.start("rolecity1")
        await self.lc.wait_up(self.names)

    async def ledger(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.ok("call", UID, "transfers")
        return result


class RolecityDiesBeforeClear(LedgerCase):
    crash_point = "before_grant_clear"

    async def test_a_confirm_cut_by_a_crash_is_repeated_and_stale_callers_are_refused(
            self) -> None:
        await self.claim(4)
        tid = (await self.ok("grant", UID, {"gold": 100}))["transfer_id"]
        handed = await self.ok("take_transfers", UID, 4)
        self.assertEqual(handed, [{"id": tid, "kind": "grant", "items": {"gold": 100}}])
        status, body = await self.gm_call("confirm_transfers", UID, 4, [tid])
        self.assertNotEqual(status, 200, body)
        await self.dies()
        await self.restart_disarmed()
        self.assertEqual([(e["id"], e["taken_by"]) for e in await self.ledger()],
                         [(tid, [UID, 4])])
        # an older instance is refused, with the error kind callers branch on
        status, body = await self.gm_call("take_transfers", UID, 3)
        self.assertEqual((status, body.get("kind")), (502, "StaleGeneration"), body)
        self.assertEqual(await self.ok("confirm_transfers", UID, 4, [tid]), 1)
        self.assertEqual(await self.ledger(), [])


class RolecityDiesAfterTake(LedgerCase):
    crash_point = "after_ledger_take"

    async def test_marks_saved_before_a_lost_answer_are_handed_to_the_next_instance(
            self) -> None:
        await self.claim(4)
        tid = (await self.ok("grant", UID, {"oil": 3}))["transfer_id"]
        status, body = await self.gm_call("take_transfers", UID, 4)
        self.assertNotEqual(status, 200, body)
        await self.dies()
        await self.restart_disarmed()
        self.assertEqual([(e["id"], e["taken_by"]) for e in await self.ledger()],
                         [(tid, [UID, 4])])
        await self.claim(5)  # the instance that lost the answer is gone; a new one claims
        handed = await self.ok("take_transfers", UID, 5)
        self.assertEqual([e["id"] for e in handed], [tid])
        self.assertEqual(await self.ok("confirm_transfers", UID, 5, [tid]), 1)
        self.assertEqual(await self.ledger(), [])
