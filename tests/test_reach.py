"""Reaching online players across regions and role nodes (issue 12, routing and push):
pushes located through the birth regions' rolecaches and sent once per role node,
broadcasts filtered by map, and rolecaches that stay true when a rolecity restarts or a
role node dies. Real processes, real TCP, real Redis."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.nodes.common import reach
from rltwist.nodes.common.rolecache import RoleCache
from rltwist.protocols import REGISTRY, pb
from tests.social_util import SocialCase
from tests.util import wait_for

K = pb.KickReason


def note(text: str) -> pb.KickNotify:
    # any registered push will do: the gateway writes what it is given
    return pb.KickNotify(reason=text, code=K.KICK_GM)


class Reach(SocialCase):
    async def test_a_push_reaches_players_of_two_regions_on_two_role_nodes(self) -> None:
        a, b = await self.players_apart(1, 2)
        nobody = 4242 << 16 | 2
        result = await reach.push(self.probe.cluster, [a.userid, b.userid, nobody],
                                  note("hello"))
        self.assertEqual(result.online, {a.userid: a.role, b.userid: b.role})
        self.assertEqual(result.offline, [nobody])
        for c in (a, b):
            got = await self.wait_push(c, pb.KickNotify, lambda m: m.reason == "hello")
            self.assertEqual(got.code, K.KICK_GM)

    async def test_gateway_push_writes_to_every_listed_player_it_serves(self) -> None:
        a = await self.player(1)
        other = await self.player(1)
        same = [c for c in (other,) if c.role == a.role]
        ids = [a.userid] + [c.userid for c in same] + [777 << 16 | 1]
        sent = await self.probe.cluster.call(
            a.role, "gateway", "push", ids, REGISTRY.push_ids[pb.KickNotify],
            note("x").SerializeToString(), timeout=5)
        self.assertEqual(sent, 1 + len(same))  # the unknown userid is skipped

    async def test_a_broadcast_to_one_map_reaches_only_the_players_of_that_map(self) -> None:
        a, b = await self.players_apart(1, 2)
        self.assertEqual(reach.broadcast(self.probe.cluster, note("map2 only"), mapid=2), 2)
        self.assertEqual(reach.broadcast(self.probe.cluster, note("everyone")), 2)
        await self.wait_push(b, pb.KickNotify, lambda m: m.reason == "map2 only")
        await self.wait_push(b, pb.KickNotify, lambda m: m.reason == "everyone")
        await self.wait_push(a, pb.KickNotify, lambda m: m.reason == "everyone")
        # one link per role node keeps order: "map2 only" would have come first
        self.assertEqual([m.reason for m in a.pushes if isinstance(m, pb.KickNotify)], [])

    async def test_a_restarted_rolecity_knows_who_is_online_again(self) -> None:
        a, b = await self.players_apart(1, 1)
        located = await reach.locate(self.probe.cluster, [a.userid, b.userid])
        self.assertEqual(located, {a.userid: a.role, b.userid: b.role})
        self.assertLess(await self.lc.nodes["rolecity1"].kill(), 0)
        await self.lc.start("rolecity1")
        await self.lc.wait_up(self.names)

        async def refilled() -> bool:
            return await reach.locate(self.probe.cluster, [a.userid, b.userid]) == {
                a.userid: a.role, b.userid: b.role}

        await wait_for(refilled, 30, "the restarted rolecity1's rolecache to know both "
                       "online players")

    async def test_the_players_of_a_role_node_that_died_are_dropped_from_rolecaches(
            self) -> None:
        a, b = await self.players_apart(1, 2)
        self.assertLess(await self.lc.nodes[a.role].kill(), 0)

        async def dropped() -> bool:
            where = await reach.locate(self.probe.cluster, [a.userid, b.userid])
            return where == {b.userid: b.role}

        await wait_for(dropped, 30, f"the rolecaches to drop {a.role}'s player once master "
                       "marked it down")
        for node in ("mail1", "map1"):
            self.assertEqual(await self.probe.cluster.call(
                node, "rolecache", "locate", [a.userid], timeout=5), [])


class RoleCacheRefill(unittest.TestCase):
    """A refill answer is written by a role node before the player's logout may reach the
    rolecache: it must not put a logged-out instance back."""

    def test_a_late_set_of_a_cleared_instance_is_ignored(self) -> None:
        cache = RoleCache()
        self.assertTrue(cache.set(7, "role1", 3))
        self.assertTrue(cache.clear(7, "role1", 3))
        self.assertFalse(cache.set(7, "role1", 3))  # the refill's stale answer
        self.assertEqual(cache.locate([7]), [])
        self.assertTrue(cache.set(7, "role2", 4))  # the next login
        self.assertEqual(cache.locate([7, 8]), [[7, "role2"]])

    def test_node_down_forgets_only_that_nodes_players(self) -> None:
        cache = RoleCache()
        cache.set(1, "role1", 1)
        cache.set(2, "role2", 1)
        self.assertEqual(cache.node_down("role1"), 1)
        self.assertEqual(cache.locate([1, 2]), [[2, "role2"]])


class RequestsWaitForAfterAuth(unittest.TestCase):
    """A client sends its first requests right after the Auth answer, while the after-Auth
    steps still run: a step and a request must not work on the same state at once (a guild
    create resumed by a step raced the client's GuildCreate and answered
    GUILD_NAME_TAKEN for a guild it had just made)."""

    def test_a_request_waits_until_the_player_is_settled(self) -> None:
        from twisted.internet import defer

        from rltwist.ecs.entity import Entity
        from rltwist.nodes.role.agent import Agent, Player
        from rltwist.nodes.role.requests import REQUESTS

        ran: list[str] = []

        async def rename(gw: object, player: object, msg: object) -> pb.Rename.Response:
            ran.append("request")
            return pb.Rename.Response(code=pb.ErrorCode.OK)

        import rltwist.nodes.role.rename  # noqa: F401  (registers the real Rename handler)

        old = REQUESTS[pb.Rename]
        REQUESTS[pb.Rename] = rename
        self.addCleanup(REQUESTS.__setitem__, pb.Rename, old)
        agent = Agent.__new__(Agent)
        agent.gateway = None  # type: ignore[assignment]
        player = Player(agent, 1, Entity(1), 1, 0.0)
        player.settled = False
        d = defer.Deferred.fromCoroutine(agent.handle(player, pb.Rename(name="x")))
        self.assertEqual((ran, d.called), ([], False))
        player.settle()
        self.assertEqual(ran, ["request"])
        self.assertEqual(self.successResultOf(d).code, pb.ErrorCode.OK)
