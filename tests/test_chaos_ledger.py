"""rl-chaos's ledger: what must be true after the server acknowledged renames, GM grants,
mail deliveries and claims, gifts, guild membership changes, friend requests and accepts
and global mail, and how each way of breaking it — an acknowledged operation lost, one
done twice, two sides that disagree — is reported (pure, no processes: the observed
states are built by hand)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.chaos.ledger import (
    BASE_FOOD,
    BASE_GOLD,
    BASE_OIL,
    FAILED,
    GIFT_TITLE,
    INITIAL_TROOPS,
    MARCH_CAPACITY,
    OK,
    UNKNOWN,
    GuildSeen,
    Ledger,
    Loss,
    MailSeen,
    MarchSeen,
    Observed,
    healing,
    subset_sums,
)
from rltwist.chaos.run import Run

U = 7 << 16 | 1
V = 9 << 16 | 2
W = 11 << 16 | 1


def seen(name: str = "", gold: int = BASE_GOLD, pending: int = 0,
         mails: tuple[str, ...] = ()) -> dict[int, Observed]:
    return {U: Observed(U, name, gold, pending,
                        tuple(MailSeen(i, t) for i, t in enumerate(mails, 1)))}


def whats(losses: list[Loss], kind: str | None = None) -> list[str]:
    return [x.what for x in losses if kind is None or x.kind == kind]


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

    def test_a_refused_mail_that_is_there_is_reported(self) -> None:
        led = Ledger()
        led.record("mail", U, "m1", FAILED, "f", "404")
        self.assertEqual(led.check(seen()), [])
        self.assertEqual(whats(led.check(seen(mails=("m1",)))), ["mismatch"])

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


class Claims(unittest.TestCase):
    """A claim credits the mail's attachments (food) exactly once."""

    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("mail", U, "m1", OK, "f", food=30)
        led.record("mail", U, "m2", OK, "f", food=5)
        led.record("mail", U, "m3", OK, "f", food=700)
        led.record("claim", U, "m1", OK, "f", mail_id=1)
        led.record("claim", U, "m2", UNKNOWN, "f", mail_id=2)
        return led

    def state(self, food: int, claimed: set[str]) -> dict[int, Observed]:
        mails = tuple(MailSeen(i, t, 0, t in claimed)
                      for i, t in enumerate(("m1", "m2", "m3"), 1))
        return {U: Observed(U, mails=mails, food=food)}

    def test_credited_once_for_each_mail_shown_claimed(self) -> None:
        led = self.ledger()
        self.assertEqual(led.check(self.state(BASE_FOOD + 30, {"m1"})), [])
        # the unknown claim went through: shown claimed and credited once
        self.assertEqual(led.check(self.state(BASE_FOOD + 35, {"m1", "m2"})), [])

    def test_a_lost_claim_is_reported(self) -> None:
        led = self.ledger()
        # acknowledged, yet neither shown claimed nor credited
        self.assertEqual(whats(led.check(self.state(BASE_FOOD, set()))), ["lost"])
        # shown claimed but never credited
        self.assertEqual(whats(led.check(self.state(BASE_FOOD, {"m1"}))), ["lost"])

    def test_a_doubled_claim_is_reported(self) -> None:
        led = self.ledger()
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 60, {"m1"}))), ["doubled"])
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 65, {"m1", "m2"}))),
                         ["doubled"])
        # credited for a mail no claim was sent for, not shown claimed
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 730, {"m1"}))), ["doubled"])

    def test_an_unknown_claim_credited_but_not_confirmed_yet_is_no_double(self) -> None:
        # the mail node died between the credit and its confirmation: the mail is not
        # shown claimed until the next MailClaim or Auth confirms it
        led = self.ledger()
        self.assertEqual(led.check(self.state(BASE_FOOD + 35, {"m1"})), [])
        # but only the unknown claim's attachments, once
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 40, {"m1"}))), ["doubled"])
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 33, {"m1"}))), ["mismatch"])

    def test_a_mail_claimed_without_a_claim_is_reported(self) -> None:
        led = self.ledger()
        self.assertEqual(whats(led.check(self.state(BASE_FOOD + 730, {"m1", "m3"}))),
                         ["mismatch"])


