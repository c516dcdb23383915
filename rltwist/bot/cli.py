"""``rl-bot``: the simulated-client console command (QA, load and memory benchmarks).

Exit status: 0 if every bot succeeded, 1 if any failed (or was kicked without
``--expect-kicks``, or the run was interrupted before every bot started), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import textwrap
from typing import IO, Any

from twisted.internet import defer, task

from rltwist.bot.actions import describe_actions, parse_script
from rltwist.bot.options import (
    BotOptions,
    config_dev_sdk_secret,
    config_logins,
    describe,
    parse_logins,
)
from rltwist.bot.report import STEP_HELP, BotReport
from rltwist.bot.swarm import BotSwarm
from rltwist.config import ConfigError, load_config

SECRET_ENV = "RLTWIST_DEV_SDK_SECRET"

EPILOG = f"""\
flow of one bot:
  connect to a login node, Login{{openid=bot-<prefix>-<i>, token=dev token}}, close;
  connect to the role gateway from the answer, Auth{{userid, secret}}; heartbeat every
  --heartbeat s; run --script; hold the session --hold s; close. RETRY_LATER and
  LOGIN_IN_PROGRESS are retried (--retries, small backoff); any other code, a timeout or
  a lost connection fails the bot. A KickNotify ends the bot as "kicked".

script actions (--script a,b*3):
{textwrap.indent(describe_actions().replace("; ", chr(10)), "  ")}

latency steps in the summary:
{textwrap.indent(chr(10).join(f"{k}: {v}" for k, v in STEP_HELP.items()), "  ")}
  <action>: each scripted request; heartbeat: scripted and periodic heartbeats

exit status: 0 every bot succeeded; 1 some failed (or were kicked without
--expect-kicks, or Ctrl-C came before every bot started); 2 bad usage.

examples:
  rl-bot --config etc/cluster.toml --count 1000 --concurrency 200 --script rename
  rl-bot --login 127.0.0.1:7401 --dev-sdk-secret S --count 5000 --hold inf --heartbeat 10
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _server_ids(text: str) -> tuple[int, ...]:
    if text == "recommended":
        return ()  # parse_args turns it into recommended_region
    ids = []
    for part in text.split(","):
        try:
            sid = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not a region id")
        if not 0 <= sid < 2**32:
            raise argparse.ArgumentTypeError(f"region id {sid} is out of range")
        ids.append(sid)
    return tuple(ids)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _hold(text: str) -> float | None:
    if text.strip().lower() in ("inf", "forever"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds or 'inf'")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rl-bot",
        description="Simulated game clients: log N bots in through the login nodes and "
                    "role gateways, optionally run scripted requests and hold the sessions, "
                    "then print success counts, logins/s and latency percentiles per step.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = p.add_argument_group("where to log in")
    target.add_argument("--login", metavar="HOST:PORT[,HOST:PORT...]",
                        help="client ports of login nodes; bot i starts at the (i mod n)th "
                             "and retries move to the next (default: every login<n> node's "
                             "host:client_port in --config)")
    target.add_argument("--config", metavar="PATH",
                        help="cluster config (e.g. etc/cluster.toml) to read the login "
                             "addresses and [login] dev_sdk_secret from")
    target.add_argument("--dev-sdk-secret", metavar="S",
                        help="the login nodes' dev SDK secret; bot tokens are "
                             f"hex(HMAC-SHA256(S, openid)) (default: ${SECRET_ENV}, then "
                             "--config)")
    target.add_argument("--server-id", type=_server_ids, default=(1,), metavar="SID[,SID...]",
                        help="region new bots are born in (default: 1); several spread the "
                             "bots over them: bot i takes the (i mod n)-th; `recommended`: "
                             "each bot asks the login node's RegionList and takes the "
                             "region it recommends")
    target.add_argument("--client-version", metavar="V",
                        help="version string sent in Login (default: rltwist's version)")

    bots = p.add_argument_group("how many and how fast")
    bots.add_argument("--count", type=_positive_int, required=True, metavar="N",
                      help="number of bots")
    bots.add_argument("--concurrency", type=_positive_int, default=200, metavar="C",
                      help="bots logging in at once (connect .. end of script); held "
                           "sessions do not count (default: 200)")
    bots.add_argument("--rate", type=_seconds, metavar="R",
                      help="start at most R bots per second (default: unlimited)")
    bots.add_argument("--openid-prefix", metavar="P",
                      help="openids are bot-P-<i>; reuse P to log the same accounts in again "
                           "(default: random per run, printed in the summary)")
    bots.add_argument("--first", type=_non_negative_int, default=0, metavar="I",
                      help="index of the first bot, to split accounts between processes "
                           "(default: 0)")

    session = p.add_argument_group("what each bot does")
    session.add_argument("--script", default="", metavar="A[,A*N...]",
                         help="requests sent in order after Auth, e.g. rename,heartbeat*3 "
                              "(actions listed below)")
    session.add_argument("--hold", type=_hold, default=0.0, metavar="SECONDS",
                         help="keep each session this long after its script, heartbeating; "
                              "0 logs out at once, 'inf' holds until Ctrl-C (default: 0)")
    session.add_argument("--heartbeat", type=_seconds, default=10.0, metavar="SECONDS",
                         help="heartbeat period of a logged-in bot (default: 10)")
    session.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                         help="bound of every connect and every request (default: 10)")
    session.add_argument("--retries", type=_non_negative_int, default=5, metavar="K",
                         help="retries of a RETRY_LATER / LOGIN_IN_PROGRESS answer, with a "
                              "backoff from 0.1 s doubling to 2 s (default: 5)")
    session.add_argument("--expect-kicks", action="store_true",
                         help="a KickNotify is an expected end, not a failure")

    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="PATH",
                     help="also write the report as JSON to PATH ('-' for stdout)")
    out.add_argument("--quiet", action="store_true",
                     help="no progress bar and no table: one result line on stderr")
    return p


