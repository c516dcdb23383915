"""rolecache: which role node each online player of this region is on (seed §10).

The role gateway tells the player's rolecity and mail nodes (and map) at Auth and at
logout; anything that wants to reach an online player asks here, or sends through here.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler

log = Logger()


class RoleCache(Service):
    name = "rolecache"

    def __init__(self) -> None:
        self.where: dict[int, str] = {}

    @handler
    def set(self, userid: int, node: str) -> None:
        self.where[userid] = node

    @handler
    def clear(self, userid: int, node: str) -> None:
        """Forget *userid* if it is still recorded on *node* (a newer login wins)."""
        if self.where.get(userid) == node:
            del self.where[userid]

    @handler
    def get(self, userid: int) -> str | None:
        return self.where.get(userid)

    @handler
    def count(self) -> int:
        return len(self.where)

    @handler
    def forward(self, userid: int, service: str, method: str, args: list[Any]) -> bool:
        """Send *method* to the player's online instance; False if the player is offline."""
        node = self.where.get(userid)
        if node is None:
            return False
        try:
            self.cluster.send(node, service, method, userid, *args)
        except ClusterError as e:
            log.warn("rolecache: cannot forward to {userid} on {node}: {e}", userid=userid,
                     node=node, e=e)
            return False
        return True

    @handler
    def node_down(self, node: str) -> int:
        """Drop every player recorded on *node* (master saw it crash)."""
        gone = [u for u, n in self.where.items() if n == node]
        for u in gone:
            del self.where[u]
        return len(gone)
