"""Mail and gifts end to end through the client protocol (issue 12): players of two
regions on two role nodes, real processes, real TCP, real Redis. One flow per test (each
SocialCase test starts ~13 processes)."""

from __future__ import annotations

import re
from typing import Any

from rltwist.protocols import pb
from tests.social_util import SocialCase
from tests.util import metrics_text, node_is, wait_for

E = pb.ErrorCode


class MailAcrossRegions(SocialCase):
    async def gold(self, c: Any) -> int:
        info = await self.probe.cluster.call(c.role, "gateway", "player_info", c.userid,
                                             timeout=5)
        return int(info["attrs"]["gold"])

    async def gm_mail(self, userid: int, body: dict[str, Any], expect: int = 200) -> Any:
        status, answer = await self.lc.gm("POST", f"/players/{userid}/mail", body, timeout=20)
        self.assertEqual(status, expect, answer)
        return answer

    async def test_send_notify_list_read_claim_delete_gift_and_a_mail_node_killed(
            self) -> None:
        a, b = await self.players_apart(1, 2)
        self.assertNotEqual(a.role, b.role)

        # player to player, region 1 -> region 2, across role nodes; b is told at once
        await self.request_ok(a, pb.MailSend(to_userid=b.userid, title="hi b", body="x"))
        note = await self.wait_push(b, pb.MailNotify)
        self.assertEqual((note.mail.title, note.mail.from_userid, note.mail.has_attachments),
                         ("hi b", a.userid, False))
        for bad, code in ((pb.MailSend(to_userid=4242 << 16 | 2, title="t"), E.NO_SUCH_PLAYER),
                          (pb.MailSend(to_userid=b.userid, title="t" * 65),
                           E.MAIL_TEXT_INVALID),
                          (pb.MailSend(to_userid=a.userid, title="me"), E.BAD_REQUEST)):
            self.assertEqual((await a.request(bad)).code, code, bad)

        # GM mail with attachments: durable at 200, pushed, stored once per key
        sent = await self.gm_mail(b.userid, {"title": "reward", "body": "for you",
                                             "attachments": {"gold": 10}, "key": "gm-1"})
        self.assertEqual((sent["node"], sent["duplicate"]), ("mail2", False))
        again = await self.gm_mail(b.userid, {"title": "reward", "attachments": {"gold": 10},
                                              "key": "gm-1"})
        self.assertEqual((again["mailid"], again["duplicate"]), (sent["mailid"], True))
        await self.gm_mail(b.userid, {"title": "x", "attachments": {"gems": 1}}, 400)
        await self.gm_mail(4242 << 16 | 2, {"title": "x"}, 404)
        note = await self.wait_push(b, pb.MailNotify, lambda m: m.mail.title == "reward")
        self.assertTrue(note.mail.has_attachments)

        listed = await self.request_ok(b, pb.MailList())
        self.assertEqual([(m.title, m.read) for m in listed.mails],
                         [("reward", False), ("hi b", False)])
        read = await self.request_ok(b, pb.MailRead(mail_id=sent["mailid"]))
        self.assertEqual((read.mail.body, dict(read.mail.attachments)), ("for you",
                                                                          {"gold": 10}))

        # the claim credits once, saved: a relogin still has it and cannot claim again
        before = await self.gold(b)
        claimed = await self.request_ok(b, pb.MailClaim(mail_id=sent["mailid"]))
        self.assertEqual((dict(claimed.attachments), claimed.basics.gold),
                         ({"gold": 10}, before + 10))
        self.assertEqual((await b.request(pb.MailClaim(mail_id=sent["mailid"]))).code,
                         E.MAIL_ALREADY_CLAIMED)
        b = await self.relogin(b)
        self.assertEqual(await self.gold(b), before + 10)
        self.assertEqual((await b.request(pb.MailClaim(mail_id=sent["mailid"]))).code,
                         E.MAIL_ALREADY_CLAIMED)
        await self.request_ok(b, pb.MailDelete(mail_id=sent["mailid"]))
        self.assertEqual((await b.request(pb.MailRead(mail_id=sent["mailid"]))).code,
                         E.MAIL_NOT_FOUND)

        # a gift between regions: debited at once, delivered as a mail, claimed
        a_gold = await self.gold(a)
        gift = await self.request_ok(a, pb.GiftSend(to_userid=b.userid, items={"gold": 7}))
        self.assertEqual(gift.basics.gold, a_gold - 7)
        note = await self.wait_push(b, pb.MailNotify, lambda m: m.mail.has_attachments)
        b_gold = await self.gold(b)
        claimed = await self.request_ok(b, pb.MailClaim(mail_id=0))  # claim all: the gift
        self.assertEqual((dict(claimed.attachments), claimed.basics.gold),
                         ({"gold": 7}, b_gold + 7))
        self.assertEqual((await b.request(pb.MailClaim(mail_id=0))).code,
                         E.MAIL_NO_ATTACHMENTS)
        self.assertEqual((await a.request(pb.GiftSend(to_userid=b.userid,
                                                      items={"gems": 1}))).code,
                         E.GIFT_INVALID)

        # what operators see (rltwist/metrics.py conventions)
        def value(text: str, series: str) -> float:
            found = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.M)
            self.assertIsNotNone(found, series)
            assert found is not None
            return float(found.group(1))

        sender = await metrics_text(self.lc, a.role)
        self.assertEqual(value(sender, 'rl_mail_sent_total{code="OK",kind="player"}'), 1)
        self.assertEqual(value(sender, 'rl_mail_sent_total{code="NO_SUCH_PLAYER",'
                                       'kind="player"}'), 1)
        self.assertEqual(value(sender, 'rl_mail_gifts_total{code="OK"}'), 1)
        self.assertEqual(value(sender, 'rl_mail_gifts_total{code="GIFT_INVALID"}'), 1)
        claims = await metrics_text(self.lc, b.role)
        self.assertGreaterEqual(value(claims, 'rl_mail_claims_total{code="OK"}'), 1)
        master = await metrics_text(self.lc, "master")
        self.assertEqual(value(master, 'rl_mail_sent_total{code="OK",kind="system"}'), 2)
        self.assertEqual(value(master, 'rl_mail_sent_total{code="BAD_REQUEST",'
                                       'kind="system"}'), 1)

        # kill -9 of the mail node right after a delivery: the mail is there after restart
        await self.request_ok(a, pb.MailSend(to_userid=b.userid, title="survives"))
        self.assertLess(await self.lc.nodes["mail2"].kill(), 0)
        await self.lc.start("mail2")
        await self.lc.wait_up(self.names)

        async def listed_after_restart() -> bool:
            r = await b.request(pb.MailList())
            return r.code == E.OK and r.mails and r.mails[0].title == "survives"

        await wait_for(listed_after_restart, 20, "the mail delivered before mail2's kill -9")


