"""rl-bot, the real command in its own process, against real master, logiccenter, login and
role nodes and a real redis-server (``LoginCase``): bots log in, authenticate, run their
script (heartbeats, renames), hold their sessions and log out; a wrong dev SDK secret
fails every bot with BAD_TOKEN and exit status 1.

The bots are run as ``python -m rltwist.bot`` (what the ``rl-bot`` console script calls),
with ``--config`` pointing at the cluster's generated config, so the login addresses and
the dev SDK secret come from the same file the nodes read.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor, utils
from twisted.python.failure import Failure

from rltwist.bot.actions import MAX_NAME_LENGTH
from rltwist.bot.cli import SECRET_ENV
from rltwist.sdk import dev_token
from tests.login_util import LoginCase
from tests.util import sleep, wait_for

REPO = Path(__file__).resolve().parent.parent
#: The nodes' [login] dev_sdk_secret; the bots must read it from --config.
SDK_SECRET = "e2e-bot-sdk-secret"


def bot_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.pop(SECRET_ENV, None)  # the secret must come from --config or the command line
    return env


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(code if code is not None else -1)

    def text(self) -> str:
        return b"".join(self.out).decode(errors="replace")


class BotCase(LoginCase):
    """The cluster of ``LoginCase`` with a known dev SDK secret, and rl-bot helpers."""

    overrides = {"login": {"dev_sdk_secret": SDK_SECRET}}

    def bot_argv(self, json_path: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "rltwist.bot", "--config", str(self.lc.config_path),
                "--json", json_path, *args]

    async def rl_bot(self, *args: str) -> tuple[int, dict[str, Any], str]:
        """Run rl-bot to its end: (exit status, JSON report, output)."""
        json_path = os.path.join(os.path.abspath(self.mktemp()), "report.json")
        os.makedirs(os.path.dirname(json_path))
        argv = self.bot_argv(json_path, *args)
        out, err, status = await utils.getProcessOutputAndValue(
            argv[0], argv[1:], env=bot_env(), path=str(REPO)).addTimeout(120, reactor)
        output = (out + err).decode(errors="replace")
        try:
            report = json.loads(Path(json_path).read_text())
        except (OSError, ValueError) as e:
            self.fail(f"rl-bot exited {status} without a JSON report ({e}); output:\n{output}")
        return status, report, output

    async def online(self) -> dict[str, int]:
        return {r.node: r.online for r in await self.state.list_roles()}

    async def nobody_online(self) -> bool:
        return sum((await self.online()).values()) == 0

    async def gateway_players(self) -> dict[str, list[int]]:
        """Each role node's own list of its online players (through master's GM API)."""
        players = {}
        for role in ("role1", "role2"):
            status, body = await self.lc.gm("POST", "/call", {
                "node": role, "service": "gateway", "method": "online_players"})
            self.assertEqual(status, 200, body)
            players[role] = body["result"]
        return players

    async def sum_online_is(self, n: int) -> bool:
        return sum((await self.online()).values()) == n


class BotEndToEnd(BotCase):
    async def test_twenty_bots_with_a_heartbeat_script_all_succeed_and_log_out(self) -> None:
        status, report, output = await self.rl_bot(
            "--count", "20", "--concurrency", "10", "--script", "heartbeat",
            "--openid-prefix", "hb")
        self.assertEqual(status, 0, output)
        self.assertEqual((report["ok"], report["failed"], report["kicked"], report["logins"]),
                         (20, 0, 0, 20), output)
        self.assertTrue(report["success"])
        self.assertEqual(report["failures"], {})
        for step in ("connect", "login", "gateway", "auth", "total"):
            self.assertEqual(report["latency"][step]["count"], 20, step)
        # the scripted ones; a slow run may add periodic ones (every 10 s)
        self.assertGreaterEqual(report["latency"]["heartbeat"]["count"], 20)
        self.assertGreater(report["logins_per_s"], 0)
        self.assertIn("bots: 20  ok: 20  failed: 0", output)
        # Every bot closed its session: the role nodes logged all 20 out.
        await wait_for(self.nobody_online, 20, "the role nodes to log the 20 bots out")
        self.assertEqual(await self.gateway_players(), {"role1": [], "role2": []})

    async def test_held_sessions_are_online_on_the_role_nodes_until_ctrl_c(self) -> None:
        json_path = os.path.join(os.path.abspath(self.mktemp()), "report.json")
        os.makedirs(os.path.dirname(json_path))
        proc = _Collect()
        argv = self.bot_argv(json_path, "--count", "20", "--hold", "inf",
                             "--heartbeat", "0.5", "--openid-prefix", "held", "--quiet")
        transport = reactor.spawnProcess(proc, argv[0], argv, env=bot_env(), path=str(REPO))

        def kill() -> None:
            if not proc.ended.called:
                os.kill(transport.pid, signal.SIGKILL)

        self.addCleanup(kill)
        await wait_for(lambda: self.sum_online_is(20), 60, "20 held bots online in Redis")
        by_node = await self.gateway_players()
        players = by_node["role1"] + by_node["role2"]
        self.assertEqual(len(set(players)), 20)
        # each gateway holds exactly the players Redis counts on it
        self.assertEqual({n: len(p) for n, p in by_node.items()}, await self.online())
        # held sessions heartbeat (every 0.5 s) and stay online
        await sleep(1.5)
        self.assertEqual(await self.gateway_players(), by_node)
        transport.signalProcess("INT")  # Ctrl-C: release every session, then report
        status = await proc.ended.addTimeout(60, reactor)
        self.assertEqual(status, 0, proc.text())
        report = json.loads(Path(json_path).read_text())
        self.assertEqual((report["ok"], report["failed"], report["online"]), (20, 0, 0))
        self.assertTrue(report["interrupted"])
        self.assertGreaterEqual(report["latency"]["heartbeat"]["count"], 20)
        await wait_for(self.nobody_online, 20, "the role nodes to log the held bots out")

    async def test_wrong_dev_sdk_secret_fails_every_bot_with_bad_token(self) -> None:
        status, report, output = await self.rl_bot(
            "--count", "5", "--dev-sdk-secret", "not-the-nodes-secret")
        self.assertEqual(status, 1, output)
        self.assertEqual((report["ok"], report["failed"], report["logins"]), (0, 5, 0))
        self.assertFalse(report["success"])
        self.assertEqual(list(report["failures"]), ["login: BAD_TOKEN"])
        self.assertEqual(report["failures"]["login: BAD_TOKEN"]["count"], 5)
        self.assertIn("BAD_TOKEN", output)
        self.assertTrue(await self.nobody_online())



class BotRenameEndToEnd(BotCase):
    """Rename reserves the name in the region's rolecity name index: rolecity1 is needed."""

    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]

    async def test_rename_script_gives_every_bot_a_new_name_that_stays(self) -> None:
        status, report, output = await self.rl_bot(
            "--count", "10", "--script", "rename", "--openid-prefix", "rn")
        self.assertEqual(status, 0, output)
        self.assertEqual((report["ok"], report["failed"]), (10, 0), output)
        self.assertEqual(report["latency"]["rename"]["count"], 10)
        await wait_for(self.nobody_online, 20, "the role nodes to log the bots out")
        # the same account logging in again gets its bot name back (b<index>x<hex>)
        c = self.client("bot-rn-3", token=dev_token(SDK_SECRET, "bot-rn-3"))
        auth = await c.play(*self.login_address())
        self.assertRegex(auth.name, r"^b3x[0-9a-f]+$")
        self.assertLessEqual(len(auth.name), MAX_NAME_LENGTH)
