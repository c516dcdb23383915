"""Global and region mail end to end (issue 12): GM routes on master, logiccenter's gmail,
delivery by the role nodes at once to online players and at login to the others; two
regions, two role nodes, real processes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.login_util import offline
from tests.social_util import SocialCase
from tests.util import metrics_text, wait_for


def sample(text: str, series: str) -> float:
    """The value of *series* (name and labels as printed) in Prometheus *text*."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no series {series} in the metrics")


class MailboxMixin:
    probe: Any

    async def titles(self, userid: int) -> Counter[str]:
        """How many mails of each title the player's mailbox holds."""
        mails = await self.probe.cluster.call(self.probe.cluster.mail_node(userid),
                                              "mailrouter", "call", userid, "list",
                                              timeout=10)
        return Counter(m["title"] for m in mails)

    async def wait_mail(self, userid: int, title: str, timeout: float = 20.0) -> Counter[str]:
        """The player's mailbox once it holds *title* (waits up to *timeout* s)."""
        found: list[Counter[str]] = []

        async def has() -> bool:
            found[:] = [await self.titles(userid)]
            return found[0][title] > 0

        await wait_for(has, timeout, f"mail {title!r} in the mailbox of {userid}")
        return found[0]


class GlobalMail(MailboxMixin, SocialCase):
    async def gm(self, method: str, path: str, body: Any = None,
                 expect: int = 200) -> dict[str, Any]:
        status, answer = await self.lc.gm(method, path, body, timeout=30)
        self.assertEqual(status, expect, f"{method} {path}: {answer}")
        result: dict[str, Any] = answer
        return result

    async def test_region_global_and_include_new_mail_each_reach_their_players_once(
            self) -> None:
        a, b = await self.players_apart(1, 2)
        c = await self.player(2)
        c.close()
        await wait_for(lambda: offline(self, c.userid), 20, "the closed client's logout")

        # refused before anything is stored
        await self.gm("POST", "/mail/region/9", {"title": "x"}, expect=400)
        await self.gm("POST", "/mail/region/abc", {"title": "x"}, expect=400)
        await self.gm("POST", "/mail/global", {"body": "no title"}, expect=400)
        await self.gm("POST", "/mail/global", {"title": "x", "attachments": {"gold": -1}},
                      expect=400)

        # a region mail: the online player of region 2 at once, region 1 never
        sent = await self.gm("POST", "/mail/region/2",
                             {"title": "r2", "body": "hello region 2",
                              "attachments": {"gold": 5}})
        self.assertEqual(sent["gmail"]["regions"], [2])
        await self.wait_mail(b.userid, "r2")
        # a global mail, existing players only
        await self.gm("POST", "/mail/global", {"title": "g", "expire_days": 7})
        box_a = await self.wait_mail(a.userid, "g")
        self.assertEqual(box_a["r2"], 0)  # id order: r2 was decided before g was delivered
        box_b = await self.wait_mail(b.userid, "g")
        self.assertEqual((box_b["r2"], box_b["g"]), (1, 1))
        # the offline player of region 2 gets both at its next login
        await self.relogin(c)
        box_c = await self.wait_mail(c.userid, "g")
        self.assertEqual((box_c["r2"], box_c["g"]), (1, 1))

        # a player created after "g" does not get it; "gn" (include_new) reaches it and a
        # player created after "gn"
        d = await self.player(1)
        await self.gm("POST", "/mail/global", {"title": "gn", "include_new": True})
        box_d = await self.wait_mail(d.userid, "gn")
        self.assertEqual(box_d["g"], 0)
        e = await self.player(2)
        box_e = await self.wait_mail(e.userid, "gn")
        self.assertEqual((box_e["g"], box_e["r2"], box_e["gn"]), (0, 0, 1))

        # relogins change nothing: every mailbox holds each of its mails once
        for client in (a, b, c):
            client.close()
            await wait_for(lambda: offline(self, client.userid), 20,  # noqa: B023
                           f"the logout of {client.openid}")
            await self.relogin(client)
        await self.wait_mail(a.userid, "gn")
        expected = {a.userid: {"g": 1, "gn": 1}, b.userid: {"r2": 1, "g": 1, "gn": 1},
                    c.userid: {"r2": 1, "g": 1, "gn": 1}, d.userid: {"gn": 1},
                    e.userid: {"gn": 1}}
        for client in (b, c):
            await self.wait_mail(client.userid, "gn")
        for userid, titles in expected.items():
            self.assertEqual(dict(await self.titles(userid)), titles, userid)

        # what the role nodes count: 10 mails stored in all, none failed
        stored = failed = 0.0
        for role in ("role1", "role2"):
            text = await metrics_text(self.lc, role)
            stored += sample(text, 'rl_gmail_deliveries_total{result="stored"}')
            failed += sample(text, 'rl_gmail_deliveries_total{result="failed"}')
        self.assertEqual((stored, failed), (10, 0))

        listing = await self.gm("GET", "/mail/global")
        self.assertEqual([(g["id"], g["title"], g["regions"], g["include_new"])
                          for g in listing["gmails"]],
                         [(1, "r2", [2], False), (2, "g", [], False), (3, "gn", [], True)])

        # acknowledged means durable: kill -9 of logiccenter loses none of them, and a
        # player created after the restart still gets "gn" (and only it)
        self.assertLess(await self.lc.nodes["logiccenter"].kill(), 0)
        await self.lc.start("logiccenter")
        await self.lc.wait_up(self.names)
        self.assertEqual(await self.gm("GET", "/mail/global"), listing)
        f = await self.player(2)
        box_f = await self.wait_mail(f.userid, "gn")
        self.assertEqual(dict(box_f), {"gn": 1})
