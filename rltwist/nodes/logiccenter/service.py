"""The logiccenter node's services: regions and account (gmail and activities
are features: rltwist/features/)."""

from __future__ import annotations

from rltwist.nodes.common.node import Node
from rltwist.nodes.logiccenter.account import Account
from rltwist.nodes.logiccenter.regions import Regions


def build(node: Node) -> None:
    regions = Regions(node)
    node.cluster.register(regions)
    node.cluster.register(Account(node, regions))
    node.add_ready_hook(regions.start)
