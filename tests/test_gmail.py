"""Global mail rules (rltwist.game.gmailsystem): who is targeted, the GM's fields, the
per-player watermark. No processes."""

from __future__ import annotations

import os
import time as time_module
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cluster.routing import Routing
from rltwist.ecs.entity import Entity
from rltwist.game.gmailsystem import DAY_MS, BadGmail, system

NOW = 1_700_000_000_000


def uid(seq: int, sid: int) -> int:
    return seq << 16 | sid


def gmail(gmail_id: int = 1, regions: list[int] | None = None, include_new: bool = False,
          max_seq: int = 10, **fields: Any) -> dict[str, Any]:
    checked = system.check({"title": f"t{gmail_id}", "include_new": include_new, **fields},
                           regions or [], [1, 2, 3])
    return system.make(gmail_id, checked, NOW, max_seq)


class Targets(unittest.TestCase):
    def test_a_global_mail_targets_the_players_that_existed_in_every_region(self) -> None:
        g = gmail(max_seq=10)
        self.assertTrue(system.targets(g, uid(10, 1), NOW))
        self.assertTrue(system.targets(g, uid(1, 3), NOW))
        self.assertFalse(system.targets(g, uid(11, 1), NOW))  # created after the send

    def test_include_new_also_targets_later_players_until_it_expires(self) -> None:
        g = gmail(include_new=True, max_seq=10, expire_days=2)
        self.assertTrue(system.targets(g, uid(500, 2), NOW + DAY_MS))
        self.assertFalse(system.targets(g, uid(500, 2), NOW + 2 * DAY_MS))
        self.assertFalse(system.targets(g, uid(1, 2), NOW + 2 * DAY_MS))  # expired for all

    def test_a_region_mail_targets_only_its_regions_players(self) -> None:
        g = gmail(regions=[2], include_new=True)
        self.assertTrue(system.targets(g, uid(3, 2), NOW))
        self.assertFalse(system.targets(g, uid(3, 1), NOW))

    def test_after_a_merge_a_region_mail_reaches_both_regions_players(self) -> None:
        # region 1 merged into 2: its players live on region 2's nodes now
        aliases = Routing({1: 2})
        to_2, to_1 = gmail(regions=[2]), gmail(regions=[1])
        for g in (to_2, to_1):
            self.assertTrue(system.targets(g, uid(3, 1), NOW, aliases.region))
            self.assertTrue(system.targets(g, uid(3, 2), NOW, aliases.region))
            self.assertFalse(system.targets(g, uid(3, 3), NOW, aliases.region))
        self.assertFalse(system.targets(to_2, uid(3, 1), NOW))  # without the aliases

    def test_the_mail_carries_the_idempotency_key(self) -> None:
        mail = system.mail(gmail(7, attachments={"gold": 5}))
        self.assertEqual(mail, {"from": 0, "title": "t7", "body": "", "key": "gmail-7",
                                "attachments": {"gold": 5}})


class Fields(unittest.TestCase):
    def test_bad_fields_are_refused_naming_the_field(self) -> None:
        cases: list[tuple[dict[str, Any], list[int], str]] = [
                 ({"title": ""}, [], "title"),
                 ({"title": "x" * 129}, [], "title"),
                 ({"title": "x", "attachments": {"gold": 0}}, [], "attachments"),
                 ({"title": "x", "attachments": {"gold": True}}, [], "attachments"),
                 ({"title": "x", "expire_days": 0}, [], "expire_days"),
                 ({"title": "x", "expire_days": 366}, [], "expire_days"),
                 ({"title": "x", "include_new": 1}, [], "include_new"),
                 ({"title": "x", "colour": "red"}, [], "colour"),
                 ({"title": "x"}, [9], "region 9"),
                 ({"title": "x"}, [0], "region 0")]
        for fields, regions, word in cases:
            with self.assertRaises(BadGmail, msg=repr(fields)) as e:
                system.check(fields, regions, [1, 2])
            self.assertIn(word, str(e.exception))

    def test_defaults(self) -> None:
        g = system.make(1, system.check({"title": "hi"}, [], [1]), NOW, 4)
        self.assertEqual((g["regions"], g["include_new"], g["attachments"], g["body"]),
                         ([], False, {}, ""))
        self.assertEqual(g["expire_ms"] - NOW, 30 * DAY_MS)