class Gifts(unittest.TestCase):
    """The sender loses the gift once, the receiver gets its mail once."""

    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("gift", U, 10, OK, "f", to=V)
        led.record("gift", U, 3, UNKNOWN, "f", to=V)
        led.record("gift", U, 50, FAILED, "f", to=V)
        return led

    def state(self, oil: int, gift_mails: int) -> dict[int, Observed]:
        mails = tuple(MailSeen(i, GIFT_TITLE, U) for i in range(gift_mails))
        return {U: Observed(U, oil=oil), V: Observed(V, mails=mails)}

    def test_taken_and_delivered_once(self) -> None:
        led = self.ledger()
        self.assertEqual(led.check(self.state(BASE_OIL - 10, 1)), [])
        self.assertEqual(led.check(self.state(BASE_OIL - 13, 2)), [])

    def test_a_lost_gift_is_reported(self) -> None:
        led = self.ledger()
        # the debit is gone (the sender kept its oil)
        self.assertEqual(whats(led.check(self.state(BASE_OIL, 1))), ["lost"])
        # the mail never arrived
        [loss] = led.check(self.state(BASE_OIL - 10, 0))
        self.assertEqual((loss.userid, loss.what), (V, "lost"))

    def test_a_doubled_gift_is_reported(self) -> None:
        led = self.ledger()
        self.assertEqual(whats(led.check(self.state(BASE_OIL - 23, 1))), ["doubled"])
        [loss] = led.check(self.state(BASE_OIL - 13, 3))
        self.assertEqual((loss.userid, loss.what), (V, "doubled"))

    def test_oil_gone_without_a_gift_is_reported(self) -> None:
        # every observed player is checked, also one no operation touched
        self.assertEqual(Ledger().check({U: Observed(U)}), [])
        self.assertEqual(whats(Ledger().check({U: Observed(U, oil=BASE_OIL - 1)})),
                         ["mismatch"])
        self.assertEqual(whats(Ledger().check({U: Observed(U, gold=BASE_GOLD + 1)})),
                         ["doubled"])


class Guilds(unittest.TestCase):
    """The player's guildid is what its last acknowledged change made it, and the guild's
    member list agrees."""

    G, H = 1 << 16 | 1, 2 << 16 | 1

    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("guild", W, "create", OK, "f", guildid=self.G)
        led.record("guild", U, "join", OK, "f", guildid=self.G)
        return led

    def guilds(self, *members: int, outbox: frozenset[int] = frozenset()
               ) -> dict[int, GuildSeen]:
        return {self.G: GuildSeen(self.G, W, frozenset(members), outbox)}

    def state(self, gid_u: int, gid_w: int = G, gold_w: int = BASE_GOLD - 500
              ) -> dict[int, Observed]:
        return {U: Observed(U, guildid=gid_u), W: Observed(W, gold=gold_w, guildid=gid_w)}

    def test_joined_and_listed(self) -> None:
        led = self.ledger()
        self.assertEqual(led.check(self.state(self.G), self.guilds(W, U)), [])

    def test_a_lost_join_is_reported(self) -> None:
        led = self.ledger()
        self.assertEqual(whats(led.check(self.state(0), self.guilds(W))), ["lost"])

    def test_a_lost_leave_is_reported(self) -> None:
        led = self.ledger()
        led.record("guild", U, "leave", OK, "f", guildid=self.G)
        self.assertEqual(led.check(self.state(0), self.guilds(W)), [])
        self.assertEqual(sorted(whats(led.check(self.state(self.G), self.guilds(W, U)))),
                         ["lost"])

    def test_guildid_and_member_list_disagree(self) -> None:
        led = self.ledger()
        # the guild lists U, whose guildid says none
        self.assertIn("mismatch", whats(led.check(self.state(0), self.guilds(W, U))))
        # U's guildid is the guild, which does not list U
        self.assertIn("mismatch", whats(led.check(self.state(self.G), self.guilds(W))))

    def test_a_player_listed_by_two_guilds_is_doubled(self) -> None:
        led = self.ledger()
        guilds = {**self.guilds(W, U), self.H: GuildSeen(self.H, V, frozenset({V, U}))}
        losses = led.check({**self.state(self.G), V: Observed(V, guildid=self.H)}, guilds)
        self.assertEqual([(x.userid, x.what) for x in losses if x.what != "mismatch"],
                         [(U, "doubled")])
        self.assertTrue(healing(losses))  # the second of two racing joins is undone

    def test_the_create_cost_is_taken_once(self) -> None:
        led = self.ledger()
        guilds = self.guilds(W, U)
        # gold is one balance: more than promised (the cost not taken, or given back
        # twice) is reported as a double, less (taken twice) as a loss
        self.assertEqual(whats(led.check(self.state(self.G, gold_w=BASE_GOLD), guilds)),
                         ["doubled"])
        self.assertEqual(whats(led.check(self.state(self.G, gold_w=BASE_GOLD - 1000),
                                         guilds)), ["lost"])

    def test_an_unknown_create_may_have_made_any_guild_the_player_leads(self) -> None:
        led = Ledger()
        led.record("guild", W, "create", UNKNOWN, "f")
        self.assertEqual(led.check({W: Observed(W, guildid=0)}), [])
        self.assertEqual(led.check({W: Observed(W, gold=BASE_GOLD - 500, guildid=self.G)},
                                   self.guilds(W)), [])
        led.record("rename", U, "a", OK, "f")
        other = {self.G: GuildSeen(self.G, U, frozenset({U, W}))}
        losses = led.check({W: Observed(W, guildid=self.G), U: Observed(U, "a",
                                                                        guildid=self.G)},
                           other)
        self.assertEqual(whats(losses, "guild"), ["mismatch"])


