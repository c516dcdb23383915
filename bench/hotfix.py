"""Benchmark of a cluster-wide hotfix under load: how soon every node serves the new code
after the GM call, and how many requests fail meanwhile.

    python bench/hotfix.py [--quick] [--nodes N] [--swaps R] [--per-node K] [--json PATH]

A local cluster (master + N slave nodes as twistd processes) runs with its own root
(``etc/game`` copied from this checkout, an empty ``hotfix/codefix``) and a throw-away
system module on the nodes' PYTHONPATH.  This process is node ``login1`` and keeps K calls
per node in flight to ``hotfix.call_system(<module>, "version")``.  Each swap writes a new
version of the module plus a new fix list, then ``POST /hotfix``; per node the time from
the GM call to the first answer carrying the new version is recorded.  The directory
pollers run every 60 s, so it is the GM call that applies each list.

Columns: ``gm ms`` until the GM answer (every node applied); ``all nodes ms`` until the last
node answered with the new code (max over nodes), ``first ms`` the first node;
``calls`` answered during the swap (GM call to 0.5 s after); ``failed`` failed calls;
``stale`` answers with the old version to calls sent after the GM answer arrived (should
be 0: the GM answers only after every node swapped).  Targets: all nodes < 1000 ms after
the GM call, 0 failed requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist import __version__
from rltwist.cli import react_main
from rltwist.cluster import Cluster
from rltwist.config import load_config
from rltwist.launcher import LocalCluster

REPO = Path(__file__).resolve().parents[1]
DRIVER = "login1"
TARGET_ALL_MS = 1000.0


def module_source(version: str) -> str:
    return ("from rltwist.ecs.system import System\n\n\n"
            "class Target(System):\n"
            "    def version(self):\n"
            f"        return {version!r}\n\n\n"
            "system = Target()\n")


def slave_names(count: int) -> list[str]:
    """logiccenter, then map1, guild1, mail1, map2 … (kinds that need no Redis)."""
    names = ["logiccenter"]
    sid = 1
    while len(names) < count:
        for kind in ("map", "guild", "mail"):
            if len(names) < count:
                names.append(f"{kind}{sid}")
        sid += 1
    return names[:count]


class Load:
    """K loops per node calling the target; every answer kept with send/reply times."""

    def __init__(self, me: Cluster, nodes: list[str], module: str, per_node: int) -> None:
        self.me, self.module = me, module
        self.answers: dict[str, list[tuple[float, float, str]]] = {n: [] for n in nodes}
        self.failures: list[tuple[float, str]] = []
        self.running = True
        self.loops = [defer.Deferred.fromCoroutine(self._loop(n))
                      for n in nodes for _ in range(per_node)]

    async def _loop(self, node: str) -> None:
        perf = time.perf_counter
        answers = self.answers[node]
        while self.running:
            sent = perf()
            try:
                value = await self.me.call(node, "hotfix", "call_system", self.module,
                                           "version", [], timeout=5)
            except Exception as e:
                self.failures.append((perf(), f"{node}: {e}"))
                await task.deferLater(reactor, 0.01)
                continue
            answers.append((sent, perf(), value))

    async def stop(self) -> None:
        self.running = False
        await defer.gatherResults(self.loops)


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        await task.deferLater(reactor, 0.005)


async def main(args: argparse.Namespace) -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="rl-bench-hotfix-"))
    pkg = "hfbench_" + uuid.uuid4().hex[:8]
    module = f"{pkg}.target"
    pkg_dir = run_dir / "pylib" / pkg
    pkg_dir.mkdir(parents=True)
    (pkg_dir / "__init__.py").write_text("")
    (pkg_dir / "target.py").write_text(module_source("v0"))
    root = run_dir / "root"
    shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
    codefix = root / "hotfix" / "codefix"
    codefix.mkdir(parents=True)

    slaves = slave_names(args.nodes)
    nodes = ["master", *slaves]
    lc = LocalCluster(run_dir / "nodes", [*nodes, DRIVER], overrides={"hotreload": {
        "root": str(root), "hotfix_interval": 60.0, "config_interval": 0}})
    python_path = os.pathsep.join(
        p for p in (str(run_dir / "pylib"), os.environ.get("PYTHONPATH", "")) if p)
    for name in nodes:
        lc.process(name).env.update(PYTHONPATH=python_path, PYTHONDONTWRITEBYTECODE="1")
    me: Cluster | None = None
    load: Load | None = None
    try:
        print(f"starting master + {len(slaves)} nodes ({', '.join(slaves)}), run dir "
              f"{run_dir} ...", flush=True)
        await lc.start(*nodes)
        await lc.wait_up(nodes, timeout=60)
        config = load_config(lc.config_path)
        node = config.node(DRIVER)
        me = Cluster(DRIVER, config.cluster,
                     {n.name: (n.host, n.port) for n in config.nodes.values()},
                     listen=(node.host, node.port))
        me.startService()
        for n in nodes:  # every node imports the system before the swaps
            assert await me.call(n, "hotfix", "call_system", module, "version", []) == "v0"

        load = Load(me, nodes, module, args.per_node)
        await task.deferLater(reactor, 0.5)
        rows = []
        for swap in range(1, args.swaps + 1):
            version, fix_id = f"v{swap}", f"bench-{swap:03d}"
            (pkg_dir / "target.py").write_text(module_source(version))
            (codefix / f"{fix_id}.toml").write_text(
                f'id = "{fix_id}"\nmodules = ["{module}"]\n')
            failed_before = len(load.failures)
            t0 = time.perf_counter()
            status, body = await lc.gm("POST", "/hotfix", {"timeout": 10}, timeout=15)
            t_gm = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"POST /hotfix answered {status}: {body}")
            expected = f"{__version__}+" + "+".join(f"bench-{i:03d}" for i in
                                                     range(1, swap + 1))
            if set(body["code_versions"]) != {expected}:
                raise RuntimeError(f"nodes disagree on the code version: "
                                   f"{body['code_versions']}")

            def first_new(n: str, version: str = version, t0: float = t0) -> float | None:
                assert load is not None
                return next((r for _, r, v in load.answers[n] if v == version and r >= t0),
                            None)

            await wait_until(lambda: all(first_new(n) is not None for n in nodes), 10,
                             f"every node to serve {version}")
            await task.deferLater(reactor, 0.5)
            seen = {n: (first_new(n) or 0.0) - t0 for n in nodes}
            window = sum(1 for answers in load.answers.values() for _, r, _ in answers
                         if t0 <= r <= t0 + (t_gm - t0) + 0.5)
            stale = sum(1 for answers in load.answers.values() for s, _, v in answers
                        if s > t_gm and v != version)
            row = {"swap": swap, "fix_id": fix_id, "gm_ms": round((t_gm - t0) * 1e3, 2),
                   "all_nodes_ms": round(max(seen.values()) * 1e3, 2),
                   "first_node_ms": round(min(seen.values()) * 1e3, 2),
                   "per_node_ms": {n: round(s * 1e3, 2) for n, s in seen.items()},
                   "calls": window, "failed": len(load.failures) - failed_before,
                   "stale": stale}
            rows.append(row)
            print(f"  swap {swap}: GM {row['gm_ms']:.1f} ms, all nodes {row['all_nodes_ms']:.1f}"
                  f" ms, failed {row['failed']}", flush=True)
        await load.stop()
        total_calls = sum(map(len, load.answers.values()))
        span = (max(r for a in load.answers.values() for _, r, _ in a)
                - min(s for a in load.answers.values() for s, _, _ in a))

        print()
        print(f"cluster-wide hotfix under load — master + {len(slaves)} nodes, "
              f"{args.per_node} calls in flight per node, {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}")
        head = (f"{'swap':>4} {'gm ms':>8} {'all nodes ms':>13} {'first ms':>9} "
                f"{'calls':>7} {'failed':>7} {'stale':>6}")
        print(head)
        print("-" * len(head))
        for r in rows:
            print(f"{r['swap']:>4} {r['gm_ms']:>8.1f} {r['all_nodes_ms']:>13.1f} "
                  f"{r['first_node_ms']:>9.1f} {r['calls']:>7} {r['failed']:>7} "
                  f"{r['stale']:>6}")
        all_ms = [r["all_nodes_ms"] for r in rows]
        failed = len(load.failures)
        summary = {
            "swaps": len(rows), "nodes": nodes, "per_node": args.per_node,
            "all_nodes_ms_median": round(statistics.median(all_ms), 2),
            "all_nodes_ms_max": round(max(all_ms), 2),
            "gm_ms_median": round(statistics.median(r["gm_ms"] for r in rows), 2),
            "failed": failed, "stale": sum(r["stale"] for r in rows),
            "calls": total_calls, "calls_per_s": round(total_calls / span, 1),
        }
        ok_time = summary["all_nodes_ms_max"] < TARGET_ALL_MS
        print(f"\nnew code on every node after the GM call: median "
              f"{summary['all_nodes_ms_median']:.1f} ms, max {summary['all_nodes_ms_max']:.1f}"
              f" ms (target < {TARGET_ALL_MS:.0f} ms: {'met' if ok_time else 'MISSED'})")
        print(f"failed requests: {failed} of {total_calls} "
              f"({summary['calls_per_s']:.0f} calls/s; target 0: "
              f"{'met' if failed == 0 else 'MISSED'}); stale answers: {summary['stale']}")
        if load.failures:
            print("first failures:", *(f for _, f in load.failures[:5]), sep="\n  ")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "rows": rows, "cpus": os.cpu_count(),
                           "python": sys.version.split()[0]}, f, indent=1)
            print(f"\nwrote {args.json}")
        return 0 if ok_time and failed == 0 else 1
    finally:
        if load is not None and load.running:
            await load.stop()
        if me is not None:
            await me.stopService()
        await lc.stop_all()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 swaps on 3 nodes")
    p.add_argument("--nodes", type=int, default=5, help="slave nodes besides master "
                   "(default 5)")
    p.add_argument("--swaps", type=int, default=10, help="hotfixes applied (default 10)")
    p.add_argument("--per-node", type=int, default=8,
                   help="calls in flight per node (default 8)")
    p.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args()
    if args.quick:
        args.nodes, args.swaps = 3, 3
    react_main(lambda _: main(args))


if __name__ == "__main__":
    cli()
