"""Guilds end to end (issue 12): players of two regions on two role nodes, through the
client protocol; the guild node killed after an acknowledged change; guild chat through
``guildchat``. Real processes, real TCP, real Redis."""

from __future__ import annotations

from typing import Any

from rltwist.bot import BotOptions, run_bots
from rltwist.cluster import RemoteError
from rltwist.config import load_config
from rltwist.protocols import pb
from tests.login_util import DEV_SDK_SECRET, GameClient, offline
from tests.social_util import SocialCase
from tests.util import node_is, wait_for

E = pb.ErrorCode
EV = pb.GuildEvent
R = pb.GuildRole


class GuildFlows(SocialCase):
    async def attrs(self, c: GameClient) -> dict[str, Any]:
        info = await self.probe.cluster.call(c.role, "gateway", "player_info", c.userid,
                                             timeout=5)
        assert info is not None, f"{c.openid} is not online on {c.role}"
        return dict(info["attrs"])

    async def guildid(self, c: GameClient) -> int:
        return int((await self.attrs(c)).get("guildid", 0))

    def note(self, c: GameClient, event: int, user: int) -> Any:
        return self.wait_push(c, pb.GuildNotify,
                              lambda m: m.event == event and m.user_id == user)

    async def test_a_guild_across_regions_and_role_nodes(self) -> None:
        a, b = await self.players_apart(1, 2)
        gold = (await self.attrs(a))["gold"]

        # create in region 1: the cost is taken, the creator's guildid arrives by ledger
        r = await self.request_ok(a, pb.GuildCreate(name="Red Lions", open=True))
        g = r.guild_id
        self.assertEqual(g & 0xFFFF, 1)
        self.assertEqual(await self.guildid(a), g)
        self.assertEqual((await self.attrs(a))["gold"], gold - 500)
        again = await a.request(pb.GuildCreate(name="Other"))
        self.assertEqual(again.code, E.GUILD_ALREADY_IN_GUILD)
        taken = await b.request(pb.GuildCreate(name="red LIONS"))
        self.assertEqual(taken.code, E.OK)  # names are unique per region: b is of region 2
        await self.request_ok(b, pb.GuildDisband())

        # a region-2 player on the other role node finds it and joins
        found = await self.request_ok(b, pb.GuildSearch(region=1, name="RED lions"))
        self.assertEqual([s.guild_id for s in found.guilds], [g])
        listed = await self.request_ok(b, pb.GuildList(region=1))
        self.assertIn(g, [s.guild_id for s in listed.guilds])
        await self.request_ok(b, pb.GuildJoin(guild_id=g))
        self.assertEqual(await self.guildid(b), g)
        await self.note(a, EV.GUILD_JOINED, b.userid)

        info = await self.request_ok(a, pb.GuildInfo())
        self.assertEqual(info.guild.name, "Red Lions")
        self.assertEqual([(m.user_id, m.role, m.online, m.region) for m in info.members],
                         [(a.userid, R.GUILD_LEADER, True, 1),
                          (b.userid, R.GUILD_MEMBER, True, 2)])

        # a rename shows in the guild once the member acts there
        await self.request_ok(b, pb.Rename(name=f"Bee{b.userid >> 16}"))
        await self.request_ok(b, pb.GuildInfo())
        info = await self.request_ok(a, pb.GuildInfo())
        self.assertEqual({m.user_id: m.name for m in info.members}[b.userid],
                         f"Bee{b.userid >> 16}")

        # roles and permissions: a member may not kick; the leader makes b an officer
        x = await self.player(1)
        await self.request_ok(x, pb.GuildJoin(guild_id=g))
        denied = await x.request(pb.GuildKick(user_id=b.userid))
        self.assertEqual(denied.code, E.GUILD_NO_PERMISSION)
        denied = await b.request(pb.GuildSetRole(user_id=x.userid, role=R.GUILD_OFFICER))
        self.assertEqual(denied.code, E.GUILD_NO_PERMISSION)
        await self.request_ok(a, pb.GuildSetRole(user_id=b.userid, role=R.GUILD_OFFICER))
        changed = await self.note(b, EV.GUILD_ROLE_CHANGED, b.userid)
        self.assertEqual(changed.role, R.GUILD_OFFICER)

        # kick while offline: the kicked player's guildid is 0 at the next login
        x.close()
        await wait_for(lambda: offline(self, x.userid), 20, f"{x.openid} to log out")
        info = await self.request_ok(b, pb.GuildInfo(guild_id=g))
        self.assertFalse({m.user_id: m.online for m in info.members}[x.userid])
        await self.request_ok(b, pb.GuildKick(user_id=x.userid))
        await self.note(a, EV.GUILD_KICKED, x.userid)
        auth = await x.play(*self.login_address())
        self.assertEqual(auth.basics.guild_id, 0)
        x.role = self._role_ports[x.login_response.port]
        self.assertEqual(await self.guildid(x), 0)

        # closed guild of region 2: apply, approve (across role nodes), reject
        c, d = await self.players_apart(2, 1)
        r = await self.request_ok(c, pb.GuildCreate(name="Blue", open=False))
        g2 = r.guild_id
        self.assertEqual(g2 & 0xFFFF, 2)
        closed = await d.request(pb.GuildJoin(guild_id=g2))
        self.assertEqual(closed.code, E.GUILD_CLOSED)
        applied = await self.request_ok(d, pb.GuildApply(guild_id=g2))
        self.assertFalse(applied.joined)
        await self.note(c, EV.GUILD_APPLIED, d.userid)
        await self.request_ok(x, pb.GuildApply(guild_id=g2))
        info = await self.request_ok(c, pb.GuildInfo())
        self.assertEqual(sorted(p.user_id for p in info.applications),
                         sorted([d.userid, x.userid]))
        await self.request_ok(c, pb.GuildApprove(user_id=d.userid))
        await self.note(d, EV.GUILD_JOINED, d.userid)
        await wait_for(lambda: self._is_in(d, g2), 10, f"{d.openid}'s guildid to be {g2}")
        await self.request_ok(c, pb.GuildRejectApply(user_id=x.userid))
        await self.note(x, EV.GUILD_APPLY_REJECTED, x.userid)
        self.assertEqual(await self.guildid(x), 0)
        in_other = await d.request(pb.GuildJoin(guild_id=g))
        self.assertEqual(in_other.code, E.GUILD_ALREADY_IN_GUILD)

        # leadership moves, the old leader leaves, the new one disbands
        cannot = await a.request(pb.GuildLeave())
        self.assertEqual(cannot.code, E.GUILD_LEADER_CANNOT_LEAVE)
        await self.request_ok(a, pb.GuildTransferLeader(user_id=b.userid))
        await self.note(b, EV.GUILD_LEADER_CHANGED, b.userid)
        await self.request_ok(a, pb.GuildLeave())
        self.assertEqual(await self.guildid(a), 0)
        await self.note(b, EV.GUILD_LEFT, a.userid)
        await self.request_ok(b, pb.GuildDisband())
        await self.note(b, EV.GUILD_DISBANDED, b.userid)
        self.assertEqual(await self.guildid(b), 0)
        gone = await a.request(pb.GuildInfo(guild_id=g))
        self.assertEqual(gone.code, E.GUILD_NOT_FOUND)
        free = await self.request_ok(a, pb.GuildSearch(region=1, name="Red Lions"))
        self.assertEqual(list(free.guilds), [])

    async def _is_in(self, c: GameClient, guildid: int) -> bool:
        return await self.guildid(c) == guildid

    async def test_guild_node_restart_keeps_the_guild_and_guild_chat(self) -> None:
        a, b = await self.players_apart(1, 2)
        g = (await self.request_ok(a, pb.GuildCreate(name="Iron", open=True))).guild_id
        await self.request_ok(b, pb.GuildJoin(guild_id=g))
        # acknowledged: killed at once, nothing flushed by a clean stop
        self.assertLess(await self.lc.nodes["guild1"].kill(), 0)
        await self.lc.start("guild1")
        await self.lc.wait_up(self.names)
        info = await self.request_ok(b, pb.GuildInfo(guild_id=g))
        self.assertEqual(sorted(m.user_id for m in info.members), sorted([a.userid, b.userid]))
        self.assertEqual(await self.guildid(b), g)
        relogged = await b.play(*self.login_address())
        self.assertEqual(relogged.basics.guild_id, g)
        b.role = self._role_ports[b.login_response.port]

        # guild chat through guildchat (the chat feature's ChatSend calls it)
        call = self.probe.cluster.call
        msg = {"text": "hello guild", "from_name": "a", "from_region": 1}
        self.assertEqual(await call("guild1", "guildchat", "send", g, a.userid, msg,
                                    timeout=10), E.OK)
        for c in (a, b):
            got = await self.wait_push(c, pb.ChatNotify,
                                       lambda m: m.message.text == "hello guild")
            self.assertEqual((got.message.channel, got.message.guild_id,
                              got.message.from_userid), (pb.ChatChannel.CHAT_GUILD, g, a.userid))
        stranger = await self.player(2)
        self.assertEqual(await call("guild1", "guildchat", "send", g, stranger.userid,
                                    {"text": "let me in"}, timeout=10), E.CHAT_NOT_IN_GUILD)
        history = await call("guild1", "guildchat", "history", g, b.userid, timeout=10)
        self.assertEqual([m["text"] for m in history], ["hello guild"])
        with self.assertRaises(RemoteError) as caught:
            await call("guild1", "guildchat", "history", g, stranger.userid, timeout=10)
        self.assertEqual(caught.exception.kind, "NotAMember")

        # rl-bot's guild actions against the real cluster: 4 bots create (and, as the
        # all-actions demo does, run guild_join while in their own guild), 4 new bots join
        config = load_config(self.lc.config_path)
        made = await run_bots(BotOptions.from_config(
            config, count=4, script="guild_create,guild_info,guild_join", server_ids=(1, 2),
            openid_prefix="gmake", dev_sdk_secret=DEV_SDK_SECRET))
        self.assertEqual((made.ok, made.failed), (4, 0), made.format_table())
        joined = await run_bots(BotOptions.from_config(
            config, count=4, script="guild_join,guild_info", server_ids=(1, 2),
            openid_prefix="gjoin", dev_sdk_secret=DEV_SDK_SECRET))
        self.assertEqual((joined.ok, joined.failed), (4, 0), joined.format_table())
        listed = [s for node in ("guild1", "guild2")
                  for s in await call(node, "guildrouter", "list", timeout=10)]
        self.assertEqual(sum(s["members"] for s in listed), 2 + 4 + 4)  # Iron + bots


