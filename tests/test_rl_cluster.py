"""rl-cluster as a user runs it: up, status, down — real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.util import wait_for

REPO = Path(__file__).resolve().parent.parent
RL_CLUSTER = [sys.executable, "-c", "from rltwist.cli.cluster import main; main()"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.text = ""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.text += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class RlCluster(unittest.TestCase):
    timeout = 240

    def run_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RL_CLUSTER, *args], capture_output=True, text=True,
                              timeout=180, cwd=REPO)

    async def test_up_status_down_leaves_nothing_behind_and_keeps_data(self) -> None:
        run_dir = str(Path(self.mktemp()).absolute())
        config = self.write_config()
        for attempt in (1, 2):
            out = Output()
            up = reactor.spawnProcess(out, sys.executable, [*RL_CLUSTER, "up", "--run-dir",
                                                            run_dir, "--config", config],
                                      env=dict(os.environ), path=str(REPO))
            self.addCleanup(lambda p=up: p.pid and alive(p.pid) and os.kill(p.pid, 9))
            await wait_for(lambda o=out: "cluster up in" in o.text or o.ended.called, 120,
                           f"rl-cluster up to report the cluster up:\n{out.text}")
            self.assertIn("cluster up in", out.text, out.text)
            state = json.loads((Path(run_dir) / "cluster.json").read_text())
            pids = [*state["pids"].values(), state["redis_pid"], state["sdk_pid"]]
            status = await defer.Deferred.fromCoroutine(_in_thread(self.run_cmd, "status",
                                                                   "--run-dir", run_dir))
            self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
            self.assertIn("login1", status.stdout)
            if attempt == 1:
                await self.create_player(state)
            else:
                await self.check_player(state)
            down = await defer.Deferred.fromCoroutine(_in_thread(self.run_cmd, "down",
                                                                 "--run-dir", run_dir))
            self.assertEqual(down.returncode, 0, down.stdout + down.stderr)
            self.assertEqual(await out.ended, 0, out.text)
            self.assertIn("cluster stopped cleanly", out.text)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                await _sleep(0.1)
            self.assertEqual([p for p in pids if alive(p)], [])

    def write_config(self) -> str:
        """etc/cluster.toml with free ports, so the test never collides with a dev cluster."""
        from rltwist.config import load_config
        from rltwist.launcher import free_ports, render_config

        base = load_config(REPO / "etc" / "cluster.toml")
        sections = {k: dict(v) for k, v in base.raw.items() if k != "nodes"}
        names = ("master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1",
                 "role2", "login1")
        ports = iter(free_ports(1 + 3 * len(names)))  # all at once: no port handed out twice
        sections["master"]["gm_port"] = next(ports)
        sections["hotreload"]["root"] = str(REPO)  # the copy lives outside etc/
        for name in names:
            node = {"host": "127.0.0.1", "port": next(ports), "metrics_port": next(ports)}
            client_port = next(ports)
            if name.startswith(("role", "login")) and not name.startswith("rolecity"):
                node["client_port"] = client_port
            sections[f"nodes.{name}"] = node
        path = Path(self.mktemp() + ".toml").absolute()
        path.write_text(render_config(sections))
        return str(path)

    async def create_player(self, state: dict) -> None:
        self.userid = await _login(state, "keeper")

    async def check_player(self, state: dict) -> None:
        self.assertEqual(await _login(state, "keeper"), self.userid)


async def _login(state: dict, openid: str) -> int:
    from rltwist.config import load_config
    from tests.login_util import GameClient

    config = load_config(state["config"])
    login = config.node("login1")
    c = GameClient(openid, token=None)
    try:
        await c.play(login.host, login.client_port)
        return c.login_response.userid
    finally:
        c.close()


async def _in_thread(fn, *args):
    from twisted.internet.threads import deferToThread

    return await deferToThread(fn, *args)


def _sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds)


class RlClusterDemo(unittest.TestCase):
    timeout = 240

    async def test_demo_with_a_few_bots_passes_and_stops_cleanly(self) -> None:
        run_dir = str(Path(self.mktemp()).absolute())
        config = RlCluster.write_config(self)  # type: ignore[arg-type]
        from twisted.internet.threads import deferToThread

        out = await deferToThread(
            subprocess.run, [*RL_CLUSTER, "demo", "--bots", "20", "--run-dir", run_dir,
                             "--config", config],
            capture_output=True, text=True, timeout=200, cwd=REPO)
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, text)
        self.assertIn("bots: 20  ok: 20  failed: 0", text)
        for step in ("login", "auth", "rename", "heartbeat"):
            self.assertRegex(text, rf"\n{step}\s+20\s")
        self.assertIn("cluster stopped cleanly", text)
        self.assertFalse((Path(run_dir) / "cluster.json").exists())
