"""The map node's services (so far: rolecache)."""

from __future__ import annotations

from rltwist.nodes.common.node import Node
from rltwist.nodes.common.rolecache import install_rolecache


def build(node: Node) -> None:
    install_rolecache(node)