CRASH = {"RLTWIST_TEST_FLAGS": "crashpoints"}


class GuildStaleInstance(SocialCase):
    async def test_a_stale_instance_changes_no_guild(self) -> None:
        """One owner: membership changes carry the instance's generation; the guild node
        refuses those of an instance a newer login replaced."""
        a, b = await self.players_apart(1, 2)
        g = (await self.request_ok(a, pb.GuildCreate(name="Fenced", open=True))).guild_id

        async def generation() -> int:
            info = await self.probe.cluster.call(b.role, "gateway", "player_info", b.userid,
                                                 timeout=5)
            return int(info["generation"])

        old = await generation()
        await self.relogin(b)
        new = await generation()
        with self.assertRaises(RemoteError) as stale:
            await self.probe.cluster.call("guild1", "guildrouter", "fenced_op", g, "join",
                                          b.userid, old, "", timeout=10)
        self.assertEqual(stale.exception.kind, "StaleGeneration")
        info = await self.request_ok(a, pb.GuildInfo())
        self.assertEqual([m.user_id for m in info.members], [a.userid])
        self.assertEqual(await self.probe.cluster.call(
            "guild1", "guildrouter", "fenced_op", g, "join", b.userid, new, "",
            timeout=10), pb.ErrorCode.OK)


