"""Global mail rules (rltwist.game.gmailsystem): who is targeted, the GM's fields, the
per-player watermark. No processes."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.game.gmailsystem import DAY_MS, BadGmail, system

NOW = 1_700_000_000_000


def uid(seq: int, sid: int) -> int:
    return seq << 16 | sid


def gmail(gmail_id: int = 1, regions: list[int] | None = None, include_new: bool = False,
          max_seq: int = 10, **fields: Any) -> dict[str, Any]:
    checked = system.check({"title": f"t{gmail_id}", "include_new": include_new, **fields},
                           regions or [], [1, 2, 3])
    return system.make(gmail_id, checked, NOW, max_seq)


class Targets(unittest.TestCase):
    def test_a_global_mail_targets_the_players_that_existed_in_every_region(self) -> None:
        g = gmail(max_seq=10)
        self.assertTrue(system.targets(g, uid(10, 1), NOW))
        self.assertTrue(system.targets(g, uid(1, 3), NOW))
        self.assertFalse(system.targets(g, uid(11, 1), NOW))  # created after the send

    def test_include_new_also_targets_later_players_until_it_expires(self) -> None:
        g = gmail(include_new=True, max_seq=10, expire_days=2)
        self.assertTrue(system.targets(g, uid(500, 2), NOW + DAY_MS))
        self.assertFalse(system.targets(g, uid(500, 2), NOW + 2 * DAY_MS))
        self.assertFalse(system.targets(g, uid(1, 2), NOW + 2 * DAY_MS))  # expired for all

    def test_a_region_mail_targets_only_its_regions_players(self) -> None:
        g = gmail(regions=[2], include_new=True)
        self.assertTrue(system.targets(g, uid(3, 2), NOW))
        self.assertFalse(system.targets(g, uid(3, 1), NOW))

    def test_the_mail_carries_the_idempotency_key(self) -> None:
        mail = system.mail(gmail(7, attachments={"gold": 5}))
        self.assertEqual(mail, {"from": 0, "title": "t7", "body": "", "key": "gmail-7",
                                "attachments": {"gold": 5}})


class Fields(unittest.TestCase):
    def test_bad_fields_are_refused_naming_the_field(self) -> None:
        cases: list[tuple[dict[str, Any], list[int], str]] = [
                 ({"title": ""}, [], "title"),
                 ({"title": "x" * 129}, [], "title"),
                 ({"title": "x", "attachments": {"gold": 0}}, [], "attachments"),
                 ({"title": "x", "attachments": {"gold": True}}, [], "attachments"),
                 ({"title": "x", "expire_days": 0}, [], "expire_days"),
                 ({"title": "x", "expire_days": 366}, [], "expire_days"),
                 ({"title": "x", "include_new": 1}, [], "include_new"),
                 ({"title": "x", "colour": "red"}, [], "colour"),
                 ({"title": "x"}, [9], "region 9"),
                 ({"title": "x"}, [0], "region 0")]
        for fields, regions, word in cases:
            with self.assertRaises(BadGmail, msg=repr(fields)) as e:
                system.check(fields, regions, [1, 2])
            self.assertIn(word, str(e.exception))

    def test_defaults(self) -> None:
        g = system.make(1, system.check({"title": "hi"}, [], [1]), NOW, 4)
        self.assertEqual((g["regions"], g["include_new"], g["attachments"], g["body"]),
                         ([], False, {}, ""))
        self.assertEqual(g["expire_ms"] - NOW, 30 * DAY_MS)


class Watermark(unittest.TestCase):
    def test_due_skips_what_was_seen_and_what_does_not_target_the_player(self) -> None:
        player = Entity(uid(5, 1))
        mails = [gmail(1), gmail(2, regions=[2]), gmail(3), gmail(4, max_seq=2)]
        todo, mark = system.due(player, uid(5, 1), mails, 4, NOW)
        self.assertEqual([g["id"] for g in todo], [1, 3])
        self.assertEqual(mark, 4)
        self.assertTrue(system.set_seen(player, 3))
        todo, mark = system.due(player, uid(5, 1), mails, 4, NOW)
        self.assertEqual((todo, mark), ([], 4))
        self.assertFalse(system.set_seen(player, 2))  # never goes back
        self.assertEqual(system.seen(player), 3)

    def test_a_new_player_starts_at_zero_and_expired_mails_only_move_the_mark(self) -> None:
        player = Entity(uid(5, 1))
        self.assertEqual(system.seen(player), 0)
        todo, mark = system.due(player, uid(5, 1), [], 9, NOW)
        self.assertEqual((todo, mark), ([], 9))
