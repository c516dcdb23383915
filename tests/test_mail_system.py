"""The mailbox and gift rules of rltwist.game.mailsystem, without processes: expiry, the
mailbox cap, idempotent deliveries, claims recorded once, gift limits."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.game.mailsystem import DAY_MS, BadMail, MailSystem
from rltwist.game.tables import validate_gifts, validate_mail
from rltwist.nodes.common import transfer
from rltwist.protocols import pb

E = pb.ErrorCode
NOW = 1_800_000_000_000
TABLES = {"mail": {"expire_days": 30, "max_mails": 3, "max_title": 10, "max_body": 20,
                   "key_days": 365},
          "gifts": {"max_per_day": 2, "max_amount_per_day": {"gold": 100, "food": 50}}}


class Mailbox(unittest.TestCase):
    def setUp(self) -> None:
        self.mail = MailSystem()
        self.box = Entity(7)

    def deliver(self, title: str, now: int = NOW, **extra: object) -> dict[str, object]:
        return self.mail.deliver(self.box, {"title": title, **extra}, now, TABLES)

    def titles(self, now: int = NOW) -> list[str]:
        return [m["title"] for m in self.mail.listing(self.box, now, TABLES)]

    def test_list_is_newest_first_and_expired_mails_are_dropped(self) -> None:
        self.deliver("old", NOW)
        self.deliver("new", NOW + DAY_MS)
        self.deliver("own expiry", NOW, expire_ms=NOW + 10)
        self.assertEqual(self.titles(NOW), ["own expiry", "new", "old"])
        self.assertEqual(self.titles(NOW + 10), ["new", "old"])
        self.assertEqual(self.titles(NOW + 30 * DAY_MS), ["new"])
        self.assertIsNone(self.mail.read(self.box, 1, NOW + 31 * DAY_MS, TABLES))
        self.assertEqual(self.titles(NOW + 31 * DAY_MS), [])

    def test_the_cap_drops_the_oldest_read_mail_first(self) -> None:
        for t in ("a", "b", "c"):
            self.deliver(t)
        self.mail.read(self.box, 2, NOW, TABLES)
        self.deliver("d")
        self.assertEqual(self.titles(), ["d", "c", "a"])
        self.deliver("e")  # none read: the oldest goes
        self.assertEqual(self.titles(), ["e", "d", "c"])

    def test_a_key_is_stored_once_even_after_the_mail_was_deleted(self) -> None:
        self.assertEqual(self.deliver("gift", key="gift-1"), {"mailid": 1, "duplicate": False})
        self.assertEqual(self.deliver("gift", key="gift-1"), {"mailid": 1, "duplicate": True})
        self.assertTrue(self.mail.delete(self.box, 1))
        self.assertEqual(self.deliver("gift", key="gift-1"), {"mailid": 0, "duplicate": True})
        self.assertEqual(self.titles(), [])
        # remembered key_days, then forgotten
        later = NOW + 366 * DAY_MS
        self.assertEqual(self.deliver("gift", later, key="gift-1")["duplicate"], False)

    def test_a_mailbox_of_the_previous_version_keeps_its_keys_and_expires(self) -> None:
        old = {"title": "old", "body": "", "from": 0, "attachments": {}, "key": "k1",
               "id": 1, "time_ms": NOW, "read": False}
        self.box.set_component("mail", {"next_id": 2, "mails": [old]})
        self.assertEqual(self.deliver("again", key="k1"), {"mailid": 1, "duplicate": True})
        self.assertEqual(self.titles(NOW + 29 * DAY_MS), ["old"])
        self.assertEqual(self.titles(NOW + 30 * DAY_MS), [])

    def test_malformed_deliveries_are_refused(self) -> None:
        for bad in ({"title": ""}, {"title": "x", "surprise": 1},
                    {"title": "x", "attachments": {"": 1}},
                    {"title": "x", "attachments": {"gold": 0}},
                    {"title": "x", "attachments": {"gold": True}},
                    {"title": "x", "expire_ms": -1}, {"title": "x", "key": ""}):
            with self.assertRaises(BadMail, msg=repr(bad)):
                self.mail.deliver(self.box, bad, NOW, TABLES)

    def test_a_claim_is_recorded_once_and_refused_once_confirmed(self) -> None:
        self.deliver("plain")
        self.deliver("gold", attachments={"gold": 5})
        self.assertEqual(self.mail.claim(self.box, 1, NOW, TABLES)["code"],
                         E.MAIL_NO_ATTACHMENTS)
        self.assertEqual(self.mail.claim(self.box, 9, NOW, TABLES)["code"], E.MAIL_NOT_FOUND)
        first = self.mail.claim(self.box, 2, NOW, TABLES)
        # recorded, not credited yet: not shown as claimed (the player claims again)
        self.assertFalse(self.mail.listing(self.box, NOW, TABLES)[0]["claimed"])
        again = self.mail.claim(self.box, 2, NOW, TABLES)
        self.assertEqual((first["code"], again["transfer_id"]), (E.OK, first["transfer_id"]))
        self.assertEqual(len(transfer.entries(self.box)), 1)
        [entry] = transfer.take(self.box, 7, 1)
        self.assertEqual(entry["items"], {"gold": 5})
        transfer.confirm(self.box, 7, 1, [entry["id"]])
        self.assertEqual(self.mail.claim(self.box, 2, NOW, TABLES)["code"],
                         E.MAIL_ALREADY_CLAIMED)
        self.assertTrue(self.mail.listing(self.box, NOW, TABLES)[0]["claimed"])

    def test_claim_all_records_every_unclaimed_mail_once(self) -> None:
        self.deliver("plain")
        self.deliver("gold", attachments={"gold": 5})
        self.deliver("more", attachments={"gold": 1, "oil": 2})
        done = self.mail.claim(self.box, 2, NOW, TABLES)["transfer_id"]
        transfer.take(self.box, 7, 1)
        transfer.confirm(self.box, 7, 1, [done])
        first = self.mail.claim(self.box, 0, NOW, TABLES)
        self.assertEqual((first["code"], first["attachments"]), (E.OK, {"gold": 1, "oil": 2}))
        again = self.mail.claim(self.box, 0, NOW, TABLES)  # still pending: the same transfer
        self.assertEqual(again["transfer_ids"], first["transfer_ids"])
        self.assertEqual(len(transfer.entries(self.box)), 1)
        [entry] = transfer.take(self.box, 7, 1)
        transfer.confirm(self.box, 7, 1, [entry["id"]])
        self.assertEqual(self.mail.claim(self.box, 0, NOW, TABLES)["code"],
                         E.MAIL_NO_ATTACHMENTS)

    def test_items_the_game_does_not_have_are_kept_but_never_credited(self) -> None:
        self.deliver("gems only", attachments={"gems": 3})
        self.deliver("mixed", attachments={"gems": 1, "gold": 2})
        self.assertEqual([m["attachments"] for m in self.mail.listing(self.box, NOW, TABLES)],
                         [True, False])
        self.assertEqual(self.mail.read(self.box, 1, NOW, TABLES)["attachments"], {"gems": 3})
        self.assertEqual(self.mail.claim(self.box, 1, NOW, TABLES)["code"],
                         E.MAIL_NO_ATTACHMENTS)
        mixed = self.mail.claim(self.box, 2, NOW, TABLES)
        self.assertEqual((mixed["code"], mixed["attachments"]), (E.OK, {"gold": 2}))
        self.assertEqual([e["items"] for e in transfer.entries(self.box).values()],
                         [{"gold": 2}])

    def test_send_limits(self) -> None:
        ok = self.mail.check_send
        self.assertEqual(ok("hi", "body", TABLES), E.OK)
        for title, body in (("", "x"), ("  ", "x"), ("x" * 11, ""), ("t", "x" * 21),
                            ("t\x00", "")):
            self.assertEqual(ok(title, body, TABLES), E.MAIL_TEXT_INVALID, (title, body))


class Gifts(unittest.TestCase):
    def setUp(self) -> None:
        self.mail = MailSystem()
        self.sender = Entity(8, attrs={"gold": 500, "food": 10, "oil": 10})

    def test_a_gift_debits_and_records_all_or_nothing(self) -> None:
        take = self.mail.take_gift
        self.assertEqual(take(self.sender, 9, {"gold": 0}, NOW, TABLES)[0], E.GIFT_INVALID)
        self.assertEqual(take(self.sender, 9, {"oil": 1}, NOW, TABLES)[0], E.GIFT_INVALID)
        self.assertEqual(take(self.sender, 9, {"gold": 1, "food": 11}, NOW, TABLES)[0],
                         E.GIFT_NOT_ENOUGH)
        self.assertEqual((self.sender["gold"], self.mail.pending_gifts(self.sender)), (500, []))
        code, tid = take(self.sender, 9, {"gold": 60}, NOW, TABLES)
        self.assertEqual(code, E.OK)
        self.assertEqual(self.sender["gold"], 440)
        self.assertEqual([(g["id"], g["to"], g["items"]) for g in
                          self.mail.pending_gifts(self.sender)], [(tid, 9, {"gold": 60})])
        self.assertTrue(self.mail.gift_delivered(self.sender, tid))
        self.assertFalse(self.mail.gift_delivered(self.sender, tid))
        self.assertEqual(self.mail.pending_gifts(self.sender), [])

    def test_the_pending_flag_follows_the_records_and_old_records_are_not_redelivered(
            self) -> None:
        _, first = self.mail.take_gift(self.sender, 9, {"gold": 1}, NOW, TABLES)
        _, second = self.mail.take_gift(self.sender, 9, {"gold": 2}, NOW + 1, TABLES)
        self.assertIs(self.sender.components["gifts"]["pending"], True)
        doc = self.sender.to_doc()
        self.assertEqual([(g["id"], g["items"]) for g in self.mail.stored_gifts(doc)],
                         [(first, {"gold": 1}), (second, {"gold": 2})])
        self.mail.gift_delivered(self.sender, first)
        self.assertIs(self.sender.components["gifts"]["pending"], True)
        self.mail.undo_gift(self.sender, second)
        self.assertIs(self.sender.components["gifts"]["pending"], False)
        self.assertEqual(self.sender["gold"], 499)
        gift = {"created_ms": NOW}
        self.assertFalse(self.mail.gift_too_old(gift, NOW + 363 * DAY_MS, TABLES))
        self.assertTrue(self.mail.gift_too_old(gift, NOW + 365 * DAY_MS, TABLES))

    def test_daily_limits_reset_the_next_day(self) -> None:
        take = self.mail.take_gift
        self.assertEqual(take(self.sender, 9, {"gold": 60}, NOW, TABLES)[0], E.OK)
        self.assertEqual(take(self.sender, 9, {"gold": 41}, NOW, TABLES)[0],
                         E.GIFT_DAILY_LIMIT)  # amount
        self.assertEqual(take(self.sender, 9, {"gold": 40}, NOW, TABLES)[0], E.OK)
        self.assertEqual(take(self.sender, 9, {"food": 1}, NOW, TABLES)[0],
                         E.GIFT_DAILY_LIMIT)  # count
        self.assertEqual(take(self.sender, 9, {"gold": 100}, NOW + DAY_MS, TABLES)[0], E.OK)


class Tables(unittest.TestCase):
    def test_the_shipped_tables_and_bad_ones(self) -> None:
        import tomllib
        from pathlib import Path

        root = Path(__file__).resolve().parents[1] / "etc" / "game"
        mail = tomllib.loads((root / "mail.toml").read_text())
        gifts = tomllib.loads((root / "gifts.toml").read_text())
        self.assertEqual(list(validate_mail(mail)), [])
        self.assertEqual(list(validate_gifts(gifts)), [])
        self.assertEqual([k for k, _ in validate_mail({**mail, "expire_days": 0, "x": 1})],
                         ["x", "expire_days"])
        self.assertEqual([k for k, _ in validate_gifts(
            {"max_per_day": 1, "max_amount_per_day": {"gems": 1}})],
            ["max_amount_per_day.gems"])
