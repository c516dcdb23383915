"""``rl-chaos run`` against a real cluster (13 processes + redis-server): changes made
behind the ledger's back — gold and food granted that nobody acknowledged, a gift mail
nobody sent, a global mail stored twice, troops credited that no march brought home, a GM
mail acknowledged but never stored — are
found by the checker through the same reads a real run makes (player instances, rolecity
ledgers, mailboxes, MarchList) and reported as violations of the fault's row. So a run that passes
did look at the state it claims to check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from rltwist.chaos.ledger import GIFT_TITLE, OK
from rltwist.chaos.run import ROUTES, Fault, Run
from rltwist.cluster.routing import birth_region


def sabotage(notes: dict[str, Any]) -> Fault:
    """A "fault" that changes two bots' state through operator calls the ledger does not
    know about (and records two operations that did not happen)."""

    async def inject(run: Run) -> dict[str, Any]:
        t0 = time.monotonic()
        h = run.h
        a, b = (bot.userid for bot in run.bots[1:3])  # not creators: no guild cost
        assert a is not None and b is not None
        notes.update(a=a, b=b)
        for amounts in ({"gold": 7}, {"food": 5}):  # grant doubled, claim doubled
            status, result = await h.call(ROUTES.rolecity_node(a), "rolerouter", "grant", a,
                                          amounts)
            assert status == 200 and result["code"] == 0, (status, result)
        # a gift mail from a that a never sent: gift doubled at b
        status, result = await h.call(ROUTES.mail_node(b), "mailrouter", "deliver", b, {
            "from": a, "title": GIFT_TITLE, "body": "forged", "attachments": {"oil": 1}})
        assert status == 200, (status, result)
        # a global mail acknowledged (so recorded) and stored twice at b: gmail doubled at
        # b, lost at every other bot
        run.ledger.record("gmail", 0, "gmail-forged", OK, "sabotage", regions=[])
        for _ in range(2):
            status, result = await h.call(ROUTES.mail_node(b), "mailrouter", "deliver", b,
                                          {"title": "gmail-forged", "body": "x"})
            assert status == 200, (status, result)
        # troops coming home that no march took out (a march credited twice): march
        # doubled at a — the troops read through MarchList
        status, result = await h.call(ROUTES.map_node(birth_region(a)), "march",
                                      "grant_troops", a, {"infantry": 3}, "sabotage")
        assert status == 200 and result["code"] == 0, (status, result)
        # a GM mail acknowledged but never stored: mail lost at a
        run.ledger.record("mail", a, "chaos-forged", OK, "sabotage", food=1)
        return {"t0": t0, "t_end": time.monotonic()}

    return Fault("sabotage", inject, "state changed behind the ledger's back")


class Sabotage(unittest.TestCase):
    timeout = 240

    async def test_changes_behind_the_ledger_are_violations(self) -> None:
        notes: dict[str, Any] = {}
        said: list[str] = []
        run = Run(reactor, Path(self.mktemp()), bots=6, schedule=[sabotage(notes)],
                  say=said.append, seed=5)
        run.settle_limit = 4.0  # the lost global mails never come: do not wait 45 s
        result = await run.run()
        [row] = result["faults"]
        found = {(x["kind"], x["what"], x["userid"]) for x in row["acked_lost"]}
        a, b = notes["a"], notes["b"]
        expected = {("grant", "doubled", a), ("claim", "doubled", a),
                    ("gift", "doubled", b), ("gmail", "doubled", b), ("mail", "lost", a),
                    ("march", "doubled", a)}
        self.assertLessEqual(expected, found, "\n".join(said))
        others = {bot.userid for bot in run.bots} - {b}
        self.assertEqual({u for k, w, u in found if (k, w) == ("gmail", "lost")}, others)
        # nothing else was reported: the bots' own operations all held
        self.assertEqual(found - expected - {("gmail", "lost", u) for u in others}, set(),
                         "\n".join(said))
        self.assertEqual(result["violations"], len(row["violations"]))
        self.assertGreater(result["violations"], 0)
        self.assertEqual(result["double_online"], 0)
        self.assertEqual(result["checked"]["players"], 6)
        self.assertEqual(result["checked"]["troops_observed"], 6)
