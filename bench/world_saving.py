"""Benchmark of a map's World persistence and city placement (issue 13 "World").

    python bench/world_saving.py [--quick] [--cities N] [--dir DIR] [--json PATH]

One map (512 x 512, the shipped etc/game/world.toml: 650 resource points, 300 monsters)
on the embedded (SQLite) backend, in this process. Rows:

* ``place city``: placing N cities on the spiral (rules + state, no save): µs per city.
* ``save all``: the first save round of the whole map (N cities + points + monsters).
* ``save periodic 1%``: a round after 1 % of the entities changed (the usual round).
* ``load``: a new World loading the whole map (what a restarted map node does).
* ``ensure_city``: ``world.ensure_city`` of new players one after another — placement plus
  the durable save before the answer: p50/p99 latency.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.config import MapSettings
from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import ShareData
from rltwist.game.tables import VALIDATORS
from rltwist.nodes.map.world import World
from rltwist.stats import percentile
from rltwist.storage import EmbeddedBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_world(path: str, table: Any) -> World:
    node = SimpleNamespace(me=SimpleNamespace(number=1), cluster=None)
    return World(node, backend=EmbeddedBackend(path), settings=MapSettings(512, 512, 16, 1),
                 tables=lambda: table, fixer=None, save_interval=3600.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    table = ShareData(os.path.join(ROOT, "etc", "game"), VALIDATORS).snapshot["world"]
    path = os.path.join(args.dir, "region1.sqlite3")
    w = make_world(path, table)
    await w.start()
    seeded = len(w.state.entities)
    results: dict[str, Any] = {"cities": args.cities, "seeded": seeded, "ensure": args.ensure}

    # place N cities (the rules and the state only; ensure_city adds the save)
    from rltwist.ecs import import_system

    system = import_system("rltwist.game.worldsystem")
    started = time.perf_counter()
    cursor = 0
    for uid in range(1, args.cities + 1):
        placed = system.place_city(w.state, w.seed, cursor, 3, w.is_blocked)
        assert placed is not None
        x, y, cursor = placed
        w.state.add(Entity(w.new_id(), 0, {"kind": "city", "x": x, "y": y, "owner": uid,
                                           "name": f"p{uid}", "level": 1, "guildid": 0}))
    w.meta["city_cursor"] = cursor
    results["place_us"] = (time.perf_counter() - started) / args.cities * 1e6

    total = len(w.state.entities)
    started = time.perf_counter()
    report = await w._save_round()
    results["save_all_s"] = time.perf_counter() - started
    results["save_all_entities"] = len(report.saved)
    assert report.ok, report.to_dict()

    changed = list(w.state.entities.values())[:: 100]
    for e in changed:
        e.mark_dirty()
    started = time.perf_counter()
    report = await w._save_round()
    results["save_periodic_s"] = time.perf_counter() - started
    results["save_periodic_entities"] = len(report.saved)
    await w.stop()
    await w.backend.close()  # type: ignore[union-attr]

    b = make_world(path, table)
    started = time.perf_counter()
    await b.start()
    results["load_s"] = time.perf_counter() - started
    results["loaded_entities"] = len(b.state.entities)
    assert len(b.state.entities) == total, (len(b.state.entities), total)

    latencies = []
    for uid in range(args.cities + 1, args.cities + 1 + args.ensure):
        started = time.perf_counter()
        answer = await b.ensure_city(uid, f"n{uid}")
        latencies.append(time.perf_counter() - started)
        assert answer["code"] == 0, answer
    results["ensure_city_p50_ms"] = percentile(latencies, 50) * 1000
    results["ensure_city_p99_ms"] = percentile(latencies, 99) * 1000
    await b.stop()
    await b.backend.close()  # type: ignore[union-attr]
    return results


def table(r: dict[str, Any]) -> str:
    rows = [
        ("place city", f"{r['cities']} cities", f"{r['place_us']:.1f} µs/city"),
        ("save all", f"{r['save_all_entities']} entities", f"{r['save_all_s'] * 1000:.0f} ms"),
        ("save periodic 1%", f"{r['save_periodic_entities']} entities",
         f"{r['save_periodic_s'] * 1000:.0f} ms"),
        ("load", f"{r['loaded_entities']} entities", f"{r['load_s'] * 1000:.0f} ms"),
        ("ensure_city", f"{r['ensure']} new players",
         f"p50 {r['ensure_city_p50_ms']:.2f} ms, p99 {r['ensure_city_p99_ms']:.2f} ms"),
    ]
    head = f"{'row':18} {'size':22} result"
    lines = [head, "-" * len(head)]
    lines += [f"{a:18} {b:22} {c}" for a, b, c in rows]
    return "\n".join(lines)


async def main(reactor: Any, args: argparse.Namespace) -> None:
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="rl-bench-world-")
    try:
        results = await run(args)
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)
    print(f"world persistence, embedded backend, python {platform.python_version()}")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "world_saving", "quick": args.quick, **results}, f,
                      indent=2)
        print(f"wrote {args.json}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run: 2,000 cities")
    p.add_argument("--cities", type=int, default=10_000, help="cities on the map")
    p.add_argument("--ensure", type=int, default=200, help="ensure_city calls timed")
    p.add_argument("--dir", help="directory for the database (default: a temp dir)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.cities, args.ensure = 2_000, 50
    return args


if __name__ == "__main__":
    ns = parse_args(sys.argv[1:])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, ns)))
