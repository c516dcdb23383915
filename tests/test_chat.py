"""Chat rules and storage without processes (issue 12): the chat system's text, rate,
mute and block rules, the chat table's validator, the channel and private-chat actors'
bounds, business methods a feature adds to another LRU group, and the bot actions.
End-to-end flows are in tests/test_chat_e2e.py."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS, BotIdentity
from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import ShareData
from rltwist.features.chat.services import (
    ChannelActor,
    PrivateActor,
    PrivateRouter,
    rolecity_blocks,
    rolecity_flag_backlog,
    rolecity_set_mute,
    rolecity_state,
    rolecity_unflag_backlog,
)
from rltwist.game.chatsystem import system as chat
from rltwist.game.tables import VALIDATORS, validate_chat
from rltwist.nodes.common.lru import LRUGroup, UnknownAction
from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.test_lru import Counter

E = pb.ErrorCode
C = pb.ChatChannel
REPO = Path(__file__).resolve().parents[1]
TABLES: dict[str, Any] = {"chat": {"max_length": 256, "rate": 1.0, "burst": 5,
                                   "history": 50, "offline_backlog": 100}}


class TextRules(unittest.TestCase):
    def test_text_length_and_characters(self) -> None:
        ok = ["hi", "x" * 256, "你好世界", "emoji 🙂 ok"]
        for text in ok:
            self.assertEqual(chat.check_text(text, TABLES), E.OK, repr(text))
        bad = ["", "   ", "x" * 257, "bell\x07", "line\nbreak", "tab\tx", "rtl\u202eoverride",
               "zero\u200bwidth", "nul\x00"]
        for text in bad:
            self.assertEqual(chat.check_text(text, TABLES), E.CHAT_TEXT_INVALID, repr(text))

    def test_the_table_may_lower_the_length_limit(self) -> None:
        tables = {"chat": {**TABLES["chat"], "max_length": 10}}
        self.assertEqual(chat.check_text("x" * 10, tables), E.OK)
        self.assertEqual(chat.check_text("x" * 11, tables), E.CHAT_TEXT_INVALID)


class RateLimit(unittest.TestCase):
    def test_a_burst_then_the_rate(self) -> None:
        bucket = None
        answers = []
        for _ in range(7):  # all at t=100
            allowed, bucket = chat.take_token(bucket, 100.0, TABLES)
            answers.append(allowed)
        self.assertEqual(answers, [True] * 5 + [False] * 2)
        allowed, bucket = chat.take_token(bucket, 100.5, TABLES)
        self.assertFalse(allowed)  # half a token
        allowed, bucket = chat.take_token(bucket, 101.0, TABLES)
        self.assertTrue(allowed)  # refused attempts do not push the refill back
        allowed, bucket = chat.take_token(bucket, 101.5, TABLES)
        self.assertFalse(allowed)

    def test_an_idle_bucket_refills_only_up_to_the_burst(self) -> None:
        bucket = [0.0, 0.0]
        answers = []
        for _ in range(7):
            allowed, bucket = chat.take_token(bucket, 3600.0, TABLES)
            answers.append(allowed)
        self.assertEqual(answers.count(True), 5)

    def test_rate_and_burst_come_from_the_table(self) -> None:
        tables = {"chat": {**TABLES["chat"], "rate": 10.0, "burst": 1}}
        allowed, bucket = chat.take_token(None, 0.0, tables)
        self.assertTrue(allowed)
        self.assertFalse(chat.take_token(bucket, 0.05, tables)[0])
        self.assertTrue(chat.take_token(bucket, 0.1, tables)[0])


class MuteAndBlocks(unittest.TestCase):
    def test_mute_expiry_and_lift(self) -> None:
        record = chat.mute_record(60, "spam", 1_000)
        self.assertEqual(record, {"until_ms": 61_000, "reason": "spam", "set_ms": 1_000})
        self.assertEqual(chat.muted_until(record, 60_999), 61_000)
        self.assertEqual(chat.muted_until(record, 61_000), 0)  # expired
        self.assertEqual(chat.muted_until(chat.mute_record(0, "x", 5), 5), 0)  # lifted
        self.assertEqual(chat.muted_until(None, 5), 0)

    def test_block_list_of_the_friends_component(self) -> None:
        self.assertFalse(chat.blocks(None, 7))
        self.assertFalse(chat.blocks({"blocked": [8]}, 7))
        self.assertTrue(chat.blocks({"blocked": [8, 7]}, 7))

    def test_the_rolecity_entity_methods(self) -> None:
        e = Entity(7)
        e.saved_revision = e.revision  # as the LRU hands out a new entity
        self.assertEqual(rolecity_state(e), {"mute": None, "backlog": False})
        self.assertFalse(e.dirty)
        self.assertFalse(rolecity_blocks(e, 9))
        self.assertFalse(e.dirty)  # a read of a new entity must not create it
        rolecity_set_mute(e, 10, "flood", 500)
        self.assertTrue(e.dirty)
        self.assertEqual(rolecity_state(e)["mute"], {"until_ms": 10_500, "reason": "flood",
                                                     "set_ms": 500})
        e.saved_revision = e.revision
        rolecity_flag_backlog(e, False)
        self.assertFalse(e.dirty)  # no change, no write
        rolecity_flag_backlog(e, True)
        self.assertTrue(rolecity_state(e)["backlog"])
        rolecity_unflag_backlog(e)
        self.assertFalse(rolecity_state(e)["backlog"])
        e.component("friends")["blocked"] = [9]
        self.assertTrue(rolecity_blocks(e, 9))

    def test_messages_keep_the_last_n_and_convert_to_the_protocol(self) -> None:
        history: list[Any] = []
        for i in range(5):
            chat.keep(history, chat.message(C.CHAT_WORLD, 1, "n", 1, f"m{i}", i), 3)
        self.assertEqual([m["text"] for m in history], ["m2", "m3", "m4"])
        m = chat.to_pb({**history[0], "extra": "ignored"})
        self.assertEqual((m.channel, m.from_userid, m.text, m.time_ms), (C.CHAT_WORLD, 1, "m2", 2))


class ChatTable(unittest.TestCase):
    def test_the_repository_table_is_valid(self) -> None:
        sd = ShareData(REPO / "etc" / "game", VALIDATORS)
        self.assertEqual(sd.snapshot["chat"]["burst"], 5)

    def test_bad_values_name_their_key(self) -> None:
        good = dict(TABLES["chat"])
        self.assertEqual(list(validate_chat(good)), [])
        for key, value in [("max_length", 257), ("max_length", 0), ("rate", 0),
                           ("rate", True), ("burst", 0), ("history", 1001),
                           ("offline_backlog", "5")]:
            problems = list(validate_chat({**good, key: value}))
            self.assertEqual([k for k, _ in problems], [key], (key, value))
        self.assertEqual([k for k, _ in validate_chat({**good, "typo": 1})], ["typo"])
        missing = dict(good)
        del missing["burst"]
        self.assertIn("burst", [k for k, _ in validate_chat(missing)])


class ActorCase(unittest.TestCase):
    def group(self, actor: Any, collection: str = "") -> LRUGroup:
        backend = EmbeddedBackend(os.path.join(self.mktemp(), "db.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))
        g = LRUGroup(actor, backend, router="r", worker="w", workers=1, capacity=10,
                     interval=300, clock=task.Clock(), registry=CollectorRegistry(),
                     generation=1)
        g.startService()
        self.addCleanup(g.stopService)
        self.backend = backend
        return g


class Actors(ActorCase):
    async def test_private_pairs_and_backlog_are_bounded_and_taken_once(self) -> None:
        g = self.group(PrivateActor())
        for i in range(5):
            msg = chat.message(C.CHAT_PRIVATE, 2, "b", 1, f"m{i}", i, to_userid=1)
            await g.call(1, "keep", 2, msg, 3, 2)
        self.assertEqual([m["text"] for m in await g.call(1, "pair", 2)], ["m2", "m3", "m4"])
        self.assertEqual([m["text"] for m in await g.call(1, "take_backlog")], ["m3", "m4"])
        self.assertEqual(await g.call(1, "take_backlog"), [])
        self.assertEqual(len(await g.call(1, "pair", 2)), 3)  # the pair history stays
        self.assertEqual(await g.call(1, "pair", 3), [])

    async def test_channel_history_is_saved_by_the_periodic_saver(self) -> None:
        g = self.group(ChannelActor())
        await g.call("world", "post", chat.message(C.CHAT_WORLD, 1, "a", 1, "hi", 1), 50)
        self.assertEqual(await self.backend.get_entity("chat_channels", "world"), None)
        self.assertEqual((await g.flush()).to_dict()["saved"], 1)
        stored = await self.backend.get_entity("chat_channels", "world")
        self.assertEqual([m["text"] for m in stored.doc["components"]["chat"]["messages"]],
                         ["hi"])


class AddedActions(ActorCase):
    async def test_a_feature_adds_a_business_method_that_runs_in_the_mailbox(self) -> None:
        g = self.group(Counter())

        def bump_twice(entity: Entity, by: int) -> int:
            entity["n"] = entity.get("n", 0) + 2 * by
            return int(entity["n"])

        g.add_action("bump_twice", bump_twice, creates=True, save=True)
        self.assertEqual(await g.call(5, "bump_twice", 3), 6)
        stored = await self.backend.get_entity("counters", 5)
        self.assertEqual(stored.doc["attrs"]["n"], 6)  # save=True: saved before the answer
        self.assertRaises(ValueError, g.add_action, "bump_twice", bump_twice)
        with self.assertRaises(UnknownAction):
            g.action("nope")


class BotActions(unittest.TestCase):
    def test_chat_actions_build_valid_requests(self) -> None:
        me = BotIdentity(0, "o", 10, "0123456789abcdef", online=(10, 20))
        built = {name: ACTIONS[name].build(me) for name in
                 ("chat_world", "chat_region", "chat_private", "chat_history")}
        self.assertEqual(built["chat_private"].to_userid, 20)
        self.assertEqual(built["chat_region"].channel, C.CHAT_REGION)
        self.assertEqual(built["chat_history"].channel, C.CHAT_WORLD)
        for name, message in built.items():
            type(message).FromString(message.SerializeToString())
            if isinstance(message, pb.ChatSend):
                self.assertEqual(chat.check_text(message.text, TABLES), E.OK, name)
        self.assertIn(E.RATE_LIMITED, ACTIONS["chat_world"].ok_codes)
        # alone: no message to oneself (NO_SUCH_PLAYER), the private history instead
        alone = ACTIONS["chat_private"].build(BotIdentity(0, "o", 10, "0123456789abcdef",
                                                          online=(10,)))
        self.assertEqual((type(alone), alone.peer_userid), (pb.ChatHistory, 10))


class FakeCluster:
    """Records calls; each answer is a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, tuple[Any, ...]]] = []
        self.answers: dict[tuple[str, str], defer.Deferred[Any]] = {}
        self.addresses = {"rolecity1", "logiccenter", "map1"}

    def rolecity_node(self, userid: int) -> str:
        return f"rolecity{userid & 0xFFFF}"

    def map_node(self, mapid: int) -> str:
        return f"map{mapid}"

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float = 0) -> defer.Deferred[Any]:
        self.calls.append((node, service, method, args))
        d: defer.Deferred[Any] = defer.Deferred()
        self.answers[(service, method)] = d
        return d


