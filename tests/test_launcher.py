"""rltwist.launcher's own parts: the config writer, port allocation and readiness."""

from __future__ import annotations

import socket
import sys
import tomllib

from twisted.trial import unittest

from rltwist.launcher import (
    PORT_RANGE,
    ChildProcess,
    LaunchError,
    LocalCluster,
    free_ports,
    render_config,
)


class RenderConfig(unittest.TestCase):
    def test_what_is_written_reads_back_the_same(self) -> None:
        sections = {
            "cluster": {"secret": 'quote " backslash \\ newline \n tab \t end',
                        "heartbeat_interval": 0.5, "heartbeat_misses": 3},
            "hotfix": {"game_packages": ["a", "b"]},
            "lru.agent": {"workers": 2},
            "nodes.map1": {"host": "127.0.0.1", "port": 1, "metrics_port": 2},
            "nodes.master": {"host": "127.0.0.1", "port": 3, "metrics_port": 4},
            "login": {"flag": True, "unicode": "名前"},
        }
        data = tomllib.loads(render_config(sections))
        self.assertEqual(data["cluster"], sections["cluster"])
        self.assertEqual(data["lru"], {"agent": {"workers": 2}})
        self.assertEqual(data["nodes"], {"map1": sections["nodes.map1"],
                                         "master": sections["nodes.master"]})
        self.assertEqual(data["login"], sections["login"])
        self.assertEqual(data["hotfix"], sections["hotfix"])


class FreePorts(unittest.TestCase):
    def test_ports_come_from_below_the_ephemeral_range_and_skip_excluded_ones(self) -> None:
        first = free_ports(50)
        self.assertEqual(len(set(first)), 50)
        self.assertTrue(all(PORT_RANGE[0] <= p < PORT_RANGE[1] for p in first), first)
        more = free_ports(200, exclude=first)
        self.assertFalse(set(more) & set(first))

    def test_add_node_never_reuses_a_port_handed_out_but_not_bound_yet(self) -> None:
        lc = LocalCluster(self.mktemp(), ["map1"])
        for i in range(2, 40):
            lc.add_node(f"map{i}")
        ports = [v for s in lc.sections.values() for k, v in s.items() if k.endswith("port")]
        self.assertEqual(len(ports), len(set(ports)))


class Readiness(unittest.TestCase):
    """A child is ready when it says so on its readiness pipe, whatever its log says."""

    timeout = 30

    def child(self, code: str) -> ChildProcess:
        proc = ChildProcess("child", [sys.executable, "-c", code], self.mktemp())
        self.addCleanup(proc.kill)
        proc.start()
        return proc

    async def test_a_log_line_that_looks_like_readiness_is_not_readiness(self) -> None:
        proc = self.child("import sys, time\n"
                          "print('rltwist node child (map) ready: cluster', flush=True)\n"
                          "time.sleep(30)")
        with self.assertRaises(LaunchError) as cm:
            await proc.wait_ready(1.0)
        self.assertIn("not ready within 1s", str(cm.exception))

    async def test_the_pipe_says_ready_and_what(self) -> None:
        proc = self.child("import time\n"
                          "from rltwist.readiness import notify_ready\n"
                          "assert notify_ready({'url': 'http://x'})\n"
                          "time.sleep(30)")
        await proc.wait_ready(10.0)
        self.assertEqual(proc.ready_info, {"url": "http://x"})

    async def test_a_child_that_exits_first_is_reported_with_its_output(self) -> None:
        proc = self.child("print('cannot start: no config'); raise SystemExit(3)")
        with self.assertRaises(LaunchError) as cm:
            await proc.wait_ready(10.0)
        self.assertIn("exited with status 3", str(cm.exception))
        self.assertIn("cannot start: no config", str(cm.exception))

    def test_notify_ready_does_nothing_without_a_pipe(self) -> None:
        from rltwist.readiness import notify_ready

        self.assertFalse(notify_ready({}, environ={}))
        with socket.socket() as s:  # a descriptor that is not a pipe
            self.assertFalse(notify_ready({}, environ={"RLTWIST_READY_FD": str(s.fileno())}))
