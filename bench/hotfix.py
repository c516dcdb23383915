"""Benchmark of a cluster-wide hotfix under load: how soon every node serves the new code
after the GM call, and how many requests fail meanwhile.

    python bench/hotfix.py [--quick] [--nodes N] [--swaps R] [--actor-swaps A]
                           [--per-node K] [--json PATH]

A local cluster (master + N slave nodes as twistd processes) runs with its own root
(``etc/game`` copied from this checkout, an empty ``hotfix/codefix``), a throw-away game
package holding a system module (configured in ``[hotfix] game_packages``) and a copy of
the ``rltwist`` package, both first on the nodes' PYTHONPATH.  This process is node
``login1`` and keeps K calls per node in flight to ``hotfix.call_system(<module>,
"version")``, and K more per guild node to ``guildrouter.call(<guild>, "info")`` — the
guild's LRU actor, one guild per guild node.

A ``system`` swap writes a new version of the system module plus a new fix list, then
``POST /hotfix``; an ``actor`` swap does the same to ``rltwist/nodes/guild/actor.py`` in the
copy (``info`` answers a new ``bench`` marker), so the list names the actor module of the
running guild groups.  Per node the time from the GM call to the first answer carrying the
new version (or marker) is recorded.  The directory pollers run every 60 s, so it is the GM
call that applies each list.

Columns: ``kind`` system or actor; ``gm ms`` until the GM answer (every node applied);
``all nodes ms`` until the last node answered with the new code (max over the nodes
serving that code), ``first ms`` the first node; ``calls`` answered during the swap (GM
call to 0.5 s after, both loads); ``failed`` failed calls; ``stale`` answers with the old
code to calls sent after the GM answer arrived (should be 0: the GM answers only after
every node swapped).  Targets: all nodes < 1000 ms after the GM call, 0 failed requests,
and the actor rows observe the new behaviour.
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
from rltwist.ecs.hotfix import write_fix_list
from rltwist.launcher import LocalCluster

REPO = Path(__file__).resolve().parents[1]
DRIVER = "login1"
TARGET_ALL_MS = 1000.0
ACTOR = "rltwist.nodes.guild.actor"
# The line of GuildActor.info the actor swaps extend with a version marker.
ACTOR_INFO_END = "return guilds.info(entity)"


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


def actor_source(pristine: str, marker: str) -> str:
    """The guild actor with ``info`` also answering ``"bench": marker``."""
    return pristine.replace(ACTOR_INFO_END,
                            f"return {{**guilds.info(entity), 'bench': {marker!r}}}")


class Load:
    """K loops per node calling ``targets[node]`` (service, method, *args); every answer
    kept as (sent, replied, version) with ``version_of(answer)``."""

    def __init__(self, me: Cluster, targets: dict[str, tuple[Any, ...]], per_node: int,
                 version_of: Any = str) -> None:
        self.me, self.targets, self.version_of = me, targets, version_of
        self.answers: dict[str, list[tuple[float, float, str]]] = {n: [] for n in targets}
        self.failures: list[tuple[float, str]] = []
        self.running = True
        self.loops = [defer.Deferred.fromCoroutine(self._loop(n))
                      for n in targets for _ in range(per_node)]

    async def _loop(self, node: str) -> None:
        perf = time.perf_counter
        answers = self.answers[node]
        service, method, *args = self.targets[node]
        while self.running:
            sent = perf()
            try:
                value = await self.me.call(node, service, method, *args, timeout=5)
            except Exception as e:
                self.failures.append((perf(), f"{node}: {e}"))
                await task.deferLater(reactor, 0.01)
                continue
            answers.append((sent, perf(), self.version_of(value)))

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
    # The nodes import this copy of rltwist, so the actor swaps never touch the checkout.
    code = run_dir / "code"
    shutil.copytree(REPO / "rltwist", code / "rltwist",
                    ignore=shutil.ignore_patterns("__pycache__"))
    actor_file = code / "rltwist" / "nodes" / "guild" / "actor.py"
    pristine = actor_file.read_text()
    if pristine.count(ACTOR_INFO_END) != 1:
        raise RuntimeError(f"{ACTOR}: GuildActor.info changed; adapt ACTOR_INFO_END")
    root = run_dir / "root"
    shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
    codefix = root / "hotfix" / "codefix"
    codefix.mkdir(parents=True)

    slaves = slave_names(args.nodes)
    nodes = ["master", *slaves]
    guilds = [n for n in slaves if n.startswith("guild")]
    if args.actor_swaps and not guilds:
        raise RuntimeError("actor swaps need a guild node: use --nodes 2 or more")
    lc = LocalCluster(run_dir / "nodes", [*nodes, DRIVER], overrides={
        "hotreload": {"root": str(root), "hotfix_interval": 60.0, "config_interval": 0},
        "hotfix": {"game_packages": [pkg]}})
    python_path = os.pathsep.join(
        p for p in (str(code), str(run_dir / "pylib"), os.environ.get("PYTHONPATH", "")) if p)
    for name in nodes:
        lc.process(name).env.update(PYTHONPATH=python_path, PYTHONDONTWRITEBYTECODE="1")
    me: Cluster | None = None
    loads: list[Load] = []
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
        guild_ids = {g: await me.call(g, "guildrouter", "create", 9000 + i, f"bench{i}",
                                      timeout=10) for i, g in enumerate(guilds)}

        system_load = Load(me, {n: ("hotfix", "call_system", module, "version", [])
                                for n in nodes}, args.per_node)
        actor_load = Load(me, {g: ("guildrouter", "call", gid, "info")
                               for g, gid in guild_ids.items()}, args.per_node,
                          version_of=lambda info: info.get("bench", "a0"))
        loads = [system_load, actor_load]
        await task.deferLater(reactor, 0.5)
        plan = ([("system", f"v{i}") for i in range(1, args.swaps + 1)]
                + [("actor", f"a{i}") for i in range(1, args.actor_swaps + 1)])
        rows: list[dict[str, Any]] = []
        fix_ids: list[str] = []
        for swap, (kind, version) in enumerate(plan, start=1):
            fix_id = f"bench-{swap:03d}-{kind}"
            if kind == "system":
                target, load = module, system_load
                (pkg_dir / "target.py").write_text(module_source(version))
                source = (pkg_dir / "target.py").read_bytes()
            else:
                target, load = ACTOR, actor_load
                actor_file.write_text(actor_source(pristine, version))
                source = actor_file.read_bytes()
            write_fix_list(codefix, fix_id, [target], sources={target: source})
            fix_ids.append(fix_id)
            failed_before = sum(len(lo.failures) for lo in loads)
            t0 = time.perf_counter()
            status, body = await lc.gm("POST", "/hotfix", {"timeout": 10}, timeout=15)
            t_gm = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"POST /hotfix answered {status}: {body}")
            expected = f"{__version__}+" + "+".join(fix_ids)
            if set(body["code_versions"]) != {expected}:
                raise RuntimeError(f"nodes disagree on the code version: "
                                   f"{body['code_versions']}")
            changed_on = sorted(n for n, e in body["nodes"].items()
                                if e.get("changes", {}).get(fix_id))
            if changed_on != sorted(load.answers):
                raise RuntimeError(f"{fix_id}: expected new code on {sorted(load.answers)}, "
                                   f"the nodes report it on {changed_on}")

            def first_new(n: str, load: Load = load, version: str = version,
                          t0: float = t0) -> float | None:
                return next((r for _, r, v in load.answers[n] if v == version and r >= t0),
                            None)

            await wait_until(lambda load=load: all(first_new(n) is not None
                                                   for n in load.answers), 10,
                             f"every node to serve {kind} {version}")
            await task.deferLater(reactor, 0.5)
            seen = {n: (first_new(n) or 0.0) - t0 for n in load.answers}
            window = sum(1 for lo in loads for answers in lo.answers.values()
                         for _, r, _ in answers if t0 <= r <= t_gm + 0.5)
            stale = sum(1 for answers in load.answers.values() for s, _, v in answers
                        if s > t_gm and v != version)
            row = {"swap": swap, "kind": kind, "fix_id": fix_id, "module": target,
                   "gm_ms": round((t_gm - t0) * 1e3, 2),
                   "all_nodes_ms": round(max(seen.values()) * 1e3, 2),
                   "first_node_ms": round(min(seen.values()) * 1e3, 2),
                   "per_node_ms": {n: round(v * 1e3, 2) for n, v in seen.items()},
                   "changed_on": changed_on, "observed": version, "calls": window,
                   "failed": sum(len(lo.failures) for lo in loads) - failed_before,
                   "stale": stale}
            rows.append(row)
            print(f"  swap {swap} ({kind}): GM {row['gm_ms']:.1f} ms, all nodes "
                  f"{row['all_nodes_ms']:.1f} ms, failed {row['failed']}", flush=True)
        for lo in loads:
            await lo.stop()
        answers_all = [a for lo in loads for answers in lo.answers.values() for a in answers]
        total_calls = len(answers_all)
        span = max(r for _, r, _ in answers_all) - min(s for s, _, _ in answers_all)

        print()
        print(f"cluster-wide hotfix under load — master + {len(slaves)} nodes, "
              f"{args.per_node} calls in flight per node (and per guild node to the guild "
              f"actor), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        head = (f"{'swap':>4} {'kind':>6} {'gm ms':>8} {'all nodes ms':>13} {'first ms':>9} "
                f"{'calls':>7} {'failed':>7} {'stale':>6}")
        print(head)
        print("-" * len(head))
        for r in rows:
            print(f"{r['swap']:>4} {r['kind']:>6} {r['gm_ms']:>8.1f} {r['all_nodes_ms']:>13.1f} "
                  f"{r['first_node_ms']:>9.1f} {r['calls']:>7} {r['failed']:>7} "
                  f"{r['stale']:>6}")
        failed = sum(len(lo.failures) for lo in loads)

        def stats(kind: str) -> dict[str, Any]:
            mine = [r for r in rows if r["kind"] == kind]
            if not mine:
                return {}
            all_ms = [r["all_nodes_ms"] for r in mine]
            return {"swaps": len(mine), "all_nodes_ms_median": round(statistics.median(all_ms), 2),
                    "all_nodes_ms_max": round(max(all_ms), 2),
                    "gm_ms_median": round(statistics.median(r["gm_ms"] for r in mine), 2),
                    "stale": sum(r["stale"] for r in mine)}

        summary = {
            "swaps": len(rows), "nodes": nodes, "per_node": args.per_node,
            "all_nodes_ms_median": round(statistics.median(r["all_nodes_ms"] for r in rows), 2),
            "all_nodes_ms_max": round(max(r["all_nodes_ms"] for r in rows), 2),
            "gm_ms_median": round(statistics.median(r["gm_ms"] for r in rows), 2),
            "failed": failed, "stale": sum(r["stale"] for r in rows),
            "calls": total_calls, "calls_per_s": round(total_calls / span, 1),
            "system": stats("system"), "actor": stats("actor"),
            "actor_behaviour_observed": all(r["kind"] != "actor" or r["changed_on"] == guilds
                                            for r in rows),
        }
        ok_time = summary["all_nodes_ms_max"] < TARGET_ALL_MS
        for kind in ("system", "actor"):
            st = summary[kind]
            if st:
                print(f"\n{kind} swaps: new code on every node after the GM call: median "
                      f"{st['all_nodes_ms_median']:.1f} ms, max {st['all_nodes_ms_max']:.1f} ms",
                      end="")
        print(f"\n(target < {TARGET_ALL_MS:.0f} ms: {'met' if ok_time else 'MISSED'})")
        if summary["actor"]:
            print(f"actor swaps ({ACTOR}): the new guild info was answered by "
                  f"{', '.join(guilds)} after each GM call")
        print(f"failed requests: {failed} of {total_calls} "
              f"({summary['calls_per_s']:.0f} calls/s; target 0: "
              f"{'met' if failed == 0 else 'MISSED'}); stale answers: {summary['stale']}")
        for lo in loads:
            if lo.failures:
                print("first failures:", *(f for _, f in lo.failures[:5]), sep="\n  ")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "rows": rows, "cpus": os.cpu_count(),
                           "python": sys.version.split()[0]}, f, indent=1)
            print(f"\nwrote {args.json}")
        return 0 if ok_time and failed == 0 and summary["stale"] == 0 else 1
    finally:
        for lo in loads:
            if lo.running:
                await lo.stop()
        if me is not None:
            await me.stopService()
        await lc.stop_all()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 system + 1 actor swaps on 3 nodes")
    p.add_argument("--nodes", type=int, default=5, help="slave nodes besides master "
                   "(default 5: logiccenter, map1, guild1, mail1, map2)")
    p.add_argument("--swaps", type=int, default=10, help="system hotfixes (default 10)")
    p.add_argument("--actor-swaps", type=int, default=3,
                   help="hotfixes of the guild actor module (default 3)")
    p.add_argument("--per-node", type=int, default=8,
                   help="calls in flight per node (default 8)")
    p.add_argument("--keep", action="store_true", help="keep the run directory and logs")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args()
    if args.quick:
        args.nodes, args.swaps, args.actor_swaps = 3, 3, 1
    react_main(lambda _: main(args))


if __name__ == "__main__":
    cli()