class FakeConn:
    def __init__(self) -> None:
        self.pushed: list[Any] = []

    def push(self, message: Any) -> bool:
        self.pushed.append(message)
        return True


class FakePlayer:
    def __init__(self, userid: int) -> None:
        self.userid = userid
        self.state = "online"
        self.conn = FakeConn()
        self.entity = {"name": "n"}
        self.mapid = userid & 0xFFFF


class FakeGateway:
    def __init__(self) -> None:
        self.cluster = FakeCluster()
        self.players: dict[int, Any] = {}

    def now(self) -> float:
        return 100.0


class RoleCase(unittest.TestCase):
    """The role node's handlers against a fake gateway and cluster."""

    def setUp(self) -> None:
        from rltwist.features.chat import role

        self.role = role
        self.patch(role, "sharedata", lambda: type("SD", (), {"snapshot": TABLES})())
        self.patch(role, "STATES", {})
        self.gw = FakeGateway()
        self.player = FakePlayer(5 << 16 | 1)
        self.gw.players[self.player.userid] = self.player

    def send(self, text: str = "hi") -> defer.Deferred[Any]:
        msg = pb.ChatSend(channel=C.CHAT_WORLD, text=text)
        return defer.Deferred.fromCoroutine(
            self.role.chat_send(self.gw, self.player, msg))  # type: ignore[arg-type]