def options_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> BotOptions:
    """Turn parsed arguments (and --config) into ``BotOptions``; ``parser.error`` if bad."""
    logins: Any = None
    secret = args.dev_sdk_secret or os.environ.get(SECRET_ENV) or None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as e:
            parser.error(str(e))
        if not args.login:
            logins = config_logins(config)
            if not logins:
                parser.error(f"{args.config}: no login<n> node with a client_port; "
                             "pass --login HOST:PORT")
        secret = secret or config_dev_sdk_secret(config)
    if args.login:
        try:
            logins = parse_logins(args.login)
        except ValueError as e:
            parser.error(f"--login: {e}")
    if logins is None:
        parser.error("where to log in: pass --login HOST:PORT or --config PATH")
    if not secret:
        parser.error(f"no dev SDK secret: pass --dev-sdk-secret, set ${SECRET_ENV}, or "
                     "--config with [login] dev_sdk_secret")
    try:
        script = parse_script(args.script)
    except ValueError as e:
        parser.error(f"--script: {e}")
    extra: dict[str, Any] = {}
    if args.openid_prefix is not None:
        extra["openid_prefix"] = args.openid_prefix
    if args.client_version is not None:
        extra["client_version"] = args.client_version
    try:
        return BotOptions(
            logins=logins, count=args.count, dev_sdk_secret=secret,
            concurrency=args.concurrency, rate=args.rate,
            server_id=args.server_id[0] if args.server_id else 1,
            server_ids=args.server_id if len(args.server_id) > 1 else (),
            recommended_region=not args.server_id,
            first=args.first, script=script, hold=args.hold, heartbeat=args.heartbeat,
            timeout=args.timeout, retries=args.retries, expect_kicks=args.expect_kicks,
            **extra)
    except ValueError as e:
        parser.error(str(e))