class Watermark(unittest.TestCase):
    def test_due_skips_what_was_seen_and_what_does_not_target_the_player(self) -> None:
        player = Entity(uid(5, 1))
        mails = [gmail(1), gmail(2, regions=[2]), gmail(3), gmail(4, max_seq=2)]
        todo, mark = system.due(player, uid(5, 1), mails, 4, NOW)
        self.assertEqual([g["id"] for g in todo], [1, 3])
        self.assertEqual(mark, 4)
        self.assertTrue(system.set_seen(player, 3))
        todo, mark = system.due(player, uid(5, 1), mails, 4, NOW)
        self.assertEqual((todo, mark), ([], 4))
        self.assertFalse(system.set_seen(player, 2))  # never goes back
        self.assertEqual(system.seen(player), 3)

    def test_a_new_player_starts_at_zero_and_expired_mails_only_move_the_mark(self) -> None:
        player = Entity(uid(5, 1))
        self.assertEqual(system.seen(player), 0)
        todo, mark = system.due(player, uid(5, 1), [], 9, NOW)
        self.assertEqual((todo, mark), ([], 9))


# -- the role node's side (rltwist.features.gmail.GmailPull) over fakes ----------------


class FakeSaver:
    def __init__(self) -> None:
        self.saves = 0

    async def save(self, items: Any) -> Any:
        self.saves += 1
        for entity, _ in items:
            entity.saved(entity.snapshot()[0])
        return SaveReportOk()


class SaveReportOk:
    ok = True


class FakePlayer:
    def __init__(self, userid: int) -> None:
        self.userid = userid
        self.entity = Entity(userid)
        self.state = "online"
        self.generation = 1


class FakeGateway:
    def __init__(self, cluster: FakeCluster, players: list[FakePlayer]) -> None:
        self.cluster = cluster
        self.players = {p.userid: p for p in players}
        self.saver = FakeSaver()

    def writes_allowed(self) -> bool:
        return True


class FakeCluster:
    """logiccenter's gmail.since over *gmails*, and mailboxes that keep one mail per key
    (the mail node's rule); mail node *broken* fails every delivery."""

    def __init__(self, gmails: list[dict[str, Any]]) -> None:
        self.gmails = gmails
        self.services: dict[str, Any] = {}
        self.routing = Routing()
        self.calls: list[tuple[str, str, str]] = []
        self.boxes: dict[int, list[str]] = {}
        self.broken: set[str] = set()

    def mail_node(self, userid: int) -> str:
        return f"mail{userid & 0xFFFF}"

    async def call(self, node: str, service: str, method: str, *args: Any,
                   timeout: float = 0) -> Any:
        from rltwist.cluster.errors import NodeUnreachable

        self.calls.append((node, service, method))
        if (service, method) == ("gmail", "since"):
            after, userid = args
            return {"latest": max((g["id"] for g in self.gmails), default=0),
                    "gmails": [g for g in self.gmails if g["id"] > after
                               and (userid is None or system.targets(g, userid, NOW))]}
        if node in self.broken:
            raise NodeUnreachable(node, service, method)
        userid, mail = args
        box = self.boxes.setdefault(userid, [])
        if mail["key"] in box:
            return {"mailid": 1, "duplicate": True}
        box.append(mail["key"])
        return {"mailid": len(box), "duplicate": False}


