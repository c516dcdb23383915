"""rl-chaos's double-online proof: the role nodes' served records (real processes) and the
checker that assembles them into intervals and finds overlaps (pure)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from twisted.trial import unittest

from rltwist.chaos import records
from rltwist.nodes.role import served
from tests.login_util import LoginCase, offline
from tests.util import wait_for


def ev(kind: str, userid: int, gen: int, node: str, t: float) -> records.Event:
    return records.Event(kind, userid, gen, node, t)


class Checker(unittest.TestCase):
    def test_parse_reads_the_lines_the_role_node_writes(self) -> None:
        line = served.START_FORMAT.format(userid=65537, generation=4, node="role1",
                                          t=12.5)
        end = served.END_FORMAT.format(userid=65537, generation=4, node="role1", t=13.25)
        text = f"2026 [rltwist.nodes.role.served#info] {line}\nnoise\nx {end}\n"
        self.assertEqual(records.parse(text), [ev("start", 65537, 4, "role1", 12.5),
                                               ev("end", 65537, 4, "role1", 13.25)])

    def test_consecutive_sessions_do_not_overlap(self) -> None:
        spans = records.intervals([
            ev("start", 1, 1, "role1", 1.0), ev("end", 1, 1, "role1", 2.0),
            ev("start", 1, 2, "role2", 2.0), ev("end", 1, 2, "role2", 3.0)], {}, now=10)
        self.assertEqual([s.how for s in spans], ["logout", "logout"])
        self.assertEqual(records.overlaps(spans), [])

    def test_an_open_interval_overlaps_a_later_one(self) -> None:
        spans = records.intervals([
            ev("start", 1, 1, "role1", 1.0),
            ev("start", 1, 2, "role2", 5.0), ev("end", 1, 2, "role2", 6.0)], {}, now=10)
        found = records.overlaps(spans)
        self.assertEqual(len(found), 1)
        self.assertEqual(found[0].seconds, 1.0)
        self.assertIn("online twice", found[0].describe())

    def test_a_killed_node_ends_its_open_intervals_at_the_kill(self) -> None:
        events = [ev("start", 1, 1, "role1", 1.0), ev("start", 1, 2, "role2", 5.0)]
        spans = records.intervals(events, {"role1": [0.5, 4.0]}, now=10)
        self.assertEqual([(s.end, s.how) for s in spans], [(4.0, "killed"), (10, "open")])
        self.assertEqual(records.overlaps(spans), [])
        late_kill = records.intervals(events, {"role1": [6.0]}, now=10)
        self.assertEqual(len(records.overlaps(late_kill)), 1)

    def test_other_players_and_an_end_before_the_start(self) -> None:
        spans = records.intervals([
            ev("start", 1, 1, "role1", 1.0), ev("start", 2, 1, "role2", 1.5),
            ev("start", 3, 7, "role1", 3.0), ev("end", 3, 7, "role1", 2.0)], {}, now=10)
        self.assertEqual(records.overlaps(spans), [])
        self.assertEqual(spans[2].end, 3.0)  # refused writes before the Auth finished


class _Flow:
    def __init__(self, last_answer: float | None) -> None:
        self.last_answer = last_answer


def gateway(allowed: bool, last_answer: float | None, reactor_now: float) -> Any:
    cluster = SimpleNamespace(heartbeat_interval=0.5, heartbeat_misses=3)
    node = SimpleNamespace(name="role1", slaveflow=_Flow(last_answer),
                           config=SimpleNamespace(cluster=cluster),
                           reactor=SimpleNamespace(seconds=lambda: reactor_now))
    return SimpleNamespace(node=node, writes_allowed=lambda: allowed)


class ServedUntil(unittest.TestCase):
    def test_now_while_writes_are_allowed(self) -> None:
        before = time.monotonic()
        self.assertGreaterEqual(served.served_until(gateway(True, 100.0, 101.0)), before)

    def test_when_writes_stopped_for_a_node_without_master(self) -> None:
        # last answered heartbeat sent at 100, bound 1.5 s: refusing since 101.5; now 120
        now = time.monotonic()
        until = served.served_until(gateway(False, 100.0, 120.0))
        self.assertLess(abs(now - until - 18.5), 0.5)

    def test_never_later_than_now(self) -> None:
        before = time.monotonic()
        until = served.served_until(gateway(False, 119.9, 120.0))  # dropping, fresh answer
        self.assertGreaterEqual(until, before)
        self.assertLessEqual(until, time.monotonic())


class ServedRecords(LoginCase):
    """Real role nodes write one start at Auth and one end when the player goes offline."""

    def events(self) -> list[records.Event]:
        return records.read_logs(self.lc.run_dir / f"{n}.log" for n in ("role1", "role2"))

    async def test_a_session_is_one_closed_interval_and_a_relogin_does_not_overlap(
            self) -> None:
        host, port = self.login_address()
        first = self.client("served-a")
        before = time.monotonic()
        await first.play(host, port)
        userid = first.login_response.userid
        starts = await wait_for(lambda: [e for e in self.events() if e.kind == "start"], 10,
                                "a served_start record")
        self.assertEqual(len(starts), 1)
        self.assertEqual(starts[0].userid, userid)
        self.assertGreaterEqual(starts[0].t, before)
        first.close()
        await wait_for(lambda: offline(self, userid), 10, "the logout")
        await wait_for(lambda: [e for e in self.events() if e.kind == "end"], 10,
                       "a served_end record")
        second = self.client("served-a")
        await second.play(host, port)
        await wait_for(lambda: len([e for e in self.events() if e.kind == "start"]) == 2, 10,
                       "the second served_start record")
        spans = records.intervals(self.events(), {}, now=time.monotonic())
        self.assertEqual(sorted(s.how for s in spans), ["logout", "open"])
        self.assertEqual(records.overlaps(spans), [])
        self.assertLess(spans[0].generation, spans[1].generation)