class Friends(unittest.TestCase):
    """An acknowledged request or accept is there; both sides agree."""

    def test_a_request_and_an_accept_on_both_sides(self) -> None:
        led = Ledger()
        led.record("friend", U, "request", OK, "f", peer=V)
        pending = {U: Observed(U, requests_out=frozenset({V})),
                   V: Observed(V, requests_in=frozenset({U}))}
        self.assertEqual(led.check(pending), [])
        led.record("friend", V, "accept", OK, "f", peer=U)
        friends = {U: Observed(U, friends=frozenset({V})),
                   V: Observed(V, friends=frozenset({U}))}
        self.assertEqual(led.check(friends), [])
        # the accept is lost: still pending on both sides
        self.assertEqual(whats(led.check(pending)), ["lost"])

    def test_a_lost_request_is_reported(self) -> None:
        led = Ledger()
        led.record("friend", U, "request", OK, "f", peer=V)
        self.assertEqual(whats(led.check({U: Observed(U), V: Observed(V)})), ["lost"])

    def test_one_sided_states_are_reported(self) -> None:
        led = Ledger()
        led.record("friend", U, "request", UNKNOWN, "f", peer=V)
        one_sided = {U: Observed(U, friends=frozenset({V})), V: Observed(V)}
        self.assertEqual(whats(led.check(one_sided)), ["mismatch"])
        request_lost_midway = {U: Observed(U, requests_out=frozenset({V})), V: Observed(V)}
        self.assertEqual(whats(led.check(request_lost_midway)), ["mismatch"])
        # a "doubled" friendship cannot be represented (sets); the nearest thing, both a
        # friend and a request waiting, is two disagreeing sides or a leftover request
        both = {U: Observed(U, friends=frozenset({V}), requests_out=frozenset({V})),
                V: Observed(V, friends=frozenset({U}))}
        self.assertEqual(whats(led.check(both)), ["mismatch"])


class GlobalMail(unittest.TestCase):
    """Each targeted player gets a global or region mail exactly once."""

    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("gmail", 0, "g1", OK, "f", regions=[])
        led.record("gmail", 0, "r2", OK, "f", regions=[2])
        led.record("gmail", 0, "g3", UNKNOWN, "f", regions=[])
        return led

    def state(self, u: tuple[str, ...], v: tuple[str, ...]) -> dict[int, Observed]:
        def mails(titles: tuple[str, ...]) -> Any:
            return tuple(MailSeen(i, t) for i, t in enumerate(titles, 1))
        return {U: Observed(U, mails=mails(u)), V: Observed(V, mails=mails(v))}

    def test_once_to_every_target(self) -> None:
        led = self.ledger()
        self.assertEqual(led.check(self.state(("g1",), ("g1", "r2"))), [])
        self.assertEqual(led.check(self.state(("g1", "g3"), ("g1", "r2"))), [])

    def test_a_lost_global_or_region_mail_is_reported(self) -> None:
        led = self.ledger()
        [loss] = led.check(self.state(("g1",), ("g1",)))
        self.assertEqual((loss.kind, loss.userid, loss.what), ("gmail", V, "lost"))
        [loss] = led.check(self.state((), ("g1", "r2")))
        self.assertEqual((loss.userid, loss.what), (U, "lost"))

    def test_a_refused_global_mail_delivered_is_reported(self) -> None:
        led = self.ledger()
        led.record("gmail", 0, "g4", FAILED, "f", "400", regions=[1])
        [loss] = led.check(self.state(("g1", "g4"), ("g1", "r2", "g4")))
        self.assertEqual((loss.userid, loss.what), (U, "mismatch"))  # V is of region 2

    def test_a_doubled_global_mail_is_reported(self) -> None:
        led = self.ledger()
        [loss] = led.check(self.state(("g1", "g1"), ("g1", "r2")))
        self.assertEqual((loss.userid, loss.what), (U, "doubled"))
        [loss] = led.check(self.state(("g1",), ("g1", "r2", "g3", "g3")))
        self.assertEqual((loss.userid, loss.what), (V, "doubled"))
        self.assertFalse(healing([loss]))


