"""The role node: the gateway for game clients and the agents holding online players."""

from __future__ import annotations

from rltwist.nodes.common.node import Node
from rltwist.nodes.role.gateway import Gateway


def build(node: Node) -> None:
    gateway = Gateway(node)
    node.cluster.register(gateway)
    node.listen_clients(gateway)
    node.add_ready_hook(gateway.start)
    node.add_shutdown_handler("gateway", gateway.shutdown)
    node.marked_down_hooks.append(gateway.drop_all)
    node.add_fence_hook(gateway.fence)
