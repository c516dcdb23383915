"""rl-bot's guild actions: the requests they build are valid, and guild_join's two steps
(GuildList, then GuildJoin of a guild another bot made) run through the swarm against a
fake gateway that keeps guilds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS, BotIdentity, _pick_guild, guild_name
from rltwist.ecs.sharedata import ShareData
from rltwist.game.guildsystem import GuildSystem
from rltwist.game.tables import VALIDATORS
from rltwist.protocols import REGISTRY, pb
from tests.test_bot import BotTestCase, FakeGatewayFactory, FakeGatewayProtocol

E = pb.ErrorCode
TABLES = ShareData(Path(__file__).resolve().parent.parent / "etc" / "game", VALIDATORS)


def summary(guild_id: int, leader: int, members: int = 1, open: bool = True) -> Any:
    return pb.GuildSummary(guild_id=guild_id, leader_id=leader, members=members,
                           max_members=50, open=open, name=guild_name(leader))


class Builds(unittest.TestCase):
    def test_each_guild_action_builds_a_registered_valid_request(self) -> None:
        bot = BotIdentity(0, "o", 0xBEEF << 16 | 2, "ab", online=[0xBEEF << 16 | 2, 7 << 16 | 1])
        create = ACTIONS["guild_create"].build(bot)
        self.assertIsInstance(create, pb.GuildCreate)
        self.assertEqual(GuildSystem().check_name(create.name, TABLES.snapshot), E.OK)
        lookup = ACTIONS["guild_join"].build(bot)
        self.assertEqual(lookup, pb.GuildList(region=1))  # the peer's region
        self.assertIsInstance(ACTIONS["guild_info"].build(bot), pb.GuildInfo)
        for name in ("guild_create", "guild_join", "guild_info"):
            self.assertIn(type(ACTIONS[name].build(bot)), REGISTRY.request_ids, name)

    def test_join_picks_the_peers_guild_else_another_open_one_with_room(self) -> None:
        me, peer, other = 1 << 16 | 1, 2 << 16 | 1, 3 << 16 | 1
        bot = BotIdentity(0, "o", me, "ab", online=[me, peer])
        listed = pb.GuildList.Response(guilds=[summary(10, other), summary(11, peer),
                                               summary(12, me)])
        self.assertEqual(_pick_guild(bot, listed), pb.GuildJoin(guild_id=11))
        listed = pb.GuildList.Response(guilds=[summary(10, other, members=50),
                                               summary(13, other, open=False),
                                               summary(14, other), summary(12, me)])
        self.assertEqual(_pick_guild(bot, listed), pb.GuildJoin(guild_id=14))
        self.assertEqual(_pick_guild(bot, pb.GuildList.Response(guilds=[summary(12, me)])),
                         pb.GuildJoin(guild_id=12))  # in its own: ALREADY_IN_GUILD, done
        self.assertIsNone(_pick_guild(bot, pb.GuildList.Response()))


class GuildGatewayProtocol(FakeGatewayProtocol):
    factory: GuildGateway

    def requestReceived(self, message: Message, session: int) -> None:
        f = self.factory
        if isinstance(message, pb.GuildCreate) and self.userid:
            f.guilds[len(f.guilds) + 1] = self.userid
            self.reply(session, pb.GuildCreate.Response(code=E.OK, guild_id=len(f.guilds)))
        elif isinstance(message, pb.GuildList) and self.userid:
            self.reply(session, pb.GuildList.Response(code=E.OK, guilds=[
                summary(g, leader) for g, leader in sorted(f.guilds.items())]))
        elif isinstance(message, pb.GuildJoin) and self.userid:
            f.joins.append((self.userid, f.guilds[message.guild_id]))
            self.reply(session, pb.GuildJoin.Response(code=E.OK))
        elif isinstance(message, pb.GuildInfo) and self.userid:
            self.reply(session, pb.GuildInfo.Response(code=E.GUILD_NOT_IN_GUILD))
        else:
            super().requestReceived(message, session)


class GuildGateway(FakeGatewayFactory):
    protocol = GuildGatewayProtocol

    def __init__(self) -> None:
        super().__init__()
        self.guilds: dict[int, int] = {}  # guild id -> leader
        self.joins: list[tuple[int, int]] = []  # (who, the leader of the guild joined)


class Swarm(BotTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.gateway = GuildGateway()
        self.gateway.port = self.listen(self.gateway)
        self.login.gateway = self.gateway

    async def test_bots_create_then_join_guilds_other_bots_made(self) -> None:
        made = await self.run_bots(count=4, script="guild_create,guild_info",
                                   openid_prefix="g")
        self.assertEqual((made.ok, made.failed), (4, 0), made.format_table())
        self.assertEqual(len(self.gateway.guilds), 4)
        joined = await self.run_bots(count=4, script="guild_join", openid_prefix="g")
        self.assertEqual((joined.ok, joined.failed), (4, 0), joined.format_table())
        self.assertEqual(len(self.gateway.joins), 4)
        self.assertTrue(all(who != leader for who, leader in self.gateway.joins))
        self.assertEqual(joined.latency["guild_join"].count, 8)  # list + join per bot
