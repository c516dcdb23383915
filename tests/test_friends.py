"""Friends end to end through the client protocol (issue 12): players of two regions on
two role nodes, real processes, real TCP, real Redis. Requests by userid and by name,
pushes, accept, reject, remove, block (refused requests, pushes skipped, the block list
loaded at Auth), the cap, requests waiting for an offline player, last-seen times, and an
accept while the other player's rolecity is dead (kill -9), then the acceptor's rolecity
killed too: both lists agree once they are back."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rltwist.cluster.errors import RemoteError
from rltwist.launcher import find_root
from rltwist.nodes.common import reach
from rltwist.protocols import pb
from tests.login_util import GameClient
from tests.social_util import SocialCase
from tests.util import wait_for

E = pb.ErrorCode
EV = pb.FriendEvent
CAP = 3


def game_root(tmp: str) -> str:
    """A project root whose game tables are the repository's with a friend cap of CAP."""
    src = find_root()
    assert src is not None
    root = Path(tmp).resolve()
    shutil.copytree(src / "etc" / "game", root / "etc" / "game")
    (root / "hotfix").mkdir()
    (root / "etc" / "game" / "friends.toml").write_text(
        f"max_friends = {CAP}\nmax_requests_in = 50\nmax_blocked = 100\n")
    return str(root)


class FriendCase(SocialCase):
    async def setUp(self) -> None:
        self.overrides = {**self.overrides, "hotreload": {"root": game_root(self.mktemp())}}
        await super().setUp()

    async def lists(self, c: GameClient) -> Any:
        return await self.request_ok(c, pb.FriendList())

    async def offline(self, c: GameClient) -> bool:
        return not await reach.locate(self.probe.cluster, [c.userid])

    async def log_in_again(self, c: GameClient) -> None:
        """Close *c*, wait for its logout to finish (a login during it answers
        RETRY_LATER), and log it in again."""
        c.close()
        await wait_for(lambda: self.offline(c), 15, f"{c.openid} to be logged out")
        await self.relogin(c)

    @staticmethod
    def ids(rows: Any) -> list[int]:
        return sorted(r.userid for r in rows)

    async def is_notified(self, c: GameClient, event: int, peer: int) -> Any:
        return await self.wait_push(c, pb.FriendNotify,
                                    lambda m: m.event == event and m.peer.userid == peer)


