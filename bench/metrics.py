"""Benchmark of what a Prometheus scrape costs the nodes, and how many series each serves.

    python bench/metrics.py [--quick] [--online N] [--regions R] [--renders K] [--json PATH]

Two parts:

* **Real nodes, N players online** (default 5,000): a private redis-server, master,
  logiccenter, rolecity1, role1 and login1 as twistd processes, and N bots (one ``rl-bot``
  process) that log in and hold their sessions on role1. Then role1's ``/metrics`` is
  fetched K times over HTTP, one after the other, the way Prometheus scrapes: the time to
  the last byte (p50, p99, max), the size, and the series of every node.
* **A node of a cluster with R regions** (default 100, ~420 nodes), in this process: a
  real master, role and rolecity node object (the same services and collectors as the
  processes, built but not started) whose metrics are filled the way the busiest such node
  would fill them: links and calls to every other node of the cluster, every cluster
  method the real nodes of the first part called, N players of all R regions online on
  the role node, every Redis command and script timed, every node in master's table.
  Its series are counted and its ``/metrics`` text rendered K times (p50).

Targets: role1's ``/metrics`` renders in <= 50 ms with N = 5,000 online; no node serves
more than ``rltwist.metrics.SERIES_BUDGET`` (2,000) series at 100 regions.

JSON (``--json``): ``render_ms_5000_online`` (p50 of the real role node's HTTP scrape with
5,000 online), ``series_per_node_max`` (the most series of any node, real or at R
regions), and the details under ``real`` and ``simulated``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.bot.report import percentile
from rltwist.cli import react_main
from rltwist.launcher import LocalCluster, local_config, render_config
from rltwist.metrics import SERIES_BUDGET
from rltwist.redis import OnlineState, RedisClient, RedisServer

NODES = ("master", "logiccenter", "rolecity1", "role1", "login1")
SDK_SECRET = "bench-metrics-sdk-secret"
PREFIX = "bench-metrics:"
TARGET_RENDER_MS = 50.0


def say(text: str) -> None:
    print(text, flush=True)


def series_of(text: str) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


# -- part 1: real nodes ---------------------------------------------------------------------


class _Bots(protocol.ProcessProtocol):
    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "ab")
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.log.close()
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(code if code is not None else -1)


async def fetch(reactor: Any, url: str) -> tuple[float, bytes]:
    """One GET of *url* on a new connection: (seconds to the last byte, body)."""
    import treq

    started = time.perf_counter()
    response = await treq.get(url, persistent=False).addTimeout(30, reactor)
    body = await treq.content(response).addTimeout(30, reactor)
    return time.perf_counter() - started, body


def metric_value(text: str, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def real_nodes(reactor: Any, workdir: Path, online: int, renders: int
                     ) -> dict[str, Any]:
    say(f"part 1: redis-server and {', '.join(NODES)}; {online} bots online on role1")
    redis = RedisServer(directory=workdir / "redis")
    await redis.start()
    overrides = {"cluster": {"heartbeat_interval": 1.0, "heartbeat_misses": 3},
                 "redis": {"url": redis.url, "prefix": PREFIX},
                 "login": {"dev_sdk_secret": SDK_SECRET}}
    lc = LocalCluster(workdir / "run", NODES, overrides=overrides)
    bots: Any = None
    try:
        await lc.start(*NODES)
        await lc.wait_up(NODES)
        client = RedisClient(redis.url, prefix=PREFIX)
        await client.connect()
        state = OnlineState(client)
        deadline = time.monotonic() + 30
        while not await state.get_available():
            if time.monotonic() > deadline:
                raise RuntimeError("master did not set is_available within 30 s")
            await task.deferLater(reactor, 0.1)
        await client.disconnect()
        env = dict(os.environ)
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        bots = _Bots(workdir / "bots.log")
        argv = [sys.executable, "-m", "rltwist.bot", "--config", str(lc.config_path),
                "--count", str(online), "--hold", "inf", "--heartbeat", "30",
                "--script", "rename", "--quiet", "--json", str(workdir / "bots.json")]
        transport = reactor.spawnProcess(bots, sys.executable, argv, env=env, path=repo)
        role = lc.node_config("role1")
        url = f"http://{role['host']}:{role['metrics_port']}/metrics"
        started = time.monotonic()
        while True:
            _, body = await fetch(reactor, url)
            now_online = metric_value(body.decode(), "rl_role_online_players")
            if now_online >= online:
                break
            if bots.ended.called or time.monotonic() - started > 180:
                raise RuntimeError(f"only {now_online:.0f} of {online} bots online "
                                   f"(bots log: {workdir / 'bots.log'})")
            await task.deferLater(reactor, 0.5)
        say(f"  {online} online after {time.monotonic() - started:.1f}s; scraping role1 "
            f"{renders} times")
        times = []
        for _ in range(renders):
            seconds, body = await fetch(reactor, url)
            times.append(seconds * 1000)
        series = {}
        calls: dict[str, set[tuple[str, str]]] = {}
        for name in NODES:
            n = lc.node_config(name)
            _, raw = await fetch(reactor, f"http://{n['host']}:{n['metrics_port']}/metrics")
            text = raw.decode()
            series[name] = series_of(text)
            kind = re.sub(r"\d+$", "", name)
            for m in re.finditer(r'^rl_cluster_(?:calls|sends)_out_total\{method="([^"]*)",'
                                 r'service="([^"]*)"\}', text, re.M):
                calls.setdefault(kind, set()).add((m.group(2), m.group(1)))
        result = {
            "online": online, "renders": renders, "bytes": len(body),
            "scrape_ms_p50": round(statistics.median(times), 2),
            "scrape_ms_p99": round(percentile(sorted(times), 99), 2),
            "scrape_ms_max": round(max(times), 2),
            "series": series,
            "calls": {k: sorted(v) for k, v in calls.items()},
        }
        transport.signalProcess("INT")  # rl-bot releases its sessions
        try:
            await bots.ended.addTimeout(120, reactor)
        except defer.TimeoutError:
            transport.signalProcess("KILL")
        return result
    finally:
        if bots is not None and not bots.ended.called:
            try:
                os.kill(transport.pid, signal.SIGKILL)
            except (ProcessLookupError, UnboundLocalError):
                pass
        await lc.stop_all(timeout=60)
        await redis.stop()


# -- part 2: the busiest nodes of a cluster with R regions --------------------------------


def cluster_names(regions: int) -> list[str]:
    roles, logins = max(2, regions // 10), max(1, regions // 20)
    names = ["master", "logiccenter"]
    for kind in ("map", "guild", "mail", "rolecity"):
        names += [f"{kind}{sid}" for sid in range(1, regions + 1)]
    names += [f"role{i}" for i in range(1, roles + 1)]
    names += [f"login{i}" for i in range(1, logins + 1)]
    return names


def build_node(kind: str, name: str, config_path: Path) -> Any:
    """A node object as twistd builds it (services added, nothing started)."""
    from rltwist.config import load_config
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.common.services import install_common

    builders = {
        "master": "rltwist.nodes.master.service",
        "role": "rltwist.nodes.role.service",
        "rolecity": "rltwist.nodes.rolecity.service",
        "login": "rltwist.nodes.login.service",
    }
    config = load_config(str(config_path))
    node = Node(config, config.node(name))
    install_common(node)
    module = __import__(builders[kind], fromlist=["build"])
    module.build(node)
    node.finish()
    return node


def fill(node: Any, kind: str, names: list[str], calls: dict[str, list[Any]],
         online: int, regions: int) -> None:
    """Make *node*'s metrics hold every label set the busiest node of its kind would."""
    from rltwist.cluster.metrics import count
    from rltwist.redis.metrics import COMMANDS
    from rltwist.redis.scripts import ALL

    cluster = node.cluster
    stats = cluster.stats
    for peer in names:
        if peer == node.name:
            continue
        cluster._sender(peer)  # a link to every node of the cluster
        stats.set_link(peer, 1)
        stats.peer(peer).observe(0.0008)  # and calls to every one of them
    for service, method in calls.get(kind, []):
        stats.out_calls(service, method).observe(0.001)
        count(stats.sends_out, service, method)
    redis_metrics = node._redis.client.metrics if node._redis is not None else None
    if redis_metrics is not None:
        for command in COMMANDS:
            redis_metrics.observe(command, 0.0005)
        for script in ALL:
            redis_metrics.observe(script.name, 0.0005)
    if kind == "role":
        gateway = next(s for s in _services(node) if type(s).__name__ == "Gateway")
        for i in range(online):
            sid = i % regions + 1
            gateway.players[(i + 1) << 16 | sid] = None
    if kind == "master":
        from rltwist.config import parse_node_name
        from rltwist.nodes.master.masterflow import UP, NodeRecord

        flow = node.masterflow
        for peer in names:
            if peer == node.name:
                continue
            k, number = parse_node_name(peer)
            c = node.config.nodes[peer]
            flow.nodes[peer] = NodeRecord(
                name=peer, kind=k, number=number, host=c.host, port=c.port,
                metrics_port=c.metrics_port, client_port=c.client_port, pid=1,
                code_version="0.1.0", config_version="1-x", started_at=0.0,
                registered_at=0.0, last_seen=0.0, state=UP)


