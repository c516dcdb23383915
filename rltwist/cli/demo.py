"""rl-cluster demo: bots through every client request against a cluster that is up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rltwist.bot import BotOptions, run_bots
from rltwist.bot.actions import ACTIONS
from rltwist.config import load_config

if TYPE_CHECKING:
    from rltwist.cli.cluster import Runner


async def run_demo(reactor: Any, runner: Runner, bots: int) -> bool:
    """Log *bots* clients in, run every scripted request once, log them out; True if all ok."""
    assert runner.lc is not None
    config = load_config(runner.lc.config_path)
    script = ",".join(sorted(ACTIONS))
    print(f"rl-cluster demo: {bots} bots: login -> auth -> {script} -> logout", flush=True)
    options = BotOptions.from_config(config, count=bots, script=script, hold=0.0)
    report = await run_bots(options)
    print(report.format_table(), flush=True)
    return report.exit_status == 0