class Friends(FriendCase):
    async def test_request_accept_reject_remove_cap_and_offline_requests(self) -> None:
        a, b = await self.players_apart(1, 2)
        self.assertNotEqual(a.role, b.role)
        # request region 1 -> region 2 across role nodes: b is told at once
        r = await self.request_ok(a, pb.FriendRequest(to_userid=b.userid))
        self.assertEqual((r.state, r.userid), (pb.FriendState.FRIENDSHIP_PENDING, b.userid))
        note = await self.is_notified(b, EV.FRIEND_EVENT_REQUEST, a.userid)
        self.assertEqual(note.peer.region, 1)
        self.assertEqual(self.ids((await self.lists(b)).requests_in), [a.userid])
        self.assertEqual(self.ids((await self.lists(a)).requests_out), [b.userid])
        # accept: both lists, a told; names, regions and online flags in the list
        self.assertEqual(list((await self.request_ok(
            b, pb.FriendAccept(from_userid=a.userid))).accepted), [a.userid])
        await self.is_notified(a, EV.FRIEND_EVENT_ACCEPTED, b.userid)
        la, lb = await self.lists(a), await self.lists(b)
        self.assertEqual((self.ids(la.friends), self.ids(lb.friends)), ([b.userid], [a.userid]))
        self.assertEqual((la.requests_out, lb.requests_in), ([], []))
        self.assertEqual((la.friends[0].region, la.friends[0].online), (2, True))
        self.assertEqual((lb.friends[0].region, lb.friends[0].online), (1, True))
        self.assertEqual(la.cap, CAP)
        r = await a.request(pb.FriendRequest(to_userid=b.userid))
        self.assertEqual(r.code, E.FRIEND_ALREADY)
        r = await b.request(pb.FriendAccept(from_userid=a.userid))
        self.assertEqual(r.code, E.FRIEND_NO_REQUEST)
        # remove: both lists empty, b told
        await self.request_ok(a, pb.FriendRemove(userid=b.userid))
        await self.is_notified(b, EV.FRIEND_EVENT_REMOVED, a.userid)
        la, lb = await self.lists(a), await self.lists(b)
        self.assertEqual((la.friends, lb.friends), ([], []))
        # reject: the requester's side is cleared too
        await self.request_ok(b, pb.FriendRequest(to_userid=a.userid))
        await self.is_notified(a, EV.FRIEND_EVENT_REQUEST, b.userid)
        await self.request_ok(a, pb.FriendReject(from_userid=b.userid))
        self.assertEqual((await self.lists(b)).requests_out, [])
        self.assertEqual((await self.lists(a)).requests_in, [])
        # errors
        r = await a.request(pb.FriendRequest(to_userid=a.userid))
        self.assertEqual(r.code, E.FRIEND_SELF)
        r = await a.request(pb.FriendRequest(to_userid=4242 << 16 | 2))
        self.assertEqual(r.code, E.NO_SUCH_PLAYER)
        r = await a.request(pb.FriendRequest(to_userid=5 << 16 | 77))  # no such region
        self.assertEqual(r.code, E.NO_SUCH_PLAYER)
        # an offline player sees the request at its next login, then accepts all
        c = await self.player(2)
        c.close()
        await wait_for(lambda: self.offline(c), 15, "c to be logged out")
        await self.request_ok(a, pb.FriendRequest(to_userid=c.userid))
        await self.request_ok(b, pb.FriendRequest(to_userid=c.userid))
        await self.relogin(c)
        for peer in (a.userid, b.userid):
            await self.is_notified(c, EV.FRIEND_EVENT_REQUEST, peer)
        r = await self.request_ok(c, pb.FriendAccept(all=True))
        self.assertEqual(sorted(r.accepted), sorted([a.userid, b.userid]))
        await self.is_notified(a, EV.FRIEND_EVENT_ACCEPTED, c.userid)
        # the cap: friends plus requests sent
        others = [await self.player(2) for _ in range(CAP)]
        for o in others[:CAP - 1]:
            await self.request_ok(a, pb.FriendRequest(to_userid=o.userid))
        r = await a.request(pb.FriendRequest(to_userid=others[-1].userid))
        self.assertEqual(r.code, E.FRIEND_LIST_FULL)
        # last seen: set when a friend logs out
        c.close()

        async def seen() -> bool:
            row = [f for f in (await self.lists(a)).friends if f.userid == c.userid]
            return bool(row) and not row[0].online and row[0].last_seen_ms > 0

        await wait_for(seen, 15, "a's list to show c offline with a last-seen time")

    async def test_block_by_name_and_block_list_at_auth(self) -> None:
        a, b = await self.players_apart(1, 2)
        # by (region, name): names are unique per region
        name = f"fr{a.userid % 100000}"
        await self.request_ok(a, pb.Rename(name=name))
        r = await self.request_ok(b, pb.FriendRequest(region=1, name=name.upper()))
        self.assertEqual(r.userid, a.userid)
        note = await self.is_notified(a, EV.FRIEND_EVENT_REQUEST, b.userid)
        self.assertEqual(note.peer.region, 2)
        r = await b.request(pb.FriendRequest(region=2, name=name))
        self.assertEqual(r.code, E.NO_SUCH_PLAYER)  # that name is region 1's
        r = await b.request(pb.FriendRequest(region=1, name="nobody-has-it"))
        self.assertEqual(r.code, E.NO_SUCH_PLAYER)
        await self.request_ok(a, pb.FriendAccept(from_userid=b.userid))
        self.assertEqual([f.name for f in (await self.lists(b)).friends], [name])
        # block: the friendship ends on both sides, requests are refused
        await self.request_ok(a, pb.FriendBlock(userid=b.userid))
        await self.is_notified(b, EV.FRIEND_EVENT_REMOVED, a.userid)
        self.assertEqual((await self.lists(b)).friends, [])
        la = await self.lists(a)
        self.assertEqual((la.friends, list(la.blocked)), ([], [b.userid]))
        r = await b.request(pb.FriendRequest(to_userid=a.userid))
        self.assertEqual(r.code, E.FRIEND_REFUSED)
        r = await a.request(pb.FriendRequest(to_userid=b.userid))
        self.assertEqual(r.code, E.FRIEND_YOU_BLOCK)
        self.assertEqual((await self.lists(a)).requests_in, [])
        # pushes sent on b's behalf skip a, now and after a's next Auth (the after-Auth
        # step loads the block list, then pushes the requests waiting: e's tells us when)
        await self._push_skips(a, b)
        e = await self.player(2)
        await self.request_ok(e, pb.FriendRequest(to_userid=a.userid))
        await self.log_in_again(a)
        await self.is_notified(a, EV.FRIEND_EVENT_REQUEST, e.userid)
        await self._push_skips(a, b)
        await self.request_ok(a, pb.FriendUnblock(userid=b.userid))
        await reach.push(self.probe.cluster, [a.userid], pb.KickNotify(reason="x"),
                         sender=b.userid)
        await self.wait_push(a, pb.KickNotify, lambda m: m.reason == "x")
        await self.request_ok(b, pb.FriendRequest(to_userid=a.userid))
        await self.is_notified(a, EV.FRIEND_EVENT_REQUEST, b.userid)

    async def _push_skips(self, a: GameClient, b: GameClient) -> None:
        # one link per role node keeps order: "after" arrives after "blocked" would have
        await reach.push(self.probe.cluster, [a.userid], pb.KickNotify(reason="blocked"),
                         sender=b.userid)
        await reach.push(self.probe.cluster, [a.userid], pb.KickNotify(reason="after"))
        await self.wait_push(a, pb.KickNotify, lambda m: m.reason == "after")
        self.assertEqual([m for m in a.pushes if isinstance(m, pb.KickNotify)], [])


