"""The master node's own services: masterflow and the GM HTTP API."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from rltwist.nodes.common.node import Node, fail_startup
from rltwist.nodes.master.gm import GMApi
from rltwist.nodes.master.masterflow import UP, Masterflow, NodeRecord

log = Logger()


class GMSite(Site):
    """Access log of GM actions only: every POST is logged (who changed what), the GETs
    that dashboards and scripts poll many times a second are not."""

    def log(self, request: Any) -> None:
        if request.method != b"GET":
            super().log(request)


class GMService(service.Service):
    """Listens for GM HTTP requests; the port opens before the reactor runs."""

    def __init__(self, node: Node, flow: Masterflow) -> None:
        self.node = node
        self.flow = flow
        self.api = GMApi(node, flow)
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        m = self.node.config.master
        site = GMSite(self.api.resource())
        site.noisy = False
        try:
            self.port = self.node.reactor.listenTCP(m.gm_port, site, interface=m.gm_host)
        except error.CannotListenError as e:
            fail_startup(f"master: cannot listen for GM HTTP on {m.gm_host}:{m.gm_port} "
                         f"(master.gm_port in {self.node.config.path}): {e.socketError}")
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.flow.start()

    def stopService(self) -> Any:
        super().stopService()
        self.flow.stop()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class RoleRegistry(service.Service):
    """Keeps role nodes in Redis for login's least-loaded pick (seed §11).

    A registering role node is added (fresh: a restarted process starts empty); a role
    node marked down is removed and its players' state cleared, so they can log in again
    at once. Redis being unreachable never delays registration: the work runs in the
    background and failures are logged.
    """

    def __init__(self, node: Node, flow: Masterflow) -> None:
        self.state = node.redis_state()
        self.flow = flow
        self.node = node
        flow.register_hooks.append(self.registered)
        flow.down_hooks.append(self.down)
        self.checker = LoopingCall(self.check_available)
        self.checker.clock = node.reactor
        self._checking = False
        node.add_ready_hook(lambda: self.checker.start(
            node.config.cluster.heartbeat_interval, now=True))
        self.setServiceParent(node)

    def stopService(self) -> Any:
        if self.checker.running:
            self.checker.stop()
        return super().stopService()

    def check_available(self) -> None:
        if not self._checking:
            self._checking = True
            d = defer.Deferred.fromCoroutine(self._check_available())
            d.addErrback(lambda f: log.warn("master: Redis availability check failed: "
                                            "{error}", error=f.getErrorMessage()))
            d.addBoth(lambda _: setattr(self, "_checking", False))

    async def _check_available(self) -> None:
        """Seed §11: after a Redis restart ``is_available`` is unset and logins are refused
        until every role node has written its online players back; then set it."""
        if await self.state.get_available():
            return
        roles = [r for r in self.flow.nodes.values() if r.kind == "role" and r.state == UP]
        log.warn("master: Redis is_available unset; asking {n} role nodes to re-register "
                 "their players", n=len(roles))
        for r in roles:
            count = await self.node.cluster.call(r.name, "gateway", "reregister", timeout=30)
            log.info("master: {node} re-registered {count} players", node=r.name, count=count)
        await self.state.set_available()
        log.info("master: Redis is_available set; logins allowed")

    def registered(self, record: NodeRecord) -> None:
        if record.kind == "role" and record.client_port is not None:
            self._background(self.state.register_role(record.name, record.host,
                                                      record.client_port,
                                                      fresh=record.state != UP),
                             f"record role node {record.name} in Redis")

    def down(self, record: NodeRecord) -> None:
        if record.kind == "role":
            self._background(self.state.unregister_role(record.name),
                             f"clear role node {record.name} from Redis")

    def _background(self, work: Any, what: str) -> None:
        def failed(f: Failure) -> None:
            log.warn("master: could not {what}: {error}", what=what, error=f.getErrorMessage())

        def done(result: Any) -> None:
            log.info("master: {what} ({result})", what=what, result=result)

        defer.ensureDeferred(work).addCallbacks(done, failed)


def build(node: Node) -> None:
    flow = Masterflow(node)
    node.cluster.register(flow)
    node.role_registry = RoleRegistry(node, flow)  # type: ignore[attr-defined]
    node.masterflow = flow  # type: ignore[attr-defined]
    GMService(node, flow).setServiceParent(node)
