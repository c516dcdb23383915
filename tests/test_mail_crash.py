"""Claims and gifts across a kill -9 at each step (issue 12 items 3 and 5): real processes,
real Redis, embedded storage; the process dies at a named crash point
(rltwist/crashpoint.py), is restarted, and the resources are then counted: a claimed
mail's attachments are credited exactly once; a gift is taken and delivered, or neither,
and once its debit is saved it is delivered eventually."""

from __future__ import annotations

from typing import Any

from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.login_util import GameClient, LoginCase
from tests.util import node_is, wait_for

E = pb.ErrorCode
CRASH = {"RLTWIST_TEST_FLAGS": "crashpoints"}
GIFT = 25


class _MailCrash(LoginCase):
    """One region (its rolecity and mail node), one role node."""

    names = ["master", "logiccenter", "rolecity1", "mail1", "role1", "login1"]
    point = ""
    victim = ""  # the node armed to die

    def setUp(self) -> Any:
        self.node_env = {self.victim: {**CRASH, "RLTWIST_CRASH_POINTS": self.point}}
        return super().setUp()

    async def stored(self, userid: int, coll: str = "player", db: str = "roledb") -> Any:
        backend = EmbeddedBackend(str(self.lc.run_dir / "data" / f"{db}.sqlite3"))
        try:
            found = await backend.get_entity(coll, userid)
        finally:
            await backend.close()
        return None if found is None else found.doc

    async def stored_gold(self, userid: int) -> int:
        return int((await self.stored(userid))["attrs"]["gold"])

    async def mailbox(self, userid: int) -> list[dict[str, Any]]:
        doc = await self.stored(userid, "mailbox", "region1")
        return [] if doc is None else list(doc["components"]["mail"]["mails"])

    async def login(self, openid: str) -> GameClient:
        """Log *openid* in (again): retried while its previous instance logs out."""
        return await self.logged_in(openid, 20)

    async def crash_on(self, c: GameClient, message: Any) -> None:
        """Send *message*; the victim dies at the armed point; restart it without it."""
        proc = self.lc.nodes[self.victim]
        reply = c.request(message)
        reply.addErrback(lambda f: None)
        await proc.wait_exit(30)
        self.assertFalse(proc.running, f"{self.victim} did not die at {self.point}")
        proc.env.pop("RLTWIST_CRASH_POINTS")
        if self.victim.startswith("role"):
            await wait_for(lambda: node_is(self.lc, self.victim, "down"), 20,
                           f"{self.victim} marked down")
        await self.lc.start(self.victim)
        await self.lc.wait_up(self.names)
        if self.victim.startswith("role"):
            await self.wait_logins_available()
        else:
            await wait_for(self._role_reaches_victim, 20, f"role1 to reach {self.victim}")

    async def _role_reaches_victim(self) -> bool:
        status, _ = await self.lc.gm("POST", "/call", {
            "node": "role1", "service": "diag", "method": "relay",
            "args": [self.victim, "diag", "ping", []]}, timeout=5)
        return bool(status == 200)


class _ClaimCrash(_MailCrash):
    async def test_the_attachments_are_credited_exactly_once(self) -> None:
        c = await self.login("claimer")
        status, sent = await self.lc.gm("POST", f"/players/{c.userid}/mail", {
            "title": "reward", "attachments": {"gold": 10}}, timeout=20)
        self.assertEqual(status, 200, sent)
        await self.request_claim(c, sent["mailid"], E.OK)  # the crash point's 1st reach
        gold = await self.stored_gold(c.userid)
        status, sent = await self.lc.gm("POST", f"/players/{c.userid}/mail", {
            "title": "reward 2", "attachments": {"gold": 10}}, timeout=20)
        await self.crash_on(c, pb.MailClaim(mail_id=sent["mailid"]))
        if self.victim.startswith("role"):
            c = await self.login("claimer")  # the next Auth resumes the claim
        # credited once (resumed at Auth or by the retried claim), and only once;
        # RETRY_LATER while the role node's link to a restarted mail node comes back
        answers: list[int] = []

        async def claimed() -> bool:
            answers.append((await c.request(pb.MailClaim(mail_id=sent["mailid"]))).code)
            return answers[-1] != E.RETRY_LATER

        await wait_for(claimed, 20, "the claim to be answered")
        self.assertIn(answers[-1], (E.OK, E.MAIL_ALREADY_CLAIMED))
        again = await c.request(pb.MailClaim(mail_id=sent["mailid"]))
        self.assertEqual(again.code, E.MAIL_ALREADY_CLAIMED)
        c.close()
        await wait_for(lambda: self._stored_gold_is(c.userid, gold + 10), 20,
                       f"gold {gold + 10} saved")
        box = await self.stored(c.userid, "mailbox", "region1")
        self.assertEqual(box["components"].get("ledger", {}), {})

    async def request_claim(self, c: GameClient, mailid: int, code: int) -> None:
        self.assertEqual((await c.request(pb.MailClaim(mail_id=mailid))).code, code)

    async def _stored_gold_is(self, userid: int, gold: int) -> bool:
        return await self.stored_gold(userid) == gold


