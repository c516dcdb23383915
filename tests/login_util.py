"""Helpers for tests that play game clients against real login and role nodes."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rltwist.cluster import Cluster
from rltwist.config import ClusterSettings, parse_node_name
from rltwist.launcher import DEV_SECRET, LocalCluster
from rltwist.protocols import ClientProtocol, pb
from rltwist.redis import OnlineState, RedisClient, RedisServer
from rltwist.sdk import dev_token

DEV_SDK_SECRET = "dev-only-sdk-secret-change-me"


class GameClient:
    """One simulated client: login on a login node, then play on a role node."""

    def __init__(self, openid: str, server_id: int = 1, token: str | None = None,
                 version: str = "1") -> None:
        self.openid = openid
        self.server_id = server_id
        self.version = version
        self.token = token if token is not None else dev_token(DEV_SDK_SECRET, openid)
        self.pushes: list[Any] = []
        self.conn: ClientProtocol | None = None
        self.login_response: Any = None
        self.closed: defer.Deferred[None] = defer.Deferred()
        #: set by tests.social_util.SocialCase: the userid and the role node serving it
        self.userid = 0
        self.role = ""

    async def connect(self, host: str, port: int) -> ClientProtocol:
        client = self

        class Conn(ClientProtocol):
            def connectionLost(self, reason: Any = None) -> None:
                super().connectionLost(reason)
                if self is client.conn and not client.closed.called:
                    client.closed.callback(None)

        proto = Conn(timeout=15.0, on_push=self.pushes.append)
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=5), proto)
        return proto

    async def login(self, host: str, port: int) -> Any:
        conn = await self.connect(host, port)
        try:
            self.login_response = await conn.request(pb.Login(
                openid=self.openid, token=self.token, device_id="test", os="test",
                server_id=self.server_id, version=self.version))
        finally:
            conn.transport.loseConnection()
        return self.login_response

    async def auth(self, response: Any = None) -> Any:
        r = response or self.login_response
        self.closed = defer.Deferred()
        self.conn = await self.connect(r.host, r.port)
        return await self.conn.request(pb.Auth(userid=r.userid, secret=r.secret))

    async def play(self, host: str, port: int) -> Any:
        """Login then Auth; fail the test helper if either is not OK."""
        r = await self.login(host, port)
        if r.code != pb.ErrorCode.OK:
            raise AssertionError(f"{self.openid}: login answered {pb.ErrorCode.Name(r.code)}")
        a = await self.auth(r)
        if a.code != pb.ErrorCode.OK:
            raise AssertionError(f"{self.openid}: auth answered {pb.ErrorCode.Name(a.code)}")
        return a

    def request(self, message: Any) -> defer.Deferred[Any]:
        assert self.conn is not None
        return self.conn.request(message)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.loseConnection()


class LoginCase(unittest.TestCase):
    """A real redis-server plus a cluster of master, logiccenter, role and login nodes, and
    rolecity1 (new players are born only in a region the cluster has)."""

    timeout = 180
    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]
    overrides: dict[str, dict[str, Any]] = {}
    #: extra environment per node name (crash points: RLTWIST_TEST_FLAGS/RLTWIST_CRASH_POINTS)
    node_env: dict[str, dict[str, str]] = {}

    async def setUp(self) -> None:
        self.redis = RedisServer(directory=self.mktemp())
        await self.redis.start()
        self.addCleanup(self.redis.stop)
        overrides = {k: dict(v) for k, v in self.overrides.items()}
        overrides.setdefault("redis", {}).update(url=self.redis.url, prefix="t:")
        self.lc = LocalCluster(self.mktemp(), self.names, overrides=overrides)
        self.addCleanup(self.lc.stop_all)
        for name, env in self.node_env.items():
            self.lc.process(name).env.update(env)
        await self.lc.start(*self.names)
        await self.lc.wait_up(self.names)
        client = RedisClient(self.redis.url, prefix="t:")
        await client.connect()
        self.addCleanup(client.disconnect)
        self.state = OnlineState(client)
        await self.wait_logins_available()
        self.clients: list[GameClient] = []
        self.addCleanup(lambda: [c.close() for c in self.clients])

    async def wait_logins_available(self) -> None:
        from tests.util import wait_for

        await wait_for(self.state.get_available, 20, "master to set is_available in Redis")
        roles = [n for n in self.names if parse_node_name(n)[0] == "role"]
        await wait_for(lambda: _roles_registered(self.state, roles), 20,
                       f"{roles} in the least-loaded pick")

    def login_address(self, name: str = "login1") -> tuple[str, int]:
        n = self.lc.node_config(name)
        return n["host"], n["client_port"]

    def client(self, openid: str, **kw: Any) -> GameClient:
        c = GameClient(openid, **kw)
        self.clients.append(c)
        return c

    async def logged_in(self, openid: str, timeout: float = 30.0,
                        **kw: Any) -> GameClient:
        """Log *openid* in (again) and Auth: retried while a previous instance of it logs
        out (RETRY_LATER from the login or the role node)."""
        from tests.util import wait_for

        c = self.client(openid, **kw)
        host, port = self.login_address()

        async def done() -> bool:
            r = await c.login(host, port)
            if r.code == pb.ErrorCode.RETRY_LATER:
                return False
            self.assertEqual(r.code, pb.ErrorCode.OK)
            a = await c.auth(r)
            if a.code == pb.ErrorCode.RETRY_LATER:
                c.close()
                return False
            self.assertEqual(a.code, pb.ErrorCode.OK)
            return True

        await wait_for(done, timeout, f"{openid} to log in")
        c.userid = c.login_response.userid
        return c


async def offline(case: LoginCase, userid: int) -> bool:
    """For wait_for: Redis knows no state of *userid* (logged out, or cleared)."""
    return await case.state.get_user(userid) is None


async def _roles_registered(state: OnlineState, roles: list[str]) -> bool:
    return {r.node for r in await state.list_roles()} >= set(roles)


class FakeLoginNode:
    """What ``LoginHandler`` uses of its node, for tests that drive a handler without
    processes: the login settings, a Redis state, a cluster (``call``), the reactor."""

    login_open = True

    def __init__(self, settings: Any, state: Any = None, cluster: Any = None) -> None:
        self.config = _LoginConfig(settings)
        self.cluster = cluster
        self.reactor = reactor
        self._state = state

    def redis_state(self) -> Any:
        return self._state


@attrs.frozen
class _LoginConfig:
    login: Any


def login_handler(node: FakeLoginNode, pool: Any = None) -> Any:
    """A real ``LoginHandler`` on ``node``, its metrics in a registry of its own."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from rltwist.nodes.login.loginhandler import LoginHandler

    registry = CollectorRegistry()
    return LoginHandler(node, 0, pool,  # type: ignore[arg-type]
                        Counter("rl_login", "", ["outcome"], registry=registry),
                        Histogram("rl_login_seconds", "", registry=registry))


class ClusterProbe:
    """The test as one more cluster member, to ask nodes directly (master may be dead)."""

    def __init__(self, case: LoginCase) -> None:
        names = [n for n in case.names if n != "master"]
        self.cluster = Cluster("tester", ClusterSettings(secret=DEV_SECRET.encode(),
                                                         call_timeout=10.0),
                               {n: case.lc.address(n) for n in names})
        self.cluster.startService()
        case.addCleanup(self.cluster.stopService)

    async def online(self, role: str) -> list[int]:
        return list(await self.cluster.call(role, "gateway", "online_players", timeout=5))