class RoleSide(RoleCase):
    """Deterministic: the stored state loads once per instance, a ChatSend right after
    Auth waits for it, a GM word that comes meanwhile wins."""

    def test_a_send_right_after_auth_waits_for_the_stored_mute(self) -> None:
        future = int(self.role.now_ms()) + 60_000
        answer = self.send()
        self.assertEqual([c[1:3] for c in self.gw.cluster.calls], [("privatechat", "login")])
        self.assertNoResult(answer)
        self.gw.cluster.answers[("privatechat", "login")].callback(
            {"backlog": [], "mute": {"until_ms": future}})
        r = self.successResultOf(answer)
        self.assertEqual((r.code, r.muted_until_ms), (E.CHAT_MUTED, future))
        # the after-Auth step that runs later does not load again
        d = defer.Deferred.fromCoroutine(self.role.chat_login(self.gw, self.player))
        self.successResultOf(d)
        self.assertEqual(len(self.gw.cluster.calls), 1)

    def test_the_backlog_is_pushed_oldest_first_and_a_gm_word_beats_the_load(self) -> None:
        d = defer.Deferred.fromCoroutine(self.role.chat_login(self.gw, self.player))
        gate = self.role.ChatGate(self.gw)
        self.assertTrue(gate.set_mute(self.player.userid, 0))  # GM unmute during the load
        backlog = [chat.message(C.CHAT_PRIVATE, 9, "x", 2, f"m{i}", i, to_userid=1)
                   for i in range(3)]
        self.gw.cluster.answers[("privatechat", "login")].callback(
            {"backlog": backlog, "mute": {"until_ms": int(self.role.now_ms()) + 60_000}})
        self.successResultOf(d)
        self.assertEqual([m.message.text for m in self.player.conn.pushed], ["m0", "m1", "m2"])
        answer = self.send()
        self.assertEqual(self.gw.cluster.calls[-1][1:3], ("chat", "send"))
        self.gw.cluster.answers[("chat", "send")].callback(E.OK)
        self.assertEqual(self.successResultOf(answer).code, E.OK)

    def test_a_failed_load_is_not_muted_and_states_of_gone_instances_are_pruned(self) -> None:
        from rltwist.cluster import NodeUnreachable

        answer = self.send()
        self.gw.cluster.answers[("privatechat", "login")].errback(
            NodeUnreachable("rolecity1", "privatechat", "login", "down"))
        self.assertEqual(self.gw.cluster.calls[-1][1:3], ("chat", "send"))
        self.gw.cluster.answers[("chat", "send")].callback(E.OK)
        self.assertEqual(self.successResultOf(answer).code, E.OK)
        self.assertEqual(self.role.prune(), 0)
        self.player.state = "gone"
        self.assertEqual(self.role.prune(), 1)
        self.assertEqual(self.role.STATES, {})

    def test_a_relogin_does_not_refill_the_rate_bucket(self) -> None:
        # logging in again must not be a way around the rate limit (the bucket was kept on
        # the instance, so a new instance started full)
        self.patch(self.role, "RECENT_BUCKETS", OrderedDict())
        burst = TABLES["chat"]["burst"]

        def send_ok() -> int:
            answer = self.send()
            if ("privatechat", "login") in self.gw.cluster.answers and \
                    not self.gw.cluster.answers[("privatechat", "login")].called:
                self.gw.cluster.answers[("privatechat", "login")].callback(
                    {"backlog": [], "mute": {}})
            pending = self.gw.cluster.answers.get(("chat", "send"))
            if pending is not None and not pending.called:
                pending.callback(E.OK)
            return int(self.successResultOf(answer).code)

        self.assertEqual([send_ok() for _ in range(burst)], [E.OK] * burst)
        self.assertEqual(send_ok(), E.RATE_LIMITED)
        for pruned in (False, True):  # the old instance's state still here, or pruned
            self.player.state = "gone"
            if pruned:
                self.assertEqual(self.role.prune(), 1)
            self.player = FakePlayer(self.player.userid)  # the next login's instance
            self.gw.players[self.player.userid] = self.player
            self.assertEqual(send_ok(), E.RATE_LIMITED, f"pruned={pruned}")


