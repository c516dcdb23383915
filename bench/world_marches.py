"""Benchmark of the marches of one map node: 10,000 marches in flight cost nothing while
none arrives, and arrivals are processed fast.

    python bench/world_marches.py [--quick] [--marches N] [--json PATH]

The map's ``march`` service (rltwist/nodes/map/marches.py) runs in this process on the
real reactor with its one scheduler, the players' march books in an embedded (SQLite)
database in a temporary directory, and an in-memory world (a WorldState with the World
methods the march part calls: cities, resource points, take_resource, occupy; no world
persistence, no AOI listener), so the figures are the march part's own.

1. **idle**: N gather marches are started (one player, city and resource point each),
   all arriving an hour later. The CPU time of this process (user + system) is measured
   over ``--idle`` seconds of wall time while none arrives: ``idle_cpu_pct_10k_marches``
   (% of one core; target <= 5).
2. **arrivals at the target**: every march is moved to arrive at the same instant; from
   then until the last one started gathering (point occupied, line turned, the gather's
   end scheduled): arrivals/s.
3. **arrivals home**: every march is moved to be home at the same instant; from then
   until the last one is credited (its ledger entry added and its book *stored*, the
   march gone from the world): arrivals/s. The books were loaded by the starts.

``arrivals_per_s`` is the lower of 2 and 3 (target >= 5,000). ``--quick`` (under a
minute) uses a shorter idle window. JSON (``--json``): ``marches``,
``idle_cpu_pct_10k_marches``, ``arrivals_per_s``, ``target_arrivals_per_s``,
``home_arrivals_per_s``, ``target_cpu_us_per_arrival``, ``home_cpu_us_per_arrival`` (CPU
of this process, threads included, per arrival: what a busy machine does not change),
``load_average_1m``, ``table``. ``measure(reactor, quick)`` returns the same dict
(bench/world.py merges it into its own JSON).
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
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import shared
from rltwist.game.tables import VALIDATORS
from rltwist.nodes.common import sharedatad
from rltwist.nodes.map.marches import Books, MarchService
from rltwist.nodes.map.state import WorldState
from rltwist.storage import EmbeddedBackend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class MemoryWorld:
    """The World methods the march part calls, over a WorldState (no persistence)."""

    def __init__(self, reactor: Any) -> None:
        self.clock = reactor
        self.state = WorldState(1, 512, 512, 16)
        self.ready: defer.Deferred[None] = defer.succeed(None)
        self.map_id = 1

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    async def save_now(self, entities: list[Entity]) -> bool:
        return True

    def city_of(self, userid: int) -> Entity | None:
        return self.state.city_of(userid)

    def take_resource(self, point: Entity, amount: int) -> int:
        got = min(amount, point["amount"])
        self.state.update(point, amount=point["amount"] - got)
        return got

    def occupy(self, point: Entity, userid: int) -> None:
        self.state.update(point, owner=userid)

    def defeat(self, monster: Entity) -> None:
        self.state.remove(int(monster.id))


class Node:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.registry = CollectorRegistry()
        self.cluster = _Cluster()


class _Cluster:
    def __init__(self) -> None:
        self.services: dict[str, Any] = {}

    def send(self, *args: Any) -> None:  # nobody online: no pushes are sent
        pass


async def until(reactor: Any, check: Any, bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {bound:g} s")
        await task.deferLater(reactor, 0.01, lambda: None)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _reschedule(svc: MarchService, due_ms: int, event: str) -> None:
    for mid, march in svc.state.marches.items():
        march["due_ms"] = due_ms
        march["arrive_ms"] = max(due_ms, march["start_ms"] + 1)
        march["event"] = event
        svc.scheduler.schedule(mid, due_ms, event)


async def measure(reactor: Any, quick: bool, marches: int = 10_000,
                  idle: float | None = None) -> dict[str, Any]:
    """Run the three phases (module docstring); the results."""
    sharedatad_current = sharedatad._CURRENT
    sharedatad._CURRENT = shared(os.path.join(REPO, "etc", "game"), VALIDATORS)
    tmp = tempfile.mkdtemp(prefix="rl-bench-marches-")
    backend = EmbeddedBackend(os.path.join(tmp, "region1.sqlite3"), reactor=reactor,
                              close_at_shutdown=False)
    try:
        return await _measure(reactor, quick, marches, idle, backend)
    finally:
        await backend.close()
        shutil.rmtree(tmp, ignore_errors=True)
        sharedatad._CURRENT = sharedatad_current


async def _measure(reactor: Any, quick: bool, n: int, idle: float | None,
                   backend: Any) -> dict[str, Any]:
    idle = idle if idle is not None else (5.0 if quick else 20.0)
    world = MemoryWorld(reactor)
    node = Node(reactor)
    books = Books(backend, reactor, interval=3600, registry=node.registry)
    svc = MarchService(node, world, books=books)  # type: ignore[arg-type]
    svc.load()
    state = world.state
    # cities and points on a grid: city (x, y), its point (x + 3, y)
    say(f"placing {n} cities and resource points, starting {n} marches")
    per_row = 512 // 5
    for i in range(n):
        x, y = (i % per_row) * 5, (i // per_row) * 2
        uid = 1_000_000 + i
        state.add(Entity(state.new_id(), attrs={"kind": "city", "owner": uid, "x": x,
                                                "y": y, "name": "", "level": 1}), quiet=True)
        state.add(Entity(state.new_id(), attrs={"kind": "resource", "resource": "food",
                                                "level": 1, "amount": 10**6, "owner": 0,
                                                "x": x + 3, "y": y}), quiet=True)
    hour = 3_600_000
    started = time.monotonic()
    for i in range(n):
        x, y = (i % per_row) * 5, (i // per_row) * 2
        result = await svc.start(1_000_000 + i, 1, f"rolemarch-b{i}",
                                 {"type": "gather", "x": x + 3, "y": y,
                                  "troops": {"infantry": 100}})
        if result["code"] != 0:
            raise RuntimeError(f"march {i} not started: {result}")
    _reschedule(svc, world.now_ms() + hour, "arrive")
    svc.scheduler.start()  # paused while starting: none arrives before the idle window
    say(f"{n} marches in flight ({time.monotonic() - started:.1f} s to start); "
        f"{len(reactor.getDelayedCalls())} delayed calls in the reactor")

    # 1. idle
    await task.deferLater(reactor, 0.5, lambda: None)
    cpu0, wall0 = _cpu(), time.monotonic()
    await task.deferLater(reactor, idle, lambda: None)
    cpu1, wall1 = _cpu(), time.monotonic()
    idle_pct = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    say(f"idle: {idle_pct:.2f} % of one core over {wall1 - wall0:.1f} s")
    if svc.arrivals:
        raise RuntimeError("a march arrived during the idle window")

    # 2. arrivals at the target, all at once
    due = world.now_ms() + 200
    _reschedule(svc, due, "arrive")
    await until(reactor, lambda: world.now_ms() >= due, 5, "the arrival time")
    t0, c0 = time.monotonic(), _cpu()
    await until(reactor, lambda: svc.arrivals >= n, 120, f"{n} arrivals at the targets")
    target_s, target_cpu = time.monotonic() - t0, _cpu() - c0
    staying = sum(1 for m in state.marches.values() if m["state"] == "staying")
    if staying != n:
        raise RuntimeError(f"{staying} of {n} marches gathering")
    target_rate = n / target_s
    say(f"arrivals at the targets: {n} in {target_s:.3f} s = {target_rate:,.0f}/s "
        f"({target_cpu * 1e6 / n:.0f} us CPU each)")

    # 3. home, credited (books stored)
    for march in state.marches.values():  # they gathered some: the load goes home
        march["load"] = {"food": 100}
        march["state"] = "returning"
    due = world.now_ms() + 200
    _reschedule(svc, due, "home")
    await until(reactor, lambda: world.now_ms() >= due, 5, "the home time")
    t0, c0 = time.monotonic(), _cpu()
    await until(reactor, lambda: svc.homecomings >= n and not svc.scheduler.inflight, 300,
                f"{n} marches home")
    home_s, home_cpu = time.monotonic() - t0, _cpu() - c0
    home_rate = n / home_s
    credited = sum(len(b.components.get("ledger", {})) for b in books.cache.values())
    stored = sum(1 for b in books.cache.values() if not b.dirty)
    if credited != n or stored != n or state.marches:
        raise RuntimeError(f"credited {credited}, stored {stored}, left {len(state.marches)}")
    say(f"arrivals home: {n} in {home_s:.3f} s = {home_rate:,.0f}/s (books stored; "
        f"{home_cpu * 1e6 / n:.0f} us CPU each)")
    rate = min(target_rate, home_rate)
    table = [
        {"measure": f"idle CPU, {n} marches in flight", "value": round(idle_pct, 2),
         "unit": "% of one core", "target": "<= 5"},
        {"measure": "arrivals at the target (gather starts)", "value": round(target_rate),
         "unit": "/s", "target": ">= 5000"},
        {"measure": "arrivals home (credited, books stored)", "value": round(home_rate),
         "unit": "/s", "target": ">= 5000"},
        {"measure": "CPU per arrival at the target", "value": round(target_cpu * 1e6 / n),
         "unit": "us", "target": ""},
        {"measure": "CPU per arrival home", "value": round(home_cpu * 1e6 / n),
         "unit": "us", "target": ""},
    ]
    return {"marches": n, "idle_cpu_pct_10k_marches": round(idle_pct, 2),
            "arrivals_per_s": round(rate), "target_arrivals_per_s": round(target_rate),
            "home_arrivals_per_s": round(home_rate),
            "target_cpu_us_per_arrival": round(target_cpu * 1e6 / n),
            "home_cpu_us_per_arrival": round(home_cpu * 1e6 / n),
            "load_average_1m": round(os.getloadavg()[0], 2), "idle_seconds": idle,
            "table": table}


def print_table(result: dict[str, Any]) -> None:
    rows = result["table"]
    w = max(len(r["measure"]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>10}  {'unit':<14}  target")
    for r in rows:
        print(f"{r['measure']:<{w}}  {r['value']:>10,}  {r['unit']:<14}  {r['target']}")


async def main(reactor: Any, args: argparse.Namespace) -> int:
    result = await measure(reactor, args.quick, args.marches, args.idle)
    print_table(result)
    if args.json:
        result = {**result, "machine": {"python": platform.python_version(),
                                        "cpus": os.cpu_count(),
                                        "platform": platform.platform()},
                  "quick": args.quick}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter idle window (< 1 min)")
    p.add_argument("--marches", type=int, default=10_000, help="marches in flight")
    p.add_argument("--idle", type=float, default=None,
                   help="seconds of the idle window (default 20; 5 with --quick)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