class GiftSenderKilled(SocialCase):
    """A gift between regions whose sender's role node dies right after the debit and the
    gift record were saved: after the sender's next login the gift is delivered, once,
    and the recipient (online on the other role node) is told and claims it."""

    node_env = {role: {"RLTWIST_TEST_FLAGS": "crashpoints",
                       "RLTWIST_CRASH_POINTS": "after_gift_save"}
                for role in ("role1", "role2")}  # only the sender's node reaches it

    async def test_a_gift_is_delivered_after_the_senders_node_was_killed(self) -> None:
        a, b = await self.players_apart(1, 2)
        info = await self.probe.cluster.call(a.role, "gateway", "player_info", a.userid,
                                             timeout=5)
        gold = int(info["attrs"]["gold"])
        proc = self.lc.nodes[a.role]
        reply = a.request(pb.GiftSend(to_userid=b.userid, items={"gold": 9}))
        reply.addErrback(lambda f: None)
        await proc.wait_exit(30)
        self.assertFalse(proc.running)
        await wait_for(lambda: node_is(self.lc, a.role, "down"), 20, f"{a.role} marked down")
        proc.env.pop("RLTWIST_CRASH_POINTS")
        await self.lc.start(a.role)
        await self.lc.wait_up(self.names)
        await self.wait_logins_available()
        a = await self.relogin(a)  # its Auth delivers the saved gift
        note = await self.wait_push(b, pb.MailNotify, lambda m: m.mail.has_attachments, 20)
        self.assertEqual(note.mail.from_userid, a.userid)
        info = await self.probe.cluster.call(a.role, "gateway", "player_info", a.userid,
                                             timeout=5)
        self.assertEqual(int(info["attrs"]["gold"]), gold - 9)
        b_gold = int((await self.probe.cluster.call(b.role, "gateway", "player_info",
                                                    b.userid, timeout=5))["attrs"]["gold"])
        claimed = await self.request_ok(b, pb.MailClaim(mail_id=note.mail.mail_id))
        self.assertEqual(claimed.basics.gold, b_gold + 9)
        listed = await self.request_ok(b, pb.MailList())
        self.assertEqual(sum(1 for m in listed.mails if m.has_attachments), 1)
