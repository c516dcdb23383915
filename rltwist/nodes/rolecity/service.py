"""The rolecity node's services (so far: rolecache)."""

from __future__ import annotations

from rltwist.nodes.common.node import Node
from rltwist.nodes.common.rolecache import RoleCache


def build(node: Node) -> None:
    node.cluster.register(RoleCache())