class StaleInstance(FriendCase):
    async def test_a_stale_instance_changes_no_friend_list(self) -> None:
        """One owner: friend changes carry the instance's generation and rolecity refuses
        those of an instance a newer login replaced."""
        a, b = await self.players_apart(1, 2)
        old = (await self.probe.cluster.call(a.role, "gateway", "player_info", a.userid,
                                             timeout=5))["generation"]
        await self.relogin(a)
        new = (await self.probe.cluster.call(a.role, "gateway", "player_info", a.userid,
                                             timeout=5))["generation"]
        self.assertGreater(new, old)
        with self.assertRaises(RemoteError) as stale:
            await self.probe.cluster.call("rolecity1", "friends", "fenced", a.userid, old,
                                          "block", [b.userid], timeout=10)
        self.assertEqual(stale.exception.kind, "StaleGeneration")
        r = await self.request_ok(a, pb.FriendList())
        self.assertEqual(list(r.blocked), [])
        await self.probe.cluster.call("rolecity1", "friends", "fenced", a.userid, new,
                                      "block", [b.userid], timeout=10)
        r = await self.request_ok(a, pb.FriendList())
        self.assertEqual(list(r.blocked), [b.userid])


class FriendsAcrossARolecityCrash(FriendCase):
    async def test_accepts_while_the_other_rolecity_is_dead_complete_when_it_is_back(
            self) -> None:
        # the pair's owner is the player with the smaller userid: cover both directions
        a, b = await self.players_apart(1, 2)
        d = await self.player(1)
        self.assertLess(a.userid, b.userid)
        self.assertLess(b.userid, d.userid)
        await self.request_ok(a, pb.FriendRequest(to_userid=b.userid))
        await self.request_ok(d, pb.FriendRequest(to_userid=b.userid))
        self.assertEqual(self.ids((await self.lists(b)).requests_in),
                         sorted([a.userid, d.userid]))
        self.assertLess(await self.lc.nodes["rolecity1"].kill(), 0)
        # b accepts both while region 1's rolecity is dead: OK, on b's side at once
        r = await self.request_ok(b, pb.FriendAccept(all=True))
        self.assertEqual(sorted(r.accepted), sorted([a.userid, d.userid]))
        self.assertEqual(self.ids((await self.lists(b)).friends),
                         sorted([a.userid, d.userid]))
        outbox = await self.probe.cluster.call("rolecity2", "friends", "outbox", b.userid,
                                               timeout=5)
        self.assertEqual(sorted(m["to"] for m in outbox), sorted([a.userid, d.userid]))
        # the acting side dies too: its OK was durable, and its restart resumes the outbox
        self.assertLess(await self.lc.nodes["rolecity2"].kill(), 0)
        await self.lc.start("rolecity2", "rolecity1")
        await self.lc.wait_up(self.names)

        async def agreed() -> bool:
            la, ld = await self.lists(a), await self.lists(d)
            return self.ids(la.friends) == [b.userid] and self.ids(ld.friends) == [b.userid]

        await wait_for(agreed, 30, "a's and d's lists (region 1) to have b after rolecity1 "
                       "came back")
        for c in (a, d):
            lc = await self.lists(c)
            self.assertEqual((lc.requests_out, lc.requests_in), ([], []))
        self.assertEqual(self.ids((await self.lists(b)).friends), sorted([a.userid, d.userid]))
        self.assertEqual(await self.probe.cluster.call("rolecity2", "friends", "outbox",
                                                       b.userid, timeout=5), [])
