"""rltwist's cluster layer: the one way any code reaches any service on any node.

    d = cluster.call("map1", "world", "march", userid, target)   # -> Deferred
    cluster.send("mail2", "mailrouter", "deliver", userid, mail)  # fire and forget

The same API serves local and remote targets. See :mod:`rltwist.cluster.core`.
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
    "Service",
    "UnknownMethod",
    "UnknownNode",
    "UnknownService",
    "handler",
]