class GuildChannel(RoleCase):
    """The guild channel goes to the guild feature's ``guildchat`` service on the guild's
    node (not built on this branch: answered here by the fake cluster)."""

    def setUp(self) -> None:
        super().setUp()
        self.gw.cluster.guild_node = lambda guildid: f"guild{guildid & 0xFFFF}"  # type: ignore
        st = self.role.state_of(self.player)  # the stored state is loaded: not muted
        st.loading = defer.succeed(None)

    def request(self, handler: Any, msg: Any) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(handler(self.gw, self.player, msg))

    def test_guild_send_and_history_reach_guildchat_on_the_guilds_node(self) -> None:
        guildid = 3 << 16 | 2
        self.player.entity["guildid"] = guildid
        answer = self.request(self.role.chat_send,
                              pb.ChatSend(channel=C.CHAT_GUILD, text="to the guild"))
        node, service, method, args = self.gw.cluster.calls[-1]
        self.assertEqual((node, service, method, args[:2]),
                         ("guild2", "guildchat", "send", (guildid, self.player.userid)))
        self.assertEqual((args[2]["guild_id"], args[2]["text"]), (guildid, "to the guild"))
        self.gw.cluster.answers[("guildchat", "send")].callback(int(E.CHAT_NOT_IN_GUILD))
        self.assertEqual(self.successResultOf(answer).code, E.CHAT_NOT_IN_GUILD)

        history = self.request(self.role.chat_history, pb.ChatHistory(channel=C.CHAT_GUILD))
        self.assertEqual(self.gw.cluster.calls[-1][1:],
                         ("guildchat", "history", (guildid, self.player.userid)))
        self.gw.cluster.answers[("guildchat", "history")].callback(
            [chat.message(C.CHAT_GUILD, 9, "x", 2, "old", 1, guild_id=guildid)])
        r = self.successResultOf(history)
        self.assertEqual((r.code, [m.text for m in r.messages]), (E.OK, ["old"]))

        from rltwist.cluster import RemoteError

        history = self.request(self.role.chat_history, pb.ChatHistory(channel=C.CHAT_GUILD))
        self.gw.cluster.answers[("guildchat", "history")].errback(
            RemoteError("guild2", "guildchat", "history", "NotAMember", "not a member"))
        self.assertEqual(self.successResultOf(history).code, E.CHAT_NOT_IN_GUILD)

    def test_an_unreachable_guild_node_is_retry_later(self) -> None:
        from rltwist.cluster import CallTimeout

        self.player.entity["guildid"] = 3 << 16 | 2
        answer = self.request(self.role.chat_send,
                              pb.ChatSend(channel=C.CHAT_GUILD, text="anyone?"))
        self.gw.cluster.answers[("guildchat", "send")].errback(
            CallTimeout("guild2", "guildchat", "send", 5.0))
        self.assertEqual(self.successResultOf(answer).code, E.RETRY_LATER)