class Pull(unittest.TestCase):
    def setUp(self) -> None:
        from rltwist.features.gmail import GmailPull

        self.clock = task.Clock()
        self.clock.advance(NOW / 1000)
        self.patch(time_module, "time", self.clock.seconds)
        self.players = [FakePlayer(uid(1, 1)), FakePlayer(uid(2, 2)), FakePlayer(uid(3, 2))]
        self.cluster = FakeCluster([gmail(1, regions=[2]), gmail(2), gmail(3, regions=[1])])
        self.gw = FakeGateway(self.cluster, self.players)
        self.cluster.services["gateway"] = self.gw
        self.registry = CollectorRegistry()
        node = type("Node", (), {"cluster": self.cluster, "reactor": self.clock,
                                 "registry": self.registry})()
        self.pull = GmailPull(node)  # type: ignore[arg-type]

    def delivered(self, result: str) -> float | None:
        return self.registry.get_sample_value("rl_gmail_deliveries_total", {"result": result})

    def since_calls(self) -> int:
        n = sum(c[1:] == ("gmail", "since") for c in self.cluster.calls)
        self.cluster.calls.clear()
        return n

    async def test_a_check_asks_logiccenter_once_for_all_online_players(self) -> None:
        self.assertEqual(await self.pull.check(3), 6)
        self.assertEqual(self.since_calls(), 1)  # one call per role node, not per player
        self.assertEqual(self.cluster.boxes, {uid(1, 1): ["gmail-2", "gmail-3"],
                                              uid(2, 2): ["gmail-1", "gmail-2"],
                                              uid(3, 2): ["gmail-1", "gmail-2"]})
        self.assertEqual([system.seen(p.entity) for p in self.players], [3, 3, 3])
        self.assertEqual(self.gw.saver.saves, 3)
        self.assertEqual((self.delivered("stored"), self.delivered("failed")), (6, 0))
        # nothing new: nobody is behind, logiccenter is not even asked
        self.assertEqual(await self.pull.check(3), 0)
        self.assertEqual(self.since_calls(), 0)

    async def test_a_failed_delivery_is_made_up_by_the_next_sweep(self) -> None:
        self.cluster.broken.add("mail2")
        self.pull.start()
        self.assertEqual(await self.pull.check(3), 2)  # region 1's player only
        self.assertEqual([system.seen(p.entity) for p in self.players], [3, 0, 0])
        self.cluster.broken.clear()
        self.clock.advance(30)  # the periodic sweep
        for _ in range(10):  # the fakes answer at once: a few turns of the loop settle it
            await defer.succeed(None)
        self.assertEqual([system.seen(p.entity) for p in self.players], [3, 3, 3])
        self.assertEqual(self.cluster.boxes[uid(2, 2)], ["gmail-1", "gmail-2"])
        self.assertEqual((self.delivered("stored"), self.delivered("failed")), (6, 2))
        self.pull.sweeper.stop()

    async def test_after_auth_pull_and_a_racing_check_store_each_mail_once(self) -> None:
        player = self.players[1]
        await defer.gatherResults([defer.Deferred.fromCoroutine(self.pull.pull(player)),
                                   defer.Deferred.fromCoroutine(self.pull.check(3))])
        self.assertEqual(self.cluster.boxes[player.userid], ["gmail-1", "gmail-2"])
        self.assertEqual(self.delivered("stored"), 6)
        # a logged-out instance is left alone (its next login pulls)
        late = FakePlayer(uid(4, 1))
        late.state = "gone"
        self.gw.players[late.userid] = late
        self.assertEqual(await self.pull.check(3), 0)
        self.assertNotIn(late.userid, self.cluster.boxes)


# -- logiccenter's gmail service over real embedded storage ----------------------------


class Service(unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "globaldb.sqlite3")
        os.makedirs(os.path.dirname(self.path))

    async def start(self) -> Any:
        from rltwist.nodes.logiccenter.account import Account
        from rltwist.nodes.logiccenter.gmail import GlobalMail
        from tests.test_activities import FakeNode

        node = FakeNode(self.path, task.Clock())
        self.addCleanup(lambda: defer.ensureDeferred(node.db.close()))
        service = GlobalMail(node, Account(node))  # type: ignore[arg-type]
        service.cluster = node.cluster  # type: ignore[assignment]
        return service, node

    async def test_stored_before_the_answer_one_check_per_role_node_kept_over_restart(
            self) -> None:
        service, node = await self.start()
        refused = await service.send({"title": "x"}, [7])
        self.assertEqual((refused["ok"], "region 7" in refused["error"]), (False, True))
        for _ in range(3):  # three accounts exist before the send
            await node.db.incr("user_seq")
        sent = await service.send({"title": "hello", "attachments": {"gold": 3}}, [2])
        self.assertTrue(sent["ok"], sent)
        doc = sent["gmail"]
        self.assertEqual((doc["id"], doc["regions"], doc["max_seq"]), (1, [2], 3))
        self.assertEqual(await node.db.get("gmail", 1), doc)  # durable at the answer
        self.assertEqual(sorted((n, s, m, a) for n, s, m, a in node.cluster.sent),
                         [("role1", "gmailpull", "check", (1,)),
                          ("role2", "gmailpull", "check", (1,))])
        self.assertEqual((await service.since(0))["gmails"], [doc])
        self.assertEqual(await service.since(0, uid(1, 1)), {"latest": 1, "gmails": []})
        self.assertEqual(await service.since(1), {"latest": 1, "gmails": []})

        service, node = await self.start()  # a restarted logiccenter
        self.assertEqual(await service.list(), [doc])
        again = await service.send({"title": "again", "include_new": True}, [])
        self.assertEqual(again["gmail"]["id"], 2)
        self.assertEqual([g["id"] for g in (await service.since(0, uid(99, 2)))["gmails"]],
                         [2])
