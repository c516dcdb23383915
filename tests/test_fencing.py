"""A role node cut off from master (issue 10 item 5) and a fresh master after a Redis loss
(item 6).

The timing is driven by ``task.Clock``: a real ``Node`` and its ``Slaveflow`` (or master's
``Masterflow`` and ``RoleRegistry``) whose cluster calls go to a fake peer the test steers.
The crash cases with real processes are in tests/test_fencing_cluster.py.
"""

from __future__ import annotations

import tomllib
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cluster import CallTimeout, NodeUnreachable
from rltwist.config import config_from_dict
from rltwist.launcher import local_config, render_config
from rltwist.nodes.common.node import Node

INTERVAL, MISSES, FENCE_AFTER = 1.0, 3, 10.0
WRITE_BOUND = INTERVAL * MISSES


def make_node(name: str, clock: task.Clock, names: tuple[str, ...] = (), **cluster: Any) -> Node:
    sections = local_config([name, *names], overrides={"cluster": {
        "heartbeat_interval": INTERVAL, "heartbeat_misses": MISSES,
        "fence_after": FENCE_AFTER, **cluster}})
    config = config_from_dict(tomllib.loads(render_config(sections)))
    return Node(config, config.node(name), reactor=clock)


class FakeMaster:
    """Stands in for the cluster layer of a slave: answers master's side of the protocol.

    ``mode`` is "up" (answers at once), "refused" (fails at once with NodeUnreachable, as
    when master's port is closed) or "hung" (no answer: the call times out on the clock).
    ``reply`` is what a heartbeat gets; ``known`` False plays a freshly restarted master.
    """

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.mode = "up"
        self.known: set[str] = set()
        self.extra: dict[str, Any] = {}
        self.register_extra: dict[str, Any] = {}
        self.delay = 0.0  # how long an answer takes in mode "up"
        self.calls: list[tuple[float, str]] = []
        self.answered: list[float] = []  # send times of the heartbeats master answered

    def set_address(self, name: str, host: str, port: int) -> None:
        pass

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        sent = self.clock.seconds()
        self.calls.append((sent, method))
        if self.mode == "refused":
            return defer.fail(NodeUnreachable(node, service, method, "connection refused"))
        if self.mode == "hung":
            d: defer.Deferred[Any] = defer.Deferred()
            self.clock.callLater(timeout or 30.0, lambda: d.called or d.errback(
                CallTimeout(node, service, method, timeout or 30.0)))
            return d
        reply = self._answer(method, args)
        if method == "heartbeat" and reply.get("known"):
            self.answered.append(sent)
        if not self.delay:
            return defer.succeed(reply)
        return task.deferLater(self.clock, self.delay, lambda: reply)

    def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "register":
            self.known.add(args[0]["name"])
            reply = {"nodes": {}, "login_open": True, **self.register_extra}
            self.register_extra = {}
            return reply
        if method == "heartbeat":
            if args[0] not in self.known:
                return {"known": False}
            reply, self.extra = {"known": True, **self.extra}, {}
            return reply
        return {}  # ready

    def heartbeats(self) -> int:
        return sum(1 for _, m in self.calls if m == "heartbeat")


class SlaveCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.node = make_node("role1", self.clock)
        self.flow = self.node.slaveflow
        assert self.flow is not None
        self.master = FakeMaster(self.clock)
        self.flow.cluster = self.master  # type: ignore[assignment]
        self.fenced: list[float] = []
        self.node.add_fence_hook(lambda: self.fenced.append(self.clock.seconds()))
        self.flow.start()
        self.addCleanup(self.flow.stop)

    def advance(self, seconds: float, step: float = 0.125) -> None:
        # 0.125 is exact in binary: n steps land exactly on the ticks
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def last_answered_heartbeat(self) -> float:
        return self.master.answered[-1]


