"""rl-chaos: check the cluster's promises under faults, hostile input and long load.

    rl-chaos run [--quick] [--bots N] [--json F]      faults x invariants; exit 1 on any
                                                      violated invariant
    rl-chaos fuzz [--client-frames N] [--cluster-frames N] [--gm-requests N] [--json F]
    rl-chaos soak [--players N] [--minutes M] [--json F]

Each starts its own local cluster (redis-server + every node kind as ``twistd`` processes,
through :mod:`rltwist.launcher` like ``rl-cluster``) in ``--run-dir`` (default
``./run-chaos``, emptied first), talks only to 127.0.0.1, stops everything it started, and
prints a table (``--json F`` writes the figures).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rltwist.cli import react_main


def say(msg: str) -> None:
    print(msg, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rl-chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="inject faults while bots play; check the invariants")
    run.add_argument("--quick", action="store_true",
                     help="the CI subset (kill -9 role/map/mail, Redis empty, 10 s SIGSTOP "
                     "of a role node); under 3 minutes")
    run.add_argument("--bots", type=int, default=None,
                     help="players online during the run (default 40, --quick 30)")
    run.add_argument("--seed", type=int, default=None, help="random seed of the bots")
    fuzz = sub.add_parser("fuzz", help="hostile frames at every port; nodes must survive")
    fuzz.add_argument("--client-frames", type=int, default=100_000)
    fuzz.add_argument("--cluster-frames", type=int, default=10_000)
    fuzz.add_argument("--gm-requests", type=int, default=5_000)
    fuzz.add_argument("--seed", type=int, default=None)
    soak = sub.add_parser("soak", help="many players online for a long time")
    soak.add_argument("--players", type=int, default=10_000)
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--active", type=float, default=0.01,
                      help="share of players that rename now and then (default 0.01)")
    soak.add_argument("--warmup", type=float, default=None,
                      help="seconds after the last login before RSS is the baseline "
                      "(default: a tenth of the run, at least 30)")
    for sp in (run, fuzz, soak):
        sp.add_argument("--run-dir", default="run-chaos",
                        help="config, node logs, data (default ./run-chaos; emptied first)")
        sp.add_argument("--json", metavar="F", help="write the figures as JSON to F")
    args = p.parse_args(argv)
    if args.command == "run" and args.bots is None:
        args.bots = 30 if args.quick else 40
    return args


def fresh_dir(path: str) -> Path:
    run_dir = Path(path).absolute()
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    return run_dir


async def run_command(reactor: Any, args: argparse.Namespace) -> int:
    from rltwist.chaos import run as chaos_run

    schedule = chaos_run.quick_schedule() if args.quick else chaos_run.full_schedule()
    run = chaos_run.Run(reactor, fresh_dir(args.run_dir), bots=args.bots,
                        schedule=schedule, say=say, seed=args.seed)
    result = await run.run()
    say("")
    say(chaos_run.format_table(result))
    if args.json:
        chaos_run.write_json(args.json, result)
    return 1 if result["violations"] else 0


async def fuzz_command(reactor: Any, args: argparse.Namespace) -> int:
    from rltwist.chaos import fuzz

    result = await fuzz.Fuzz(reactor, fresh_dir(args.run_dir), say=say, seed=args.seed,
                             client_frames=args.client_frames,
                             cluster_frames=args.cluster_frames,
                             gm_requests=args.gm_requests).run()
    say("")
    say(fuzz.format_table(result))
    if args.json:
        fuzz.write_json(args.json, result)
    return 1 if result["failures"] else 0


async def soak_command(reactor: Any, args: argparse.Namespace) -> int:
    from rltwist.chaos import soak

    result = await soak.Soak(reactor, fresh_dir(args.run_dir), say=say,
                             players=args.players, minutes=args.minutes,
                             active=args.active, warmup=args.warmup).run()
    say("")
    say(soak.format_table(result))
    if args.json:
        soak.write_json(args.json, result)
    return 1 if result["failures"] else 0


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    commands = {"run": run_command, "fuzz": fuzz_command, "soak": soak_command}
    react_main(lambda reactor: commands[args.command](reactor, args))
