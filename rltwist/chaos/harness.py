"""The cluster ``rl-chaos`` plays against: its own redis-server and every node kind started
through :class:`rltwist.launcher.LocalCluster` (the code ``rl-cluster`` and the tests use),
and the faults it can inject — each by PID, on processes it started."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, task

from rltwist.cli.cluster import node_names
from rltwist.config import parse_node_name
from rltwist.launcher import LaunchError, LocalCluster
from rltwist.redis import RedisServer

#: settings of the chaos cluster on top of LocalCluster's (0.5 s heartbeats, 3 misses)
OVERRIDES: dict[str, dict[str, Any]] = {
    # a player whose role node froze is swept at the node's first tick after it wakes,
    # before any answer from master can arrive (bots heartbeat every second)
    "role": {"heartbeat_timeout": 6.0, "logout_wait": 10.0},
    "cluster": {"call_timeout": 10.0, "unreachable_after": 5.0, "phase_timeout": 20.0},
}


class Harness:
    """Redis + a LocalCluster of ``regions`` regions, ``roles`` role and ``logins`` login
    nodes in *run_dir*; kill/freeze/restart by node name; GM calls."""

    def __init__(self, reactor: Any, run_dir: Path, *, regions: int = 2, roles: int = 2,
                 logins: int = 2, say: Callable[[str], None] = print,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.reactor = reactor
        self.run_dir = Path(run_dir).absolute()
        self.names = node_names(regions, roles, logins)
        self.regions = regions
        self.say = say
        self.overrides = {k: dict(v) for k, v in OVERRIDES.items()}
        for section, values in (overrides or {}).items():
            self.overrides.setdefault(section, {}).update(values)
        self.redis: RedisServer | None = None
        self.lc: LocalCluster | None = None
        #: node name -> monotonic times it was SIGKILLed (its served intervals end there)
        self.kills: dict[str, list[float]] = {}

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(directory=self.run_dir / "redis", persistent=False,
                                 reactor=self.reactor)
        await self.redis.start()
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        overrides.setdefault("redis", {}).update(url=self.redis.url, prefix="chaos:")
        self.lc = LocalCluster(self.run_dir, self.names, overrides=overrides,
                               reactor=self.reactor)
        await self.start_nodes(self.names)

    async def wait_roles_in_pick(self, bound: float = 30.0) -> None:
        """Wait until every role node is in Redis' least-loaded pick (else the first
        players all land on the first role node that registered there)."""
        from rltwist.redis import OnlineState, RedisClient

        assert self.redis is not None
        client = RedisClient(self.redis.url, prefix="chaos:")
        await client.connect()
        try:
            state = OnlineState(client)
            want = set(self.kind_nodes("role"))
            deadline = time.monotonic() + bound
            while True:
                have = {r.node for r in await state.list_roles()}
                if want <= have and await state.get_available():
                    return
                if time.monotonic() > deadline:
                    raise LaunchError(f"role nodes not in the Redis pick within {bound:g}s: "
                                      f"{sorted(want - have)} (logins available: "
                                      f"{await state.get_available()})")
                await self.sleep(0.1)
        finally:
            await client.disconnect()

    async def start_nodes(self, names: Sequence[str]) -> None:
        lc = self.cluster
        await lc.start(*names, ready_timeout=90)
        await lc.wait_up(names, timeout=60)
        await self.wait_roles_in_pick()

    @property
    def cluster(self) -> LocalCluster:
        assert self.lc is not None, "the cluster is not started"
        return self.lc

    async def stop(self) -> None:
        """Ordered GM shutdown (bounded), then SIGTERM/SIGKILL of leftovers; Redis last."""
        if self.lc is not None:
            for p in self.lc.nodes.values():
                p.resume()
            if any(p.running for p in self.lc.nodes.values()):
                try:
                    await self.gm_shutdown(bound=60)
                except Exception as e:
                    self.say(f"  ordered shutdown did not complete ({e}); stopping by signal")
                await self.lc.stop_all(timeout=10)
        if self.redis is not None:
            await self.redis.stop()

    async def gm_shutdown(self, bound: float) -> dict[str, int | None]:
        """POST /shutdown and wait until every node process exited; their exit codes."""
        status, body = await self.gm("POST", "/shutdown")
        if status != 202:
            raise LaunchError(f"POST /shutdown answered {status}: {body}")
        deadline = time.monotonic() + bound
        lc = self.cluster
        while any(p.running for p in lc.nodes.values()):
            if time.monotonic() > deadline:
                left = [n for n, p in lc.nodes.items() if p.running]
                raise LaunchError(f"nodes still running {bound:g}s after POST /shutdown: "
                                  f"{left}")
            await self.sleep(0.2)
        return {n: p.exit_code for n, p in lc.nodes.items()}

    # -- faults -----------------------------------------------------------------------------

    async def kill(self, name: str) -> float:
        """SIGKILL *name* and wait for it to be gone; the monotonic time it was gone."""
        proc = self.cluster.nodes[name]
        await proc.kill()
        t = time.monotonic()
        self.kills.setdefault(name, []).append(t)
        return t

    async def restart(self, name: str) -> None:
        proc = self.cluster.process(name)
        if proc.running:
            raise LaunchError(f"{name} is still running (pid {proc.pid})")
        proc.start()
        await proc.wait_ready(90)
        await self.cluster.wait_up([name], timeout=60)

    def freeze(self, name: str) -> None:
        self.cluster.nodes[name].pause()

    def thaw(self, name: str) -> None:
        self.cluster.nodes[name].resume()

    async def kill_redis(self) -> float:
        assert self.redis is not None and self.redis.pid is not None
        os.kill(self.redis.pid, signal.SIGKILL)
        while self.redis.running:
            await self.sleep(0.02)
        return time.monotonic()

    async def restart_redis(self) -> float:
        """Start Redis again, empty, on its port; the monotonic time it answers."""
        assert self.redis is not None
        await self.redis.restart(crash=True)
        return time.monotonic()

    # -- talking to it ------------------------------------------------------------------

    def kind_nodes(self, kind: str) -> list[str]:
        return [n for n in self.names if parse_node_name(n)[0] == kind]

    def logins(self) -> list[tuple[str, int]]:
        lc = self.cluster
        return [(lc.node_config(n)["host"], lc.node_config(n)["client_port"])
                for n in self.kind_nodes("login")]

    def role_by_port(self) -> dict[int, str]:
        lc = self.cluster
        return {lc.node_config(n)["client_port"]: n for n in self.kind_nodes("role")}

    def pids(self) -> dict[str, int]:
        return {n: p.pid for n, p in self.cluster.nodes.items() if p.running and p.pid}

    async def gm(self, method: str, path: str, body: Any = None, *,
                 timeout: float = 10.0) -> tuple[int, Any]:
        """One GM request: (status, body); status 0 when it was never sent (connection
        refused), -1 when no answer came in time (it may have run)."""
        try:
            return await self.cluster.gm(method, path, body, timeout=timeout)
        except (error.ConnectionRefusedError, error.ConnectError) as e:
            return 0, f"not sent: {e}"
        except (defer.TimeoutError, defer.CancelledError, error.ConnectionLost,
                error.ConnectionDone) as e:
            return -1, f"no answer: {type(e).__name__}"
        except Exception as e:  # treq's ResponseFailed etc.: the request was written
            return -1, f"no answer: {type(e).__name__}: {e}"

    async def call(self, node: str, service: str, method: str, *args: Any,
                   timeout: float = 5.0) -> tuple[int, Any]:
        """An operator call through GM ``POST /call``: (status, result or error body)."""
        status, body = await self.gm("POST", "/call", {
            "node": node, "service": service, "method": method, "args": list(args),
            "timeout": timeout}, timeout=timeout + 5)
        if status == 200 and isinstance(body, dict):
            return 200, body.get("result")
        return status, body

    def metrics_port(self, name: str) -> int:
        return int(self.cluster.node_config(name)["metrics_port"])

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        return task.deferLater(self.reactor, seconds)

    def describe(self) -> dict[str, Any]:
        return {"nodes": self.names, "run_dir": str(self.run_dir),
                "redis": self.redis.url if self.redis else None,
                "settings": json.loads(json.dumps(self.overrides))}

