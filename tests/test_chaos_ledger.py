"""rl-chaos's ledger: what must be true after the server acknowledged renames, GM grants
and mail deliveries, and how each way of breaking it is reported (pure, no processes)."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.chaos.ledger import BASE_GOLD, FAILED, OK, UNKNOWN, Ledger, Observed, subset_sums

U = 7 << 16 | 1


def seen(name: str = "", gold: int = BASE_GOLD, pending: int = 0,
         mails: tuple[str, ...] = ()) -> dict[int, Observed]:
    return {U: Observed(U, name, gold, pending, mails)}


class Renames(unittest.TestCase):
    def test_the_last_acknowledged_name_or_a_later_unknown_one(self) -> None:
        led = Ledger()
        led.record("rename", U, "a", OK, "f")
        led.record("rename", U, "b", FAILED, "f")
        led.record("rename", U, "c", UNKNOWN, "f")
        self.assertEqual(led.expected_names(U), {"a", "c"})
        self.assertEqual(led.check(seen("a")), [])
        self.assertEqual(led.check(seen("c")), [])
        [loss] = led.check(seen("b"))
        self.assertEqual((loss.kind, loss.what), ("rename", "lost"))

    def test_an_acknowledged_rename_rolled_back_to_an_older_one_is_a_loss(self) -> None:
        led = Ledger()
        led.record("rename", U, "a", OK, "f")
        led.record("rename", U, "d", OK, "f")
        self.assertEqual([x.what for x in led.check(seen("a"))], ["lost"])
        self.assertEqual(led.check(seen("d")), [])


class Grants(unittest.TestCase):
    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("grant", U, 10, OK, "f")
        led.record("grant", U, 100, UNKNOWN, "f")
        led.record("grant", U, 7, FAILED, "f")
        return led

    def test_acknowledged_plus_a_subset_of_the_unknown(self) -> None:
        led = self.ledger()
        self.assertEqual(led.check(seen(gold=BASE_GOLD + 10)), [])
        self.assertEqual(led.check(seen(gold=BASE_GOLD + 110)), [])
        self.assertEqual(led.check(seen(gold=BASE_GOLD + 5, pending=5)), [])  # not yet pulled

    def test_less_is_lost_more_is_doubled_and_odd_sums_mismatch(self) -> None:
        led = self.ledger()
        self.assertEqual([x.what for x in led.check(seen(gold=BASE_GOLD + 9))], ["lost"])
        self.assertEqual([x.what for x in led.check(seen(gold=BASE_GOLD + 120))], ["doubled"])
        self.assertEqual([x.what for x in led.check(seen(gold=BASE_GOLD + 17))], ["mismatch"])

    def test_subset_sums(self) -> None:
        self.assertEqual(subset_sums([1, 2, 4]), set(range(8)))


class Mail(unittest.TestCase):
    def test_acknowledged_once_unknown_at_most_once(self) -> None:
        led = Ledger()
        led.record("mail", U, "m1", OK, "f")
        led.record("mail", U, "m2", UNKNOWN, "f")
        self.assertEqual(led.check(seen(mails=("m1",))), [])
        self.assertEqual(led.check(seen(mails=("m2", "m1"))), [])
        self.assertEqual([x.what for x in led.check(seen(mails=("m2",)))], ["lost"])
        self.assertEqual([x.what for x in led.check(seen(mails=("m1", "m1")))], ["doubled"])
        self.assertEqual([x.what for x in led.check(seen(mails=("m1", "m2", "m2")))],
                         ["doubled"])

    def test_a_player_not_observed_is_reported(self) -> None:
        led = Ledger()
        led.record("mail", U, "m1", OK, "f")
        self.assertEqual([x.what for x in led.check({})], ["mismatch"])

    def test_counts_per_fault(self) -> None:
        led = Ledger()
        led.record("mail", U, "m1", OK, "a")
        led.record("grant", U, 1, UNKNOWN, "b")
        self.assertEqual(led.counts("a")["mail"][OK], 1)
        self.assertEqual(led.counts("a")["grant"][UNKNOWN], 0)
        self.assertEqual(led.counts()["grant"][UNKNOWN], 1)