HOME = tuple(sorted(INITIAL_TROOPS.items()))
ONE_OUT = tuple(sorted({**INITIAL_TROOPS, "infantry": INITIAL_TROOPS["infantry"] - 1}.items()))
ONE = (("infantry", 1),)


class Marches(unittest.TestCase):
    """Gather marches: every troop is home or in a march in flight, and the final load
    a recall answered is credited once when the march is home."""

    def ledger(self) -> Ledger:
        led = Ledger()
        led.record("march", U, "start", OK, "f", march_id=5, troops={"infantry": 1})
        return led

    def test_in_flight_or_home_and_credited_once(self) -> None:
        led = self.ledger()
        # in flight: one infantry out, nothing credited yet
        flying = Observed(U, troops=ONE_OUT, marches=(MarchSeen(5, ONE),))
        self.assertEqual(led.check({U: flying}), [])
        led.record("march", U, "recall", OK, "f", march_id=5, load={"food": 7})
        # on its way home with its final load: not credited yet either
        self.assertEqual(led.check({U: flying}), [])
        home = Observed(U, troops=HOME, food=BASE_FOOD + 7)
        self.assertEqual(led.check({U: home}), [])

    def test_a_lost_march_credit_is_a_violation(self) -> None:
        led = self.ledger()
        led.record("march", U, "recall", OK, "f", march_id=5, load={"gold": 9})
        # the march left the map, the troops and the load never reached the player
        [gold, troops] = sorted(led.check({U: Observed(U, troops=ONE_OUT)}),
                                key=lambda x: x.kind)
        self.assertEqual((gold.kind, gold.what), ("grant", "lost"))
        self.assertEqual((troops.kind, troops.what), ("march", "lost"))
        self.assertIn("infantry: 999 home + 0 in 0 marches", troops.detail)
        self.assertTrue(healing([troops, gold]))  # a late homecoming: looked at again

    def test_a_doubled_march_credit_is_a_violation(self) -> None:
        led = self.ledger()
        led.record("march", U, "recall", OK, "f", march_id=5, load={"oil": 4})
        twice = tuple(sorted({**INITIAL_TROOPS, "infantry": INITIAL_TROOPS["infantry"] + 1}
                             .items()))
        losses = led.check({U: Observed(U, troops=twice, oil=BASE_OIL + 8)})
        self.assertEqual({(x.kind, x.what) for x in losses},
                         {("march", "doubled"), ("gift", "mismatch")})
        self.assertFalse(healing(losses))
        # credited while still listed in flight: troops counted twice
        losses = led.check({U: Observed(U, troops=HOME, oil=BASE_OIL + 4,
                                        marches=(MarchSeen(5, ONE),))})
        self.assertEqual({(x.kind, x.what) for x in losses},
                         {("march", "doubled"), ("gift", "mismatch")})

    def test_a_load_never_answered_is_a_bounded_range(self) -> None:
        led = Ledger()
        led.record("march", U, "start", UNKNOWN, "f", "timeout")
        home = Observed(U, troops=HOME)
        for food in (0, 3, MARCH_CAPACITY):
            self.assertEqual(led.check({U: attrs.evolve(home, food=BASE_FOOD + food)}), [])
        [loss] = led.check({U: attrs.evolve(home, food=BASE_FOOD + MARCH_CAPACITY + 1)})
        self.assertEqual((loss.kind, loss.what), ("claim", "doubled"))
        # the bot found the march in MarchList and its recall answered: exact again
        led.record("march", U, "recall", OK, "f", march_id=6, load={})
        [loss] = led.check({U: attrs.evolve(home, food=BASE_FOOD + 3)})
        self.assertEqual((loss.kind, loss.what), ("claim", "doubled"))

    def test_troops_not_observed_for_a_marching_player_is_reported(self) -> None:
        [loss] = self.ledger().check({U: Observed(U)})
        self.assertEqual((loss.kind, loss.what), ("march", "mismatch"))


