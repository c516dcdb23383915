"""The map's timed events pause at the first phase of an ordered cluster shutdown: master
tells every node that is up when the shutdown begins (before any phase), a node runs its
cluster-stopping hooks once, and a hook like the march feature's pauses a scheduler
(tests/test_march_e2e.py runs the whole ordered shutdown with marches in flight)."""

from __future__ import annotations

from typing import Any

from rltwist.nodes.map.scheduler import Scheduler
from tests.test_masterflow import INTERVAL, SILENCE, MasterCase, SlaveCase


class MasterAnnounces(MasterCase):
    def test_the_shutdown_start_tells_every_node_up_before_the_first_phase(self) -> None:
        for name in ("logiccenter", "map1", "map2", "role1"):
            self.register(name)
        self.advance(SILENCE + 2 * INTERVAL)  # silent: all down
        for name in ("logiccenter", "map1", "role1"):
            self.register(name)  # back up; map2 stays down
        self.cluster.sent.clear()
        self.flow.start_shutdown()
        told = [n for n, s, m, _ in self.cluster.sent
                if (s, m) == ("slaveflow", "cluster_stopping")]
        self.assertEqual(sorted(told), ["logiccenter", "map1", "role1"])
        # before any node was asked to shut down
        first_phase = [i for i, (n, s, m, _) in enumerate(self.cluster.sent)
                       if (s, m) == ("slaveflow", "shutdown")]
        last_told = max(i for i, (n, s, m, _) in enumerate(self.cluster.sent)
                        if (s, m) == ("slaveflow", "cluster_stopping"))
        self.assertTrue(all(i > last_told for i in first_phase))


class NodePauses(SlaveCase):
    def test_the_hooks_run_once_and_pause_the_scheduler(self) -> None:
        scheduler = Scheduler(self.clock)
        ran: list[Any] = []
        scheduler.on("arrive", ran.append)
        scheduler.schedule(1, scheduler.now_ms() + 5000, "arrive")
        scheduler.start()
        calls: list[int] = []
        self.node.add_cluster_stopping_hook(lambda: calls.append(1))
        self.node.add_cluster_stopping_hook(scheduler.pause)
        self.flow.cluster_stopping()
        self.flow.cluster_stopping()  # a repeated notice
        self.assertEqual(calls, [1])
        self.assertTrue(scheduler.paused)
        self.advance(10)
        self.assertEqual(ran, [])
        self.assertEqual(scheduler.pending(1), (scheduler.now_ms() - 10_000 + 5000, "arrive"))

