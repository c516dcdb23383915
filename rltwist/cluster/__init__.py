"""rltwist's cluster layer: the one way any code reaches any service on any node.

    d = cluster.call(cluster.map_node(mapid), "world", "march", userid, target)  # Deferred
    cluster.send(cluster.mail_node(userid), "mailrouter", "deliver", userid, mail)

The same API serves local and remote targets. See :mod:`rltwist.cluster.core`; region
services are found with the routing helpers (:mod:`rltwist.cluster.routing`).
"""

from rltwist.cluster.core import Cluster, ListenError
from rltwist.cluster.errors import (
    BadArguments,
    CallTimeout,
    ClusterError,
    LinkLost,
    MessageTooLarge,
    NodeUnreachable,
    OutboundFull,
    RemoteError,
    UnknownMethod,
    UnknownNode,
    UnknownService,
)
from rltwist.cluster.routing import Routing, birth_region
from rltwist.cluster.service import Service, handler

__all__ = [
    "BadArguments",
    "CallTimeout",
    "Cluster",
    "ClusterError",
    "LinkLost",
    "ListenError",
    "MessageTooLarge",
    "NodeUnreachable",
    "OutboundFull",
    "RemoteError",
    "Routing",
    "Service",
    "UnknownMethod",
    "UnknownNode",
    "UnknownService",
    "birth_region",
    "handler",
]