class Checker(unittest.TestCase):
    """``rl-chaos run``'s check after a fault (``Run._ledger_row``) with the cluster
    replaced by observations made up here: every kind of loss and double becomes a
    violation of the fault's row; what is missing is looked at again while it may still
    be delivered, a double is reported at once."""

    def run_with(self, states: list[tuple[dict[int, Observed], dict[int, GuildSeen]]],
                 settle: float = 60.0) -> tuple[Any, task.Clock]:
        clock = task.Clock()
        run = Run(clock, Path(self.mktemp()), bots=0, schedule=[], say=lambda m: None)
        run.settle_limit = settle
        seen: list[int] = []

        async def observe_all() -> tuple[dict[int, Observed], dict[int, GuildSeen]]:
            seen.append(1)
            return states[min(len(seen), len(states)) - 1]

        run._observe_all = observe_all  # type: ignore[method-assign]
        run.observations = seen
        return run, clock

    def check(self, run: Any, clock: task.Clock) -> dict[str, Any]:
        row: dict[str, Any] = {"violations": []}
        d = defer.Deferred.fromCoroutine(run._ledger_row(row))
        for _ in range(100):
            if d.called:
                break
            clock.advance(2.0)
        self.successResultOf(d)
        return row

    def every_kind(self, run: Run) -> dict[int, Observed]:
        """One operation of each kind acknowledged by U (to V), and the state where each
        one holds."""
        led = run.ledger
        led.guild_cost = 500
        led.record("rename", U, "a", OK, "f")
        led.record("grant", U, 40, OK, "f")
        led.record("mail", U, "chaos-1", OK, "f", food=7)
        led.record("claim", U, "chaos-1", OK, "f", mail_id=1)
        led.record("gift", U, 5, OK, "f", to=V)
        led.record("guild", V, "create", OK, "f", guildid=Guilds.G)
        led.record("guild", U, "join", OK, "f", guildid=Guilds.G)
        led.record("friend", U, "request", OK, "f", peer=V)
        led.record("gmail", 0, "gmail-x-1", OK, "f", regions=[])
        return {
            U: Observed(U, "a", BASE_GOLD + 40, 0, (MailSeen(1, "chaos-1", 0, True),
                                                    MailSeen(2, "gmail-x-1")),
                        food=BASE_FOOD + 7, oil=BASE_OIL - 5, guildid=Guilds.G,
                        requests_out=frozenset({V})),
            V: Observed(V, "", BASE_GOLD - 500, 0, (MailSeen(1, GIFT_TITLE, U),
                                                    MailSeen(2, "gmail-x-1")),
                        guildid=Guilds.G, requests_in=frozenset({U}))}

    def guilds(self) -> dict[int, GuildSeen]:
        return {Guilds.G: GuildSeen(Guilds.G, V, frozenset({U, V}))}

    def test_every_promise_kept_is_no_violation(self) -> None:
        good = self.every_kind(self.run_with([])[0])
        run, clock = self.run_with([(good, self.guilds())])
        self.every_kind(run)
        row = self.check(run, clock)
        self.assertEqual(row["violations"], [])
        self.assertEqual(row["checked"]["guild_members"], 2)
        self.assertEqual(row["checked"]["mails_claimed"], 1)

    def test_each_lost_operation_is_a_violation(self) -> None:
        run, clock = self.run_with([])
        v = self.every_kind(run)[V]
        # U: name, grant, GM mail, claim (food), gift debit, join, request, global mail
        # all gone; V: the gift mail and the global mail never arrived, the guild lost U
        lost = {U: Observed(U, "old", food=BASE_FOOD, oil=BASE_OIL),
                V: Observed(V, "", v.gold, guildid=Guilds.G, requests_in=frozenset({U}))}
        run, clock = self.run_with([(lost, {Guilds.G: GuildSeen(Guilds.G, V,
                                                                 frozenset({V}))})],
                                   settle=0.0)
        self.every_kind(run)
        row = self.check(run, clock)
        kinds = {(x["kind"], x["what"]) for x in row["acked_lost"]}
        for kind in ("rename", "grant", "mail", "claim", "gift", "guild", "friend", "gmail"):
            self.assertIn((kind, "lost"), kinds, row["violations"])
        self.assertEqual(len(row["violations"]), len(row["acked_lost"]))

    def test_each_doubled_operation_is_a_violation_reported_at_once(self) -> None:
        run, clock = self.run_with([])
        good = self.every_kind(run)
        u, v = good[U], good[V]
        doubled = {
            U: Observed(U, "a", u.gold + 40, 0, (*u.mails, MailSeen(3, "chaos-1"),
                                                 MailSeen(4, "gmail-x-1")),
                        food=u.food + 7, oil=u.oil - 5, guildid=Guilds.G,
                        requests_out=u.requests_out),
            V: Observed(V, "", v.gold, 0, (*v.mails, MailSeen(3, GIFT_TITLE, U)),
                        guildid=Guilds.G, requests_in=v.requests_in)}
        run, clock = self.run_with([(doubled, self.guilds())], settle=60.0)
        self.every_kind(run)
        row = self.check(run, clock)
        self.assertEqual(run.observations, [1])  # a double never heals: no waiting
        kinds = {(x["kind"], x["what"]) for x in row["acked_lost"]}
        for kind in ("grant", "mail", "claim", "gift", "gmail"):
            self.assertIn((kind, "doubled"), kinds, row["violations"])
        # a guild listing a player twice, and a friendship only one side knows
        guilds = {**self.guilds(), Guilds.H: GuildSeen(Guilds.H, W, frozenset({U, W}))}
        one_sided = {**good, U: attrs.evolve(good[U], friends=frozenset({V}),
                                            requests_out=frozenset()),
                     W: Observed(W, guildid=Guilds.H)}
        run, clock = self.run_with([(one_sided, guilds)], settle=0.0)
        self.every_kind(run)
        row = self.check(run, clock)
        kinds = {(x["kind"], x["what"]) for x in row["acked_lost"]}
        self.assertIn(("guild", "doubled"), kinds)
        self.assertIn(("friend", "mismatch"), kinds)

    def test_what_is_missing_is_looked_at_again_until_it_arrives(self) -> None:
        run, clock = self.run_with([])
        good = self.every_kind(run)
        late = {**good, V: attrs.evolve(good[V], mails=(MailSeen(2, "gmail-x-1"),))}
        run, clock = self.run_with([(late, self.guilds()), (late, self.guilds()),
                                    (good, self.guilds())])
        self.every_kind(run)
        row = self.check(run, clock)
        self.assertEqual(row["violations"], [])
        self.assertEqual(len(run.observations), 3)

    def test_a_violation_is_reported_once_across_faults(self) -> None:
        run, clock = self.run_with([], settle=0.0)
        good = self.every_kind(run)
        bad = {**good, U: attrs.evolve(good[U], name="zz")}
        run, clock = self.run_with([(bad, self.guilds())], settle=0.0)
        self.every_kind(run)
        self.assertEqual(len(self.check(run, clock)["violations"]), 1)
        self.assertEqual(self.check(run, clock)["violations"], [])


