"""Master and slaveflow rules, driven by ``task.Clock`` (issue 11, items 9-11): the start
order per region, catching up on missed broadcasts, decommissioning a node, and orderly
stops that are not crashes.

A real ``Node`` with its ``Masterflow`` (and ``RoleRegistry``), or its ``Slaveflow``, whose
cluster calls go to fakes the test steers. The same behaviour with real processes is in
tests/test_lifecycle.py.
"""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.config import starts_after
from tests.test_fencing import INTERVAL, MISSES, FakeMaster, FakeRedisState, make_node

SILENCE = INTERVAL * MISSES  # master marks a node down after this without a heartbeat


def info(name: str, proceeded: bool = True, port: int = 1, **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "metrics_port": 2,
            "client_port": 3, "pid": 4242, "proceeded": proceeded, **extra}


class FakeCluster:
    """Master's cluster layer: records the sends (broadcasts) and forgets nodes."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, tuple[Any, ...]]] = []
        self.removed: list[str] = []
        self.addresses: dict[str, tuple[str, int]] = {}

    def set_address(self, name: str, host: str, port: int) -> None:
        self.addresses[name] = (host, port)

    def remove_node(self, name: str) -> None:
        self.removed.append(name)
        self.addresses.pop(name, None)

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.sent.append((node, service, method, args))

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        return defer.succeed(0)  # gateway.reregister: nobody online


class MasterCase(unittest.TestCase):
    """master of a config with two regions and a role and a login node."""

    names = ("logiccenter", "map1", "guild1", "mail1", "map2", "guild2", "role1", "login1")

    def setUp(self) -> None:
        from rltwist.nodes.master.service import build

        self.clock = task.Clock()
        self.node = make_node("master", self.clock, names=self.names)
        build(self.node)
        self.flow = self.node.masterflow  # type: ignore[attr-defined]
        self.registry = self.node.role_registry  # type: ignore[attr-defined]
        self.redis = self.registry.state = FakeRedisState(self.clock)
        self.redis.available = True
        self.cluster = FakeCluster()
        for attr in ("call", "send", "set_address", "remove_node"):
            setattr(self.node.cluster, attr, getattr(self.cluster, attr))
        self.down: list[str] = []
        self.flow.down_hooks.append(lambda r: self.down.append(r.name))
        self.flow.start()
        self.addCleanup(self.flow.stop)

    def advance(self, seconds: float, step: float = 0.125) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def register(self, name: str, proceeded: bool = True, **extra: Any) -> dict[str, Any]:
        return self.successResultOf(defer.Deferred.fromCoroutine(
            self.flow.register(info(name, proceeded, **extra))))

    def heartbeat(self, name: str, **status: Any) -> dict[str, Any]:
        return self.flow.heartbeat(name, {"proceeded": True, **status})

    def state(self, name: str) -> str:
        return self.flow.nodes[name].state

    def waits(self, name: str) -> list[str]:
        """What master tells waiting node *name* it waits for (its heartbeat reply)."""
        return list(self.heartbeat(name, proceeded=False).get("waiting_for", []))


# -- item 9: start order per region -------------------------------------------------------


class StartOrderPerRegion(MasterCase):
    def test_the_rule(self) -> None:
        self.assertTrue(starts_after("guild2", "map2"))
        self.assertTrue(starts_after("guild2", "logiccenter"))
        self.assertFalse(starts_after("guild2", "map1"))
        self.assertFalse(starts_after("guild1", "mail1"))  # later kind of its own region
        self.assertFalse(starts_after("map1", "master"))  # master answers: it is up
        for pool in ("role1", "login1"):
            self.assertTrue(starts_after(pool, "logiccenter"), pool)
            for region in ("map1", "rolecity2", "guild1"):
                self.assertFalse(starts_after(pool, region), (pool, region))
        self.assertFalse(starts_after("login1", "role1"))

    def test_a_region_that_is_down_blocks_neither_another_region_nor_the_pools(
            self) -> None:
        self.register("logiccenter")
        self.register("map1")
        # map2 never starts: region 1 and the pools go on; guild2 waits for it alone
        for name in ("guild1", "guild2", "role1", "login1"):
            self.register(name, proceeded=False)
        for name in ("guild1", "role1", "login1"):
            self.assertEqual(self.waits(name), [], name)
        self.assertEqual(self.waits("guild2"), ["map2"])

    def test_the_pools_wait_for_the_global_nodes(self) -> None:
        self.register("role1", proceeded=False)
        self.assertEqual(self.waits("role1"), ["logiccenter"])
        self.register("logiccenter")
        self.assertEqual(self.waits("role1"), [])

    def test_a_region_node_joining_at_run_time_is_waited_for_by_its_region_only(
            self) -> None:
        self.register("logiccenter")
        self.register("map3", proceeded=False)  # a region not in master's config
        self.register("guild3", proceeded=False)
        self.register("guild1", proceeded=False)
        self.assertEqual(self.waits("guild3"), ["map3"])
        self.assertEqual(self.waits("guild1"), ["map1"])


# -- item 10: catch-up and decommission ---------------------------------------------------


class CatchUpOnMaster(MasterCase):
    def test_heartbeat_replies_carry_the_table_version_and_login_open(self) -> None:
        self.register("map1")
        first = self.heartbeat("map1")
        self.assertEqual((first["known"], first["login_open"]), (True, True))
        self.assertEqual(self.heartbeat("map1")["table_version"], first["table_version"])
        self.register("guild1")  # the table changed: a new version
        second = self.heartbeat("map1")
        self.assertNotEqual(second["table_version"], first["table_version"])
        self.flow.set_login_open(False)
        self.assertFalse(self.heartbeat("map1")["login_open"])
        table = self.flow.table()
        self.assertEqual(table["version"], second["table_version"])
        self.assertEqual(set(table["nodes"]), {"master", "map1", "guild1"})

    def test_the_same_process_registering_again_does_not_change_the_table(self) -> None:
        self.register("map1")
        version = self.heartbeat("map1")["table_version"]
        self.register("map1")
        self.assertEqual(self.heartbeat("map1")["table_version"], version)
        self.register("map1", port=9)  # moved
        self.assertNotEqual(self.heartbeat("map1")["table_version"], version)


class Decommission(MasterCase):
    def test_a_running_node_cannot_be_decommissioned(self) -> None:
        self.register("map2")
        with self.assertRaises(ValueError) as cm:
            self.flow.decommission("map2")
        self.assertIn("stop it first", str(cm.exception))
        self.register("role1", stopping=True)
        self.assertRaises(ValueError, self.flow.decommission, "role1")
        self.assertRaises(ValueError, self.flow.decommission, "master")
        self.assertRaises(KeyError, self.flow.decommission, "map9")

    def test_a_stopped_node_leaves_every_table(self) -> None:
        self.register("logiccenter")
        self.register("map1")
        self.register("map2")
        version = self.heartbeat("map1")["table_version"]
        self.flow.stopped("map2")
        self.flow.decommission("map2")
        self.assertNotIn("map2", self.flow.nodes)
        self.assertEqual(self.cluster.removed, ["map2"])
        self.assertIn(("map1", "slaveflow", "node_removed", ("map2",)), self.cluster.sent)
        reply = self.heartbeat("map1")
        self.assertNotEqual(reply["table_version"], version)  # a node that missed the send
        self.assertEqual(self.flow.table()["removed"], ["map2"])
        # a configured node that is gone is no longer waited for, nor asked for players
        self.register("guild2", proceeded=False)
        self.assertEqual(self.waits("guild2"), [])

    def test_a_configured_role_node_that_died_is_no_longer_counted_on(self) -> None:
        self.register("role1")
        self.advance(SILENCE + 2 * INTERVAL)
        self.assertEqual(self.state("role1"), "down")
        self.flow.decommission("role1")
        self.assertEqual(self.registry.role_nodes(), [])

    def test_a_decommissioned_node_that_registers_again_is_back(self) -> None:
        self.register("map2")
        self.flow.stopped("map2")
        self.flow.decommission("map2")
        self.cluster.sent.clear()
        self.register("map1")
        self.register("map2")
        self.assertEqual(self.flow.table()["removed"], [])
        self.assertIn(("map1", "slaveflow", "node_added", ("map2", "127.0.0.1", 1)),
                      self.cluster.sent)


# -- item 11: an orderly stop is not a crash ------------------------------------------------


class OrderlyStopOnMaster(MasterCase):
    def test_a_stopping_node_that_heartbeats_is_never_marked_down(self) -> None:
        self.register("role1")
        self.heartbeat("role1", stopping=True)
        self.assertEqual(self.state("role1"), "stopping")
        for _ in range(40):  # 20 s of stopping (saving players), heartbeating all along
            self.advance(INTERVAL / 2)
            self.heartbeat("role1", stopping=True)
        self.assertEqual((self.state("role1"), self.down), ("stopping", []))
        # it left the login pick at once, but its players were left alone
        self.assertEqual(len(self.redis.times("withdraw_role", "role1")), 1)
        self.assertEqual(self.redis.times("unregister_role", "role1"), [])
        self.flow.stopped("role1")
        self.clock.advance(0)
        self.advance(SILENCE * 3)
        self.assertEqual((self.state("role1"), self.down), ("stopped", []))
        # once stopped, whatever it left in Redis is cleared
        self.assertEqual(len(self.redis.times("unregister_role", "role1")), 1)

    def test_the_status_report_sent_when_the_stop_begins_is_enough(self) -> None:
        self.register("map1")
        self.flow.status_report("map1", {"proceeded": True, "stopping": True})
        self.assertEqual(self.state("map1"), "stopping")

    def test_a_node_stopping_when_master_restarted_registers_as_stopping(self) -> None:
        self.register("role1", stopping=True)
        self.clock.advance(0)
        self.assertEqual(self.state("role1"), "stopping")
        self.assertEqual(len(self.redis.times("withdraw_role", "role1")), 1)

    def test_a_node_that_goes_silent_while_stopping_crashed(self) -> None:
        self.register("role1")
        self.heartbeat("role1", stopping=True)
        self.advance(SILENCE + 2 * INTERVAL)
        self.assertEqual((self.state("role1"), self.down), ("down", ["role1"]))
        self.assertEqual(len(self.redis.times("unregister_role", "role1")), 1)

    def test_hooks_never_hold_the_heartbeat_monitor(self) -> None:
        stuck: defer.Deferred[None] = defer.Deferred()
        self.flow.down_hooks.append(lambda r: stuck)
        self.register("map1")
        self.register("map2")
        self.advance(SILENCE + 2 * INTERVAL)  # both silent: both marked down
        self.assertEqual(sorted(self.down), ["map1", "map2"])
        self.assertTrue(self.heartbeat("map1")["was_down"])  # answered at once
        stuck.callback(None)

    def test_stopping_nodes_are_left_out_of_broadcasts(self) -> None:
        self.register("map1")
        self.heartbeat("map1", stopping=True)
        _, skipped = self.successResultOf(defer.Deferred.fromCoroutine(
            self.flow.broadcast("diag", "ping", timeout=1.0)))
        self.assertEqual(skipped, {"map1": "stopping"})


class StoppingSlowly(service.Service):
    """A service whose stop takes *seconds* on the clock (a role node saving players)."""

    def __init__(self, clock: task.Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return task.deferLater(self.clock, self.seconds, lambda: None)


class RecordingMaster(FakeMaster):
    """FakeMaster that also keeps what each call and send carried, and serves the name
    table with a version the test sets."""

    def __init__(self, clock: task.Clock) -> None:
        super().__init__(clock)
        self.log: list[tuple[float, str, tuple[Any, ...]]] = []
        self.version = "v1"
        self.login_open = True
        self.login_seq = ["e1", 0]
        self.nodes: dict[str, list[Any]] = {}
        self.removed: list[str] = []
        # the slave's name table (its cluster layer is this fake)
        self.addresses: dict[str, tuple[str, int]] = {}
        self.forgotten: list[str] = []

    def set_address(self, name: str, host: str, port: int) -> None:
        self.addresses[name] = (host, port)

    def remove_node(self, name: str) -> None:
        self.forgotten.append(name)
        self.addresses.pop(name, None)

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        self.log.append((self.clock.seconds(), method, args))
        return super().call(node, service, method, *args, timeout=timeout)

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.log.append((self.clock.seconds(), method, args))

    def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "table":
            return {"version": self.version, "nodes": self.nodes, "removed": self.removed,
                    "login_open": self.login_open, "login_seq": self.login_seq}
        reply = super()._answer(method, args)
        if method in ("register", "heartbeat") and reply.get("known", True):
            reply.update(table_version=self.version, login_open=self.login_open,
                         login_seq=self.login_seq)
        return reply

    def heartbeat_statuses(self, since: float = 0.0) -> list[dict[str, Any]]:
        return [args[1] for t, m, args in self.log if m == "heartbeat" and t >= since]


class SlaveCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.node = make_node("role1", self.clock, names=("map1", "map2"))
        self.flow = self.node.slaveflow
        assert self.flow is not None
        self.master = RecordingMaster(self.clock)
        self.flow.cluster = self.master  # type: ignore[assignment]
        self.master.addresses = dict(self.node.cluster.addresses)
        self.flow.start()
        self.addCleanup(self.flow.stop)

    def advance(self, seconds: float, step: float = 0.125) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)


class OrderlyStopOnANode(SlaveCase):
    def test_a_node_heartbeats_as_stopping_until_its_services_have_stopped(self) -> None:
        self.advance(3)
        StoppingSlowly(self.clock, 20.0).setServiceParent(self.node)
        began = self.clock.seconds()
        stopped = self.node.stopService()
        self.advance(19)
        self.assertNoResult(stopped)
        statuses = self.master.heartbeat_statuses(since=began + 0.01)
        self.assertGreaterEqual(len(statuses), 18)  # one a second, all along
        self.assertTrue(all(s["stopping"] for s in statuses), statuses)
        # master heard it at once, not a heartbeat later
        self.assertIn((began, "status_report"), [(t, m) for t, m, _ in self.master.log])
        self.assertNotIn("stopped", [m for _, m, _ in self.master.log])
        self.advance(2)
        self.successResultOf(stopped)
        self.assertEqual([m for _, m, _ in self.master.log].count("stopped"), 1)
        self.assertEqual(self.master.log[-1][1], "stopped")  # then no more heartbeats
        count = len(self.master.heartbeat_statuses())
        self.advance(5)
        self.assertEqual(len(self.master.heartbeat_statuses()), count)

    def test_the_cluster_shutdown_keeps_heartbeating_while_the_handlers_run(self) -> None:
        saving: defer.Deferred[None] = defer.Deferred()
        self.node.add_shutdown_handler("save", lambda: saving)
        self.advance(3)
        began = self.clock.seconds()
        report = defer.Deferred.fromCoroutine(self.flow.shutdown())
        self.advance(30)
        self.assertNoResult(report)
        statuses = self.master.heartbeat_statuses(since=began + 0.01)
        self.assertGreaterEqual(len(statuses), 29)
        self.assertTrue(all(s["stopping"] for s in statuses))
        saving.callback(None)
        self.assertEqual(self.successResultOf(report)["failed"], [])


class CatchUpOnANode(SlaveCase):
    def test_a_node_that_missed_a_broadcast_fetches_the_table(self) -> None:
        self.advance(3)
        self.assertNotIn("table", [m for _, m, _ in self.master.log])
        # map3 joined and map2 was decommissioned while the broadcasts did not reach us
        self.master.nodes = {"map3": ["127.0.0.1", 7777], "master": ["127.0.0.1", 1]}
        self.master.removed = ["map2"]
        self.master.version = "v2"
        self.advance(INTERVAL)
        self.assertEqual(self.master.addresses["map3"], ("127.0.0.1", 7777))
        self.assertEqual(self.master.forgotten, ["map2"])
        self.assertEqual(self.flow.table_version, "v2")
        fetched = [t for t, m, _ in self.master.log if m == "table"]
        self.advance(5)  # nothing new: no more fetches
        self.assertEqual([t for t, m, _ in self.master.log if m == "table"], fetched)

    def test_a_node_that_missed_a_login_change_takes_it_from_a_heartbeat(self) -> None:
        self.advance(3)
        self.assertTrue(self.node.login_open)
        self.master.login_open, self.master.login_seq = False, ["e1", 1]
        self.advance(INTERVAL)
        self.assertFalse(self.node.login_open)

    def test_an_older_login_state_arriving_late_is_ignored(self) -> None:
        self.advance(3)
        self.flow.set_login_open(False, ["e1", 2])  # GM closed logins (the broadcast)
        self.master.login_open, self.master.login_seq = True, ["e1", 1]  # a reply from before
        self.advance(INTERVAL)
        self.assertFalse(self.node.login_open)
        self.master.login_seq = ["e2", 0]  # a restarted master: its word counts
        self.advance(INTERVAL)
        self.assertTrue(self.node.login_open)