def _services(node: Any) -> list[Any]:
    out = []
    for handlers in node.cluster.handlers.values():
        for fn in handlers.values():
            owner = getattr(fn, "__self__", None)
            if owner is not None and owner not in out:
                out.append(owner)
    return out


async def simulated(workdir: Path, regions: int, online: int, renders: int,
                    calls: dict[str, list[Any]]) -> dict[str, Any]:
    from prometheus_client import generate_latest

    names = cluster_names(regions)
    say(f"part 2: the busiest master, role, rolecity and login node of a cluster with "
        f"{regions} regions ({len(names)} nodes), in this process")
    sections = local_config(names, overrides={"storage": {"path": str(workdir / "sim-data")},
                                              "hotreload": {"hotfix_interval": 0,
                                                            "config_interval": 0}})
    config_path = workdir / "sim.toml"
    config_path.write_text(render_config(sections))
    out: dict[str, Any] = {"regions": regions, "nodes_in_cluster": len(names), "nodes": {}}
    for kind, name in (("master", "master"), ("role", "role1"), ("rolecity", "rolecity1"),
                       ("login", "login1")):
        node = build_node(kind, name, config_path)
        fill(node, kind, names, calls, online, regions)
        text = generate_latest(node.registry).decode()
        times = []
        for _ in range(renders):
            started = time.perf_counter()
            generate_latest(node.registry)
            times.append((time.perf_counter() - started) * 1000)
        families: dict[str, int] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                metric = re.split(r"[{ ]", line, maxsplit=1)[0]
                metric = re.sub(r"_(bucket|sum|count|total)$", "", metric)
                families[metric] = families.get(metric, 0) + 1
        out["nodes"][name] = {
            "kind": kind, "series": series_of(text), "render_ms_p50":
            round(statistics.median(times), 2),
            "top": dict(sorted(families.items(), key=lambda kv: -kv[1])[:6]),
        }
        for db in node._databases.values():  # their thread pools would keep us alive
            await db.close()
    return out


