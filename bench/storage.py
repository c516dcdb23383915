"""Benchmark of the storage backends: batched entity saves and load latency.

    python bench/storage.py [--quick] [--entities N] [--batch B ...] [--runs R]
                            [--synchronous NORMAL|FULL] [--dir DIR] [--json PATH]

Runs on the embedded (SQLite) backend, and on MongoDB too when RL_TEST_MONGO_URI is set.
Entities are player-like documents of 2 KB (msgpack). Rows:

* ``save first``: fenced ``save_entities`` of N new entities in batches of B (insert path).
* ``save periodic``: the same N entities saved again with a newer generation (the
  5-minute periodic save of every online player: the overwrite path). The target is
  N = 10,000 in under 2 s, i.e. >= 5,000 saves/s.
* ``load``: ``get_entity`` of random saved ids one after the other: p50/p99 latency.
* ``load during save``: the same while a periodic save of all N runs in batches of B,
  which shows how long a player login waits behind the saver.
* ``upsert 1by1`` / ``incr``: unbatched single-document writes (one transaction each).

``stall`` is the longest the reactor thread was blocked during the row (documents are
encoded on the reactor thread so a save is a snapshot); measured with a 1 ms LoopingCall.
Each row runs ``--runs`` times; the table shows the median run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.stats import percentile
from rltwist.storage import Backend, EmbeddedBackend
from tests.storage_contract import player_doc

USERID_BASE = 1 << 32


class StallMeter:
    """Longest gap between ticks of a 1 ms LoopingCall: how long the reactor was blocked."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = reactor
        self._last = 0.0
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last)
        self._last = now

    def __enter__(self) -> StallMeter:
        self._last = time.perf_counter()
        self._loop.start(0.001, now=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self._tick()
        self._loop.stop()


async def save_all(
    backend: Backend, docs: list[dict[str, Any]], batch: int, generation: int
) -> float:
    start = time.perf_counter()
    for i in range(0, len(docs), batch):
        items = [
            (USERID_BASE + n, docs[n], generation) for n in range(i, min(i + batch, len(docs)))
        ]
        results = await backend.save_entities("role", items)
        assert all(r is None for r in results), "unexpected stale generation"
    return time.perf_counter() - start


async def timed_loads(backend: Backend, n_entities: int, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        uid = USERID_BASE + random.randrange(n_entities)
        start = time.perf_counter()
        entity = await backend.get_entity("role", uid)
        latencies.append(time.perf_counter() - start)
        assert entity is not None
    return latencies


async def run_backend(
    reactor: Any, label: str, make: Callable[[], Awaitable[Backend]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    docs = [player_doc(n) for n in range(args.entities)]
    rows: list[dict[str, Any]] = []

    def row(name: str, batch: int | None, runs: list[dict[str, float]], **extra: Any) -> None:
        median = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
        rows.append({"backend": label, "row": name, "batch": batch, **median, **extra})
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in median.items()}
        print(f"  {label:9} {name:17} batch={batch!s:6} {shown}", file=sys.stderr)

    generation = 0
    for batch in args.batch:
        first: list[dict[str, float]] = []
        periodic: list[dict[str, float]] = []
        for _ in range(args.runs):
            backend = await make()
            try:
                generation += 1
                with StallMeter(reactor) as stall:
                    seconds = await save_all(backend, docs, batch, generation)
                first.append(
                    {
                        "seconds": seconds,
                        "ops_per_s": len(docs) / seconds,
                        "stall_ms": stall.worst * 1e3,
                    }
                )
                generation += 1
                with StallMeter(reactor) as stall:
                    seconds = await save_all(backend, docs, batch, generation)
                periodic.append(
                    {
                        "seconds": seconds,
                        "ops_per_s": len(docs) / seconds,
                        "stall_ms": stall.worst * 1e3,
                    }
                )
            finally:
                await backend.close()
        row("save first", batch, first, entities=len(docs))
        row("save periodic", batch, periodic, entities=len(docs))

    backend = await make()
    try:
        generation += 1
        await save_all(backend, docs, max(args.batch), generation)
        loads: list[dict[str, float]] = []
        during: list[dict[str, float]] = []
        for _ in range(args.runs):
            with StallMeter(reactor) as stall:
                start = time.perf_counter()
                lat = await timed_loads(backend, len(docs), args.loads)
                seconds = time.perf_counter() - start
            loads.append(
                {
                    "seconds": seconds,
                    "ops_per_s": len(lat) / seconds,
                    "p50_ms": percentile(lat, 50) * 1e3,
                    "p99_ms": percentile(lat, 99) * 1e3,
                    "stall_ms": stall.worst * 1e3,
                }
            )
            for batch in args.batch:
                generation += 1
                with StallMeter(reactor) as stall:
                    start = time.perf_counter()
                    saver = defer.ensureDeferred(save_all(backend, docs, batch, generation))
                    lat = []
                    while not saver.called:
                        lat.extend(await timed_loads(backend, len(docs), 20))
                    await saver
                    seconds = time.perf_counter() - start
                during.append(
                    {
                        "seconds": seconds,
                        "ops_per_s": len(lat) / seconds,
                        "p50_ms": percentile(lat, 50) * 1e3,
                        "p99_ms": percentile(lat, 99) * 1e3,
                        "stall_ms": stall.worst * 1e3,
                        "batch": batch,
                    }
                )
        row("load", None, loads)
        for batch in args.batch:
            row("load during save", batch, [d for d in during if d["batch"] == batch])

        singles: list[dict[str, float]] = []
        counters: list[dict[str, float]] = []
        for _ in range(args.runs):
            lat = []
            start = time.perf_counter()
            for n in range(args.singles):
                t0 = time.perf_counter()
                await backend.upsert("bench_single", n, docs[n % len(docs)])
                lat.append(time.perf_counter() - t0)
            seconds = time.perf_counter() - start
            singles.append(
                {
                    "seconds": seconds,
                    "ops_per_s": len(lat) / seconds,
                    "p50_ms": percentile(lat, 50) * 1e3,
                    "p99_ms": percentile(lat, 99) * 1e3,
                }
            )
            lat = []
            start = time.perf_counter()
            for _ in range(args.singles):
                t0 = time.perf_counter()
                await backend.incr("bench_seq")
                lat.append(time.perf_counter() - t0)
            seconds = time.perf_counter() - start
            counters.append(
                {
                    "seconds": seconds,
                    "ops_per_s": len(lat) / seconds,
                    "p50_ms": percentile(lat, 50) * 1e3,
                    "p99_ms": percentile(lat, 99) * 1e3,
                }
            )
        row("upsert 1by1", 1, singles)
        row("incr", 1, counters)
    finally:
        await backend.close()
    return rows


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), ""
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'backend':9} {'row':17} {'batch':>6} {'ops/s':>9} {'wall s':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'stall ms':>8}"
    )
    print(head)
    print("-" * len(head))

    def fmt(value: Any, spec: str) -> str:
        width = spec.split(".")[0].lstrip(">")
        return format("-", f">{width}") if value is None else format(value, spec)

    for r in rows:
        print(
            f"{r['backend']:9} {r['row']:17} {fmt(r['batch'], '>6')} {r['ops_per_s']:>9,.0f} "
            f"{r['seconds']:>7.3f} {fmt(r.get('p50_ms'), '>7.3f')} {fmt(r.get('p99_ms'), '>7.3f')} "
            f"{fmt(r.get('stall_ms'), '>8.1f')}"
        )


