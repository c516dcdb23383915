"""The login node: loginserver takes client connections and hands each Login to
loginhandler ``crc32(openid) mod N`` (seed §8 step 3)."""

from __future__ import annotations

import zlib
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer
from twisted.logger import Logger

from rltwist.metrics import LOGIN_CODES, LOGIN_STEPS, REQUEST_BUCKETS, precreate
from rltwist.nodes.common.node import Node
from rltwist.nodes.login.loginhandler import LoginHandler, sdk_pool
from rltwist.nodes.login.regionlist import RegionListCache
from rltwist.protocols import pb
from rltwist.protocols.server import (
    CloseReason,
    ProtocolViolation,
    ServerProtocol,
    ServerProtocolFactory,
)

log = Logger()


class LoginConnection(ServerProtocol):
    """A client connection to loginserver: ``Login`` requests, and ``RegionList`` (the
    regions a new player may choose) before them."""

    server: LoginServer

    def connectionMade(self) -> None:
        super().connectionMade()
        self.server.connections.inc()

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        self.server.connections.dec()

    def requestReceived(self, message: Any, session: int) -> None:
        if isinstance(message, pb.RegionList):
            listing = defer.Deferred.fromCoroutine(self.server.regions.respond(message))
            listing.addCallback(lambda response: self.reply(session, response))
            return
        if not isinstance(message, pb.Login):
            raise ProtocolViolation(CloseReason.REQUEST_BEFORE_AUTH,
                                    detail=f"{type(message).__name__} sent to a login node")
        handler = self.server.handler_for(message.openid)
        d = defer.Deferred.fromCoroutine(handler.login(message))
        d.addCallback(self._answer, session)

    def _answer(self, response: Any, session: int) -> None:
        if response.code == pb.ErrorCode.OK:
            self.handshakeDone()  # the client goes on to its role node now
        self.reply(session, response)


class LoginServer(ServerProtocolFactory):
    protocol = LoginConnection

    def __init__(self, node: Node) -> None:
        super().__init__(limits=node.config.client, clock=node.reactor)
        self.node = node
        n = node.config.login.handlers
        pool = sdk_pool(node.reactor, node.config.login.sdk_connections)
        outcomes = Counter("rl_login", "Logins by result (ErrorCode name)", ["outcome"],
                           registry=node.registry)
        precreate(outcomes, LOGIN_CODES)
        latency = Histogram("rl_login_seconds", "Time to answer a Login",
                            registry=node.registry, buckets=REQUEST_BUCKETS)
        steps = Histogram("rl_login_step_seconds", "Time of each step of a Login (sdk: token "
                          "check; lock: is_available + per-openid lock; account: logiccenter; "
                          "state: the player's Redis state; kick: logging the online instance "
                          "out; assign: role node + secret)", ["step"],
                          registry=node.registry, buckets=REQUEST_BUCKETS)
        precreate(steps, LOGIN_STEPS)
        self.connections = Gauge("rl_login_connections", "Open client connections",
                                 registry=node.registry)
        self.handlers = [LoginHandler(node, i, pool, outcomes, latency, steps)
                         for i in range(n)]
        self.regions = RegionListCache(node)
        node.add_shutdown_handler("loginserver", self._shutdown)
        self._pool = pool

    def handler_for(self, openid: str) -> LoginHandler:
        return self.handlers[zlib.crc32(openid.encode()) % len(self.handlers)]

    def buildProtocol(self, addr: Any) -> ServerProtocol | None:
        p = super().buildProtocol(addr)
        if p is not None:  # None: refused (connection caps)
            p.server = self  # type: ignore[attr-defined]
        return p

    async def _shutdown(self) -> None:
        self.node.login_open = False
        await self._pool.closeCachedConnections()


def build(node: Node) -> None:
    node.listen_clients(LoginServer(node))
