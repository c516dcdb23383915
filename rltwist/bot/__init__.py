"""rl-bot: simulated game clients for QA, load and memory benchmarks.

Command line: ``rl-bot --help`` (``rltwist.bot.cli``). In-process API, for benchmarks and
``rl-cluster demo`` running bots in their own reactor::

    from rltwist.bot import BotOptions, BotSwarm, run_bots

    report = await run_bots(BotOptions(logins=[("127.0.0.1", 7401)], count=100,
                                       dev_sdk_secret=secret, script="rename"))
    report.ok, report.failed, report.logins_per_s, report.latency["login"].p99

    swarm = BotSwarm(BotOptions(..., count=5000, hold=None, heartbeat=10))
    await swarm.login()          # every bot logged in and heartbeating (or failed)
    ...                          # measure the nodes
    report = await swarm.release()
"""

from rltwist.bot.actions import ACTIONS, Action, BotIdentity, action, parse_script
from rltwist.bot.cli import main
from rltwist.bot.options import BotOptions, parse_logins
from rltwist.bot.report import BotReport, FailureGroup, LatencyStats
from rltwist.bot.swarm import RETRYABLE, BotFailed, BotSwarm, run_bots

__all__ = [
    "ACTIONS",
    "RETRYABLE",
    "Action",
    "BotFailed",
    "BotIdentity",
    "BotOptions",
    "BotReport",
    "BotSwarm",
    "FailureGroup",
    "LatencyStats",
    "action",
    "main",
    "parse_logins",
    "parse_script",
    "run_bots",
]