class WritesStopWithoutMaster(SlaveCase):
    def test_a_node_that_hears_from_master_allows_writes(self) -> None:
        self.assertTrue(self.node.proceeded)
        self.advance(20)
        self.assertTrue(self.node.writes_allowed)
        self.assertGreaterEqual(self.master.heartbeats(), 20)
        self.assertEqual(self.fenced, [])

    def test_writes_stop_misses_x_interval_after_the_last_answered_heartbeat_was_sent(
            self) -> None:
        self.advance(5)
        for mode in ("refused", "hung"):
            self.master.mode = mode
            answered = self.last_answered_heartbeat()
            # while the bound has not passed, writes go on; from the bound on, they stop
            while self.clock.seconds() + 0.1 < answered + WRITE_BOUND:
                self.assertTrue(self.node.writes_allowed, (mode, self.clock.seconds()))
                self.clock.advance(0.1)
            self.clock.advance(0.2)
            self.assertFalse(self.node.writes_allowed, mode)
            self.advance(3)
            self.assertFalse(self.node.writes_allowed, mode)
            # master answers again: writes are allowed from that answer on
            self.master.mode = "up"
            self.advance(INTERVAL * 3)  # a hung call still has to time out first
            self.assertTrue(self.node.writes_allowed, mode)
        self.assertEqual(self.fenced, [])

    def test_the_bound_counts_from_when_the_answered_heartbeat_was_sent(self) -> None:
        # master marks a node down when it has not *received* a heartbeat for the bound;
        # the node counts from when it *sent* the last answered one, so however late the
        # answer arrived, the node stops writing before master can mark it down.
        self.advance(3)
        self.master.delay = 0.9  # answers arrive just before the call's timeout
        self.advance(INTERVAL * 2)
        self.master.mode = "refused"
        self.advance(0.5)
        sent = self.last_answered_heartbeat()
        while self.clock.seconds() + 0.1 < sent + WRITE_BOUND:
            self.clock.advance(0.1)
        self.assertTrue(self.node.writes_allowed)
        self.clock.advance(0.2)
        self.assertFalse(self.node.writes_allowed)  # 0.9 s before "answer + bound"

    def test_master_node_always_allows_writes(self) -> None:
        master = make_node("master", self.clock)
        self.assertIsNone(master.slaveflow)
        self.assertTrue(master.writes_allowed)

    def test_a_node_that_never_heard_from_master_allows_no_writes(self) -> None:
        node = make_node("role2", self.clock)
        self.assertFalse(node.writes_allowed)


class FenceAfter(SlaveCase):
    def test_fence_hooks_run_once_fence_after_without_master(self) -> None:
        self.advance(5)
        self.master.mode = "refused"
        answered = self.last_answered_heartbeat()
        self.advance(FENCE_AFTER - 1)
        self.assertEqual(self.fenced, [])
        self.advance(FENCE_AFTER)
        self.assertEqual(len(self.fenced), 1)
        # not before fence_after, and at most one tick after it
        self.assertGreaterEqual(self.fenced[0], answered + FENCE_AFTER)
        self.assertLessEqual(self.fenced[0], answered + FENCE_AFTER + INTERVAL + 0.01)
        self.advance(100)
        self.assertEqual(len(self.fenced), 1)  # once per loss of master

    def test_master_restart_within_fence_after_fences_nothing(self) -> None:
        self.advance(5)
        self.master.mode = "refused"
        self.advance(FENCE_AFTER - 3)
        self.assertFalse(self.node.writes_allowed)
        # a fresh master: it knows nobody, the node registers again and is answered
        self.master.known.clear()
        self.master.mode = "up"
        self.advance(INTERVAL * 3)
        self.assertIn("role1", self.master.known)
        self.assertTrue(self.node.writes_allowed)
        self.advance(FENCE_AFTER * 3)
        self.assertEqual(self.fenced, [])
        self.assertTrue(self.node.writes_allowed)

    def test_a_later_loss_of_master_fences_again(self) -> None:
        self.advance(5)
        self.master.mode = "refused"
        self.advance(FENCE_AFTER + 2)
        self.master.mode = "up"
        self.advance(5)
        self.assertTrue(self.node.writes_allowed)
        self.master.mode = "hung"
        self.advance(FENCE_AFTER + 3)
        self.assertEqual(len(self.fenced), 2)

    def test_a_slow_fence_hook_does_not_stop_heartbeats(self) -> None:
        stuck: defer.Deferred[None] = defer.Deferred()
        self.node.add_fence_hook(lambda: stuck)
        self.advance(5)
        self.master.mode = "refused"
        self.advance(FENCE_AFTER + 2)
        self.assertEqual(len(self.fenced), 1)
        self.master.mode = "up"
        before = self.master.heartbeats()
        self.advance(10)
        self.assertGreaterEqual(self.master.heartbeats() - before, 9)
        self.assertTrue(self.node.writes_allowed)
        self.advance(self.flow.hook_warn_after)
        warnings = [e for e in self.logged if "still running" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1, self.logged)
        stuck.callback(None)

    def test_a_failing_fence_hook_is_logged_and_the_others_still_run(self) -> None:
        def broken() -> None:
            raise RuntimeError("disk on fire")

        ran: list[str] = []

        async def later() -> None:
            ran.append("later")

        self.node.fence_hooks.insert(0, broken)
        self.node.add_fence_hook(later)
        self.advance(5)
        self.master.mode = "refused"
        self.advance(FENCE_AFTER + 2)
        self.assertEqual((len(self.fenced), ran), (1, ["later"]))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def setUp(self) -> None:
        from twisted.logger import globalLogPublisher

        super().setUp()
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)


