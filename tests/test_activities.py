"""Global activities without processes: the rules (rltwist.game.activitysystem), the game
table's validator, and logiccenter's activities service on a test clock over real
embedded storage (one timer, reports at start and end, reload after a restart)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cluster.routing import Routing
from rltwist.ecs.sharedata import shared
from rltwist.game.activitysystem import BadActivity, system
from rltwist.game.tables import VALIDATORS, validate_activities
from rltwist.nodes.common import sharedatad
from rltwist.nodes.logiccenter.account import Account
from rltwist.nodes.logiccenter.activities import Activities
from rltwist.protocols import REGISTRY, pb
from rltwist.storage.embedded import EmbeddedBackend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLES = shared(os.path.join(REPO, "etc", "game"), VALIDATORS).snapshot
NOW = 1_700_000_000_000
S = 1000


def check(body: dict[str, Any], now: int = NOW) -> dict[str, Any]:
    return system.check(body, TABLES, [1, 2], now)


class Rules(unittest.TestCase):
    def test_start_and_end_by_offset_or_time_with_parameter_defaults(self) -> None:
        a = check({"kind": "login_bonus", "start_in": 10, "duration": 60, "regions": [2, 1],
                   "params": {"gold": 7}})
        self.assertEqual((a["start_ms"], a["end_ms"], a["regions"], a["params"]),
                         (NOW + 10 * S, NOW + 70 * S, [1, 2], {"gold": 7, "times": 1}))
        b = check({"kind": "world_boss", "start_ms": NOW - S, "end_ms": NOW + S})
        self.assertEqual((b["start_ms"], b["end_ms"], b["regions"], b["params"]),
                         (NOW - S, NOW + S, [], {}))

    def test_bad_requests_name_what_is_wrong(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"kind": "nope", "duration": 5}, "kind"),
            ({"duration": 5}, "kind"),
            ({"kind": "world_boss"}, "end_ms or duration"),
            ({"kind": "world_boss", "duration": 5, "end_ms": NOW + 9 * S}, "end_ms or"),
            ({"kind": "world_boss", "start_in": 1, "start_ms": NOW, "duration": 5}, "not both"),
            ({"kind": "world_boss", "duration": 86_401}, "1-86400 seconds"),
            ({"kind": "world_boss", "start_ms": NOW - 10 * S, "end_ms": NOW}, "future"),
            ({"kind": "world_boss", "duration": -1}, "duration"),
            ({"kind": "world_boss", "duration": 5, "regions": [3]}, "region 3"),
            ({"kind": "world_boss", "duration": 5, "regions": 1}, "regions"),
            ({"kind": "login_bonus", "duration": 5, "params": {"gold": 0}}, "gold"),
            ({"kind": "login_bonus", "duration": 5, "params": {"silver": 1}}, "silver"),
            ({"kind": "world_boss", "duration": 5, "colour": 1}, "colour"),
        ]
        for body, words in cases:
            with self.assertRaises(BadActivity, msg=repr(body)) as e:
                check(body)
            self.assertIn(words, str(e.exception), body)

    def test_states_move_forward_and_a_missed_run_is_reported_ended(self) -> None:
        doc = system.make(1, check({"kind": "world_boss", "start_in": 10, "duration": 10}),
                          NOW)
        self.assertEqual(system.due_ms(doc), NOW + 10 * S)
        self.assertIsNone(system.step(doc, NOW + 9 * S))
        self.assertEqual(system.step(doc, NOW + 10 * S), "started")
        self.assertEqual(system.due_ms(doc), NOW + 20 * S)
        self.assertEqual(system.step(doc, NOW + 20 * S), "ended")
        self.assertIsNone(system.due_ms(doc))
        self.assertIsNone(system.step(doc, NOW + 30 * S))
        missed = system.make(2, check({"kind": "world_boss", "start_in": 10, "duration": 10}),
                             NOW)
        self.assertEqual(system.step(missed, NOW + 60 * S), "ended")
        self.assertEqual(missed["state"], "ended")

    def test_stop_and_extend(self) -> None:
        doc = system.make(1, check({"kind": "world_boss", "duration": 100}), NOW)
        self.assertEqual(system.extend(doc, {"by": 50}, TABLES, NOW), None)  # scheduled
        system.step(doc, NOW)
        self.assertEqual(system.extend(doc, {"end_ms": NOW + 200 * S}, TABLES, NOW),
                         "extended")
        self.assertEqual(doc["end_ms"], NOW + 200 * S)
        for body, words in [({"by": 0}, "later"), ({"end_ms": NOW + S}, "later"),
                            ({}, "end_ms or by"), ({"by": 90_000}, "seconds"),
                            ({"until": 1}, "until")]:
            with self.assertRaises(BadActivity, msg=repr(body)) as e:
                system.extend(doc, body, TABLES, NOW)
            self.assertIn(words, str(e.exception))
        self.assertEqual(system.stop(doc, NOW + 5 * S), "ended")
        self.assertEqual((doc["state"], doc["stopped"], doc["end_ms"]),
                         ("ended", True, NOW + 5 * S))
        self.assertRaises(BadActivity, system.stop, doc, NOW)
        self.assertRaises(BadActivity, system.extend, doc, {"by": 1}, TABLES, NOW)
        cancelled = system.make(2, check({"kind": "world_boss", "start_in": 9,
                                          "duration": 9}), NOW)
        self.assertIsNone(system.stop(cancelled, NOW))  # never started: nothing to report

    def test_current_is_running_for_one_of_the_regions(self) -> None:
        doc = system.make(1, check({"kind": "world_boss", "duration": 9, "regions": [2]}),
                          NOW)
        self.assertFalse(system.current(doc, [2]))
        system.step(doc, NOW)
        self.assertTrue(system.current(doc, [2]))
        self.assertFalse(system.current(doc, [1]))
        doc["regions"] = []
        self.assertTrue(system.current(doc, [1]))


class Table(unittest.TestCase):
    def test_the_shipped_table_is_valid_and_mistakes_are_named(self) -> None:
        self.assertEqual(list(validate_activities(TABLES["activities"])), [])
        bad = {"a": {"title": "", "min_seconds": 0, "max_seconds": 5, "x": 1,
                     "params": {"p": {"min": 5, "max": 1, "default": 3},
                                "q": {"min": 1, "max": 2, "default": "x"}}},
               "b": {"title": "B", "min_seconds": 10, "max_seconds": 5}}
        found = dict(validate_activities(bad))
        self.assertEqual(sorted(found), ["a.min_seconds", "a.params.p", "a.params.q",
                                         "a.title", "a.x", "b.max_seconds"])


class FakeCluster:
    def __init__(self) -> None:
        self.addresses = {n: ("127.0.0.1", 1) for n in
                          ("master", "logiccenter", "map1", "map2", "role1", "role2")}
        self.sent: list[tuple[str, str, str, tuple[Any, ...]]] = []
        self.routing = Routing()

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.sent.append((node, service, method, args))

    def notified(self) -> list[tuple[str, int, list[int] | None]]:
        """(event, activity id, regions) of each ActivityNotify broadcast (once per role
        node: taken from role1's)."""
        found = []
        for node, service, method, args in self.sent:
            if (node, service, method) == ("role1", "gateway", "broadcast"):
                msgid, body, _, _, _, regions = args
                assert msgid == REGISTRY.push_ids[pb.ActivityNotify]
                note = pb.ActivityNotify.FromString(body)
                found.append((pb.ActivityEvent.Name(note.event), note.activity.id, regions))
        self.sent.clear()
        return found


class FakeNode:
    def __init__(self, path: str, clock: task.Clock) -> None:
        self.db = EmbeddedBackend(path)
        self.cluster = FakeCluster()
        self.reactor = clock
        self.registry = CollectorRegistry()

    def database(self, name: str) -> EmbeddedBackend:
        return self.db


class Service(unittest.TestCase):
    def setUp(self) -> None:
        self.patch(sharedatad, "_CURRENT", shared(os.path.join(REPO, "etc", "game"),
                                                  VALIDATORS))
        self.clock = task.Clock()
        self.clock.advance(NOW / 1000)
        self.path = os.path.join(self.mktemp(), "globaldb.sqlite3")
        os.makedirs(os.path.dirname(self.path))

    async def start(self) -> tuple[Activities, FakeCluster]:
        node = FakeNode(self.path, self.clock)
        self.addCleanup(lambda: defer.ensureDeferred(node.db.close()))
        service = Activities(node, Account(node), clock=self.clock)  # type: ignore[arg-type]
        service.cluster = node.cluster  # type: ignore[assignment]
        await service.loaded()
        return service, node.cluster

    async def test_one_timer_reports_starts_and_ends_and_a_restart_reports_a_missed_end(
            self) -> None:
        self.svc, cluster = await self.start()
        made = [await self.svc.create({"kind": "world_boss", "start_in": 10,
                                       "duration": 10, "regions": [2]}),
                await self.svc.create({"kind": "login_bonus", "start_in": 0,
                                       "duration": 100})]
        self.assertTrue(all(m["ok"] for m in made), made)
        a, b = (m["activity"]["id"] for m in made)
        # b started at its creation, reported to everyone; a is waiting
        self.assertEqual(cluster.notified(), [("ACTIVITY_STARTED", b, None)])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one timer, not one each
        self.assertEqual(await self.svc.current([2]), [self.svc.docs[b]])

        self.clock.advance(10.01)
        # the timer's advance reports at once (its save then runs in storage's thread)
        self.assertEqual(cluster.notified(), [("ACTIVITY_STARTED", a, [2])])
        await self.svc.advance()  # queued behind the timer's: returns once it saved
        self.assertEqual(self.svc.unsaved, set())
        self.assertEqual([d["id"] for d in await self.svc.current([2])], [a, b])
        self.assertEqual([d["id"] for d in await self.svc.current([1])], [b])
        extended = await self.svc.extend(a, {"by": 30})
        self.assertTrue(extended["ok"], extended)
        self.assertEqual(cluster.notified(), [("ACTIVITY_EXTENDED", a, [2])])
        self.assertEqual((await self.svc.extend(999, {"by": 1}))["error"], "unknown_activity")
        self.assertEqual((await self.svc.extend(a, {"by": 0}))["error"], "bad_field")
        stopped = await self.svc.stop(b)
        self.assertEqual((stopped["ok"], stopped["activity"]["state"]), (True, "ended"))
        self.assertEqual(cluster.notified(), [("ACTIVITY_ENDED", b, None)])
        self.assertEqual((await self.svc.stop(b))["error"], "ended")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        registry = self.svc.node.registry
        self.assertEqual([registry.get_sample_value("rl_activity_events_total", {"event": e})
                          for e in ("started", "extended", "ended")], [2, 1, 1])
        self.assertEqual([registry.get_sample_value("rl_activities", {"state": s})
                          for s in ("scheduled", "running", "ended")], [0, 1, 1])

        # "restart": a new service on the same storage, 100 s later (a ended meanwhile)
        self.svc.stop_timer()
        self.clock.advance(100)
        self.svc, cluster = await self.start()
        self.assertEqual(cluster.notified(), [("ACTIVITY_ENDED", a, [2])])
        self.assertEqual([d["state"] for d in await self.svc.list()], ["ended", "ended"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # and that end was saved: a second restart reports nothing
        self.svc, cluster = await self.start()
        self.assertEqual(cluster.notified(), [])


class Wiring(unittest.TestCase):
    def test_the_bot_action_builds_the_request_the_role_node_answers(self) -> None:
        from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script
        from rltwist.features import activities as feature
        from rltwist.nodes.role.requests import REQUESTS

        message = ACTIONS["activity_list"].build(BotIdentity(0, "o", 65537, "ab"))
        self.assertIsInstance(message, pb.ActivityList)
        self.assertEqual(REGISTRY.request_ids[pb.ActivityList], 1100)
        self.assertIs(REQUESTS[pb.ActivityList], feature.activity_list)
        self.assertEqual(parse_script("activity_list*2"), ("activity_list",) * 2)
