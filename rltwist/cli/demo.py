"""rl-cluster demo: bots through every client request against a cluster that is up."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rltwist.bot import BotOptions, run_bots
from rltwist.bot.actions import ACTIONS
from rltwist.config import load_config
from rltwist.net import listen_overflows

if TYPE_CHECKING:
    from rltwist.cli.cluster import Runner


async def run_demo(reactor: Any, runner: Runner, bots: int) -> bool:
    """Log *bots* clients in, run every scripted request once, log them out; True if all ok.

    Besides the bot table it prints the login latency's p95/p99 and how many connections
    the kernel dropped from a full accept queue meanwhile (``TcpExtListenOverflows``, for
    this machine's network namespace as a whole): each one costs a client a 1 s SYN
    retransmit, so anything but 0 points at a listener with too small a backlog.
    """
    assert runner.lc is not None
    config = load_config(runner.lc.config_path)
    script = ",".join(sorted(ACTIONS))
    # born in every region of the config, so the social requests cross regions
    regions = sorted({n.number for n in config.nodes.values()
                      if n.kind == "rolecity" and n.number})
    options = BotOptions.from_config(config, count=bots, script=script, hold=0.0,
                                     server_ids=tuple(regions))
    print(f"rl-cluster demo: {bots} bots born in regions {regions}: login -> auth -> "
          f"{script} -> logout", flush=True)
    before = listen_overflows()
    report = await run_bots(options)
    after = listen_overflows()
    print(report.format_table(), flush=True)
    login = report.latency.get("login")
    if login is not None and login.count:
        print(f"login latency: p50 {login.p50 * 1000:.1f} ms, p95 {login.p95 * 1000:.1f} ms, "
              f"p99 {login.p99 * 1000:.1f} ms ({login.count} logins)", flush=True)
    if before is None or after is None:
        print("listen-queue overflows: unknown (no /proc/net/netstat)", flush=True)
    else:
        print(f"listen-queue overflows during the demo: {after - before} (kernel counter "
              f"TcpExtListenOverflows, whole machine)", flush=True)
    return report.exit_status == 0
