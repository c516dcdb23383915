"""Benchmark of the login flow against real nodes: a login storm, and the memory of idle
online players.

    python bench/login.py [--quick] [--online N] [--bots K] [--storms R] [--concurrency C]
                          [--bot-procs P] [--heartbeat S] [--profile DIR] [--json PATH]

Everything runs on this machine: a private redis-server, master, logiccenter, rolecity1
(new players are born in region 1), role1, role2 and login1 as twistd processes
(``rltwist.launcher.LocalCluster``), and the bots as separate ``rl-bot`` processes
(``python -m rltwist.bot``, split with ``--first`` when ``--bot-procs`` > 1), so the bots'
CPU is visible and accounted for apart from the nodes'.

Runs, in order (each bot logs in and auths, then holds its session, heartbeating, until
the run is measured; then the bots are released and the run waits until Redis counts no
player online):

* ``online``: ``--online`` (5,000) new players. The role nodes' RSS is read (psutil)
  before the first bot starts and again one heartbeat period after the last login; the
  difference divided by the players on that node is the RSS per idle online player. This
  is also the first storm row.
* ``returning`` (not with --quick): the same accounts log in again.
* ``new``: ``--storms`` (3; 0 with --quick) storms of ``--bots`` (5,000) new players.
* ``paced`` (not with --quick): an open-loop run at half the best storm rate, to show the
  latency when the nodes are not saturated.
* ``profiled`` (with --profile DIR only): a storm with ``py-spy record`` attached to each
  node; collapsed stacks land in DIR and the hottest functions are printed. Not a
  measurement (the profiler takes CPU).

Each row gives completed logins/s (Login + Auth, first bot start to last Auth OK),
latency percentiles of the whole login (``total``: connect .. Auth OK, retries included)
and of its steps, the CPU each process used per login (psutil, user + system), what share
of the machine's CPU went to processes outside this benchmark (other work on the host),
and the listen-queue overflows the kernel counted (a full accept backlog makes a client's
SYN wait for the 1 s retransmit). The top-level JSON keys ``logins_per_s``, ``p50_ms``,
``p99_ms`` come from the median of the ``new`` storms (``online`` with --quick);
``rss_kb_per_player`` from ``online``.
With several bot processes, a row's rate is all logins over the longest login window and
its p99 is the worst process' p99 (an upper bound); p50 is count-weighted.

Because other work on a shared machine moves logins/s from run to run, the CPU per login
of each process is the steadier number; ``ceilings_logins_per_s`` turns it into the rate
the measured costs allow (all cores / CPU per login of everything we run, with and
without the bots; one core / CPU per login of the busiest node).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import psutil
from twisted.internet import defer, protocol, task
from twisted.python.failure import Failure

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rltwist.cli import react_main
from rltwist.launcher import LocalCluster
from rltwist.net import listen_overflows
from rltwist.redis import OnlineState, RedisClient, RedisServer

# rolecity1: new players are born only in a region the cluster has (and its rolecache hears
# of every Auth and logout, as in a real cluster)
NODES = ("master", "logiccenter", "rolecity1", "role1", "role2", "login1")
ROLES = ("role1", "role2")
SDK_SECRET = "bench-dev-sdk-secret"
PREFIX = "bench:"
TARGET_RATE = 1000.0
TARGET_P99_MS = 250.0
TARGET_KB_PER_PLAYER = 30.0


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- the machine ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model(), "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": list(os.getloadavg())}


def ephemeral_ports() -> int:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232


def time_wait_to(port: int) -> int:
    """Sockets in TIME_WAIT whose remote port is ``port`` (closed client connections)."""
    want = f":{port:04X} "
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    parts = line.split(None, 4)
                    if len(parts) > 3 and parts[3] == "06" and (parts[2] + " ").endswith(want):
                        n += 1
        except OSError:
            pass
    return n


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle so far."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


# -- our processes ----------------------------------------------------------------------


class Processes:
    """The processes of this benchmark by name, for CPU and memory readings."""

    def __init__(self) -> None:
        self.procs: dict[str, psutil.Process] = {}

    def add(self, name: str, pid: int | None) -> None:
        if pid is not None:
            self.procs[name] = psutil.Process(pid)

    def remove(self, name: str) -> None:
        self.procs.pop(name, None)

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def memory(self, names: Iterable[str]) -> dict[str, dict[str, int]]:
        out = {}
        for name in names:
            info = self.procs[name].memory_full_info()
            out[name] = {"rss": info.rss, "uss": info.uss}
        return out


@attrs.define
class CpuWindow:
    """CPU used per process and by the whole machine between ``start()`` and ``stop()``."""

    procs: Processes
    wall: float = 0.0
    used: dict[str, float] = attrs.Factory(dict)
    machine: float = 0.0
    _t0: float = 0.0
    _cpu0: dict[str, float] = attrs.Factory(dict)
    _busy0: float = 0.0

    def start(self) -> None:
        self._t0, self._cpu0, self._busy0 = time.monotonic(), self.procs.cpu(), machine_busy()

    def add_baseline(self, name: str) -> None:
        """A process started inside the window counts from zero."""
        self._cpu0.setdefault(name, 0.0)

    def stop(self) -> None:
        self.wall = time.monotonic() - self._t0
        now = self.procs.cpu()
        self.used = {n: now[n] - self._cpu0.get(n, 0.0) for n in now if n in self._cpu0}
        self.machine = machine_busy() - self._busy0


# -- rl-bot processes -------------------------------------------------------------------


class _BotProtocol(protocol.ProcessProtocol):
    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "ab")  # closed in processEnded
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.log.close()
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.ended.callback(code if code is not None else -(sig or 1))


@attrs.define
class BotProcess:
    name: str
    pid: int
    json_path: Path
    log_path: Path
    proto: _BotProtocol
    transport: Any

    def interrupt(self) -> None:
        """Ctrl-C: rl-bot releases its held sessions, then writes its report."""
        if not self.proto.ended.called:
            self.transport.signalProcess("INT")

    def kill(self) -> None:
        if not self.proto.ended.called:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def report(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return None

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn_bots(reactor: Any, workdir: Path, label: str, config: Path, *, count: int,
               procs: int, prefix: str, concurrency: int, heartbeat: float, timeout: float,
               rate: float | None) -> list[BotProcess]:
    """Start ``procs`` rl-bot processes sharing ``count`` bots (split with --first)."""
    out = []
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    first = 0
    for i in range(procs):
        n = count // procs + (1 if i < count % procs else 0)
        name = f"bot{i + 1}"
        json_path = workdir / f"{label}-{name}.json"
        log_path = workdir / f"{label}-{name}.log"
        json_path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "rltwist.bot", "--config", str(config),
                "--count", str(n), "--first", str(first), "--openid-prefix", prefix,
                "--concurrency", str(max(1, concurrency // procs)), "--hold", "inf",
                "--heartbeat", str(heartbeat), "--timeout", str(timeout),
                "--quiet", "--json", str(json_path)]
        if rate is not None:
            argv += ["--rate", str(rate / procs)]
        proto = _BotProtocol(log_path)
        transport = reactor.spawnProcess(proto, sys.executable, argv, env=env, path=repo)
        out.append(BotProcess(name, transport.pid, json_path, log_path, proto, transport))
        first += n
    return out


# -- profiles ---------------------------------------------------------------------------


class Profiler:
    """``py-spy record --format raw`` on one process until ``stop()`` (SIGINT)."""

    def __init__(self, reactor: Any, name: str, pid: int, out_dir: Path, rate: int) -> None:
        self.name = name
        self.path = out_dir / f"{name}.collapsed.txt"
        self.log_path = out_dir / f"{name}.py-spy.log"
        self.proto = _BotProtocol(self.log_path)
        exe = shutil.which("py-spy") or "py-spy"
        self.started = time.monotonic()
        self.transport = reactor.spawnProcess(
            self.proto, exe, [exe, "record", "--pid", str(pid), "--rate", str(rate),
                              "--format", "raw", "--nonblocking", "-o", str(self.path)],
            env=dict(os.environ))
        self.seconds = 0.0
        self.rate = rate

    async def stop(self) -> None:
        self.seconds = time.monotonic() - self.started
        if not self.proto.ended.called:
            self.transport.signalProcess("INT")
        await self.proto.ended.addTimeout(20, _reactor())


def _frame(frame: str) -> str:
    return re.sub(r":\d+\)$", ")", frame)


def summarize_profile(path: Path, seconds: float, rate: int, top: int = 12
                      ) -> dict[str, Any]:
    """Hottest functions of a collapsed-stack file: self and inclusive share of samples.

    py-spy only records threads that are running, so samples / (seconds * rate) is how
    busy the process was (all its threads together).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {"error": f"no profile at {path}"}
    for line in lines:
        stack, _, n_text = line.rpartition(" ")
        if not stack or not n_text.isdigit():
            continue
        n = int(n_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return {"samples": 0}
    skip = ("<module>", "run (twisted", "runApp", "ApplicationRunner", "startReactor",
            "runReactorWithLogging", "ReactorBase.run ", "ReactorBase.mainLoop",
            "callWithLogger", "callWithContext", "ContextTracker", "_doReadOrWrite")

    def share(c: Counter[str], k: int, drop: Sequence[str] = ()) -> list[list[Any]]:
        rows = [(f, n) for f, n in c.most_common() if not any(s in f for s in drop)]
        return [[round(100.0 * n / total, 1), f] for f, n in rows[:k]]

    return {"samples": total, "busy_pct": round(100.0 * total / max(1.0, seconds * rate), 1),
            "self": share(own, top), "inclusive": share(inclusive, top * 2, skip)}


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


# -- one run ----------------------------------------------------------------------------


@attrs.define
class Bench:
    reactor: Any
    args: argparse.Namespace
    workdir: Path
    lc: LocalCluster
    state: OnlineState
    procs: Processes

    async def online_total(self) -> int:
        return sum(r.online for r in await self.state.list_roles())

    async def online_by_node(self) -> dict[str, int]:
        return {r.node: r.online for r in await self.state.list_roles()}

    async def wait_online(self, want: int, bots: list[BotProcess], bound: float,
                          what: str) -> None:
        deadline = time.monotonic() + bound
        last = -1
        last_print = 0.0
        while True:
            n = await self.online_total()
            if n == want:
                return
            dead = [b for b in bots if b.proto.ended.called]
            if want and dead and len(dead) == len(bots):
                raise RuntimeError(f"{what}: every rl-bot exited with {n}/{want} online; "
                                   f"last output:\n{dead[0].tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {n} online, expected {want}, after {bound:g}s")
            now = time.monotonic()
            if n != last and now - last_print >= 1.0:
                say(f"  {what}: {n}/{want} online")
                last, last_print = n, now
            await task.deferLater(self.reactor, 0.05)

    def master_log_size(self) -> int:
        try:
            return (self.lc.run_dir / "master.log").stat().st_size
        except OSError:
            return 0

    def master_downs(self, offset: int) -> list[str]:
        """master's "<node> is down" lines written since ``offset``."""
        try:
            with open(self.lc.run_dir / "master.log", "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return [line.split("] ", 1)[-1] for line in text.splitlines() if " is down: " in line]

    async def redis_commands(self) -> dict[str, tuple[int, int]]:
        """redis-server's command counts: name -> (calls, microseconds)."""
        text = await self.state.client.execute("INFO", "commandstats")
        out = {}
        for line in str(text).splitlines():
            if line.startswith("cmdstat_"):
                name, _, fields = line[len("cmdstat_"):].partition(":")
                kv = dict(f.split("=", 1) for f in fields.split(",") if "=" in f)
                out[name] = (int(kv.get("calls", 0)), int(kv.get("usec", 0)))
        return out

    async def wait_for_ports(self, count: int) -> None:
        """Every login is a new connection to login1 from an ephemeral port that then sits
        in TIME_WAIT for 60 s; wait until a run of ``count`` bots cannot run out of them."""
        port = int(self.lc.node_config("login1")["client_port"])
        budget = ephemeral_ports() - 2000
        if count > budget:
            raise RuntimeError(f"{count} bots need more ephemeral ports than the "
                               f"{budget + 2000} this machine has; lower --bots/--online")
        waited = 0.0
        while (busy := time_wait_to(port)) + count > budget:
            if waited == 0.0:
                say(f"  waiting for {busy} TIME_WAIT sockets to login1 to expire "
                    f"({count} bots need {count} of {budget} ephemeral ports)")
            await task.deferLater(self.reactor, 1.0)
            waited += 1.0
        if waited:
            say(f"  waited {waited:.0f}s for ephemeral ports")

    async def run(self, label: str, *, count: int, prefix: str, rate: float | None = None,
                  memory: bool = False, profile_dir: Path | None = None) -> dict[str, Any]:
        """Log ``count`` bots in and hold them; measure; release them; one result row."""
        a = self.args
        say(f"run {label}: {count} bots (bot-{prefix}-<i>) in {a.bot_procs} rl-bot "
            f"process(es), concurrency {a.concurrency}"
            + (f", rate {rate:.0f}/s" if rate else "") + f"; load {load_text()}")
        await self.wait_for_ports(count)
        base = await self.online_total()
        if base:
            raise RuntimeError(f"run {label}: {base} players still online before the run")
        log_offset = self.master_log_size()
        mem_before = self.procs.memory(ROLES) if memory else None
        overflow0 = listen_overflows()
        redis0 = await self.redis_commands()
        window = CpuWindow(self.procs)
        window.start()
        bots = spawn_bots(self.reactor, self.workdir, label, self.lc.config_path, count=count,
                          procs=a.bot_procs, prefix=prefix, concurrency=a.concurrency,
                          heartbeat=a.heartbeat, timeout=a.timeout, rate=rate)
        for b in bots:
            self.procs.add(b.name, b.pid)
            window.add_baseline(b.name)
        profilers = []
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for name in ("login1", "role1", "role2", "logiccenter", "master"):
                profilers.append(Profiler(self.reactor, name, self.lc.nodes[name].pid,
                                          profile_dir, a.profile_rate))
        try:
            await self.wait_online(count, bots, a.run_bound, f"run {label}")
            window.stop()
            redis1 = await self.redis_commands()
            for p in profilers:
                await p.stop()
            overflow1 = listen_overflows()
            per_node = await self.online_by_node()
            mem_after = None
            if memory:
                settle = a.heartbeat + 1.0
                say(f"  all {count} online {per_node}; waiting {settle:g}s (one heartbeat "
                    "period) before reading RSS")
                await task.deferLater(self.reactor, settle)
                per_node = await self.online_by_node()
                mem_after = self.procs.memory(ROLES)
            say(f"  releasing {count} sessions")
            for b in bots:
                b.interrupt()
            codes = [await b.proto.ended.addTimeout(a.run_bound, self.reactor) for b in bots]
            await self.wait_online(0, [], a.run_bound, f"release after {label}")
        finally:
            for b in bots:
                b.kill()
                self.procs.remove(b.name)
            for p in profilers:
                if not p.proto.ended.called:
                    p.transport.signalProcess("KILL")
        downs = self.master_downs(log_offset)
        if downs:
            raise RuntimeError(
                f"run {label}: master marked nodes down (missed cluster heartbeats while "
                f"they were busy): {downs}; see {self.lc.run_dir}/master.log")
        reports = [b.report() for b in bots]
        if any(r is None for r in reports):
            raise RuntimeError(f"run {label}: an rl-bot wrote no report (exit {codes}); "
                               f"output:\n{bots[0].tail()}")
        row = combine(label, [r for r in reports if r is not None], codes)
        row.update(cpu_row(window, row["logins"], [b.name for b in bots]))
        row["redis_per_login"] = redis_per_login(redis0, redis1, row["logins"])
        if overflow0 is not None and overflow1 is not None:
            row["listen_overflows"] = overflow1 - overflow0
        row["online_by_node"] = per_node
        row["loadavg_after"] = list(os.getloadavg())
        if memory and mem_before is not None and mem_after is not None:
            row["memory"] = memory_row(mem_before, mem_after, per_node)
        if profilers:
            row["profiles"] = {p.name: summarize_profile(p.path, p.seconds, p.rate)
                               for p in profilers}
            row["profile_dir"] = str(profile_dir)
        say(f"  {label}: {row['ok']}/{row['count']} ok, {row['logins_per_s']:.0f} logins/s, "
            f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms")
        return row


def load_text() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def combine(label: str, reports: list[dict[str, Any]], codes: list[int]) -> dict[str, Any]:
    """One row from the reports of the rl-bot processes of a run."""
    logins = sum(r["logins"] for r in reports)
    window = max(r["login_window_s"] for r in reports)

    def step(name: str, key: str) -> float | None:
        parts = [r["latency"][name] for r in reports if name in r["latency"]]
        parts = [p for p in parts if p["count"]]
        if not parts:
            return None
        if key == "p50_ms":
            return sum(p[key] * p["count"] for p in parts) / sum(p["count"] for p in parts)
        return max(p[key] for p in parts)

    failures: Counter[str] = Counter()
    for r in reports:
        for reason, g in r["failures"].items():
            failures[reason] += g["count"]
    steps = {}
    for name in ("connect", "login", "gateway", "auth", "total", "heartbeat"):
        if any(name in r["latency"] for r in reports):
            steps[name] = {k: step(name, k) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
    return {
        "run": label, "count": sum(r["count"] for r in reports),
        "ok": sum(r["ok"] for r in reports), "failed": sum(r["failed"] for r in reports),
        "kicked": sum(r["kicked"] for r in reports), "retries": sum(r["retries"] for r in reports),
        "logins": logins, "login_window_s": window,
        "logins_per_s": logins / window if window > 0 else 0.0,
        "p50_ms": steps.get("total", {}).get("p50_ms"),
        "p99_ms": steps.get("total", {}).get("p99_ms"),
        "steps": steps, "failures": dict(failures), "bot_exit_codes": codes,
        "bot_procs": len(reports),
    }


def cpu_row(window: CpuWindow, logins: int, bot_names: list[str]) -> dict[str, Any]:
    """CPU per login and busy share of one core, per process and for the machine."""
    ours = sum(window.used.values())
    cores = os.cpu_count() or 1
    per_process = {}
    for name, used in sorted(window.used.items()):
        per_process[name] = {
            "cpu_s": round(used, 3),
            "ms_per_login": round(1000.0 * used / logins, 3) if logins else None,
            "core_pct": round(100.0 * used / window.wall, 1) if window.wall else None,
        }
    bots_used = sum(window.used.get(n, 0.0) for n in bot_names)
    nodes_used = ours - bots_used
    busiest = max((n for n in window.used if n not in bot_names),
                  key=lambda n: window.used[n], default=None)
    ceilings = {}
    if logins and ours:
        # what the measured CPU per login allows, whatever else the machine is doing
        ceilings = {
            "machine_all_ours": round(cores * logins / ours),
            "machine_nodes_only": round(cores * logins / nodes_used) if nodes_used else None,
        }
        if busiest is not None and window.used[busiest]:
            ceilings[f"{busiest}_alone"] = round(logins / window.used[busiest])
    return {
        "window_s": round(window.wall, 3),
        "cpu": per_process,
        "ceilings_logins_per_s": ceilings,
        "bots_core_pct": max((per_process[n]["core_pct"] or 0.0 for n in bot_names
                              if n in per_process), default=None),
        "machine_busy_pct": round(100.0 * window.machine / (window.wall * cores), 1)
        if window.wall else None,
        "others_busy_pct": round(100.0 * max(0.0, window.machine - ours)
                                 / (window.wall * cores), 1) if window.wall else None,
        "ours_ms_per_login": round(1000.0 * ours / logins, 3) if logins else None,
    }


def redis_per_login(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
                    logins: int) -> dict[str, Any]:
    """Redis commands per completed login (the benchmark's own polling included: one
    ZRANGE + HGETALL every 50 ms), and redis-server's time in them."""
    if not logins:
        return {}
    calls = {n: after[n][0] - before.get(n, (0, 0))[0] for n in after}
    usec = sum(after[n][1] - before.get(n, (0, 0))[1] for n in after)
    per = {n: round(c / logins, 3) for n, c in sorted(calls.items()) if c}
    return {"commands": per, "total": round(sum(calls.values()) / logins, 2),
            "server_usec": round(usec / logins, 1)}


def memory_row(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]],
               players: dict[str, int]) -> dict[str, Any]:
    nodes = {}
    for name in ROLES:
        n = players.get(name, 0)
        d_rss = after[name]["rss"] - before[name]["rss"]
        d_uss = after[name]["uss"] - before[name]["uss"]
        nodes[name] = {
            "players": n, "rss_before_kb": before[name]["rss"] // 1024,
            "rss_after_kb": after[name]["rss"] // 1024,
            "rss_kb_per_player": round(d_rss / 1024 / n, 2) if n else None,
            "uss_kb_per_player": round(d_uss / 1024 / n, 2) if n else None,
        }
    total = sum(players.get(n, 0) for n in ROLES)
    d_rss = sum(after[n]["rss"] - before[n]["rss"] for n in ROLES)
    d_uss = sum(after[n]["uss"] - before[n]["uss"] for n in ROLES)
    return {"nodes": nodes, "players": total,
            "rss_kb_per_player": round(d_rss / 1024 / total, 2) if total else None,
            "uss_kb_per_player": round(d_uss / 1024 / total, 2) if total else None}


# -- output -----------------------------------------------------------------------------


def _f(v: Any, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


def print_tables(rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    m = result["machine"]
    print(f"\nlogin benchmark — {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}; "
          f"load average {'/'.join(f'{x:.2f}' for x in m['loadavg_at_start'])} at start")
    print(f"bots: {result['bot_procs']} separate rl-bot process(es), concurrency "
          f"{result['concurrency']} in all, heartbeat {result['heartbeat']:g}s; nodes: "
          f"{', '.join(NODES)} + redis-server")
    print()
    head = (f"{'run':<11}{'bots':>7}{'ok':>7}{'fail':>5}{'logins/s':>10}{'p50 ms':>8}"
            f"{'p99 ms':>8}{'conn p99':>9}{'login p99':>10}{'auth p99':>9}{'lstn ovf':>9}"
            f"{'mach busy':>10}{'others':>8}")
    print(head)
    for r in rows:
        s = r["steps"]
        print(f"{r['run']:<11}{r['count']:>7}{r['ok']:>7}{r['failed']:>5}"
              f"{r['logins_per_s']:>10.0f}{_f(r['p50_ms']):>8}{_f(r['p99_ms']):>8}"
              f"{_f(s.get('connect', {}).get('p99_ms')):>9}"
              f"{_f(s.get('login', {}).get('p99_ms')):>10}"
              f"{_f(s.get('auth', {}).get('p99_ms')):>9}"
              f"{_f(r.get('listen_overflows'), 'd'):>9}"
              f"{_f(r['machine_busy_pct']):>9}%{_f(r['others_busy_pct']):>7}%")
    names = sorted({n for r in rows for n in r["cpu"]},
                   key=lambda n: (n.startswith("bot"), n))
    print("\nCPU per completed login, ms (and % of one core during the run)")
    print(f"{'run':<11}" + "".join(f"{n:>16}" for n in names) + f"{'all ours':>10}")
    for r in rows:
        cells = []
        for n in names:
            c = r["cpu"].get(n)
            cells.append("-" if c is None else f"{c['ms_per_login']:.3f} ({c['core_pct']:.0f}%)")
        print(f"{r['run']:<11}" + "".join(f"{c:>16}" for c in cells)
              + f"{_f(r['ours_ms_per_login'], '.3f'):>10}")
    print("\nRedis commands per completed login (redis-server INFO commandstats)")
    for r in rows:
        rp = r.get("redis_per_login") or {}
        cmds = " ".join(f"{n}={v:g}" for n, v in rp.get("commands", {}).items() if v >= 0.05)
        print(f"{r['run']:<11}{_f(rp.get('total'), '.1f'):>6} ({cmds}); "
              f"{_f(rp.get('server_usec'), '.1f')} us in redis-server")
    mem = result.get("memory")
    if mem:
        print(f"\nRSS per idle online player at {mem['players']} online "
              "(role node RSS after - before, one heartbeat period after the last login)")
        print(f"{'node':<8}{'players':>9}{'RSS before':>12}{'RSS after':>12}{'KB/player':>11}"
              f"{'USS KB/pl':>11}")
        for name, n in mem["nodes"].items():
            print(f"{name:<8}{n['players']:>9}{n['rss_before_kb'] / 1024:>10.1f}MB"
                  f"{n['rss_after_kb'] / 1024:>10.1f}MB{_f(n['rss_kb_per_player'], '.1f'):>11}"
                  f"{_f(n['uss_kb_per_player'], '.1f'):>11}")
        print(f"{'all':<8}{mem['players']:>9}{'':>24}{_f(mem['rss_kb_per_player'], '.1f'):>11}"
              f"{_f(mem['uss_kb_per_player'], '.1f'):>11}")
    for r in rows:
        for name, prof in r.get("profiles", {}).items():
            if not prof.get("samples"):
                continue
            print(f"\nprofile of {name} during '{r['run']}' ({prof['busy_pct']:.0f}% of wall "
                  f"time on CPU): self / inclusive share of samples")
            for (ps, fs), (pi, fi) in zip(prof["self"][:10], prof["inclusive"][:10],
                                          strict=False):
                print(f"  {ps:5.1f}% {fs[:60]:<60} {pi:5.1f}% {fi[:60]}")
    print()
    print(verdict(result))


def verdict(result: dict[str, Any]) -> str:
    lines = []
    rate, p99 = result.get("logins_per_s") or 0.0, result.get("p99_ms")
    ok = rate >= TARGET_RATE and p99 is not None and p99 < TARGET_P99_MS
    lines.append(f"login storm ({result.get('headline_run')}): {rate:,.0f} logins/s, "
                 f"p99 {_f(p99)} ms — "
                 f"{'meets' if ok else 'MISSES'} the >= {TARGET_RATE:,.0f}/s with p99 < "
                 f"{TARGET_P99_MS:.0f} ms target")
    kb = result.get("rss_kb_per_player")
    if kb is not None:
        lines.append(f"memory: {kb:.1f} KB RSS per idle online player — "
                     f"{'meets' if kb <= TARGET_KB_PER_PLAYER else 'MISSES'} the <= "
                     f"{TARGET_KB_PER_PLAYER:.0f} KB target")
    ceilings = result.get("ceilings_logins_per_s") or {}
    if ceilings:
        lines.append("CPU ceilings from the CPU per login of the headline run ("
                     + ", ".join(f"{k}: {v:,}/s" for k, v in ceilings.items() if v)
                     + "): machine = all cores / CPU per login, <node>_alone = one core / "
                     "that node's CPU per login")
    bound = result.get("bots_core_pct")
    if bound is not None:
        lines.append(f"bots: busiest rl-bot process used {bound:.0f}% of one core in the "
                     "headline run — "
                     + ("it may bound the rate: try --bot-procs 2" if bound > 85
                        else "not what bounds the rate"))
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


async def start_cluster(reactor: Any, workdir: Path, procs: Processes
                        ) -> tuple[RedisServer, LocalCluster, RedisClient, OnlineState]:
    say(f"starting redis-server and {', '.join(NODES)} in {workdir}")
    redis = RedisServer(directory=workdir / "redis")
    await redis.start()
    procs.add("redis", redis.pid)
    overrides: dict[str, dict[str, Any]] = {
        # etc/cluster.toml's node heartbeats, not LocalCluster's faster test ones
        "cluster": {"heartbeat_interval": 1.0, "heartbeat_misses": 3},
        "redis": {"url": redis.url, "prefix": PREFIX},
        "login": {"dev_sdk_secret": SDK_SECRET},
    }
    lc = LocalCluster(workdir / "run", NODES, overrides=overrides)
    try:
        await lc.start(*NODES)
        await lc.wait_up(NODES)
    except Exception:
        await lc.stop_all()
        await redis.stop()
        raise
    for name in NODES:
        procs.add(name, lc.nodes[name].pid)
    client = RedisClient(redis.url, prefix=PREFIX)
    await client.connect()
    state = OnlineState(client)
    deadline = time.monotonic() + 30
    while not (await state.get_available()
               and {r.node for r in await state.list_roles()} >= set(ROLES)):
        if time.monotonic() > deadline:
            raise RuntimeError("master did not set is_available with role1 and role2 "
                               "registered within 30s")
        await task.deferLater(reactor, 0.1)
    return redis, lc, client, state


async def main(reactor: Any, args: argparse.Namespace) -> int:
    started = time.monotonic()
    info = machine()
    say(f"machine: {info['cpus']} CPUs ({info['cpu_model']}), load average {load_text()}")
    workdir = Path(tempfile.mkdtemp(prefix="rl-login-bench-", dir=args.dir))
    procs = Processes()
    redis, lc, client, state = await start_cluster(reactor, workdir, procs)
    bench = Bench(reactor, args, workdir, lc, state, procs)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {"machine": info, "bot_procs": args.bot_procs,
                              "concurrency": args.concurrency, "heartbeat": args.heartbeat,
                              "quick": args.quick}
    failed = True
    try:
        if args.warmup:
            await bench.run("warm-up", count=args.warmup, prefix=new_prefix())
        online_prefix = new_prefix()
        online = await bench.run("online", count=args.online, prefix=online_prefix,
                                 memory=True)
        rows.append(online)
        if not args.quick:
            rows.append(await bench.run("returning", count=args.online, prefix=online_prefix))
        storms = [await bench.run(f"new-{i + 1}", count=args.bots, prefix=new_prefix())
                  for i in range(args.storms)]
        rows += storms
        candidates = storms or [online]
        # the median; of two, the slower one
        headline = sorted(candidates, key=lambda r: r["logins_per_s"])[
            (len(candidates) - 1) // 2]
        if args.paced:
            best = max(r["logins_per_s"] for r in rows)
            rows.append(await bench.run("paced", count=args.online,
                                        prefix=new_prefix(), rate=best / 2))
        if args.profile:
            rows.append(await bench.run("profiled", count=args.online, prefix=new_prefix(),
                                        profile_dir=Path(args.profile)))
        failed = False
    finally:
        say("stopping the cluster")
        await client.disconnect()
        await lc.stop_all()
        await redis.stop()
        if args.keep or failed:
            say(f"kept {workdir} (node and rl-bot logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result.update({
        "logins_per_s": round(headline["logins_per_s"], 1),
        "p50_ms": headline["p50_ms"], "p99_ms": headline["p99_ms"],
        "headline_run": headline["run"],
        "rss_kb_per_player": online["memory"]["rss_kb_per_player"],
        "uss_kb_per_player": online["memory"]["uss_kb_per_player"],
        "memory": online["memory"],
        "bots_core_pct": headline["bots_core_pct"],
        "ceilings_logins_per_s": headline["ceilings_logins_per_s"],
        "others_busy_pct": headline["others_busy_pct"],
        "loadavg_at_end": list(os.getloadavg()),
        "seconds": round(time.monotonic() - started, 1),
        "runs": rows,
    })
    print_tables(rows, result)
    print(f"(took {result['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.json}")
    failed_bots = sum(r["failed"] for r in rows)
    if failed_bots:
        say(f"{failed_bots} bots failed (see the failures in the JSON / the rl-bot logs)")
        return 1
    return 0


def new_prefix() -> str:
    return secrets.token_hex(3)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="under a minute: a 200-bot warm-up and the 'online' run (5,000 new "
                        "players), 5 s heartbeat; no returning/storm/paced runs")
    p.add_argument("--online", type=int, default=5000,
                   help="players held online for the memory reading (default: 5000)")
    p.add_argument("--bots", type=int, default=5000,
                   help="bots per new-player storm (default: 5000). Every login uses an "
                        "ephemeral port for 60 s; runs wait for enough of them. With 10,000 "
                        "the release (5,000 logouts at once per role node) can stall a role "
                        "node past master's heartbeat limit: the run then fails, naming it")
    p.add_argument("--storms", type=int, default=3,
                   help="new-player storms; the headline is their median (default: 3)")
    p.add_argument("--concurrency", type=int, default=100,
                   help="bots in their login phase at once, over all rl-bot processes "
                        "(default: 100; by Little's law, N logins in flight at 1,000/s "
                        "wait N ms on average, so 200 cannot give p99 < 250 ms)")
    p.add_argument("--bot-procs", type=int, default=1,
                   help="rl-bot processes sharing the bots (default: 1)")
    p.add_argument("--heartbeat", type=float, default=10.0,
                   help="bot heartbeat period, seconds (default: 10; 5 with --quick)")
    p.add_argument("--timeout", type=float, default=10.0, help="bot request timeout")
    p.add_argument("--warmup", type=int, default=500,
                   help="bots of an unmeasured first run (default: 500; 200 with --quick)")
    p.add_argument("--no-paced", dest="paced", action="store_false",
                   help="skip the open-loop run at half the best rate")
    p.add_argument("--profile", metavar="DIR",
                   help="add a storm with py-spy attached to every node; stacks go to DIR")
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    p.add_argument("--run-bound", type=float, default=300.0,
                   help="give up a run after this many seconds")
    p.add_argument("--dir", help="parent directory of the work directory")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    args = p.parse_args(argv)
    if args.quick:
        args.storms, args.warmup, args.paced = 0, min(args.warmup, 200), False
        if "--heartbeat" not in " ".join(argv):
            args.heartbeat = 5.0
    if args.bot_procs < 1 or args.online < 1 or args.bots < 1 or args.concurrency < 1:
        p.error("--bot-procs, --online, --bots and --concurrency must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    react_main(lambda reactor: main(reactor, arguments))