# -- main -----------------------------------------------------------------------------------


def print_tables(result: dict[str, Any]) -> None:
    real = result["real"]
    say("")
    say(f"| real nodes, {real['online']} online on role1 | value |")
    say("|---|---:|")
    say(f"| role1 /metrics over HTTP, p50 / p99 / max (ms, {real['renders']} scrapes) | "
        f"{real['scrape_ms_p50']} / {real['scrape_ms_p99']} / {real['scrape_ms_max']} |")
    say(f"| role1 /metrics size (bytes) | {real['bytes']} |")
    for name, n in real["series"].items():
        say(f"| series: {name} | {n} |")
    sim = result["simulated"]
    say("")
    say(f"| node at {sim['regions']} regions ({sim['nodes_in_cluster']} nodes) | series | "
        f"render p50 ms | largest families |")
    say("|---|---:|---:|---|")
    for name, n in sim["nodes"].items():
        top = ", ".join(f"{k} {v}" for k, v in n["top"].items())
        say(f"| {name} ({n['kind']}) | {n['series']} | {n['render_ms_p50']} | {top} |")
    say("")
    say(f"render_ms_5000_online = {result['render_ms_5000_online']} (target <= "
        f"{TARGET_RENDER_MS:g}); series_per_node_max = {result['series_per_node_max']} "
        f"(budget {SERIES_BUDGET})")


async def main(reactor: Any, args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="rl-metrics-bench-"))
    try:
        real = await real_nodes(reactor, workdir, args.online, args.renders)
        sim = await simulated(workdir, args.regions, args.online, args.renders, real["calls"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "render_ms_5000_online": real["scrape_ms_p50"],
        "series_per_node_max": max([*real["series"].values(),
                                    *(n["series"] for n in sim["nodes"].values())]),
        "series_budget": SERIES_BUDGET, "target_render_ms": TARGET_RENDER_MS,
        "real": real, "simulated": sim,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": round(time.monotonic() - started, 1),
    }
    print_tables(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    ok = (result["render_ms_5000_online"] <= TARGET_RENDER_MS
          and result["series_per_node_max"] <= SERIES_BUDGET)
    say("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer scrapes (under a minute)")
    p.add_argument("--online", type=int, default=5000, help="bots online (default 5000)")
    p.add_argument("--regions", type=int, default=100, help="regions of part 2 (default 100)")
    p.add_argument("--renders", type=int, default=None,
                   help="scrapes / renders per node (default 200, 30 with --quick)")
    p.add_argument("--json", help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.renders is None:
        args.renders = 30 if args.quick else 200
    return args


if __name__ == "__main__":
    react_main(lambda reactor: main(reactor, parse_args(sys.argv[1:])))
