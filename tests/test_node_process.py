"""Real twistd node processes: start, call across processes, crash and recover, stop."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import treq
from twisted.trial import unittest

from rltwist.cluster import Cluster, LinkLost, NodeUnreachable, OutboundFull
from rltwist.config import load_config
from rltwist.launcher import TWISTD, LocalCluster
from tests.util import equals, sleep, wait_for

MiB = 1024 * 1024


class NodeProcesses(unittest.TestCase):
    """map1 and guild1 run as twistd processes; the test process is node role1."""

    timeout = 120

    async def setUp(self) -> None:
        self.lc = LocalCluster(self.mktemp(), ["map1", "guild1", "role1"], test_flags=["diag"])
        self.addCleanup(self.lc.stop_all)
        await self.lc.start("map1", "guild1")
        config = load_config(self.lc.config_path)
        me = config.node("role1")
        self.me = Cluster("role1", config.cluster,
                          {n.name: (n.host, n.port) for n in config.nodes.values()},
                          listen=(me.host, me.port))
        self.me.startService()
        self.addCleanup(self.me.stopService)

    async def test_call_and_send_between_node_processes(self) -> None:
        self.assertEqual(await self.me.call("map1", "diag", "ping"), "pong")
        for i in range(1000):
            self.me.send("map1", "diag", "note", "order", i)
        self.assertEqual(await self.me.call("map1", "diag", "notes_of", "order"),
                         list(range(1000)))
        # map1 calls guild1 on our behalf: a call from one node process to another
        self.assertEqual(
            await self.me.call("map1", "diag", "relay", "guild1", "diag", "echo", [[1, "x"]]),
            [1, "x"])
        info = await self.me.call("guild1", "diag", "info")
        self.assertEqual((info["name"], info["kind"], info["number"]), ("guild1", "guild", 1))

    async def test_sigkill_mid_call_fails_pending_calls_and_the_link_recovers(self) -> None:
        self.assertEqual(await self.me.call("map1", "diag", "ping"), "pong")
        pending = [self.me.call("map1", "diag", "sleep", 30) for _ in range(5)]
        proc = self.lc.nodes["map1"]
        started = time.monotonic()
        await proc.kill()
        for d in pending:
            with self.assertRaises((LinkLost, NodeUnreachable)):
                await d
        self.assertLess(time.monotonic() - started, 5.0, "pending calls did not fail promptly")
        # a call made while map1 is down waits in the queue and is answered once it is back
        during = self.me.call("map1", "diag", "echo", "queued while down")
        await self.lc.start("map1")
        self.assertEqual(await during, "queued while down")
        self.assertEqual(await self.me.call("map1", "diag", "ping"), "pong")

    async def test_sigterm_stops_a_node_with_status_zero(self) -> None:
        codes = await self.lc.stop_all()
        self.assertEqual(codes, {"map1": 0, "guild1": 0})
        self.assertIn("rltwist node map1 stopped", self.lc.nodes["map1"].log_path.read_text())

    async def test_metrics_endpoint_serves_prometheus_text(self) -> None:
        await self.me.call("map1", "diag", "ping")
        port = self.lc.node_config("map1")["metrics_port"]
        response = await treq.get(f"http://127.0.0.1:{port}/metrics",
                                  persistent=False).addTimeout(10, _reactor())
        text = (await treq.content(response)).decode()
        self.assertEqual(response.code, 200)
        self.assertIn('rl_cluster_calls_in_total{method="ping",service="diag"} 1.0', text)
        self.assertIn("process_resident_memory_bytes", text)


def _reactor():
    from twisted.internet import reactor

    return reactor


class FrozenPeer(unittest.TestCase):
    """map1 runs as a twistd process and gets SIGSTOPped; the test process calls it."""

    timeout = 120

    async def setUp(self) -> None:
        self.lc = LocalCluster(self.mktemp(), ["map1", "role1"], test_flags=["diag"])
        self.addCleanup(self.lc.stop_all)
        await self.lc.start("map1")
        self.proc = self.lc.nodes["map1"]
        self.addCleanup(self.proc.resume)  # runs before stop_all
        config = load_config(self.lc.config_path)
        self.me = Cluster("role1", config.cluster, {"map1": self.lc.address("map1")},
                          max_outbound=4 * MiB, ping_interval=0.5, ping_timeout=1.5)
        self.me.startService()
        self.addCleanup(self.me.stopService)
        self.assertEqual(await self.me.call("map1", "diag", "ping"), "pong")

    async def answers_again(self) -> None:
        await wait_for(lambda: equals(self.me.call("map1", "diag", "ping", timeout=2.0), "pong"),
                       30, "map1 to answer again after SIGCONT")

    async def test_a_frozen_peer_is_lost_long_before_the_call_timeout(self) -> None:
        self.proc.pause()
        started = time.monotonic()
        pending = [self.me.call("map1", "diag", "echo", i, timeout=60.0) for i in range(5)]
        for d in pending:
            with self.assertRaises(LinkLost) as cm:
                await d
            self.assertIn("no answer", str(cm.exception))
        self.assertLess(time.monotonic() - started, 6.0, "the frozen peer was noticed late")
        self.proc.resume()
        await self.answers_again()

    async def test_outbound_to_a_frozen_peer_stays_bounded(self) -> None:
        self.proc.pause()
        sender = self.me.senders["map1"]
        payload = b"p" * 10_000
        peak = 0
        for _ in range(150):  # 150 turns x 100 sends x 10 kB = 150 MB offered
            for _ in range(100):
                self.me.send("map1", "diag", "tally", "frozen", payload)
            peak = max(peak, sender.outbound_bytes())
            if self.me.stats.dropped("map1", "outbound_full") > 2000:
                break
            await sleep(0.005)  # the kernel takes what it can, the sweeper runs
        self.assertLessEqual(peak, 4 * MiB + 10_100)
        self.assertGreater(self.me.stats.dropped("map1", "outbound_full"), 2000)
        # with the queue full a call fails at once instead of waiting
        d = self.me.call("map1", "diag", "echo", payload)
        self.assertTrue(d.called, "a call to a full link did not fail at once")
        with self.assertRaises(OutboundFull):
            await d
        self.proc.resume()
        await self.answers_again()


class StartupErrors(unittest.TestCase):
    """Bad input at start-up: one clear line, no traceback, non-zero exit."""

    timeout = 60

    def run_node(self, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *TWISTD, "-n", "--pidfile=", *args],
                              capture_output=True, text=True, timeout=30, cwd=cwd)

    def write(self, text: str) -> str:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def test_missing_config_names_the_file(self) -> None:
        r = self.run_node("rl-map", "--sid", "1", "--config", "/nonexistent/cluster.toml")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/cluster.toml: config file not found", r.stderr)
        self.assertNotIn("Traceback", r.stderr + r.stdout)

    def test_bad_values_name_each_key(self) -> None:
        path = self.write('[cluster]\nsecret = "short"\n[master]\ngm_token = "dev-token-1"\n'
                          '[nodes.master]\nport = 1\nmetrics_port = 2\n'
                          '[nodes.map1]\nport = 70000\nmetrics_port = 2\n')
        r = self.run_node("rl-map", "--sid", "1", "--config", path)
        self.assertEqual(r.returncode, 1)
        line = r.stderr.strip()
        self.assertEqual(len(line.splitlines()), 1, line)
        self.assertIn(path, line)
        self.assertIn("cluster.secret", line)
        self.assertIn("nodes.map1.port", line)
        self.assertIn("nodes.map1.metrics_port: port 2 clashes with nodes.master.metrics_port",
                      line)

    def test_unknown_node_is_named(self) -> None:
        lc = LocalCluster(self.mktemp(), ["map1"])
        r = self.run_node("rl-map", "--sid", "9", "--config", str(lc.config_path))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no [nodes.map9] section", r.stderr)

    def test_invalid_toml_is_reported(self) -> None:
        path = self.write("[cluster\nsecret=")
        r = self.run_node("rl-master", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not valid TOML", r.stderr)

    def test_port_already_in_use_is_reported_with_its_key(self) -> None:
        import socket

        lc = LocalCluster(self.mktemp(), ["map1"])
        port = lc.node_config("map1")["port"]
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", port))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        r = self.run_node("rl-map", "--sid", "1", "--config", str(lc.config_path))
        self.assertEqual(r.returncode, 1)
        out = r.stdout + r.stderr
        self.assertIn(f"map1: cannot listen on 127.0.0.1:{port}", out)
        self.assertIn("nodes.map1.port", out)
        self.assertNotIn("Traceback", out)

    def test_twistd_lists_every_node_kind(self) -> None:
        r = subprocess.run([sys.executable, *TWISTD, "--help"], capture_output=True, text=True,
                           timeout=30)
        for kind in ("master", "logiccenter", "map", "guild", "mail", "rolecity", "role",
                     "login"):
            self.assertIn(f"rl-{kind} ", r.stdout)

    def test_region_node_requires_sid(self) -> None:
        r = self.run_node("rl-map", "--config", "etc/cluster.toml")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--sid N is required for map nodes", r.stdout + r.stderr)