class Progress:
    """Progress on stderr: redrawn in place on a TTY, otherwise one line a second."""

    def __init__(self, swarm: BotSwarm, stream: IO[str], clock: Any) -> None:
        self.swarm = swarm
        self.stream = stream
        self.tty = stream.isatty()
        self._loop = task.LoopingCall(self.draw)
        self._loop.clock = clock
        self._clock = clock

    def start(self) -> None:
        self._loop.start(0.2 if self.tty else 1.0, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self.draw()
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        rec, count = self.swarm.recorder, self.swarm.options.count
        now = self._clock.seconds()
        elapsed = now - rec.first_start if rec.first_start is not None else 0.0
        # Once every bot has logged in, the rate stops at the last login (holds don't count).
        window = elapsed
        if rec.settled >= count and rec.last_login is not None and rec.first_start is not None:
            window = rec.last_login - rec.first_start
        rate = rec.logins / window if window > 0 else 0.0
        width = 24
        filled = int(width * rec.settled / count) if count else width
        bar = "#" * filled + "-" * (width - filled)
        text = (f"[{bar}] {rec.settled}/{count} logged in {rec.logins} ok {rec.ok} "
                f"failed {rec.failed} kicked {rec.kicked} online {rec.online} "
                f"retries {rec.retries} | {rate:.0f} logins/s | {elapsed:.1f}s")
        if self.swarm.recorder.interrupted:
            text += " | stopping"
        return text

    def draw(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def raise_fd_limit(wanted: int) -> str | None:
    """Lift the soft open-file limit toward ``wanted``; a warning if it stays too low."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (f"warning: open-file limit {soft} is below the ~{wanted} this run may need; "
                "raise it (ulimit -n) or lower --count/--concurrency")
    return None


def write_json(path: str, report: BotReport, options: BotOptions) -> None:
    data = report.to_dict()
    data["options"] = {
        "logins": [f"{h}:{p}" for h, p in options.logins], "count": options.count,
        "first": options.first, "concurrency": options.concurrency, "rate": options.rate,
        "server_id": options.server_id, "server_ids": list(options.server_ids),
        "recommended_region": options.recommended_region,
        "script": list(options.script), "hold": options.hold,
        "heartbeat": options.heartbeat, "timeout": options.timeout,
        "retries": options.retries, "expect_kicks": options.expect_kicks,
    }
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)


async def _run(swarm: BotSwarm, progress: Progress | None) -> BotReport:
    if progress is not None:
        progress.start()
    try:
        return await swarm.run()
    finally:
        if progress is not None:
            progress.stop()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rl-bot``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    options = options_from_args(args, parser)
    stderr = sys.stderr
    held = options.count if options.hold != 0 else options.concurrency
    warning = raise_fd_limit(min(options.count, held + options.concurrency) + 256)
    if warning:
        print(f"rl-bot: {warning}", file=stderr)

    from twisted.internet import reactor as default_reactor

    reactor: Any = default_reactor  # the IReactor* interfaces do not declare run/stop/running
    swarm = BotSwarm(options, reactor=reactor)
    progress = None if args.quiet else Progress(swarm, stderr, reactor)
    if not args.quiet:
        for line in describe(options):
            print(f"rl-bot: {line}", file=stderr)
    outcome: dict[str, Any] = {}
    interrupts = [0]

    def interrupted() -> None:
        interrupts[0] += 1
        if interrupts[0] == 1:
            print("\nrl-bot: interrupted, releasing sessions (Ctrl-C again to quit now)",
                  file=stderr)
            swarm.stop()
        else:
            reactor.stop()

    def on_signal(signum: int, frame: Any) -> None:
        reactor.callFromThread(interrupted)

    def done(result: Any) -> None:
        outcome["result"] = result
        if reactor.running:
            reactor.stop()

    d = defer.ensureDeferred(_run(swarm, progress))
    d.addBoth(done)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if "result" not in outcome:
            reactor.run(installSignalHandlers=False)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    result = outcome.get("result")
    if result is None:  # quit by a second Ctrl-C
        result = swarm.snapshot()
    if not isinstance(result, BotReport):
        print(f"rl-bot: internal error: {result}", file=stderr)
        return 1
    report = result
    if args.json:
        write_json(args.json, report, options)
    if args.quiet:
        print(f"rl-bot: {report.ok}/{report.count} ok, {report.failed} failed, "
              f"{report.kicked} kicked, {report.logins_per_s:.1f} logins/s", file=stderr)
    else:
        out = stderr if args.json == "-" else sys.stdout
        print(report.format_table(), file=out)
    return report.exit_status
