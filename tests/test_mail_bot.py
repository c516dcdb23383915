"""The mail and gift bot actions build valid requests aimed at another bot."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script
from rltwist.protocols import REGISTRY, pb


class MailBotActions(unittest.TestCase):
    def test_each_action_builds_a_registered_request_for_the_peer(self) -> None:
        me = BotIdentity(index=0, openid="o", userid=10, run_token="abcdef12",
                         online=[10, 20])
        self.assertEqual(parse_script("mail_send,mail_list,mail_claim_all,gift_send"),
                         ("mail_send", "mail_list", "mail_claim_all", "gift_send"))
        built = {name: ACTIONS[name].build(me) for name in
                 ("mail_send", "mail_list", "mail_claim_all", "gift_send")}
        for name, msg in built.items():
            self.assertIn(type(msg), REGISTRY.request_ids, name)
            msg.SerializeToString()
        self.assertEqual(built["mail_send"].to_userid, 20)
        self.assertTrue(0 < len(built["mail_send"].title) <= 64)
        self.assertEqual(built["mail_claim_all"].mail_id, 0)
        self.assertEqual((built["gift_send"].to_userid, dict(built["gift_send"].items)),
                         (20, {"gold": 1}))
        self.assertIn(pb.ErrorCode.MAIL_NO_ATTACHMENTS, ACTIONS["mail_claim_all"].ok_codes)
