"""The master node's own services: masterflow, the GM HTTP API and the role nodes' record
in Redis (``rltwist.nodes.role.registry``)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import error
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from rltwist.net import LISTEN_BACKLOG
from rltwist.nodes.common.node import Node, fail_startup
from rltwist.nodes.master.gm import BoundedRequest, GMApi
from rltwist.nodes.master.masterflow import Masterflow
from rltwist.nodes.master.metrics import MasterCollector
from rltwist.nodes.role.registry import RoleRegistry

log = Logger()


class GMSite(Site):
    """Access log of GM actions only: every POST is logged (who changed what), the GETs
    that dashboards and scripts poll many times a second are not. Request bodies are
    bounded before they are buffered (``BoundedRequest``)."""

    requestFactory = BoundedRequest

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
            self.port = self.node.reactor.listenTCP(m.gm_port, site, backlog=LISTEN_BACKLOG,
                                                    interface=m.gm_host)
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


def build(node: Node) -> None:
    flow = Masterflow(node)
    node.cluster.register(flow)
    node.role_registry = RoleRegistry(node, flow)  # type: ignore[attr-defined]
    node.masterflow = flow  # type: ignore[attr-defined]
    node.registry.register(MasterCollector(flow, node.role_registry))  # type: ignore[attr-defined]
    GMService(node, flow).setServiceParent(node)
