"""Chat end to end (issue 12): players of two regions on two role nodes, real processes,
real TCP, real Redis — world, region, private and guild channels (guild through the guild
feature's guildchat), histories, the offline backlog, rate limit, text rules, block lists
(the friends feature's FriendBlock), GM mute through HTTP, history surviving a logiccenter
kill, and a hot fix of the chat rules in a running cluster."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer

from rltwist.ecs.hotfix import write_fix_list
from rltwist.nodes.common import reach
from rltwist.protocols import pb
from tests.login_util import LoginCase, offline
from tests.social_util import SocialCase
from tests.util import wait_for

C = pb.ChatChannel
E = pb.ErrorCode
REPO = Path(__file__).resolve().parents[1]


def send(channel: int, text: str, to: int = 0) -> pb.ChatSend:
    return pb.ChatSend(channel=channel, text=text, to_userid=to)


def texts(messages: Any) -> list[str]:
    return [m.text for m in messages]


def said(text: str) -> Any:
    return lambda m: m.message.text == text


class ChatChannels(SocialCase):
    async def history(self, client: Any, channel: int, peer: int = 0) -> list[str]:
        r = await self.request_ok(client, pb.ChatHistory(channel=channel, peer_userid=peer))
        return texts(r.messages)

    async def test_world_region_private_histories_and_rules_across_regions(self) -> None:
        a, b = await self.players_apart(1, 2)

        # world: from region 1 to a region-2 player on the other role node
        r = await self.request_ok(a, send(C.CHAT_WORLD, "hello world"))
        self.assertGreater(r.time_ms, 0)
        got = (await self.wait_push(b, pb.ChatNotify, said("hello world"))).message
        self.assertEqual((got.channel, got.from_userid, got.from_region, got.time_ms),
                         (C.CHAT_WORLD, a.userid, 1, r.time_ms))
        await self.wait_push(a, pb.ChatNotify, said("hello world"))

        # region: only the players of map 2
        await self.request_ok(b, send(C.CHAT_REGION, "region two only"))
        got = (await self.wait_push(b, pb.ChatNotify, said("region two only"))).message
        self.assertEqual((got.channel, got.region), (C.CHAT_REGION, 2))
        # map2 wrote to a's role node before it answered b; a world message sent after
        # that reaches a later: had the region message been written to a, it would be there
        await self.request_ok(b, send(C.CHAT_WORLD, "marker"))
        await self.wait_push(a, pb.ChatNotify, said("marker"))
        self.assertNotIn("region two only",
                         [p.message.text for p in a.pushes if isinstance(p, pb.ChatNotify)])

        # private, both online, across regions and role nodes
        await self.request_ok(a, send(C.CHAT_PRIVATE, "psst", to=b.userid))
        got = (await self.wait_push(b, pb.ChatNotify, said("psst"))).message
        self.assertEqual((got.channel, got.from_userid, got.to_userid),
                         (C.CHAT_PRIVATE, a.userid, b.userid))
        await self.request_ok(b, send(C.CHAT_PRIVATE, "hi back", to=a.userid))
        await self.wait_push(a, pb.ChatNotify, said("hi back"))

        # histories, oldest first
        self.assertEqual(await self.history(a, C.CHAT_WORLD), ["hello world", "marker"])
        self.assertEqual(await self.history(b, C.CHAT_REGION), ["region two only"])
        self.assertEqual(await self.history(a, C.CHAT_REGION), [])
        self.assertEqual(await self.history(a, C.CHAT_PRIVATE, b.userid), ["psst", "hi back"])
        self.assertEqual(await self.history(b, C.CHAT_PRIVATE, a.userid), ["psst", "hi back"])

        # refusals
        nobody = 999_999 << 16 | 2
        for message, code in [
                (send(C.CHAT_PRIVATE, "x", to=nobody), E.NO_SUCH_PLAYER),
                (send(C.CHAT_PRIVATE, "x", to=5 << 16 | 9), E.NO_SUCH_PLAYER),  # no region 9
                (send(C.CHAT_PRIVATE, "x", to=a.userid), E.NO_SUCH_PLAYER),  # oneself
                (send(C.CHAT_GUILD, "x"), E.CHAT_NOT_IN_GUILD),
                (pb.ChatHistory(channel=C.CHAT_GUILD), E.CHAT_NOT_IN_GUILD),
                (send(C.CHAT_WORLD, "x" * 257), E.CHAT_TEXT_INVALID),
                (send(C.CHAT_WORLD, "bell\x07"), E.CHAT_TEXT_INVALID),
                (send(C.CHAT_WORLD, "   "), E.CHAT_TEXT_INVALID),
                (send(77, "x"), E.BAD_REQUEST)]:
            self.assertEqual((await a.request(message)).code, code, str(message))
        self.assertEqual((await a.request(send(C.CHAT_WORLD, "y" * 256))).code, E.OK)

        # rate limit: a burst of 5, then 1/s (a fresh player's bucket is full)
        c = await self.player(1)
        answers = await defer.gatherResults(
            [c.request(send(C.CHAT_REGION, f"burst {i}")) for i in range(8)])
        codes = [r.code for r in answers]
        self.assertIn(codes.count(E.OK), (5, 6), codes)  # 6: a token refilled meanwhile
        self.assertEqual(codes.count(E.RATE_LIMITED), 8 - codes.count(E.OK))

        # guild: a guild of region 1 with a member of region 2 on the other role node
        # (the guild feature's guildchat keeps the channel)
        leader = await self.player(1)
        g = (await self.request_ok(leader, pb.GuildCreate(name="Chatters", open=True))).guild_id
        await self.request_ok(b, pb.GuildJoin(guild_id=g))
        r = await self.request_ok(leader, send(C.CHAT_GUILD, "guild hello"))
        got = (await self.wait_push(b, pb.ChatNotify, said("guild hello"))).message
        self.assertEqual((got.channel, got.guild_id, got.from_userid, got.time_ms),
                         (C.CHAT_GUILD, g, leader.userid, r.time_ms))
        self.assertEqual(await self.history(b, C.CHAT_GUILD), ["guild hello"])
        self.assertEqual((await a.request(pb.ChatHistory(channel=C.CHAT_GUILD))).code,
                         E.CHAT_NOT_IN_GUILD)


class ChatOfflineBlockMute(SocialCase):
    async def test_offline_backlog_block_list_and_gm_mute(self) -> None:
        a, b = await self.players_apart(1, 2)

        # b blocks a (the friends feature): private refused, world messages of a hidden
        await self.request_ok(b, pb.FriendBlock(userid=a.userid))
        self.assertEqual((await a.request(send(C.CHAT_PRIVATE, "no", to=b.userid))).code,
                         E.CHAT_BLOCKED)
        await self.request_ok(a, send(C.CHAT_WORLD, "hidden from b"))
        await self.wait_push(a, pb.ChatNotify, said("hidden from b"))
        # logiccenter writes both to b's role node over one link, in this order
        await self.request_ok(b, send(C.CHAT_WORLD, "b after the block"))
        await self.wait_push(b, pb.ChatNotify, said("b after the block"))
        self.assertNotIn("hidden from b",
                         [p.message.text for p in b.pushes if isinstance(p, pb.ChatNotify)])
        await self.request_ok(b, pb.FriendUnblock(userid=a.userid))
        await self.request_ok(a, send(C.CHAT_PRIVATE, "yes", to=b.userid))
        await self.wait_push(b, pb.ChatNotify, said("yes"))

        # b offline: kept, then delivered oldest first at the next login, once
        b.close()
        await wait_for(lambda: offline(self, b.userid), 20, f"{b.userid} to log out")

        async def gone() -> bool:
            return not await reach.locate(self.probe.cluster, [b.userid])

        await wait_for(gone, 20, "rolecity2's rolecache to forget b")
        for text in ("while away 1", "while away 2"):
            await self.request_ok(a, send(C.CHAT_PRIVATE, text, to=b.userid))
        b.pushes.clear()
        await self.relogin(b)
        await wait_for(lambda: len([p for p in b.pushes if isinstance(p, pb.ChatNotify)]) >= 2,
                       10, "the backlog pushed after Auth")
        self.assertEqual([p.message.text for p in b.pushes if isinstance(p, pb.ChatNotify)],
                         ["while away 1", "while away 2"])
        self.assertEqual((await self.probe.cluster.call(
            "rolecity2", "privatechat", "login", b.userid, timeout=10))["backlog"], [])

        # GM mute through HTTP: stored, applied to the online instance at once
        status, answer = await self.lc.gm("POST", f"/players/{a.userid}/mute",
                                          {"seconds": 600, "reason": "spam"})
        self.assertEqual(status, 200, answer)
        self.assertEqual((answer["online"], answer["applied"]), (a.role, True))
        until = answer["muted_until_ms"]
        self.assertLess(abs(until - (time.time() * 1000 + 600_000)), 30_000)
        r = await a.request(send(C.CHAT_WORLD, "muted?"))
        self.assertEqual((r.code, r.muted_until_ms), (E.CHAT_MUTED, until))
        # and at the next Auth
        await self.relogin(a)
        r = await a.request(send(C.CHAT_WORLD, "still muted?"))
        self.assertEqual((r.code, r.muted_until_ms), (E.CHAT_MUTED, until))
        status, answer = await self.lc.gm("POST", f"/players/{a.userid}/mute", {"seconds": 0})
        self.assertEqual((status, answer["muted_until_ms"], answer["applied"]),
                         (200, 0, True), answer)
        # a's bucket is the one its earlier messages emptied (a relogin does not refill
        # it): until a token is back the answer is RATE_LIMITED, which the mute check
        # comes before; a muted player is never answered anything but CHAT_MUTED
        codes: list[int] = []

        async def sent() -> bool:
            codes.append((await a.request(send(C.CHAT_WORLD, "free again"))).code)
            return codes[-1] == E.OK

        await wait_for(sent, 10, "a token back in a's bucket", interval=0.25)
        self.assertEqual(set(codes[:-1]), {E.RATE_LIMITED} if codes[:-1] else set(), codes)
        # refusals of the route
        status, _ = await self.lc.gm("POST", f"/players/{999_999 << 16 | 1}/mute",
                                     {"seconds": 5})
        self.assertEqual(status, 404)
        status, _ = await self.lc.gm("POST", f"/players/{a.userid}/mute", {"seconds": -1})
        self.assertEqual(status, 400)


class ChatPersistence(SocialCase):
    overrides = {"storage": {"save_interval": 0.5}}

    async def test_world_history_survives_a_logiccenter_kill_after_a_periodic_save(
            self) -> None:
        a = await self.player(1)
        await self.request_ok(a, send(C.CHAT_WORLD, "kept across a crash"))
        rounds = (await self.probe.cluster.call("logiccenter", "chat", "stats",
                                                timeout=5))["save_rounds"]

        async def saved_after() -> bool:
            stats = await self.probe.cluster.call("logiccenter", "chat", "stats", timeout=5)
            return stats["save_rounds"] >= rounds + 2  # one whole round after the message

        await wait_for(saved_after, 10, "a periodic save round on logiccenter")
        self.assertLess(await self.lc.nodes["logiccenter"].kill(), 0)
        await self.lc.start("logiccenter")
        await self.lc.wait_up(self.names)
        r = await self.request_ok(a, pb.ChatHistory(channel=C.CHAT_WORLD))
        self.assertEqual(texts(r.messages), ["kept across a crash"])


class ChatHotfix(LoginCase):
    """POST /hotfix with a changed chat system: the next ChatSend follows the new rule,
    without a restart. The nodes import a copy of ``rltwist`` (first on their PYTHONPATH)
    so the test changes the system's source without touching the checkout."""

    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    SYSTEM = "rltwist.game.chatsystem"

    async def setUp(self) -> None:
        base = Path(self.mktemp()).absolute()
        self.code = base / "code"
        shutil.copytree(REPO / "rltwist", self.code / "rltwist",
                        ignore=shutil.ignore_patterns("__pycache__"))
        root = base / "root"
        shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
        self.codefix = root / "hotfix" / "codefix"
        self.codefix.mkdir(parents=True)
        (root / "hotfix" / "datafix").mkdir()
        self.overrides = {"hotreload": {"root": str(root), "hotfix_interval": 0,
                                        "config_interval": 0}}
        path = os.pathsep.join(p for p in (str(self.code), os.environ.get("PYTHONPATH", ""))
                               if p)
        self.node_env = {n: {"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
                         for n in self.names}
        await super().setUp()

    async def test_a_hot_fix_of_the_chat_rules_applies_to_the_next_message(self) -> None:
        a = self.client("hotfix-chat")
        await a.play(*self.login_address())
        self.assertEqual((await a.request(send(C.CHAT_WORLD, "buy gold here"))).code, E.OK)

        system = self.code / "rltwist" / "game" / "chatsystem.py"
        old = "        limit = tables[\"chat\"][\"max_length\"]\n"
        source = system.read_text()
        self.assertEqual(source.count(old), 1, "chatsystem.check_text changed; adapt")
        system.write_text(source.replace(old, old + "        if \"buy gold\" in text:\n"
                                                    "            return E.CHAT_TEXT_INVALID\n"))
        fix_id = "20261201-01-chat-spam"
        write_fix_list(self.codefix, fix_id, [self.SYSTEM],
                       sources={self.SYSTEM: system.read_bytes()})
        status, answer = await self.lc.gm("POST", "/hotfix", {}, timeout=30)
        self.assertEqual(status, 200, answer)
        self.assertEqual(answer["nodes"]["role1"]["changes"], {fix_id: [self.SYSTEM]})

        self.assertEqual((await a.request(send(C.CHAT_WORLD, "buy gold here"))).code,
                         E.CHAT_TEXT_INVALID)
        self.assertEqual((await a.request(send(C.CHAT_WORLD, "hello"))).code, E.OK)
