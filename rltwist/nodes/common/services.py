"""Services every node kind gets on top of the cluster layer, diag and slaveflow.

``install_common`` runs for every node before its kind adds its own services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node


def install_common(node: Node) -> None:
    """Add the common services (hotfix, sharedatad, dbproxy as they land) to *node*."""
