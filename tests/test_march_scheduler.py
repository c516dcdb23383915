"""The map node's timed-event scheduler, clock-driven: one delayed call however many
events, events due during downtime run at start in time order, pause keeps them."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.nodes.map.scheduler import Scheduler


class Scheduling(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1000)  # now_ms = 1,000,000
        self.s = Scheduler(self.clock)
        self.ran: list[tuple[str, Any, int]] = []
        for kind in ("arrive", "home"):
            self.s.on(kind, lambda key, kind=kind: self.ran.append(
                (kind, key, self.s.now_ms())))

    def now(self) -> int:
        return self.s.now_ms()

    def test_one_delayed_call_for_many_events(self) -> None:
        for i in range(10_000):
            self.s.schedule(i, self.now() + 1000 + i, "arrive")
        self.s.start()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(1.0)  # the first is due
        self.assertEqual(self.ran, [("arrive", 0, self.now())])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)  # 10 s: everything
        self.assertEqual(len(self.ran), 10_000)
        self.assertEqual([k for _, k, _ in self.ran], list(range(10_000)))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_earlier_event_rearms_the_call(self) -> None:
        self.s.start()
        self.s.schedule("a", self.now() + 5000, "arrive")
        call = self.clock.getDelayedCalls()[0]
        self.s.schedule("b", self.now() + 1000, "arrive")
        self.assertEqual(self.clock.getDelayedCalls(), [call])  # reset, not a second one
        self.assertAlmostEqual(call.getTime(), self.clock.seconds() + 1.0)
        self.clock.advance(1)
        self.assertEqual([k for _, k, _ in self.ran], ["b"])
        self.clock.advance(4)
        self.assertEqual([k for _, k, _ in self.ran], ["b", "a"])

    def test_rescheduling_a_key_replaces_its_event(self) -> None:
        self.s.start()
        self.s.schedule(7, self.now() + 1000, "arrive")
        self.s.schedule(7, self.now() + 3000, "home")  # a recall: the arrival never comes
        self.assertEqual(self.s.pending(7), (self.now() + 3000, "home"))
        self.clock.advance(2)
        self.assertEqual(self.ran, [])
        self.clock.advance(1)
        self.assertEqual([(k, key) for k, key, _ in self.ran], [("home", 7)])
        self.assertIsNone(self.s.pending(7))

    def test_cancel(self) -> None:
        self.s.start()
        self.s.schedule(1, self.now() + 1000, "arrive")
        self.assertTrue(self.s.cancel(1))
        self.assertFalse(self.s.cancel(1))
        self.clock.advance(5)
        self.assertEqual(self.ran, [])
        self.assertEqual(len(self.s), 0)

    def test_events_due_while_down_run_at_start_in_time_order(self) -> None:
        """A restarted node schedules its owners' saved events (some long past) before
        start(): start runs those due, oldest first (ties in scheduling order), then the
        later ones at their time."""
        now = self.now()
        self.s.schedule("late", now + 2000, "home")
        self.s.schedule("c", now - 100, "arrive")
        self.s.schedule("a", now - 5000, "arrive")
        self.s.schedule("b1", now - 300, "home")
        self.s.schedule("b2", now - 300, "arrive")
        self.assertEqual(self.clock.getDelayedCalls(), [])  # created paused
        self.s.start()
        self.clock.advance(0)
        self.assertEqual([k for _, k, _ in self.ran], ["a", "b1", "b2", "c"])
        self.clock.advance(2)
        self.assertEqual([k for _, k, _ in self.ran][-1], "late")

    def test_pause_keeps_events_and_resume_runs_them_in_order(self) -> None:
        self.s.start()
        self.s.schedule("x", self.now() + 1000, "arrive")
        self.s.schedule("y", self.now() + 2000, "arrive")
        self.s.pause()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.ran, [])
        self.s.schedule("z", self.now() - 1, "home")  # scheduled while paused: waits too
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.s.start()
        self.clock.advance(0)
        self.assertEqual([k for _, k, _ in self.ran], ["x", "y", "z"])

    def test_batches_yield_the_reactor(self) -> None:
        s = Scheduler(self.clock, batch=100)
        seen: list[int] = []
        s.on("arrive", seen.append)
        for i in range(250):
            s.schedule(i, s.now_ms() - 1, "arrive")
        s.start()

        def one_turn() -> None:  # what the reactor does: run the one armed call
            [call] = self.clock.getDelayedCalls()
            self.clock.calls.remove(call)
            call.func(*call.args, **call.kw)

        one_turn()
        self.assertEqual(len(seen), 100)
        one_turn()
        self.assertEqual(len(seen), 200)
        one_turn()
        self.assertEqual(seen, list(range(250)))

    def test_a_failing_handler_does_not_stop_the_others(self) -> None:
        def boom(key: Any) -> None:
            raise RuntimeError("boom")

        self.s.on("bad", boom)
        self.s.schedule(1, self.now(), "bad")
        self.s.schedule(2, self.now(), "arrive")
        self.s.start()
        self.clock.advance(0)
        self.assertEqual([k for _, k, _ in self.ran], [2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_async_handlers_are_counted_until_done(self) -> None:
        gate: defer.Deferred[None] = defer.Deferred()

        async def slow(key: Any) -> None:
            await gate

        self.s.on("slow", slow)
        self.s.schedule(1, self.now(), "slow")
        self.s.start()
        self.clock.advance(0)
        self.assertEqual(len(self.s.inflight), 1)
        drained = self.s.drained()
        self.assertNoResult(drained)
        gate.callback(None)
        self.successResultOf(drained)
        self.assertEqual(self.s.inflight, set())

    def test_unknown_kind_is_refused(self) -> None:
        with self.assertRaises(KeyError):
            self.s.schedule(1, self.now(), "nope")