async def main(reactor: Any, args: argparse.Namespace) -> None:
    random.seed(1)
    workdir = tempfile.mkdtemp(prefix="rl-storage-bench-", dir=args.dir)
    counter = iter(range(1_000_000))
    results: list[dict[str, Any]] = []
    try:

        async def make_embedded() -> Backend:
            path = os.path.join(workdir, f"bench{next(counter)}.sqlite3")
            return EmbeddedBackend(path, synchronous=args.synchronous, timeout=60)

        print(f"embedded backend in {workdir} (synchronous={args.synchronous})", file=sys.stderr)
        results += await run_backend(reactor, "embedded", make_embedded, args)

        uri = os.environ.get("RL_TEST_MONGO_URI")
        if uri:
            from rltwist.storage.mongodb import MongoBackend

            async def make_mongo() -> Backend:
                b = MongoBackend(uri, f"rltwist_bench_{os.getpid()}_{next(counter)}", timeout=60)
                await b._conn.drop_database(b.db_name)
                return b

            print("mongodb backend", file=sys.stderr)
            results += await run_backend(reactor, "mongodb", make_mongo, args)
        else:
            print("mongodb: skipped (RL_TEST_MONGO_URI not set)", file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    info = machine()
    print()
    print(
        f"storage benchmark — {args.entities} entities of 2 KB, median of {args.runs} run(s); "
        f"{info['cpus']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"SQLite {info['sqlite']}"
    )
    print_table(results)
    periodic = [r for r in results if r["backend"] == "embedded" and r["row"] == "save periodic"]
    best = max(periodic, key=lambda r: r["ops_per_s"])
    verdict = "meets" if best["ops_per_s"] >= 5000 else "MISSES"
    print(
        f"\nembedded periodic save: {best['ops_per_s']:,.0f} saves/s at batch {best['batch']} "
        f"— {verdict} the >= 5,000/s target"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "entities": args.entities,
                    "runs": args.runs,
                    "synchronous": args.synchronous,
                    "rows": results,
                },
                f,
                indent=2,
            )
        print(f"wrote {args.json}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run: 2,000 entities, 1 run")
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[500, 2_000, 10_000],
        help="batch sizes for save_entities (default: 500 2000 10000)",
    )
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--loads", type=int, default=2_000, help="sequential loads per run")
    p.add_argument("--singles", type=int, default=500, help="unbatched upserts/incrs per run")
    p.add_argument("--synchronous", default="NORMAL", help="SQLite synchronous mode")
    p.add_argument("--dir", default=None, help="directory for the database files")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.entities, args.runs, args.loads, args.singles = 2_000, 1, 500, 200
        args.batch = [b for b in args.batch if b <= args.entities] or [args.entities]
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
