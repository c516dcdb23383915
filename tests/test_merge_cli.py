"""rl-merge as the operator runs it (a real process against a real master): refusals while
a region node runs or logins are open, the dry run, and a merge killed with SIGKILL at
crash points in the copy and in the removal, re-run to the same end as an uninterrupted
one, with the routing alias installed."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from twisted.internet import defer, error, protocol, reactor
from twisted.trial import unittest

from rltwist.launcher import LocalCluster
from rltwist.merge.core import JOURNAL
from rltwist.storage import Backend
from rltwist.storage.embedded import EmbeddedBackend
from tests.merge_util import seed_region
from tests.util import wait_for

PLAYERS = 300


class _Run(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[tuple[int | None, int | None]] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        v = reason.value
        if isinstance(v, error.ProcessTerminated | error.ProcessDone):
            self.ended.callback((v.exitCode, v.signal))
        else:
            self.ended.errback(reason)


class MergeCommand(unittest.TestCase):
    timeout = 240

    async def rl_merge(self, *args: str, crash: str | None = None,
                       bound: float = 120) -> tuple[int | None, int | None, str, str]:
        """Run rl-merge; (exit code, signal, stdout, stderr)."""
        env = dict(os.environ)
        env.pop("RLTWIST_TEST_FLAGS", None)
        if crash:
            env.update(RLTWIST_TEST_FLAGS="crashpoints", RLTWIST_CRASH_POINTS=crash)
        run = _Run()
        proc = reactor.spawnProcess(  # type: ignore[attr-defined]
            run, sys.executable, [sys.executable, "-m", "rltwist.merge", *args,
                                  "--config", str(self.lc.config_path), "--quiet"],
            env=env, path=str(self.lc.run_dir))
        try:
            code, sig = await run.ended.addTimeout(bound, reactor)
        except defer.TimeoutError:
            proc.signalProcess("KILL")
            raise
        return code, sig, run.out.decode(), run.err.decode()

    def db(self, name: str) -> Backend:
        b = EmbeddedBackend(os.path.join(self.lc.run_dir, "data", f"{name}.sqlite3"))
        self.addCleanup(b.close)
        return b

    async def test_refusals_dry_run_and_kill_9_at_crash_points(self) -> None:
        self.lc = lc = LocalCluster(self.mktemp(), ["master"])
        self.addCleanup(lc.stop_all)
        g, r, r1, r2 = (self.db(n) for n in ("globaldb", "roledb", "region1", "region2"))
        s1 = await seed_region(g, r, r1, 1, PLAYERS, first_seq=1, shared_names=20,
                               guild_count=5, shared_guild_names=2)
        s2 = await seed_region(g, r, r2, 2, PLAYERS, first_seq=10_000, shared_names=20,
                               guild_count=5, shared_guild_names=2)
        del s1
        await lc.start("master")
        await lc.wait_up(["master"])
        # a node of region 2 running: refused, naming it
        lc.process("map2").start()
        await wait_for(lambda: self._registered("map2"), 30, "map2 to register")
        code, _, out, err = await self.rl_merge("--from", "2", "--into", "1")
        self.assertEqual(code, 1, err)
        self.assertIn("are running: map2 (", err)
        self.assertIn("logins are open", err)
        await lc.process("map2").stop()
        code, _, out, err = await self.rl_merge("--from", "2", "--into", "1")
        self.assertEqual(code, 1, err)
        self.assertNotIn("map2", err)
        self.assertIn("logins are open", err)
        # the dry run prints the plan and writes nothing
        code, _, out, err = await self.rl_merge("--from", "2", "--into", "1", "--dry-run")
        self.assertEqual(code, 0, err)
        self.assertIn("dry run: nothing written", out)
        self.assertIn("renamed players   20", out)
        self.assertIn("renamed guilds    2", out)
        self.assertEqual(await r1.get(JOURNAL, "2"), None)
        self.assertEqual(len(await r2.find("rolecity", {})), PLAYERS)
        status, _ = await lc.gm("POST", "/login/close")
        self.assertEqual(status, 200)
        # killed in the middle of the copy: the source is untouched
        code, sig, out, err = await self.rl_merge("--from", "2", "--into", "1",
                                                  crash="merge_copy_batch@3")
        self.assertEqual(sig, signal.SIGKILL, (code, out, err))
        self.assertEqual((await r1.get(JOURNAL, "2"))["step"], "fenced")
        self.assertEqual(len(await r2.find("rolecity", {})), PLAYERS)
        total = sum([len(await r2.find(c, {})) for c in await r2.collections()])
        # killed in the middle of the removal: the target is complete
        code, sig, out, err = await self.rl_merge("--from", "2", "--into", "1",
                                                  crash="merge_remove_batch@2")
        self.assertEqual(sig, signal.SIGKILL, (code, out, err))
        self.assertEqual((await r1.get(JOURNAL, "2"))["step"], "copied")
        left = sum([len(await r2.find(c, {})) for c in await r2.collections()])
        self.assertTrue(0 < left < total, (left, total))
        # the re-run finishes
        code, sig, out, err = await self.rl_merge("--from", "2", "--into", "1",
                                                  "--json", "report.json")
        self.assertEqual((code, sig), (0, None), err)
        self.assertIn("resumed after copied", out)
        self.assertEqual(await r2.collections(), [JOURNAL])
        self.assertEqual((await r1.get(JOURNAL, "2"))["step"], "done")
        status, body = await lc.gm("GET", "/regions/aliases")
        self.assertEqual(body["aliases"], {"2": 1})
        # the same data as an uninterrupted merge: every player once, renamed by the rule,
        # one notice each, mail and friends kept
        names = {d["owner"]: d["name"] for _, d in await r1.find("names", {})}
        self.assertEqual(len(names), 2 * PLAYERS)
        for i, u in enumerate(s2.userids):
            want = s2.names[u] + (".s2" if i < 20 else "")
            self.assertEqual(names[u], want)
            self.assertEqual((await r.get("player", u))["attrs"]["name"], want)
            box = (await r1.get("mailbox", u))["components"]["mail"]["mails"]
            self.assertEqual(sum(m["title"].startswith("Your name changed") for m in box),
                             1 if i < 20 else 0)
            self.assertTrue((await r1.get("rolecity", u))["components"]["friends"]
                            ["friends"] or i == PLAYERS - 1)

    async def _registered(self, name: str) -> bool:
        try:
            return name in await self.lc.node_states()
        except Exception:
            return False
