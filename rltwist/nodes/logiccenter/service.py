"""The logiccenter node's services: account (and, later, gmail and gactivitymgr)."""

from __future__ import annotations

from rltwist.nodes.common.node import Node
from rltwist.nodes.logiccenter.account import Account


def build(node: Node) -> None:
    node.cluster.register(Account(node))
