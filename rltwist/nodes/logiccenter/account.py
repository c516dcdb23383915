"""account: openid -> userid, creating ids for new players (seed §9).

A new player's userid is ``user_seq << 16 | server_id``: the low 16 bits carry the birth
region, the high bits an atomic counter. The mapping lives in globaldb (collection
``account``), so it survives restarts.

A new player can only be born in a region that is open to new players and has a node in
the name table (``rltwist.nodes.logiccenter.regions``: the ``regions`` service decides).
Any other ``server_id`` is :class:`BadServerId` (the client is told BAD_SERVER_ID) and no
account is made. An existing player logs in whatever ``server_id`` its client asks for, a
closed region's too: its region is in its userid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.net import loggable
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.logiccenter.regions import ACCOUNTS, GLOBALDB, BadServerId, Regions, region_sids
from rltwist.storage import DuplicateKey

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

USER_SEQ = "user_seq"
__all__ = ["ACCOUNTS", "GLOBALDB", "Account", "BadServerId", "make_userid"]


def make_userid(seq: int, server_id: int) -> int:
    return seq << 16 | server_id


class Account(Service):
    name = "account"

    def __init__(self, node: Node, regions: Regions | None = None) -> None:
        self.node = node
        self.db = node.database(GLOBALDB)
        self.locks = KeyedLock()
        #: decides which regions take new players (open, with nodes); the node's
        #: ``regions`` service (a private one for tests that build an Account alone)
        self.region_state = regions if regions is not None else Regions(node)

    def regions(self) -> set[int]:
        """The regions the cluster has: the sids of the region nodes this node knows."""
        return region_sids(self.node.cluster.addresses)

    @handler
    async def get_or_create(self, openid: str, server_id: int) -> dict[str, object]:
        """The userid of *openid*; a new one in region *server_id* if it has none yet.

        ``{"userid", "created"}``; for a new player asking for a region that does not take
        new players, ``{"userid": None, "created": False, "refused": "BadServerId",
        "why"}``."""
        if not isinstance(openid, str) or not openid or len(openid) > 128:
            raise ValueError("openid must be a non-empty string of at most 128 characters")
        async with self.locks(openid):
            doc = await self.db.get(ACCOUNTS, openid)
            if doc is not None:
                return {"userid": doc["userid"], "created": False}
            try:
                await self.region_state.check_new_player(server_id)
            except BadServerId as e:
                # a client's mistake, answered rather than raised (no traceback per try)
                return {"userid": None, "created": False, "refused": "BadServerId",
                        "why": str(e)}
            seq = await self.db.incr(USER_SEQ)
            userid = make_userid(seq, server_id)
            try:
                await self.db.insert(ACCOUNTS, openid, {"userid": userid,
                                                         "server_id": server_id})
            except DuplicateKey:
                # another logiccenter process raced us (should not happen with one): keep theirs
                doc = await self.db.get(ACCOUNTS, openid)
                assert doc is not None
                return {"userid": doc["userid"], "created": False}
            await self.region_state.born(server_id)
            log.debug("account: new player {userid} for openid {openid} in region {sid}",
                     userid=userid, openid=loggable(openid), sid=server_id)
            return {"userid": userid, "created": True}