class FakeConn:
    """Answers each request with the next canned answer (or raises it)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.sent: list[Any] = []

    def request(self, msg: Any) -> defer.Deferred[Any]:
        self.sent.append(msg)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class MarchBot(unittest.TestCase):
    """How a chaos bot records its marches: a recall's answer that says the march is on
    its way home gives its final load; no answer keeps the march to recall again."""

    def bot(self) -> Any:
        from rltwist.chaos.bots import ChaosBot, Env

        env = Env(task.Clock(), [], {}, Ledger(), seed=1)
        bot = ChaosBot(env, 1, "o", 1)
        bot.userid = U
        return bot

    def test_start_then_recall_answers_the_load(self) -> None:
        from rltwist.protocols import pb

        bot = self.bot()
        E = pb.ErrorCode
        point = pb.MapEntity(id=3, kind=pb.MapEntityKind.MAP_RESOURCE, x=4, y=5,
                             resource="food")
        line = pb.MarchLine(march_id=42)
        conn = FakeConn([pb.MarchTargets.Response(code=E.OK, targets=[point]),
                         pb.MarchStart.Response(code=E.OK, march=pb.MarchInfo(line=line))])
        self.successResultOf(defer.Deferred.fromCoroutine(bot.march(conn)))
        self.assertEqual(list(bot.marches), [42])
        self.assertEqual(conn.sent[1].troops[0].count, 1)
        bot.marches[42] = 0.0  # its hold is over
        conn.answers = [defer.TimeoutError()]
        self.failureResultOf(defer.Deferred.fromCoroutine(bot.recall(conn)),
                             defer.TimeoutError)
        self.assertEqual(list(bot.marches), [42])  # recalled again next time
        conn.answers = [pb.MarchRecall.Response(
            code=E.MARCH_ALREADY_RETURNING, march=pb.MarchInfo(line=line, load={"food": 9}))]
        self.successResultOf(defer.Deferred.fromCoroutine(bot.recall(conn)))
        self.assertEqual(bot.marches, {})
        ops = bot.env.ledger.of(U, "march")
        self.assertEqual([(op.value, op.outcome) for op in ops],
                         [("start", OK), ("recall", UNKNOWN), ("recall", OK)])
        self.assertEqual((ops[0].extra["march_id"], ops[2].extra["load"]), (42, {"food": 9}))
        # what the ledger then expects once the march is home
        self.assertEqual(bot.env.ledger.march_loads(U, Observed(U)), ({"food": 9}, 0))

    def test_a_march_home_before_its_recall_is_a_bounded_range(self) -> None:
        from rltwist.protocols import pb

        bot = self.bot()
        bot.env.ledger.record("march", U, "start", OK, "f", march_id=42)
        bot.marches[42] = 0.0
        conn = FakeConn([pb.MarchRecall.Response(code=pb.ErrorCode.MARCH_NOT_FOUND)])
        self.successResultOf(defer.Deferred.fromCoroutine(bot.recall(conn)))
        self.assertEqual(bot.marches, {})
        self.assertEqual(bot.env.ledger.march_loads(U, Observed(U)), ({}, MARCH_CAPACITY))


class MapFault(unittest.TestCase):
    """A map fault strikes with marches in flight and checks they all came home."""

    def run_(self, lists: list[dict[int, int] | None]) -> tuple[Run, task.Clock]:
        from rltwist.chaos.bots import ChaosBot

        clock = task.Clock()
        run = Run(clock, Path(self.mktemp()), bots=0, schedule=[], say=lambda m: None)
        bot = ChaosBot(None, 0, "o", 2)  # type: ignore[arg-type]
        bot.userid = V
        run.bots = [bot]

        async def in_flight(name: str, bots: Any) -> dict[int, int] | None:
            return lists.pop(0) if len(lists) > 1 else lists[0]

        run._in_flight = in_flight  # type: ignore[method-assign]
        return run, clock

    def drive(self, clock: task.Clock, d: defer.Deferred[Any]) -> Any:
        for _ in range(400):
            if d.called:
                break
            clock.advance(0.5)
        return self.successResultOf(d)

    def test_marches_in_flight_at_the_fault_come_home(self) -> None:
        run, clock = self.run_([{}, {}, {7: V}, {7: V, 8: V}, {8: V}, {}])
        flying = self.drive(clock, defer.Deferred.fromCoroutine(run.marches_before("map2")))
        self.assertEqual(flying, {7: V})  # waited until one was in flight
        ref: dict[str, Any] = {"t_end": time.monotonic()}
        self.drive(clock, defer.Deferred.fromCoroutine(run.marches_after("map2", flying, ref)))
        self.assertEqual(ref["marches_at_fault"], 1)
        self.assertIn("marches_home_s", ref)
        self.assertNotIn("violations", ref)
        self.assertEqual(self.drive(clock, defer.Deferred.fromCoroutine(
            run.marches_before("map1"))), {})  # no bot's city on map1: nothing to wait for

    def test_no_march_in_flight_or_one_never_home_is_a_violation(self) -> None:
        run, clock = self.run_([{}])
        ref: dict[str, Any] = {"t_end": time.monotonic()}
        flying = self.drive(clock, defer.Deferred.fromCoroutine(run.marches_before("map2")))
        self.drive(clock, defer.Deferred.fromCoroutine(run.marches_after("map2", flying, ref)))
        self.assertIn("no march was in flight", ref["violations"][0])
        run, clock = self.run_([{7: V}])
        ref = {"t_end": time.monotonic()}
        self.drive(clock, defer.Deferred.fromCoroutine(run.marches_after("map2", {7: V}, ref)))
        self.assertIn("not home within", ref["violations"][0])
