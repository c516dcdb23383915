"""The friend rules of rltwist.game.friendsystem without processes: each player's own
changes, the other side's idempotent answers, and a randomized check over interleavings
(deliveries in flight, repeated, lost answers, both sides acting at once) that once the
outboxes are drained the two sides always agree."""

from __future__ import annotations

import random
from typing import Any

from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.game.friendsystem import FRIENDS, IN, NONE, OUT, FriendSystem
from rltwist.protocols import pb

E = pb.ErrorCode
A_ID, B_ID = 1 << 16 | 1, 2 << 16 | 2   # A owns the pair (the smaller userid)
TABLES = {"friends": {"max_friends": 3, "max_requests_in": 2, "max_blocked": 2}}


def player(uid: int, name: str = "") -> Entity:
    return Entity(uid, attrs={"userid": uid, "name": name or f"p{uid}"})


def deliver(fs: FriendSystem, sender: Entity, receiver: Entity, now: int = 5) -> list[Any]:
    """Deliver every outbox message of *sender* to *receiver* and settle the answers:
    ``[(receiver's event, sender's event)]``."""
    events = []
    for msg in fs.pending(sender):
        if msg["to"] != receiver.id:
            continue
        answer, ev = fs.receive(receiver, msg, now, TABLES)
        _, ev2 = fs.settle(sender, msg, answer, now, TABLES)
        events.append((ev, ev2))
    return events


def sync(fs: FriendSystem, a: Entity, b: Entity) -> None:
    def waiting() -> list[Any]:
        return [m for m in fs.pending(a) + fs.pending(b) if m["to"] in (a.id, b.id)]

    for _ in range(10):
        if not waiting():
            return
        deliver(fs, a, b)
        deliver(fs, b, a)
    raise AssertionError("outboxes do not drain")


