"""Benchmark of moving a city between regions (issue 14 "Must show": move-city end-to-end
p50/p99 on an idle cluster, target p99 <= 50 ms), against real nodes.

    python bench/movecity.py [--quick] [--players N] [--moves M] [--json PATH]

Everything runs on this machine: a private redis-server and master, logiccenter, map1,
rolecity1, map2, rolecity2, role1, role2 and login1 as twistd processes
(``rltwist.launcher.LocalCluster``), the embedded (SQLite) backend. The game tables are
the repository's but for the move's cost (none), so every move is allowed. ``--players``
(20; 5 with --quick) players of region 2 log in, then each in turn moves its city
``--moves`` times (25; 10 with --quick) between map2 and map1 (any free tile), one move
at a time on the whole cluster (idle): the time from writing MoveCity to reading its OK
answer — the saga on the source map (reserve on the target, remove, commit, the ledger
entry, each stored before the next), the role node's pull of the move (the player saved)
and the read-back of the city on the new map. One warm-up move per player is not counted.

Table: moves, p50/p90/p99/max ms. JSON keys: ``move_city_p50_ms``, ``move_city_p99_ms``
(also ``move_city_p90_ms``, ``move_city_max_ms``, ``move_city_moves``,
``move_city_players``, ``move_city_target_p99_ms`` = 50), plus the machine.
``bench/regions.py`` runs the same measurement (:func:`measure`) for its move-city part;
this file runs it alone. Other work on a shared machine moves latencies; the load average
is printed.
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

from twisted.internet import task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.launcher import LocalCluster
from rltwist.protocols import ClientProtocol, pb
from rltwist.redis import OnlineState, RedisClient, RedisServer
from rltwist.sdk import dev_token

REPO = Path(__file__).resolve().parents[1]
NODES = ("master", "logiccenter", "map1", "rolecity1", "map2", "rolecity2",
         "role1", "role2", "login1")
ROLES = ("role1", "role2")
SDK_SECRET = "bench-dev-sdk-secret"
PREFIX = "bm:"
E = pb.ErrorCode
TARGET_P99_MS = 50.0


def say(text: str) -> None:
    print(text, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


async def play(reactor: Any, openid: str, login: tuple[str, int]) -> ClientProtocol:
    """Log *openid* in (region 2) and authenticate; the game connection."""
    conn = ClientProtocol(timeout=30)
    await connectProtocol(TCP4ClientEndpoint(reactor, *login, timeout=10), conn)
    try:
        r = await conn.request(pb.Login(openid=openid, token=dev_token(SDK_SECRET, openid),
                                        device_id="b", os="bench", server_id=2, version="1"))
    finally:
        conn.transport.loseConnection()
    if r.code != E.OK:
        raise RuntimeError(f"{openid}: Login answered {E.Name(r.code)}")
    game = ClientProtocol(timeout=30)
    await connectProtocol(TCP4ClientEndpoint(reactor, r.host, r.port, timeout=10), game)
    a = await game.request(pb.Auth(userid=r.userid, secret=r.secret))
    if a.code != E.OK:
        raise RuntimeError(f"{openid}: Auth answered {E.Name(a.code)}")
    return game


async def move(conn: ClientProtocol, target: int) -> float:
    """One move to map *target*; its end-to-end seconds (raises unless OK there)."""
    t0 = time.perf_counter()
    r = await conn.request(pb.MoveCity(target_sid=target))
    elapsed = time.perf_counter() - t0
    if r.code != E.OK or r.map_id != target:
        raise RuntimeError(f"MoveCity to {target} answered {E.Name(r.code)} map {r.map_id}")
    return elapsed


def bench_root(workdir: Path) -> Path:
    """The repository's tables with a move that costs nothing."""
    root = workdir / "root"
    shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
    (root / "etc" / "game" / "movecity.toml").write_text("[cost]\n")
    (root / "hotfix" / "codefix").mkdir(parents=True)
    (root / "hotfix" / "datafix").mkdir(parents=True)
    return root