class RoleCityActor(Counter):
    """Stands in for rolecity's actor: chat adds its business methods to its group."""

    collection = "rolecity"


class FakeRegionCluster:
    """What PrivateRouter uses of its node's cluster: services, routing, sends."""

    def __init__(self, node: str, roles: LRUGroup) -> None:
        self.node = node
        self.where: dict[int, str] = {}
        self.services: dict[str, Any] = {"rolerouter": type("R", (), {"group": roles})(),
                                          "rolecache": self}
        self.addresses = {"role1": 1, "role2": 1}
        self.sent: list[tuple[Any, ...]] = []
        self.calls: list[tuple[Any, ...]] = []
        #: what a gateway.push call answers: players written to, or an exception
        self.push_answer: Any = 1

    def rolecity_node(self, userid: int) -> str:
        return f"rolecity{userid & 0xFFFF}"

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.sent.append((node, service, method, *args))

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float = 0) -> defer.Deferred[Any]:
        self.calls.append((node, service, method, *args))
        if (service, method) == ("gateway", "push"):
            if isinstance(self.push_answer, Exception):
                return defer.fail(self.push_answer)
            return defer.succeed(self.push_answer)
        return defer.succeed(None)


class FakeRegionNode:
    def __init__(self, name: str, roles: LRUGroup, players: Any) -> None:
        self.name = name
        self.cluster = FakeRegionCluster(name, roles)
        self.players = players

    def database(self, name: str) -> Any:
        return self.players