class GuildCrashes(SocialCase):
    """A role node dies after the create's cost is saved; the guild node dies after a join
    is saved in the guild but before the player's rolecity has it. Nothing is lost or done
    twice: the create finishes at the next login, the join reaches the player from the
    restarted guild node's outbox."""

    node_env = {"role1": {**CRASH, "RLTWIST_CRASH_POINTS": "after_guild_create_paid"},
                "role2": {**CRASH, "RLTWIST_CRASH_POINTS": "after_guild_create_paid"},
                "guild1": {**CRASH, "RLTWIST_CRASH_POINTS": "after_guild_outbox_saved"}}

    async def restart(self, name: str) -> None:
        proc = self.lc.nodes[name]
        code = await proc.wait_exit(20)
        self.assertEqual(code, -9, f"{name} should have died at its crash point")
        await wait_for(lambda: node_is(self.lc, name, "down"), 20, f"{name} marked down")
        proc.env.pop("RLTWIST_CRASH_POINTS")
        await self.lc.start(name)
        await self.lc.wait_up(self.names)

    async def test_a_paid_create_and_an_acknowledged_join_survive_crashes(self) -> None:
        a = await self.player(1)
        died = a.role
        reply = a.request(pb.GuildCreate(name="Phoenix", open=True))
        reply.addErrback(lambda f: None)  # the role node dies before answering
        await self.restart(died)
        await self.wait_logins_available()
        auth = await a.play(*self.login_address())
        a.role = self._role_ports[a.login_response.port]
        self.assertEqual(auth.basics.gold, 1000 - 500)  # taken once, kept
        await wait_for(lambda: self._in_a_guild(a), 20,
                       "the create paid before the crash to finish after the login")
        info = await self.request_ok(a, pb.GuildInfo())
        self.assertEqual((info.guild.name, info.guild.leader_id), ("Phoenix", a.userid))
        g = info.guild.guild_id
        self.assertEqual((await self.attrs(a))["gold"], 500)

        b = await self.player(2)
        answer = b.request(pb.GuildJoin(guild_id=g))
        await self.restart("guild1")  # died with b saved as a member, the ledger not told
        r = await answer
        self.assertIn(r.code, (E.RETRY_LATER, E.NOT_AVAILABLE, E.INTERNAL))
        await wait_for(lambda: self._in_a_guild(b), 40,
                       "the restarted guild node's outbox to bring b's guildid")
        self.assertEqual(int((await self.attrs(b))["guildid"]), g)
        info = await self.request_ok(b, pb.GuildInfo())
        self.assertEqual(sorted(m.user_id for m in info.members), sorted([a.userid, b.userid]))

    async def attrs(self, c: GameClient) -> dict[str, Any]:
        info = await self.probe.cluster.call(c.role, "gateway", "player_info", c.userid,
                                             timeout=5)
        assert info is not None
        return dict(info["attrs"])

    async def _in_a_guild(self, c: GameClient) -> bool:
        return bool((await self.attrs(c)).get("guildid"))
