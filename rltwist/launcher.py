"""Start, watch and stop rltwist node processes — the one code path used by the tests,
the benchmarks and ``rl-cluster``.

Every wait here has a bound and a message that says what did not happen; processes are
stopped by PID only (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tomli_w
from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.config import (
    CLIENT_KINDS,
    DEV_CLUSTER_SECRET,
    DEV_GM_TOKEN,
    REGION_KINDS,
    packaged_root,
    parse_node_name,
)
from rltwist.crashpoint import ENV_FLAGS
from rltwist.readiness import READY_FD, READY_FD_ENV

log = Logger()

TWISTD = ("-c", "from twisted.scripts.twistd import run; run()")
DEV_SECRET = DEV_CLUSTER_SECRET
__all__ = ["DEV_GM_TOKEN", "DEV_SECRET", "ChildProcess", "LaunchError", "LocalCluster",
           "NodeProcess", "free_ports", "local_config", "render_config"]


class LaunchError(Exception):
    """A node did not start or stop as expected; the message says which and why."""


#: ports handed to nodes come from below Linux's default ephemeral range (32768-60999), so
#: the outgoing connections of other processes cannot take a node's port while it restarts
PORT_RANGE = (20000, 32000)


def free_ports(count: int, host: str = "127.0.0.1", exclude: Iterable[int] = ()) -> list[int]:
    """*count* distinct TCP ports that were free on *host* a moment ago, chosen at random
    from PORT_RANGE (outside the ephemeral range; the OS's choice if that range is full),
    none of them in *exclude* (ports already handed to processes that have not bound them
    yet). The one place rltwist picks ports: launcher, rl-cluster and tests."""
    excluded = set(exclude)
    socks: list[socket.socket] = []
    held: list[socket.socket] = []  # excluded ports the OS offered: held so it moves on
    try:
        for port in random.sample(range(*PORT_RANGE), min(2000, PORT_RANGE[1] - PORT_RANGE[0])):
            if len(socks) == count:
                break
            if port in excluded:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            (held if s.getsockname()[1] in excluded else socks).append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks + held:
            s.close()


def render_config(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Write ``{"section": {"key": value}}`` as TOML; a dotted section name
    (``"nodes.map1"``) becomes a nested table (``[nodes.map1]``)."""
    nested: dict[str, Any] = {}
    for section, values in sections.items():
        table = nested
        for part in section.split("."):
            table = table.setdefault(part, {})
        table.update(values)
    return tomli_w.dumps(nested)


def find_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The project directory holding ``etc/game`` and ``hotfix/``: *start* (default the
    current directory) or one of its parents, else the tables rltwist ships with."""
    here = Path(start or os.getcwd()).absolute()
    for candidate in (here, *here.parents):
        if (candidate / "etc" / "game").is_dir():
            return candidate
    return packaged_root()


def local_config(names: Iterable[str], *, host: str = "127.0.0.1",
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A config mapping for *names* on free loopback ports (``master`` is always included)."""
    names = list(dict.fromkeys(["master", *names]))
    for n in names:
        parse_node_name(n)  # reject unknown names early, with the name in the message
    need = 1 + sum(3 if parse_node_name(n)[0] in CLIENT_KINDS else 2 for n in names)
    ports = iter(free_ports(need, host))
    sections: dict[str, Any] = {
        "cluster": {"secret": DEV_SECRET, "heartbeat_interval": 0.5, "heartbeat_misses": 3},
        "redis": {},
        "storage": {},
        "master": {"gm_host": host, "gm_port": next(ports), "gm_token": DEV_GM_TOKEN},
    }
    root = find_root()
    if root is not None:  # node processes run in their run directory: give them the root
        sections["hotreload"] = {"root": str(root)}
    for n in names:
        node = {"host": host, "port": next(ports), "metrics_port": next(ports)}
        if parse_node_name(n)[0] in CLIENT_KINDS:
            node["client_port"] = next(ports)
        sections[f"nodes.{n}"] = node
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    return sections


class _ChildProtocol(protocol.ProcessProtocol):
    def __init__(self, proc: ChildProcess) -> None:
        self.proc = proc

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD:
            self.proc.ready_data(data)
        else:
            self.proc.output(data)

    def processEnded(self, reason: Failure) -> None:
        self.proc.ended(reason)


class ChildProcess:
    """A child process this code starts, watches and stops by PID, with its output in
    ``<run_dir>/<name>.log``.

    Readiness comes from the child itself, never from its log: it gets the write end of a
    pipe as descriptor 3 (``RLTWIST_READY_FD=3``) and writes one JSON line there once it
    serves (``rltwist.readiness``).
    """

    def __init__(self, name: str, argv: Sequence[str], run_dir: str | os.PathLike[str],
                 reactor: Any = None, env: Mapping[str, str] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.name = name
        self._argv = list(argv)
        self.run_dir = Path(run_dir)
        self.log_path = self.run_dir / f"{name}.log"
        self.env = dict(env) if env is not None else dict(os.environ)
        self.transport: Any = None
        self.pid: int | None = None
        self.exit_code: int | None = None
        #: what the child wrote on the readiness pipe (decoded JSON), once ready
        self.ready_info: Any = None
        self._tail = b""
        self._ready_buffer = b""
        self._ready_waiters: list[defer.Deferred[None]] = []
        self._ended: list[defer.Deferred[int | None]] = []
        self._logfile: Any = None
        self._is_ready = False

    def argv(self) -> list[str]:
        return list(self._argv)

    @property
    def running(self) -> bool:
        return self.transport is not None and self.exit_code is None and self.pid is not None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._logfile = open(self.log_path, "ab")
        self._tail = self._ready_buffer = b""
        self._is_ready = False
        self.ready_info = None
        self.exit_code = None
        argv = self.argv()
        self.transport = self.reactor.spawnProcess(
            _ChildProtocol(self), argv[0], argv,
            env={**self.env, READY_FD_ENV: str(READY_FD)}, path=str(self.run_dir),
            childFDs={0: "w", 1: "r", 2: "r", READY_FD: "r"})
        self.pid = self.transport.pid

    def output(self, data: bytes) -> None:
        if self._logfile is not None:
            self._logfile.write(data)
            self._logfile.flush()
        self._tail = (self._tail + data)[-8192:]

    def ready_data(self, data: bytes) -> None:
        self._ready_buffer += data
        if self._is_ready or b"\n" not in self._ready_buffer:
            return
        line = self._ready_buffer.split(b"\n", 1)[0]
        try:
            self.ready_info = json.loads(line)
        except ValueError:
            self.ready_info = line.decode(errors="replace")
        self._is_ready = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self._tail.decode(errors="replace").splitlines()[-lines:])

    def ended(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.exit_code = code if code is not None else (-sig if sig else -1)
        if self._logfile is not None:
            self._logfile.close()
            self._logfile = None
        waiters_ready, self._ready_waiters = self._ready_waiters, []
        for w in waiters_ready:
            w.errback(self._exited_early())
        waiters, self._ended = self._ended, []
        for d in waiters:
            d.callback(self.exit_code)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the child reports ready; fail naming it and showing its output."""
        if self._is_ready:
            return
        if self.exit_code is not None or self.transport is None:
            raise self._exited_early()
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        try:
            await d.addTimeout(timeout, self.reactor)
        except defer.TimeoutError:
            raise LaunchError(f"{self.name} (pid {self.pid}) not ready within {timeout:g}s; "
                              f"last output:\n{self.tail()}") from None

    def _exited_early(self) -> LaunchError:
        return LaunchError(f"{self.name} exited with status {self.exit_code} before it was "
                           f"ready; last output:\n{self.tail()}")

    async def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to end; return its exit code (negative: killed by signal)."""
        if self.exit_code is not None or self.transport is None:
            return self.exit_code
        d: defer.Deferred[int | None] = defer.Deferred()
        self._ended.append(d)
        try:
            return await d.addTimeout(timeout, self.reactor)
        except defer.TimeoutError:
            raise LaunchError(f"{self.name} (pid {self.pid}) still running after "
                              f"{timeout:g}s") from None

    def signal(self, signum: int) -> None:
        if self.running:
            try:
                self.transport.signalProcess(signum)
            except error.ProcessExitedAlready:
                pass

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within *timeout*; return exit code."""
        if not self.running:
            return self.exit_code
        self.signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.signal(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout)
        except LaunchError:
            log.warn("{name} (pid {pid}) ignored SIGTERM for {t}s; killing it",
                     name=self.name, pid=self.pid, t=timeout)
            return await self.kill()

    async def kill(self) -> int | None:
        self.signal(signal.SIGKILL)
        return await self.wait_exit(10.0)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)


class NodeProcess(ChildProcess):
    """One ``twistd -n rl-<kind>`` process."""

    def __init__(self, name: str, config_path: str | os.PathLike[str],
                 run_dir: str | os.PathLike[str], reactor: Any = None,
                 env: Mapping[str, str] | None = None) -> None:
        super().__init__(name, (), run_dir, reactor=reactor, env=env)
        self.kind, self.number = parse_node_name(name)
        self.config_path = str(config_path)

    def argv(self) -> list[str]:
        args = [sys.executable, *TWISTD, "-n", "--pidfile=", f"rl-{self.kind}"]
        if self.number is not None:
            args += ["--sid" if self.kind in REGION_KINDS else "--index", str(self.number)]
        return [*args, "--config", self.config_path]


class LocalCluster:
    """A set of node processes sharing one generated config and run directory."""

    def __init__(self, run_dir: str | os.PathLike[str], names: Sequence[str] = (),
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 reactor: Any = None, config: Mapping[str, Any] | None = None,
                 test_flags: Iterable[str] = ()) -> None:
        """*test_flags* are put in every node's ``RLTWIST_TEST_FLAGS`` (``diag``: the
        test helpers of the diag service; see rltwist.crashpoint)."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.run_dir = Path(run_dir).absolute()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.sections = (dict(config) if config is not None
                         else local_config(names, overrides=overrides))
        self.sections.setdefault("storage", {}).setdefault("path", str(self.run_dir / "data"))
        self.config_path = self.run_dir / "cluster.toml"
        self.write_config()
        self.nodes: dict[str, NodeProcess] = {}
        self.test_flags = tuple(test_flags)

    def write_config(self) -> None:
        self.config_path.write_text(render_config(self.sections))

    def add_node(self, name: str) -> None:
        """Add *name* to the config on free ports (for nodes joining at run time)."""
        if f"nodes.{name}" in self.sections:
            return
        kind, _ = parse_node_name(name)
        # nodes added before they start have not bound their ports: never hand them out
        taken = {v for section in self.sections.values() for k, v in section.items()
                 if k.endswith("port") and isinstance(v, int)}
        ports = free_ports(3 if kind in CLIENT_KINDS else 2, exclude=taken)
        node = {"host": "127.0.0.1", "port": ports[0], "metrics_port": ports[1]}
        if kind in CLIENT_KINDS:
            node["client_port"] = ports[2]
        self.sections[f"nodes.{name}"] = node
        self.write_config()

    def node_config(self, name: str) -> Mapping[str, Any]:
        return self.sections[f"nodes.{name}"]

    def address(self, name: str) -> tuple[str, int]:
        n = self.node_config(name)
        return n["host"], n["port"]

    def process(self, name: str) -> NodeProcess:
        proc = self.nodes.get(name)
        if proc is None:
            self.add_node(name)
            proc = self.nodes[name] = NodeProcess(name, self.config_path, self.run_dir,
                                                  reactor=self.reactor)
            if self.test_flags:
                flags = [f for f in proc.env.get(ENV_FLAGS, "").split(",") if f]
                proc.env[ENV_FLAGS] = ",".join(dict.fromkeys([*flags, *self.test_flags]))
        return proc

    async def start(self, *names: str, ready_timeout: float = 30.0) -> None:
        """Start *names* (in the given order, all at once) and wait until each is ready."""
        procs = [self.process(n) for n in names]
        for p in procs:
            if not p.running:
                p.start()
        for p in procs:
            await p.wait_ready(ready_timeout)

    # -- talking to master's GM API ---------------------------------------------------------

    def gm_url(self, path: str = "") -> str:
        m = self.sections["master"]
        return f"http://{m['gm_host']}:{m['gm_port']}{path}"

    async def gm(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                 timeout: float = 10.0) -> tuple[int, Any]:
        """One GM request; returns (HTTP status, decoded JSON body)."""
        import json

        import treq

        headers: dict[bytes | str, list[bytes | str]] = {
            "Authorization": [f"Bearer {token or self.sections['master']['gm_token']}"]}
        data = json.dumps(body).encode() if body is not None else None
        if data is not None:
            headers["Content-Type"] = ["application/json"]
        d = treq.request(method, self.gm_url(path), headers=headers, data=data,
                         persistent=False)
        response = await d.addTimeout(timeout, self.reactor)
        content = await treq.content(response).addTimeout(timeout, self.reactor)
        try:
            return response.code, json.loads(content)
        except ValueError:
            return response.code, content.decode(errors="replace")

    async def node_states(self) -> dict[str, str]:
        """Master's view: node name -> state (waiting/up/down/stopped)."""
        status, body = await self.gm("GET", "/nodes")
        if status != 200:
            raise LaunchError(f"GET /nodes answered {status}: {body}")
        return {n["name"]: n["state"] for n in body["nodes"]}

    async def wait_up(self, names: Iterable[str], timeout: float = 30.0) -> dict[str, str]:
        """Wait until master reports every node in *names* up; fail naming those that are not."""
        import time

        from twisted.internet import task

        want = set(names)
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        last_error = ""
        while True:
            try:
                states = await self.node_states()
                if all(states.get(n) == "up" for n in want):
                    return states
            except Exception as e:  # master not answering yet
                last_error = f" (last error: {e})"
            if time.monotonic() > deadline:
                missing = {n: states.get(n, "not registered") for n in sorted(want)
                           if states.get(n) != "up"}
                raise LaunchError(f"master did not report these nodes up within "
                                  f"{timeout:g}s: {missing}{last_error}")
            await task.deferLater(self.reactor, 0.1)

    async def stop_all(self, timeout: float = 15.0) -> dict[str, int | None]:
        """Stop every running node (SIGTERM, then SIGKILL after *timeout*); return codes."""
        procs = [p for p in self.nodes.values() if p.running]
        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(p.stop(timeout)) for p in procs])
        return {p.name: r for p, r in zip(procs, results, strict=True)}


def kill_by_pid(pid: int) -> None:
    """Last-resort cleanup for a PID this code started (never by name)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