class Rules(unittest.TestCase):
    def setUp(self) -> None:
        self.fs = FriendSystem()
        self.a, self.b = player(A_ID, "ann"), player(B_ID, "bob")

    def rel(self) -> tuple[str, str]:
        return self.fs.relation(self.a, B_ID), self.fs.relation(self.b, A_ID)

    def test_request_accept_both_ways_round(self) -> None:
        fs, a, b = self.fs, self.a, self.b
        # the owner asks the other: synced
        self.assertEqual(fs.request(a, B_ID, 1, TABLES), (E.OK, OUT))
        self.assertEqual(deliver(fs, a, b), [("request", None)])
        self.assertEqual(self.rel(), (OUT, IN))
        self.assertEqual(fs.view(b)["requests_in"][str(A_ID)]["name"], "ann")
        self.assertEqual(fs.accept(b, A_ID, 2, TABLES), E.OK)
        self.assertEqual(self.rel(), (OUT, FRIENDS))  # at once on the accepting side
        self.assertEqual(deliver(fs, b, a), [("accepted", None)])
        self.assertEqual(self.rel(), (FRIENDS, FRIENDS))
        self.assertEqual((fs.pending(a), fs.pending(b)), ([], []))
        self.assertEqual(fs.request(a, B_ID, 3, TABLES), (E.FRIEND_ALREADY, FRIENDS))
        self.assertEqual(fs.accept(b, A_ID, 3, TABLES), E.FRIEND_NO_REQUEST)
        # the other asks the owner, the owner accepts
        self.assertEqual(fs.remove(b, A_ID, 4), E.OK)
        self.assertEqual(deliver(fs, b, a), [("removed", None)])
        self.assertEqual(self.rel(), (NONE, NONE))
        fs.request(b, A_ID, 5, TABLES)
        self.assertEqual(deliver(fs, b, a), [("request", None)])
        self.assertEqual(fs.accept(a, B_ID, 6, TABLES), E.OK)
        self.assertEqual(deliver(fs, a, b), [("accepted", None)])
        self.assertEqual(self.rel(), (FRIENDS, FRIENDS))

    def test_repeats_and_old_messages_change_nothing(self) -> None:
        fs, a, b = self.fs, self.a, self.b
        fs.request(b, A_ID, 1, TABLES)
        msg = fs.pending(b)[0]
        answer, ev = fs.receive(a, msg, 2, TABLES)
        self.assertEqual((answer["state"], ev), (OUT, "request"))
        again, ev = fs.receive(a, msg, 3, TABLES)
        self.assertEqual((again, ev), (answer, None))
        self.assertEqual(fs.settle(b, msg, answer, 3, TABLES), (True, None))
        self.assertEqual(fs.settle(b, msg, answer, 3, TABLES), (False, None))
        old = fs.pending(a)  # nothing: the owner changed nothing of its own
        self.assertEqual(old, [])
        fs.accept(a, B_ID, 4, TABLES)
        stale = fs.pending(a)[0]
        fs.remove(a, B_ID, 5)
        deliver(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        fs.receive(b, stale, 6, TABLES)  # a late copy of the accept's sync
        self.assertEqual(self.rel(), (NONE, NONE))

    def test_requests_both_ways_make_friends(self) -> None:
        fs, a, b = self.fs, self.a, self.b
        fs.request(a, B_ID, 1, TABLES)
        fs.request(b, A_ID, 1, TABLES)
        sync(fs, a, b)
        self.assertEqual(self.rel(), (FRIENDS, FRIENDS))
        c = player(3 << 16 | 1)
        fs.request(c, A_ID, 1, TABLES)
        sync(fs, a, c)
        self.assertEqual(fs.request(a, c.id, 2, TABLES), (E.OK, FRIENDS))

    def test_reject_remove_and_block_clear_both_sides(self) -> None:
        fs, a, b = self.fs, self.a, self.b
        fs.request(a, B_ID, 1, TABLES)
        sync(fs, a, b)
        self.assertEqual(fs.reject(b, A_ID, 2), E.OK)
        self.assertEqual(fs.reject(b, A_ID, 2), E.FRIEND_NO_REQUEST)
        sync(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        fs.request(a, B_ID, 3, TABLES)
        sync(fs, a, b)
        fs.accept(b, A_ID, 4, TABLES)
        sync(fs, a, b)
        self.assertEqual(fs.remove(a, B_ID, 5), E.OK)
        self.assertEqual(deliver(fs, a, b), [("removed", None)])
        self.assertEqual(self.rel(), (NONE, NONE))
        self.assertEqual(fs.remove(a, B_ID, 5), E.FRIEND_NOT_FRIEND)
        # block by the non-owner: a friendship ends; the blocked owner's requests are
        # refused by the blocker's side (vetoed) and end on both sides
        fs.request(a, B_ID, 6, TABLES)
        sync(fs, a, b)
        fs.accept(b, A_ID, 7, TABLES)
        sync(fs, a, b)
        self.assertEqual(fs.block(b, A_ID, 8, TABLES), E.OK)
        self.assertEqual(fs.blocked(b), [A_ID])
        sync(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        fs.request(a, B_ID, 9, TABLES)
        msg = fs.pending(a)[0]
        answer, _ = fs.receive(b, msg, 9, TABLES)
        self.assertEqual(answer, {"state": NONE, "vetoed": True})
        fs.settle(a, msg, answer, 9, TABLES)
        sync(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        # block by the owner: the other's request is refused in the answer
        fs.unblock(b, A_ID)
        fs.block(a, B_ID, 10, TABLES)
        sync(fs, a, b)
        fs.request(b, A_ID, 11, TABLES)
        self.assertEqual(self.rel(), (NONE, OUT))
        sync(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        self.assertEqual(fs.request(a, B_ID, 12, TABLES), (E.FRIEND_YOU_BLOCK, NONE))
        self.assertEqual(fs.unblock(a, B_ID), E.OK)
        self.assertEqual(fs.unblock(a, B_ID), E.FRIEND_NOT_BLOCKED)
        self.assertEqual(fs.block(a, A_ID, 12, TABLES), E.FRIEND_SELF)

    def test_caps(self) -> None:
        fs, a, b = self.fs, self.a, self.b
        for i in range(3):
            self.assertEqual(fs.request(a, (10 + i) << 16 | 1, 1, TABLES), (E.OK, OUT))
        self.assertEqual(fs.request(a, 20 << 16 | 1, 1, TABLES), (E.FRIEND_LIST_FULL, NONE))
        # a player holds at most max_requests_in requests: the next one is refused
        others = [player((30 + i) << 16 | 3) for i in range(2)]
        for o in others:
            fs.request(o, A_ID, 1, TABLES)
            sync(fs, o, a)
        fs.request(b, A_ID, 1, TABLES)
        sync(fs, a, b)
        self.assertEqual(self.rel(), (NONE, NONE))
        # accepting all takes what the cap leaves room for (3 - 3 requests out: none)
        self.assertEqual(fs.accept_all(a, 2, TABLES), (E.FRIEND_LIST_FULL, []))
        for i in range(3):
            fs.remove(a, (10 + i) << 16 | 1, 2)
        code, accepted = fs.accept_all(a, 2, TABLES)
        self.assertEqual((code, sorted(accepted)), (E.OK, sorted(o.id for o in others)))
        self.assertEqual(fs.block(b, 1, 1, TABLES), E.OK)
        self.assertEqual(fs.block(b, 2, 1, TABLES), E.OK)
        self.assertEqual(fs.block(b, 3, 1, TABLES), E.FRIEND_BLOCK_LIST_FULL)


class Agreement(unittest.TestCase):
    """Random operations by both players with deliveries in flight (started, applied,
    settled in any order, repeated, answers lost): after draining, both sides agree."""

    OPS = ("request", "accept", "reject", "remove", "block", "unblock", "accept_all")

    def act(self, fs: FriendSystem, me: Entity, other: int, rng: random.Random,
            now: int) -> None:
        op = rng.choice(self.OPS)
        if op == "request":
            fs.request(me, other, now, TABLES)
        elif op == "accept":
            fs.accept(me, other, now, TABLES)
        elif op == "accept_all":
            fs.accept_all(me, now, TABLES)
        elif op == "reject":
            fs.reject(me, other, now)
        elif op == "remove":
            fs.remove(me, other, now)
        elif op == "block":
            fs.block(me, other, now, TABLES)
        else:
            fs.unblock(me, other)

    def check_agree(self, fs: FriendSystem, a: Entity, b: Entity, seed: int) -> None:
        va, vb = fs.view(a), fs.view(b)
        ka, kb = str(a.id), str(b.id)
        where = f"seed {seed}: {va} / {vb}"
        self.assertEqual(kb in va["friends"], ka in vb["friends"], where)
        self.assertEqual(kb in va["requests_out"], ka in vb["requests_in"], where)
        self.assertEqual(ka in vb["requests_out"], kb in va["requests_in"], where)
        if b.id in va["blocked"] or a.id in vb["blocked"]:
            self.assertNotIn(kb, va["friends"], where)
            self.assertNotIn(kb, va["requests_in"], where)
            self.assertNotIn(ka, vb["requests_in"], where)

    def test_both_sides_agree_after_any_interleaving(self) -> None:
        fs = FriendSystem()
        for seed in range(5000):
            rng = random.Random(seed)
            a, b = player(A_ID), player(B_ID)
            side = {a.id: a, b.id: b}
            started: list[dict[str, Any]] = []    # ops read from an outbox, not applied
            answered: list[tuple[dict[str, Any], str]] = []  # applied, not settled
            for now in range(rng.randint(1, 25)):
                step = rng.random()
                if step < 0.35:
                    me, other = rng.choice(((a, b), (b, a)))
                    self.act(fs, me, other.id, rng, now)
                elif step < 0.6:
                    ops = fs.pending(a) + fs.pending(b)
                    if ops:
                        started.append(rng.choice(ops))
                elif step < 0.8 and started:
                    op = started.pop(rng.randrange(len(started)))
                    answer, _ = fs.receive(side[op["to"]], op, now, TABLES)
                    if rng.random() < 0.9:  # else the answer is lost
                        answered.append((op, answer))
                elif answered:
                    op, answer = answered.pop(rng.randrange(len(answered)))
                    fs.settle(side[op["from"]], op, answer, now, TABLES)
            sync(fs, a, b)  # the retrier: deliver and settle until nothing is left
            self.check_agree(fs, a, b, seed)


class BotActions(unittest.TestCase):
    """rl-bot's friend actions build valid requests of the friends block (700-799)."""

    def test_friend_actions_build_valid_requests(self) -> None:
        from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script
        from rltwist.protocols import REGISTRY

        me = BotIdentity(index=0, openid="o", userid=A_ID, run_token="ab", online=(A_ID, B_ID))
        self.assertEqual(parse_script("friend_request,friend_accept_all,friend_list"),
                         ("friend_request", "friend_accept_all", "friend_list"))
        built = {name: ACTIONS[name].build(me)
                 for name in ("friend_request", "friend_accept_all", "friend_list")}
        self.assertEqual(built["friend_request"], pb.FriendRequest(to_userid=B_ID))
        self.assertEqual(built["friend_accept_all"], pb.FriendAccept(all=True))
        self.assertEqual(built["friend_list"], pb.FriendList())
        for msg in built.values():
            msgid = REGISTRY.request_ids[type(msg)]
            self.assertTrue(700 <= msgid < 800, msgid)
            self.assertEqual(type(msg).FromString(msg.SerializeToString()), msg)
        self.assertIn(E.FRIEND_ALREADY, ACTIONS["friend_request"].ok_codes)


class Wiring(unittest.TestCase):
    """The pieces the friends feature adds to the framework, without processes."""

    timeout = 60

    async def test_an_added_action_runs_on_rolecity_entities_and_saves_before_answering(
            self) -> None:
        import os

        from prometheus_client import CollectorRegistry
        from twisted.internet import defer, task

        from rltwist.features.friends import friends_action
        from rltwist.nodes.common.lru import LRUGroup, UnknownAction
        from rltwist.nodes.rolecity.service import RoleCityActor
        from rltwist.storage import EmbeddedBackend

        backend = EmbeddedBackend(os.path.join(self.mktemp(), "region1.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))
        group = LRUGroup(RoleCityActor(), backend, router="rolerouter", worker="agent",
                         workers=2, capacity=10, interval=300.0, clock=task.Clock(),
                         registry=CollectorRegistry(), generation=1)
        group.startService()
        self.addCleanup(group.stopService)
        with self.assertRaises(UnknownAction):
            group.action("friends")
        group.add_action("friends", friends_action, creates=True, save=True)
        self.assertRaises(ValueError, group.add_action, "friends", friends_action)
        self.assertRaises(ValueError, group.add_action, "grant", friends_action)
        r = await group.call(A_ID, "friends", "request", B_ID)
        self.assertEqual(r, {"code": E.OK, "state": OUT})
        doc = await backend.get("rolecity", A_ID)  # saved before the answer
        assert doc is not None
        self.assertEqual(list(doc["components"]["friends"]["requests_out"]), [str(B_ID)])
        self.assertEqual(doc["components"]["friends"]["blocked"], [])
        r = await group.call(A_ID, "friends", "block", B_ID)
        doc = await backend.get("rolecity", A_ID)
        assert doc is not None
        self.assertEqual(doc["components"]["friends"]["blocked"], [B_ID])  # ints: chat

    def test_rolecache_clear_hooks_run_for_a_logout_only(self) -> None:
        from rltwist.nodes.common.rolecache import RoleCache

        cache = RoleCache()
        cleared: list[int] = []
        cache.on_clear.append(cleared.append)
        cache.set(7, "role1", 3)
        self.assertFalse(cache.clear(7, "role2", 3))  # not where it is: no logout here
        self.assertTrue(cache.clear(7, "role1", 3))
        self.assertEqual(cleared, [7])

    async def test_name_lookup_takes_a_region(self) -> None:
        from rltwist.nodes.common.names import NoSuchRegion, userid_by_name

        class Cluster:
            addresses = {"rolecity1": ("127.0.0.1", 1)}
            calls: list[Any] = []

            def rolecity_node(self, userid: int) -> str:
                return f"rolecity{userid & 0xFFFF}"

            async def call(self, *args: Any, timeout: float) -> Any:
                self.calls.append(args)
                return 65537

        c = Cluster()
        self.assertEqual(await userid_by_name(c, 1, " \uff21nn "), 65537)  # type: ignore[arg-type]
        self.assertEqual(c.calls, [("rolecity1", "rolerouter", "lookup_name", "ann")])
        for bad in (0, 70000, True):
            with self.assertRaises(NoSuchRegion):
                await userid_by_name(c, bad, "ann")  # type: ignore[arg-type]
        with self.assertRaises(NoSuchRegion):
            await userid_by_name(c, 2, "ann")  # type: ignore[arg-type]
        self.assertIsNone(await userid_by_name(c, 1, "  "))  # type: ignore[arg-type]

    def test_the_friends_table_is_checked(self) -> None:
        from rltwist.game.tables import VALIDATORS

        check = VALIDATORS["friends"]
        self.assertEqual(list(check({"max_friends": 5, "max_requests_in": 5,
                                     "max_blocked": 5})), [])
        problems = dict(check({"max_friends": 0, "max_requests_in": 5, "max_blocked": "x",
                               "typo": 1}))
        self.assertEqual(sorted(problems), ["max_blocked", "max_friends", "typo"])