class MarkedDown(SlaveCase):
    def test_marked_down_hooks_run_beside_the_heartbeats_and_hold_writes_until_done(
            self) -> None:
        dropped: defer.Deferred[None] = defer.Deferred()
        runs: list[float] = []

        def drop() -> defer.Deferred[None]:
            runs.append(self.clock.seconds())
            return dropped

        self.node.marked_down_hooks.append(drop)
        self.advance(3)
        self.master.extra = {"was_down": True}
        self.advance(INTERVAL)
        self.assertEqual(len(runs), 1)
        before = self.master.heartbeats()
        self.advance(10)
        self.assertGreaterEqual(self.master.heartbeats() - before, 9)  # not stuck in the hook
        self.assertFalse(self.node.writes_allowed)  # the node still holds what it must drop
        dropped.callback(None)
        self.assertTrue(self.node.writes_allowed)
        self.assertEqual(len(runs), 1)

    def test_was_down_in_the_register_answer_drops_too(self) -> None:
        # a fresh master that marked this node down before it re-registered (it did not
        # answer the re-register request after a Redis loss) says so in the register reply
        runs: list[float] = []

        async def drop() -> None:
            runs.append(self.clock.seconds())

        self.node.marked_down_hooks.append(drop)
        self.advance(3)
        self.master.known.clear()
        self.master.register_extra = {"was_down": True}
        self.advance(INTERVAL * 3)
        self.assertEqual(len(runs), 1)
        self.assertTrue(self.node.writes_allowed)

    def test_was_down_again_while_dropping_runs_the_hooks_once_more(self) -> None:
        gates: list[defer.Deferred[None]] = []

        def drop() -> defer.Deferred[None]:
            gates.append(defer.Deferred())
            return gates[-1]

        self.node.marked_down_hooks.append(drop)
        self.advance(3)
        self.master.extra = {"was_down": True}
        self.advance(INTERVAL)
        self.master.extra = {"was_down": True}
        self.advance(INTERVAL)
        self.assertEqual(len(gates), 1)
        gates[0].callback(None)
        self.assertEqual(len(gates), 2)
        self.assertFalse(self.node.writes_allowed)
        gates[1].callback(None)
        self.assertTrue(self.node.writes_allowed)


# -- master after a Redis loss (issue 10 item 6) -------------------------------------------

REREGISTER_WAIT = 5.0
ASK_TIMEOUT = max(REREGISTER_WAIT, WRITE_BOUND)


class FakeRedisState:
    """The part of OnlineState that RoleRegistry uses, in memory, with a log of calls."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.available = False
        self.events: list[tuple[float, str, str]] = []

    async def get_available(self) -> bool:
        return self.available

    async def set_available(self) -> None:
        self.available = True
        self.events.append((self.clock.seconds(), "set_available", ""))

    async def register_role(self, node: str, host: str, port: int, *, fresh: bool = False
                            ) -> int:
        self.events.append((self.clock.seconds(), "register_role", node))
        return 0

    async def unregister_role(self, node: str) -> int:
        self.events.append((self.clock.seconds(), "unregister_role", node))
        return 0

    async def withdraw_role(self, node: str) -> bool:
        self.events.append((self.clock.seconds(), "withdraw_role", node))
        return True

    def times(self, what: str, node: str = "") -> list[float]:
        return [t for t, w, n in self.events if w == what and n == node]


class FakeRoleNodes:
    """Master's cluster layer: role nodes answer ``gateway.reregister`` as told.

    ``behaviour[name]`` is a number of players (answered after ``delay[name]`` seconds),
    "hung" (times out on the clock) or "refused" (fails at once)."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.behaviour: dict[str, Any] = {}
        self.delay: dict[str, float] = {}
        self.asks: list[tuple[float, str]] = []

    def set_address(self, name: str, host: str, port: int) -> None:
        pass

    def send(self, *args: Any) -> None:
        pass

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        assert (service, method) == ("gateway", "reregister"), (service, method)
        self.asks.append((self.clock.seconds(), node))
        how = self.behaviour.get(node, "refused")
        if how == "refused":
            return defer.fail(NodeUnreachable(node, service, method, "connection refused"))
        d: defer.Deferred[Any] = defer.Deferred()
        if how == "hung":
            self.clock.callLater(timeout, lambda: d.called or d.errback(
                CallTimeout(node, service, method, timeout)))
        else:
            self.clock.callLater(self.delay.get(node, 0.0), d.callback, how)
        return d

    def asked(self) -> list[str]:
        return sorted(n for _, n in self.asks)


