"""Benchmark of global mail: how soon a GM's global mail is in the mailbox of every online
player, and what it costs each node.

    python bench/gmail.py [--quick] [--players N] [--sends K] [--json PATH]

Everything runs on this machine: a private redis-server and two regions (map, guild, mail,
rolecity 1 and 2), logiccenter, master, role1, role2 and login1 as twistd processes
(``rltwist.launcher.LocalCluster``), and N bots born in regions 1 and 2 in one ``rl-bot``
process that hold their sessions (``--hold inf``). Then K global mails are sent one after
another through master's GM API (``POST /mail/global``); for each, the benchmark polls the
role nodes' ``rl_gmail_deliveries_total{result="stored"}`` until every online player's
mailbox got it.

Columns per send: ``ack ms`` until the GM answer (the mail is durable in globaldb);
``all ms`` from the GM call until the last of the N mailboxes stored it; ``mails/s`` N /
``all``; ``cpu ms/1k`` CPU (user + system, psutil) per 1,000 deliveries of each process
involved (role nodes deliver, mail nodes store and save each mailbox, logiccenter answers
one ``gmail.since`` per role node). After the sends every mailbox is read
(``mailrouter.list``): ``exactly_once`` is true when each holds each mail once.

JSON (``--json``): ``players``, ``sends``, ``ack_ms_p50``, ``all_ms_p50``,
``mails_per_s_p50``, ``exactly_once``, ``rows``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import defer, protocol, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.cluster import Cluster
from rltwist.config import ClusterSettings
from rltwist.launcher import DEV_SECRET, LocalCluster
from rltwist.redis import RedisServer

NODES = ("master", "logiccenter", "map1", "guild1", "mail1", "rolecity1",
         "map2", "guild2", "mail2", "rolecity2", "role1", "role2", "login1")
ROLES = ("role1", "role2")
WATCHED = ("role1", "role2", "mail1", "mail2", "logiccenter")
SDK_SECRET = "bench-dev-sdk-secret"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cpu_of(procs: dict[str, psutil.Process]) -> dict[str, float]:
    out = {}
    for name, p in procs.items():
        t = p.cpu_times()
        out[name] = t.user + t.system
    return out


class _Bots(protocol.ProcessProtocol):
    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "ab")  # closed in processEnded
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.log.close()
        self.ended.callback(None)


async def until(reactor: Any, check: Any, bound: float, what: str,
                every: float = 0.02) -> None:
    """Poll ``await check()`` until true; RuntimeError naming *what* after *bound* s."""
    deadline = time.monotonic() + bound
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {bound:g}s")
        await task.deferLater(reactor, every)


async def main(reactor: Any, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-gmail-", dir=args.dir))
    say(f"starting redis-server and {len(NODES)} nodes in {workdir}")
    redis = RedisServer(directory=workdir / "redis")
    await redis.start()
    lc = LocalCluster(workdir / "run", NODES, overrides={
        "cluster": {"heartbeat_interval": 1.0, "heartbeat_misses": 3},
        "redis": {"url": redis.url, "prefix": "bench:"},
        "login": {"dev_sdk_secret": SDK_SECRET}})
    probe = Cluster("bench", ClusterSettings(secret=DEV_SECRET.encode(), call_timeout=30.0),
                    {n: lc.address(n) for n in NODES if n != "master"})
    bots: Any = None
    try:
        await lc.start(*NODES)
        await lc.wait_up(NODES)
        probe.startService()
        procs = {n: psutil.Process(lc.nodes[n].pid) for n in WATCHED}

        async def online() -> list[int]:
            found: list[int] = []
            for role in ROLES:
                found += await probe.call(role, "gateway", "online_players")
            return found

        say(f"logging {args.players} bots in (regions 1 and 2) and holding them")
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        login = lc.node_config("login1")
        bots = _Bots(workdir / "bots.log")
        transport = reactor.spawnProcess(bots, sys.executable, [
            sys.executable, "-m", "rltwist.bot", "--login",
            f"{login['host']}:{login['client_port']}", "--dev-sdk-secret", SDK_SECRET,
            "--count", str(args.players), "--server-id", "1,2", "--hold", "inf",
            "--heartbeat", "10", "--concurrency", "100", "--quiet"], env=env, path=repo)

        async def all_online() -> bool:
            return len(await online()) >= args.players

        await until(reactor, all_online, 300, f"{args.players} bots online", every=0.5)
        players = await online()

        async def stored() -> float:
            total = 0.0
            for role in ROLES:
                text = await lc_metrics(lc, role)
                for line in text.splitlines():
                    if line.startswith('rl_gmail_deliveries_total{result="stored"} '):
                        total += float(line.split()[-1])
            return total

        rows = []
        for i in range(args.sends):
            before = await stored()
            cpu0 = cpu_of(procs)
            t0 = time.monotonic()
            status, answer = await lc.gm("POST", "/mail/global",
                                         {"title": f"bench {i + 1}", "body": "x" * 200,
                                          "attachments": {"gold": 1}}, timeout=60)
            if status != 200:
                raise RuntimeError(f"POST /mail/global answered {status}: {answer}")
            ack = time.monotonic() - t0

            async def everyone(before: float = before) -> bool:
                return await stored() - before >= len(players)

            await until(reactor, everyone, 300, f"send {i + 1} in {len(players)} mailboxes")
            took = time.monotonic() - t0
            cpu1 = cpu_of(procs)
            per_k = {n: round((cpu1[n] - cpu0[n]) * 1000 / len(players) * 1000, 1)
                     for n in WATCHED}
            rows.append({"send": i + 1, "ack_ms": round(ack * 1000, 1),
                         "all_ms": round(took * 1000, 1),
                         "mails_per_s": round(len(players) / took),
                         "cpu_ms_per_1k": per_k})
            say(f"send {i + 1}: acknowledged in {ack * 1000:.0f} ms, in all "
                f"{len(players)} mailboxes after {took * 1000:.0f} ms")

        say("reading every mailbox")
        slots = defer.DeferredSemaphore(50)
        wrong: list[int] = []

        async def check(userid: int) -> None:
            async with slots:
                mails = await probe.call(probe.mail_node(userid), "mailrouter", "call",
                                         userid, "list")
            titles = Counter(m["title"] for m in mails)
            if any(titles[f"bench {i + 1}"] != 1 for i in range(args.sends)):
                wrong.append(userid)

        await defer.gatherResults([defer.Deferred.fromCoroutine(check(u)) for u in players])
    finally:
        if bots is not None and not bots.ended.called:
            transport.signalProcess("KILL")
        await lc.stop_all()
        await redis.stop()
        if probe.running:
            await defer.maybeDeferred(probe.stopService)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    result = {"machine": {"cpus": os.cpu_count(), "cpu": platform.processor()},
              "players": len(players), "sends": args.sends,
              "ack_ms_p50": statistics.median(r["ack_ms"] for r in rows),
              "all_ms_p50": statistics.median(r["all_ms"] for r in rows),
              "mails_per_s_p50": statistics.median(r["mails_per_s"] for r in rows),
              "exactly_once": not wrong, "wrong_mailboxes": len(wrong), "rows": rows}
    header = (f"{'send':>4} {'players':>7} {'ack ms':>7} {'all ms':>8} {'mails/s':>8}  "
              + " ".join(f"{n + ' cpu ms/1k':>19}" for n in WATCHED))
    print(header)
    for r in rows:
        print(f"{r['send']:>4} {len(players):>7} {r['ack_ms']:>7.1f} {r['all_ms']:>8.0f} "
              f"{r['mails_per_s']:>8}  "
              + " ".join(f"{r['cpu_ms_per_1k'][n]:>19.1f}" for n in WATCHED))
    print(f"exactly once in every mailbox: {'yes' if not wrong else f'NO ({len(wrong)})'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if not wrong else 1


async def lc_metrics(lc: LocalCluster, name: str) -> str:
    import treq

    port = lc.node_config(name)["metrics_port"]
    response = await treq.get(f"http://127.0.0.1:{port}/metrics", persistent=False,
                              timeout=5)
    return str((await treq.content(response)).decode())


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: 1,000 players, 2 sends")
    p.add_argument("--players", type=int, default=4000,
                   help="bots held online (default: 4000; 1000 with --quick)")
    p.add_argument("--sends", type=int, default=5, help="global mails (default: 5)")
    p.add_argument("--dir", help="parent directory of the work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.players, args.sends = min(args.players, 1000), min(args.sends, 2)
    if args.players < 1 or args.sends < 1:
        p.error("--players and --sends must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
