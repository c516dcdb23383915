"""Benchmark of regions over time (issue 14): merging a region.

    python bench/regions.py [--quick] [--players N] [--json PATH]

Merge: two regions of N players each (10,000 by default, 2,000 with ``--quick``) are
seeded at storage level on the embedded backend (``tests.merge_util``: names, 10 % of them
shared by both regions, 3 mails each, friend pairs, guilds of 10 with 5 % of the guild
names shared), a master runs with logins closed, and ``rl-merge --from 2 --into 1`` runs as
the operator runs it (its own process: it asks master, merges, installs the alias). Target
(issue 14): 10,000 players merged in 60 s or less.

Where the world map is part of the tree, every player also has a city on its region's map
(placed by the map's own placement) and the merge moves the merged map's cities.

Columns: ``players`` of the merged region, ``target`` players already in the receiving
region, ``docs`` documents moved, ``renamed`` players renamed, ``cities`` cities moved to
the target map, ``dry s`` the dry run,
``merge s`` the rl-merge process from start to exit (what ``merge_seconds`` reports),
``engine s`` the merge's own time and its steps.

Move city: ``bench/movecity.py``'s measurement (loaded by path), on its own cluster after
the merge: region-2 players move their cities between map2 and map1 one at a time (idle
cluster), end-to-end MoveCity latency; 20 players x 25 moves (5 x 10 with ``--quick``).
Target (issue 14): p99 <= 50 ms.

JSON (``--json``): ``merge_players``, ``merge_seconds``, ``merge_engine_seconds``,
``merge_steps``, ``merge_documents``, ``merge_renamed``, ``merge_cities_moved``,
``dry_run_seconds``,
``move_city_p50_ms``, ``move_city_p99_ms`` (and the other ``move_city_*`` keys of
bench/movecity.py), ``machine``.
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
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.config import load_config
from rltwist.launcher import LocalCluster
from rltwist.merge.world import world_placer
from rltwist.storage.embedded import EmbeddedBackend
from tests.merge_util import seed_cities, seed_region


def _movecity() -> Any:
    """bench/movecity.py as a module (its ``measure`` and ``print_row``)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "movecity.py"
    spec = importlib.util.spec_from_file_location("bench_movecity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class _Run(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        v = reason.value
        code = v.exitCode if isinstance(v, error.ProcessTerminated | error.ProcessDone) \
            else None
        self.ended.callback(code)


async def rl_merge(reactor: Any, lc: LocalCluster, *args: str) -> tuple[float, str]:
    """Run rl-merge (bounded); its wall time and stdout. Fails on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k != "RLTWIST_TEST_FLAGS"}
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                else "")
    run = _Run()
    started = time.monotonic()
    reactor.spawnProcess(run, sys.executable, [
        sys.executable, "-m", "rltwist.merge", *args, "--config", str(lc.config_path),
        "--quiet"], env=env, path=str(lc.run_dir))
    code = await run.ended.addTimeout(600, reactor)
    wall = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"rl-merge {' '.join(args)} exited {code}: "
                           f"{run.err.decode()[-2000:]}")
    return wall, run.out.decode()


async def measure_merge(reactor: Any, workdir: Path, players: int) -> dict[str, Any]:
    lc = LocalCluster(workdir / "run", ["master"])
    data = lc.run_dir / "data"
    dbs = {n: EmbeddedBackend(data / f"{n}.sqlite3", timeout=120)
           for n in ("globaldb", "roledb", "region1", "region2")}
    try:
        say(f"seeding regions 1 and 2 with {players} players each")
        t = time.monotonic()
        common = {"shared_names": players // 10, "guild_count": players // 10,
                  "shared_guild_names": players // 200, "mails_per_player": 3}
        seeded = [
            await seed_region(dbs["globaldb"], dbs["roledb"], dbs["region1"], 1, players,
                              first_seq=1, **common),
            await seed_region(dbs["globaldb"], dbs["roledb"], dbs["region2"], 2, players,
                              first_seq=1_000_000, **common)]
        config = load_config(lc.config_path)
        cities = 0
        if world_placer(config, 1) is not None:  # a city per player on each map
            for sid, s in zip((1, 2), seeded, strict=True):
                placer = world_placer(config, sid)
                cities += await seed_cities(dbs[f"region{sid}"], dbs["roledb"], sid,
                                            s.userids, placer)
        say(f"seeded in {time.monotonic() - t:.1f}s ({cities} cities)")
        for b in dbs.values():
            await b.close()
        await lc.start("master")
        await lc.wait_up(["master"])
        status, body = await lc.gm("POST", "/login/close")
        if status != 200:
            raise RuntimeError(f"POST /login/close answered {status}: {body}")
        say("rl-merge --dry-run")
        dry, _ = await rl_merge(reactor, lc, "--from", "2", "--into", "1", "--dry-run")
        say("rl-merge")
        wall, _ = await rl_merge(reactor, lc, "--from", "2", "--into", "1", "--json",
                                 "merge.json")
        report = json.loads((lc.run_dir / "merge.json").read_text())
        status, aliases = await lc.gm("GET", "/regions/aliases")
        if aliases.get("aliases") != {"2": 1}:
            raise RuntimeError(f"alias not installed: {aliases}")
    finally:
        await lc.stop_all()
    return {"merge_players": report["players"], "merge_target_players": players,
            "merge_seconds": round(wall, 3), "merge_engine_seconds": report["seconds"],
            "merge_steps": report["step_seconds"],
            "merge_documents": sum(report["collections"].values()),
            "merge_renamed": len(report["renamed_players"]),
            "merge_cities_moved": report["cities_moved"],
            "dry_run_seconds": round(dry, 3)}


async def main(reactor: Any, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rl-bench-regions-", dir=args.dir))
    try:
        merge = await measure_merge(reactor, workdir, args.players)
        movecity = _movecity()
        moves = await movecity.measure(reactor, workdir / "movecity",
                                       5 if args.quick else 20, 10 if args.quick else 25)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    steps = ", ".join(f"{k} {merge['merge_steps'][k]:.2f}"
                      for k in ("plan", "fence", "copy", "remove") if k in merge["merge_steps"])
    print(f"{'players':>8} {'target':>8} {'docs':>8} {'renamed':>8} {'cities':>7} "
          f"{'dry s':>7} {'merge s':>8} {'engine s':>9}  steps")
    print(f"{merge['merge_players']:>8} {merge['merge_target_players']:>8} "
          f"{merge['merge_documents']:>8} {merge['merge_renamed']:>8} "
          f"{merge['merge_cities_moved']:>7} "
          f"{merge['dry_run_seconds']:>7.2f} {merge['merge_seconds']:>8.2f} "
          f"{merge['merge_engine_seconds']:>9.2f}  {steps}")
    target = 60.0
    ok = merge["merge_players"] < 10_000 or merge["merge_seconds"] <= target
    print(f"merge of {merge['merge_players']} players: {merge['merge_seconds']:.1f} s "
          f"(target for 10,000: <= {target:g} s){'' if ok else '  OVER TARGET'}")
    movecity.print_row(moves)
    if args.json:
        result = {**merge, **moves, "quick": args.quick,
                  "machine": {"python": platform.python_version(),
                              "cpus": os.cpu_count(), "platform": platform.platform()}}
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0 if ok else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: 2,000 players per region")
    p.add_argument("--players", type=int, default=10_000,
                   help="players of each region (default: 10000; 2000 with --quick)")
    p.add_argument("--dir", help="parent directory of the work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.players = min(args.players, 2000)
    if args.players < 10:
        p.error("--players must be >= 10")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