class PrivateRouting(ActorCase):
    """privatechat on the recipient's rolecity, against real LRU groups and storage."""

    async def asyncSetUp(self) -> PrivateRouter:
        from rltwist.features.chat import services

        self.patch(services, "sharedata",
                   lambda: type("SD", (), {"snapshot": TABLES})())
        roles = self.group(RoleCityActor())
        roles.add_action("chat_blocks", rolecity_blocks)
        roles.add_action("chat_state", rolecity_state)
        roles.add_action("chat_flag_backlog", rolecity_flag_backlog, creates=True, save=True)
        roles.add_action("chat_unflag_backlog", rolecity_unflag_backlog)
        self.roles_backend = self.backend
        self.roles = roles
        private = self.group(PrivateActor())
        self.to, self.sender = 7 << 16 | 2, 9 << 16 | 1
        await self.backend.save_entities("player", [(self.to, {"_id": self.to}, 0)])
        node = FakeRegionNode("rolecity2", roles, self.backend)
        router = PrivateRouter(private, node)  # type: ignore[arg-type]
        router.cluster = node.cluster  # type: ignore[assignment]
        self.node = node
        return router

    def msg(self, text: str) -> dict[str, Any]:
        return chat.message(C.CHAT_PRIVATE, self.sender, "s", 1, text, 1, to_userid=self.to)

    async def test_offline_messages_flag_the_backlog_and_auth_takes_them_once(self) -> None:
        router = await self.asyncSetUp()
        self.assertEqual(await router.login(self.to), {"backlog": [], "mute": None})
        for text in ("a", "b"):
            self.assertEqual(await router.send(self.to, self.msg(text)), E.OK)
        self.assertEqual(self.node.cluster.sent, [])  # offline: nothing pushed
        # the flag is durable before the message is accepted
        stored = await self.roles_backend.get_entity("rolecity", self.to)
        self.assertTrue(stored.doc["components"]["chat"]["backlog"])
        # the sender's side of the pair is kept at its own rolecity
        self.assertEqual([c[:5] for c in self.node.cluster.calls],
                         [("rolecity1", "privatechat", "keep", self.sender, self.to)] * 2)
        got = await router.login(self.to)
        self.assertEqual([m["text"] for m in got["backlog"]], ["a", "b"])
        self.assertFalse((await self.roles.call(self.to, "chat_state"))["backlog"])
        self.assertEqual((await router.login(self.to))["backlog"], [])
        self.assertEqual([m["text"] for m in await router.history(self.to, self.sender)],
                         ["a", "b"])

    async def test_online_recipients_get_a_push_or_else_the_backlog(self) -> None:
        from rltwist.cluster import CallTimeout

        router = await self.asyncSetUp()
        cluster = self.node.cluster
        cluster.where[self.to] = "role2"
        self.assertEqual(await router.send(self.to, self.msg("hi")), E.OK)
        pushes = [c for c in cluster.calls if c[1:3] == ("gateway", "push")]
        [(node, _, _, ids, _msgid, body, sender)] = pushes
        self.assertEqual((node, ids, sender), ("role2", [self.to], self.sender))
        self.assertEqual(pb.ChatNotify.FromString(body).message.text, "hi")
        self.assertFalse((await self.roles.call(self.to, "chat_state"))["backlog"])
        # logged out meanwhile (the gateway wrote it to nobody), or the node is silent
        cluster.push_answer = 0
        await router.send(self.to, self.msg("gone"))
        cluster.push_answer = CallTimeout("role2", "gateway", "push", 5.0)
        await router.send(self.to, self.msg("silent"))
        cluster.where.clear()
        self.assertEqual([m["text"] for m in (await router.login(self.to))["backlog"]],
                         ["gone", "silent"])
        self.assertEqual([m["text"] for m in await router.history(self.to, self.sender)],
                         ["hi", "gone", "silent"])

    async def test_unknown_and_blocking_recipients_refuse(self) -> None:
        router = await self.asyncSetUp()
        self.assertEqual(await router.send(8 << 16 | 2, self.msg("x")), E.NO_SUCH_PLAYER)

        def block(entity: Entity, who: int) -> None:
            entity.component("friends")["blocked"] = [who]

        self.roles.add_action("block", block, creates=True)
        await self.roles.call(self.to, "block", self.sender)
        self.assertEqual(await router.send(self.to, self.msg("x")), E.CHAT_BLOCKED)
        self.assertEqual(await router.history(self.to, self.sender), [])