class ClaimRoleKilledAfterTake(_ClaimCrash):
    victim, point = "role1", "after_mailclaim_take@2"


class ClaimRoleKilledAfterApply(_ClaimCrash):
    victim, point = "role1", "after_mailclaim_apply@2"


class ClaimMailKilledAfterRecord(_ClaimCrash):
    victim, point = "mail1", "after_mail_claim_record@2"


class ClaimMailKilledAfterTake(_ClaimCrash):
    victim, point = "mail1", "after_mail_take@2"


class ClaimMailKilledBeforeConfirm(_ClaimCrash):
    victim, point = "mail1", "before_mail_confirm_clear@2"


class _GiftCrash(_MailCrash):
    delivered = True  # False: the sender died before its debit was saved

    async def test_taken_and_delivered_or_neither(self) -> None:
        sender = await self.login("giver")
        friend = await self.login("friend")
        gold = await self.stored_gold(sender.userid)
        await self.crash_on(sender, pb.GiftSend(to_userid=friend.userid, items={"gold": GIFT}))
        if self.victim.startswith("role"):
            sender.close()
        sender = await self.login("giver")  # the next Auth retries an undelivered gift
        friend.close()
        expect = gold - GIFT if self.delivered else gold

        async def settled() -> bool:
            gifts = [m for m in await self.mailbox(friend.userid) if m["attachments"]]
            doc = await self.stored(sender.userid)
            return (doc["attrs"]["gold"] == expect and not doc["components"].get("ledger")
                    and len(gifts) == (1 if self.delivered else 0))

        sender.close()  # the logout saves the sender
        await wait_for(settled, 30, f"the sender's gold at {expect}, no gift record and "
                       f"the gift {'delivered once' if self.delivered else 'not delivered'}")
        gifts = [m for m in await self.mailbox(friend.userid) if m["attachments"]]
        self.assertEqual([m["attachments"] for m in gifts],
                         [{"gold": GIFT}] if self.delivered else [])
        doc = await self.stored(sender.userid)
        self.assertEqual(doc["components"].get("ledger", {}), {})


class GiftSenderAway(_MailCrash):
    """The sender's role node dies right after the debit was saved and the sender does not
    come back: the mail node's sweeper finds the saved record and delivers the gift; when
    the sender does come back the record is dropped, the gift not stored twice."""

    victim, point = "role1", "after_gift_save"

    async def sweep(self) -> int:
        status, body = await self.lc.gm("POST", "/call", {
            "node": "mail1", "service": "giftsweeper", "method": "sweep", "args": []},
            timeout=20)
        self.assertEqual(status, 200, body)
        return int(body["result"])

    async def test_the_mail_nodes_sweeper_delivers_an_offline_senders_gift(self) -> None:
        sender = await self.login("giver")
        friend = await self.login("friend")
        gold = await self.stored_gold(sender.userid)
        await self.crash_on(sender, pb.GiftSend(to_userid=friend.userid, items={"gold": GIFT}))
        self.assertEqual(await self.stored_gold(sender.userid), gold - GIFT)
        self.assertEqual(await self.sweep(), 1)
        self.assertEqual(await self.sweep(), 0)
        gifts = [m["attachments"] for m in await self.mailbox(friend.userid)
                 if m["attachments"]]
        self.assertEqual(gifts, [{"gold": GIFT}])
        # a restarted mail node forgets what it swept: the delivery key stores nothing twice
        self.assertLess(await self.lc.nodes["mail1"].kill(), 0)
        await self.lc.start("mail1")
        await self.lc.wait_up(self.names)
        self.assertEqual(await self.sweep(), 1)  # delivered again: a duplicate
        sender = await self.login("giver")
        sender.close()

        async def cleared() -> bool:
            doc = await self.stored(sender.userid)
            return not doc["components"].get("ledger") and \
                doc["components"]["gifts"]["pending"] is False

        await wait_for(cleared, 20, "the sender's next instance to drop the gift record")
        gifts = [m["attachments"] for m in await self.mailbox(friend.userid)
                 if m["attachments"]]
        self.assertEqual(gifts, [{"gold": GIFT}])
        self.assertEqual(await self.stored_gold(sender.userid), gold - GIFT)
        self.assertEqual(await self.sweep(), 0)


class GiftRoleKilledBeforeSave(_GiftCrash):
    victim, point, delivered = "role1", "before_gift_save", False


class GiftRoleKilledAfterSave(_GiftCrash):
    victim, point = "role1", "after_gift_save"


class GiftRoleKilledAfterDeliver(_GiftCrash):
    victim, point = "role1", "after_gift_deliver"


class GiftMailKilledAfterDeliverSave(_GiftCrash):
    victim, point = "mail1", "after_mail_deliver_save"


del _MailCrash, _ClaimCrash, _GiftCrash