class MasterCase(unittest.TestCase):
    """A fresh master (config: role1, role2) whose Redis has lost its keys."""

    def setUp(self) -> None:
        from rltwist.nodes.master.service import build

        self.clock = task.Clock()
        self.clock.advance(1000)  # the clock of a machine that has been up a while
        self.node = make_node("master", self.clock, names=("role1", "role2"),
                              reregister_wait=REREGISTER_WAIT)
        build(self.node)
        self.flow = self.node.masterflow  # type: ignore[attr-defined]
        self.registry = self.node.role_registry  # type: ignore[attr-defined]
        self.redis = self.registry.state = FakeRedisState(self.clock)
        self.roles = FakeRoleNodes(self.clock)
        for attr in ("call", "send", "set_address"):
            setattr(self.node.cluster, attr, getattr(self.roles, attr))
        self.start = self.clock.seconds()
        # master's ready hooks start the availability check (not awaited: with a
        # LoopingCall as a hook they may wait for it to stop)
        defer.Deferred.fromCoroutine(self.node.run_ready_hooks())
        self.addCleanup(self.registry.stopService)

    def advance(self, seconds: float, step: float = 0.125) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def register(self, name: str, proceeded: bool = True) -> dict[str, Any]:
        info = {"name": name, "host": "127.0.0.1", "port": 1, "metrics_port": 2,
                "client_port": 3, "pid": 4242, "proceeded": proceeded}
        return self.successResultOf(defer.Deferred.fromCoroutine(self.flow.register(info)))

    def heartbeat(self, name: str) -> dict[str, Any]:
        """The parts of master's heartbeat reply these tests are about."""
        reply = self.flow.heartbeat(name, {"proceeded": True})
        return {k: reply[k] for k in ("known", "was_down") if k in reply}


