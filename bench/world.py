"""Benchmark of the world map (issue 13 "Must show"): the viewport AOI on one map node,
plus the march figures of bench/world_marches.py when that file is present.

    python bench/world.py [--quick] [--watchers N] [--rate R] [--seconds S]
                          [--entities E] [--moves M] [--json PATH]

One real ``twistd rl-map`` process (``map1``, test flag ``worlddebug``); this process is
the two role nodes ``role1`` and ``role2`` (cluster members listening on their configured
ports, serving ``mapview.deliver`` as the role gateway does, and decoding each MapNotify
body once). Steps:

1. ``worlddebug.populate``: ``--entities`` resource points (20,000; 5,000 with --quick)
   at uniformly random tiles of the 512 x 512 map.
2. ``--watchers`` (1,000) players watch 30 x 20-tile views at uniformly random places,
   half of them on each role node (``aoiscene.watch``, as the role node calls it).
3. Churn: ``worlddebug.churn`` changes ``--rate`` (2,000) random entities a second for
   ``--seconds`` (20; 5 with --quick) inside the map process (changes/s reported is what
   the map made: a loaded machine runs fewer churn ticks) (every fourth change moves
   the entity to a random tile, the others change in place); each change stamps the
   entity with the wall-clock time in µs, so the receiving role node measures
   change-to-role-node latency per delivered entity. Reported: p50/p99 latency,
   deliveries/s (a delivery = one watcher told of one entity) beside the expected figure
   (changes/s x mean watchers of the changed block(s), from the actual watchers' blocks),
   batches/s (``mapview.deliver`` messages) and the map process' CPU µs per delivery
   (user + system, psutil, over the churn window).
4. View moves: ``--moves`` (1,000; 300 with --quick) watches of a new random 30 x 20 view
   by watchers that already watch (every block new: the largest snapshot), timed as the
   role node sees them (the call's round trip, encoding included), while nothing churns.

The latency is measured where the batch reaches the role node; the gateway then writes the
encoded body as it is to each player's socket (bench/social.py measures that fan-out).
JSON top-level keys: ``aoi_p99_ms``, ``aoi_p50_ms``, ``deliveries_per_s``,
``expected_deliveries_per_s``, ``cpu_us_per_delivery``, ``snapshot_p99_ms``,
``snapshot_p50_ms``, and ``idle_cpu_pct_10k_marches`` / ``arrivals_per_s`` from
bench/world_marches.py (null, with ``marches`` saying why, when that file is absent).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.cluster import Cluster, Service, handler
from rltwist.config import load_config
from rltwist.launcher import LocalCluster
from rltwist.protocols import pb
from rltwist.stats import percentile

ROLES = ("role1", "role2")
SIZE, BLOCK = 512, 16
VIEW_W, VIEW_H = 30, 20
MARCHES = Path(__file__).with_name("world_marches.py")


def say(text: str) -> None:
    print(text, flush=True)


class Receiver(Service):
    """``mapview`` of a fake role node: counts deliveries and their latencies."""

    name = "mapview"

    def __init__(self) -> None:
        self.deliveries = 0
        self.batches = 0
        self.latencies: list[float] = []   # ms, one per (delivered entity, watcher)
        self.recording = False

    @handler
    def deliver(self, source: str, epoch: int, seq: int, groups: list[Any]) -> int:
        now_us = time.time() * 1_000_000
        self.batches += 1
        n = 0
        for body, users in groups:
            note = pb.MapNotify.FromString(body)
            watchers = len(users)
            items = len(note.appeared) + len(note.updated) + len(note.disappeared)
            n += items * watchers
            if self.recording:
                for e in (*note.appeared, *note.updated):
                    if e.amount:
                        lat = (now_us - e.amount) / 1000.0
                        self.latencies.extend([lat] * watchers)
        self.deliveries += n
        return n


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def expected_watchers(views: dict[int, frozenset[int]]) -> float:
    """Mean watchers of the block of a uniformly random tile."""
    per_row = SIZE // BLOCK
    count: dict[int, int] = {}
    for blocks in views.values():
        for b in blocks:
            count[b] = count.get(b, 0) + 1
    return sum(count.get(b, 0) for b in range(per_row * per_row)) / (per_row * per_row)


async def run_marches(reactor: Any, quick: bool) -> dict[str, Any]:
    if not MARCHES.exists():
        return {"marches": f"{MARCHES.name} absent: march figures not measured",
                "idle_cpu_pct_10k_marches": None, "arrivals_per_s": None}
    spec = importlib.util.spec_from_file_location("world_marches", MARCHES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result: dict[str, Any] = await module.measure(reactor, quick)
    return result


async def main(reactor: Any, args: argparse.Namespace) -> int:
    run_dir = tempfile.mkdtemp(prefix="rl-bench-world-")
    lc = LocalCluster(run_dir, ["map1", *ROLES], test_flags=["worlddebug"])
    members: list[Cluster] = []
    receivers: dict[str, Receiver] = {}
    result: dict[str, Any] = {}
    try:
        say(f"starting rl-map node map1 (run dir {run_dir}) ...")
        await lc.start("map1")
        config = load_config(lc.config_path)
        addresses = {n.name: (n.host, n.port) for n in config.nodes.values()}
        for role in ROLES:
            node = config.node(role)
            me = Cluster(role, config.cluster, addresses, listen=(node.host, node.port))
            receivers[role] = Receiver()
            me.register(receivers[role])
            me.startService()
            members.append(me)
        call = members[0].call
        await call("map1", "diag", "ping")
        proc = psutil.Process(lc.nodes["map1"].pid)

        t0 = time.perf_counter()
        total = await call("map1", "worlddebug", "populate", args.entities, 1, timeout=120)
        say(f"populated: {total} entities in {time.perf_counter() - t0:.1f}s")

        rng = random.Random(7)
        views: dict[int, frozenset[int]] = {}

        async def watch(userid: int, timed: list[float] | None = None) -> None:
            x, y = rng.randrange(SIZE - VIEW_W + 1), rng.randrange(SIZE - VIEW_H + 1)
            role = ROLES[userid % 2]
            started = time.perf_counter()
            answer = await call("map1", "aoiscene", "watch", userid, 1, x, y, VIEW_W, VIEW_H,
                                role, timeout=30)
            if timed is not None:
                timed.append((time.perf_counter() - started) * 1000)
            r = pb.MapView.Response.FromString(answer[2])
            assert r.code == pb.ErrorCode.OK, r.code
            views[userid] = frozenset(r.blocks)

        t0 = time.perf_counter()
        for start in range(0, args.watchers, 50):
            await defer.gatherResults([defer.Deferred.fromCoroutine(watch(u)) for u in
                                       range(start, min(args.watchers, start + 50))])
        say(f"{len(views)} watchers in {time.perf_counter() - t0:.1f}s; mean blocks per "
            f"view {sum(map(len, views.values())) / len(views):.2f}")
        mean_w = expected_watchers(views)

        # churn
        for r in receivers.values():
            r.deliveries = r.batches = 0
            r.latencies.clear()
            r.recording = True
        changes0 = (await call("map1", "worlddebug", "churn_state"))["changes"]
        cpu0, w0 = cpu_seconds(proc), time.perf_counter()
        ok = await call("map1", "worlddebug", "churn", float(args.rate), float(args.seconds),
                        4, 2)
        assert ok
        await task.deferLater(reactor, args.seconds)
        for _ in range(100):
            churn = await call("map1", "worlddebug", "churn_state")
            if not churn["running"]:
                break
            await task.deferLater(reactor, 0.05)
        await task.deferLater(reactor, 0.3)   # the last batch
        cpu1, w1 = cpu_seconds(proc), time.perf_counter()
        for r in receivers.values():
            r.recording = False
        window = w1 - w0
        deliveries = sum(r.deliveries for r in receivers.values())
        batches = sum(r.batches for r in receivers.values())
        lats = sorted(x for r in receivers.values() for x in r.latencies)
        # what the map made (a loaded machine runs fewer ticks of the churn loop)
        changes_per_s = round((churn["changes"] - changes0) / args.seconds)
        # a move tells the watchers of the old and of the new block (every 4th change)
        expected = changes_per_s * mean_w * (1 + 1 / 4)
        result.update({
            "watchers": len(views), "entities": total, "changes_per_s": changes_per_s,
            "target_changes_per_s": args.rate,
            "seconds": args.seconds,
            "aoi_p50_ms": round(percentile(lats, 50, ordered=True), 2) if lats else None,
            "aoi_p99_ms": round(percentile(lats, 99, ordered=True), 2) if lats else None,
            "deliveries_per_s": round(deliveries / args.seconds),
            "expected_deliveries_per_s": round(expected),
            "mean_watchers_per_block": round(mean_w, 2),
            "batches_per_s": round(batches / args.seconds, 1),
            "cpu_us_per_delivery": round((cpu1 - cpu0) / deliveries * 1e6, 2)
            if deliveries else None,
            "map_cpu_pct": round((cpu1 - cpu0) / window * 100, 1),
        })

        # view moves: every block new
        timed: list[float] = []
        ids = sorted(views)
        for i in range(args.moves):
            await watch(ids[i % len(ids)], timed)
        timed.sort()
        result.update({
            "view_moves": len(timed),
            "snapshot_p50_ms": round(percentile(timed, 50, ordered=True), 2),
            "snapshot_p99_ms": round(percentile(timed, 99, ordered=True), 2)})
    finally:
        for me in members:
            await me.stopService()
        await lc.stop_all()

    result.update(await run_marches(reactor, args.quick))
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "platform": platform.platform(), "load": os.getloadavg()}
    say("")
    say(f"world viewport: 1 map node, {result['watchers']} watchers (30x20 views), "
        f"{result['entities']} entities, {result['changes_per_s']} changes/s for "
        f"{result['seconds']} s")
    rows = [
        ("change-to-role-node p50 / p99 ms", f"{result['aoi_p50_ms']} / "
         f"{result['aoi_p99_ms']}", "p99 <= 100"),
        ("deliveries/s (expected)", f"{result['deliveries_per_s']} "
         f"({result['expected_deliveries_per_s']})", ""),
        ("mapview.deliver batches/s", str(result["batches_per_s"]), "<= 2 nodes x 40"),
        ("map CPU us / delivery", str(result["cpu_us_per_delivery"]), ""),
        ("map CPU % of one core", str(result["map_cpu_pct"]), ""),
        ("snapshot p50 / p99 ms (view move)", f"{result['snapshot_p50_ms']} / "
         f"{result['snapshot_p99_ms']}", "p99 <= 20"),
        ("idle CPU % with 10k marches", str(result["idle_cpu_pct_10k_marches"]), "<= 5"),
        ("arrivals/s", str(result["arrivals_per_s"]), ">= 5000"),
    ]
    for name, value, target in rows:
        say(f"  {name:<36} {value:>22}   {target}")
    if isinstance(result.get("marches"), str):  # why the march figures are missing
        say(f"  ({result['marches']})")
    table = result.get("table") or []
    if table:
        say("")
        say(f"marches: {result['marches']} in flight on the same map")
        for row in table:
            value = f"{row['value']} {row['unit']}"
            say(f"  {row['measure']:<44} {value:>16}   {row['target']}")
    say(f"load average: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--rate", type=int, default=2000, help="entity changes per second")
    p.add_argument("--seconds", type=float, default=None, help="churn duration")
    p.add_argument("--entities", type=int, default=None)
    p.add_argument("--moves", type=int, default=None, help="timed view moves")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.seconds is None:
        args.seconds = 5.0 if args.quick else 20.0
    if args.entities is None:
        args.entities = 5000 if args.quick else 20000
    if args.moves is None:
        args.moves = 300 if args.quick else 1000
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
