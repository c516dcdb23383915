"""Global mail to 1,000 players, each gets it exactly once across a relogin storm (issue
12 "must show"): half the players online when the GM sends it, half offline; every one of
them logs in again (the online ones twice, kicking their own previous instance) while the
role nodes are still delivering. Real processes; mailboxes read through mailrouter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from twisted.internet import defer

from rltwist.protocols import pb
from tests.login_util import GameClient, offline
from tests.social_util import SocialCase
from tests.test_gmail_e2e import MailboxMixin
from tests.util import sleep, wait_for

T = TypeVar("T")
PLAYERS = 1000
AT_ONCE = 50
TITLE = "storm"


async def bounded(items: Iterable[T], fn: Callable[[T], Awaitable[Any]],
                  at_once: int = AT_ONCE) -> list[Any]:
    """``fn(item)`` for every item, at most *at_once* running; the results in order."""
    slots = defer.DeferredSemaphore(at_once)

    async def one(item: T) -> Any:
        async with slots:
            return await fn(item)

    return list(await defer.gatherResults([defer.Deferred.fromCoroutine(one(i))
                                           for i in items]))


class GlobalMailStorm(MailboxMixin, SocialCase):
    names = ["master", "logiccenter", "map1", "guild1", "mail1", "rolecity1",
             "role1", "role2", "login1"]
    timeout = 600

    async def login(self, c: GameClient) -> None:
        """Log *c* in (again), retrying what a storm legitimately answers."""
        for _ in range(50):
            r = await c.login(*self.login_address())
            if r.code in (pb.ErrorCode.RETRY_LATER, pb.ErrorCode.LOGIN_IN_PROGRESS):
                await sleep(0.2)  # back off, as a client would
                continue
            self.assertEqual(r.code, pb.ErrorCode.OK, c.openid)
            old = c.conn
            a = await c.auth(r)
            if a.code == pb.ErrorCode.RETRY_LATER:
                c.conn.transport.loseConnection()  # type: ignore[union-attr]
                await sleep(0.2)
                continue
            self.assertEqual(a.code, pb.ErrorCode.OK, c.openid)
            if old is not None and old is not c.conn and old.transport is not None:
                old.transport.loseConnection()
            c.userid = r.userid
            return
        raise AssertionError(f"{c.openid} could not log in again")

    async def test_1000_players_get_a_global_mail_exactly_once_across_a_relogin_storm(
            self) -> None:
        clients = [self.client(f"storm-{i}", server_id=1) for i in range(PLAYERS)]
        await bounded(clients, self.login)
        away, present = clients[::2], clients[1::2]
        for c in away:
            c.close()
        await bounded(away, lambda c: wait_for(lambda: offline(self, c.userid), 30,
                                               f"the logout of {c.openid}"))

        # the storm runs while the GM sends and the role nodes deliver to the online half
        storm = present + away + present
        relogins = defer.Deferred.fromCoroutine(bounded(storm, self.login))
        status, answer = await self.lc.gm("POST", "/mail/global",
                                          {"title": TITLE, "attachments": {"gold": 1}},
                                          timeout=30)
        self.assertEqual(status, 200, answer)
        await relogins

        async def delivered(c: GameClient) -> None:
            await self.wait_mail(c.userid, TITLE, timeout=60)

        await bounded(clients, delivered)
        counts = await bounded(clients, lambda c: self.titles(c.userid))
        wrong = {c.userid: n[TITLE] for c, n in zip(clients, counts, strict=True) if n[TITLE] != 1}
        self.assertEqual(wrong, {}, "players whose mailbox holds the global mail "
                         "other than once")
        self.assertEqual(len({c.userid for c in clients}), PLAYERS)