class MasterAfterRedisLoss(MasterCase):
    def test_a_fresh_master_waits_reregister_wait_then_asks_every_role_node_at_once(
            self) -> None:
        self.roles.behaviour = {"role1": 3, "role2": 4, "role3": 5}
        self.advance(1)
        self.register("role1")
        self.advance(1)
        self.register("role3")  # joined at run time: not in master's config
        self.advance(REREGISTER_WAIT - 2.25)
        self.assertEqual((self.roles.asks, self.redis.available), ([], False))
        self.advance(1.5)
        self.assertEqual(self.roles.asked(), ["role1", "role2", "role3"])
        self.assertEqual(len({t for t, _ in self.roles.asks}), 1)  # in parallel
        self.assertGreaterEqual(self.roles.asks[0][0], self.start + REREGISTER_WAIT)
        self.assertTrue(self.redis.available)
        self.assertEqual(self.registry.restored, {"role1", "role2", "role3"})
        self.assertEqual(self.redis.times("unregister_role", "role2"), [])

    def test_a_hung_role_node_is_marked_down_and_logins_resume_within_a_bound(
            self) -> None:
        self.roles.behaviour = {"role1": 3, "role2": "hung"}
        self.register("role1")
        self.advance(REREGISTER_WAIT + ASK_TIMEOUT - 0.5)
        self.assertFalse(self.redis.available)
        self.advance(INTERVAL + 0.5)
        self.assertTrue(self.redis.available)
        [set_at] = self.redis.times("set_available")
        self.assertLessEqual(set_at, self.start + REREGISTER_WAIT + INTERVAL + ASK_TIMEOUT)
        # role2 never registered: it is down (as if crashed) and its players were cleared
        # in Redis before logins resumed
        record = self.flow.nodes["role2"]
        self.assertEqual((record.state, record.placeholder), ("down", True))
        [cleared_at] = self.redis.times("unregister_role", "role2")
        self.assertLessEqual(cleared_at, set_at)
        # role2 wakes up: it must register, and is then told to drop what it holds
        self.assertEqual(self.heartbeat("role2"), {"known": False})
        self.assertTrue(self.register("role2").get("was_down"))
        self.assertEqual(self.flow.nodes["role2"].state, "up")
        self.assertEqual(self.heartbeat("role2"), {"known": True})

    def test_a_registered_role_node_that_fails_the_ask_is_marked_down(self) -> None:
        self.roles.behaviour = {"role1": 3, "role2": "refused"}
        self.register("role1")
        self.register("role2")
        self.advance(REREGISTER_WAIT + INTERVAL)
        self.assertTrue(self.redis.available)
        self.assertEqual(self.flow.nodes["role2"].state, "down")
        self.assertEqual(len(self.redis.times("unregister_role", "role2")), 1)
        self.assertEqual(self.heartbeat("role2"), {"known": True, "was_down": True})

    def test_a_role_node_registering_during_the_asks_is_asked_too(self) -> None:
        self.roles.behaviour = {"role1": 3, "role2": 1, "role3": 2}
        self.roles.delay = {"role1": 2.0}
        self.register("role1")
        self.advance(REREGISTER_WAIT + 0.5)
        self.assertEqual(self.roles.asked(), ["role1", "role2"])
        self.assertNotIn("was_down", self.register("role3"))
        self.advance(3)
        self.assertEqual(self.roles.asked(), ["role1", "role2", "role3"])
        self.assertTrue(self.redis.available)

    def test_a_role_node_registering_after_the_write_back_drops_what_it_holds(
            self) -> None:
        self.roles.behaviour = {"role1": 3, "role2": 4}
        self.register("role1")
        self.advance(REREGISTER_WAIT + INTERVAL)
        self.assertTrue(self.redis.available)
        # its players were not written back: they may log in elsewhere now
        self.assertTrue(self.register("role4").get("was_down"))
        # a new process holds nothing; a node that wrote back keeps what it has
        self.assertNotIn("was_down", self.register("role5", proceeded=False))
        self.assertNotIn("was_down", self.register("role1"))

    def test_a_cold_start_does_not_wait_when_every_role_node_is_a_new_process(
            self) -> None:
        self.roles.behaviour = {"role1": 0, "role2": 0}
        self.advance(0.5)
        self.register("role1", proceeded=False)
        self.assertEqual(self.roles.asks, [])
        self.register("role2", proceeded=False)  # the last configured one: go at once
        self.assertEqual(self.roles.asked(), ["role1", "role2"])
        self.clock.advance(0)  # their answers
        self.assertTrue(self.redis.available)
        self.assertLess(self.redis.times("set_available")[0], self.start + 1)

    def test_one_role_node_that_had_proceeded_means_waiting_for_the_others(self) -> None:
        self.roles.behaviour = {"role1": 0, "role2": 2}
        self.register("role1", proceeded=False)
        self.register("role2")
        self.advance(REREGISTER_WAIT - 0.5)
        self.assertEqual((self.roles.asks, self.redis.available), ([], False))
        self.advance(INTERVAL)
        self.assertTrue(self.redis.available)

    def test_with_redis_intact_nobody_is_asked_or_dropped(self) -> None:
        self.redis.available = True
        self.roles.behaviour = {"role1": 3}
        self.register("role1")
        self.advance(REREGISTER_WAIT * 4)
        self.assertEqual(self.roles.asks, [])
        self.assertNotIn("was_down", self.register("role3"))
        self.assertNotIn("role2", self.flow.nodes)

    def test_a_redis_loss_under_a_running_master_is_handled_at_once(self) -> None:
        self.redis.available = True
        self.roles.behaviour = {"role1": 3, "role2": 4}
        self.register("role1")
        self.register("role2")
        self.advance(REREGISTER_WAIT * 4)
        lost_at = self.clock.seconds()
        self.redis.available = False
        self.advance(INTERVAL)
        self.assertEqual(self.roles.asked(), ["role1", "role2"])
        self.assertLessEqual(self.roles.asks[0][0], lost_at + INTERVAL)
        self.assertTrue(self.redis.available)