async def ready(reactor: Any, url: str, timeout: float) -> bool:
    client = RedisClient(url, prefix=PREFIX)
    await client.connect()
    state = OnlineState(client)
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            if await state.get_available() and \
                    {r.node for r in await state.list_roles()} >= set(ROLES):
                return True
            await task.deferLater(reactor, 0.1)
        return False
    finally:
        await client.disconnect()


async def measure(reactor: Any, workdir: Path, players: int, moves: int) -> dict[str, Any]:
    """Start the cluster under *workdir*, log *players* region-2 players in and time
    *moves* moves each (one at a time); the figures (module docstring), cluster stopped.
    ``bench/regions.py`` calls this for its move-city part."""
    redis = RedisServer(directory=workdir / "redis")
    await redis.start()
    overrides: dict[str, dict[str, Any]] = {
        "cluster": {"heartbeat_interval": 1.0, "heartbeat_misses": 3},
        "redis": {"url": redis.url, "prefix": PREFIX},
        "login": {"dev_sdk_secret": SDK_SECRET},
        "hotreload": {"root": str(bench_root(workdir)), "config_interval": 0},
    }
    lc = LocalCluster(workdir / "run", list(NODES), overrides=overrides)
    conns: list[ClientProtocol] = []
    try:
        say(f"starting {', '.join(NODES)}")
        await lc.start(*NODES)
        await lc.wait_up(NODES)
        if not await ready(reactor, redis.url, 30):
            raise RuntimeError("master did not set is_available with role1 and role2 "
                               "registered within 30s")
        login = (lc.node_config("login1")["host"], lc.node_config("login1")["client_port"])
        for i in range(players):
            conns.append(await play(reactor, f"m{os.getpid()}x{i}", login))
        for c in conns:  # warm-up: the city placed, one move there and back
            r = await c.request(pb.MapMyCity())
            if r.code != E.OK or r.info.map_id != 2:
                raise RuntimeError(f"MapMyCity answered {E.Name(r.code)}")
            await move(c, 1)
            await move(c, 2)
        samples: list[float] = []
        where = {id(c): 2 for c in conns}
        for _ in range(moves):
            for c in conns:
                target = 1 if where[id(c)] == 2 else 2
                samples.append(await move(c, target))
                where[id(c)] = target
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.loseConnection()
        await lc.stop_all()
        await redis.stop()
    ms = [s * 1000 for s in samples]
    return {"move_city_p50_ms": pct(ms, 50), "move_city_p99_ms": pct(ms, 99),
            "move_city_p90_ms": pct(ms, 90), "move_city_max_ms": max(ms),
            "move_city_moves": len(ms), "move_city_players": len(conns),
            "move_city_target_p99_ms": TARGET_P99_MS}


def print_row(result: dict[str, Any]) -> None:
    """The move-city table (header and row)."""
    say(f"{'row':<10} {'players':>7} {'moves':>6} {'p50 ms':>8} {'p90 ms':>8} "
        f"{'p99 ms':>8} {'max ms':>8}  target p99")
    say(f"{'move_city':<10} {result['move_city_players']:>7} "
        f"{result['move_city_moves']:>6} {fmt(result['move_city_p50_ms']):>8} "
        f"{fmt(result['move_city_p90_ms']):>8} {fmt(result['move_city_p99_ms']):>8} "
        f"{fmt(result['move_city_max_ms']):>8}  <= {TARGET_P99_MS:g} ms")


async def main(reactor: Any, args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="rl-movecity-bench-", dir=args.dir))
    say(f"machine: {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; work directory {workdir}")
    try:
        result: dict[str, Any] = await measure(reactor, workdir, args.players, args.moves)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result.update(quick=args.quick, machine={
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()]})
    say("")
    print_row(result)
    say(f"load average {' '.join(str(x) for x in result['machine']['loadavg'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: 5 players, 10 moves each")
    p.add_argument("--players", type=int, default=20, help="players moving (default 20)")
    p.add_argument("--moves", type=int, default=25, help="moves per player (default 25)")
    p.add_argument("--dir", help="parent directory of the work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        given = " ".join(argv)
        if "--players" not in given:
            args.players = 5
        if "--moves" not in given:
            args.moves = 10
    if args.players < 1 or args.moves < 1:
        p.error("--players and --moves must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
