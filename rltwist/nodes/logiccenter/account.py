"""account: openid -> userid, creating ids for new players (seed §9).

A new player's userid is ``user_seq << 16 | server_id``: the low 16 bits carry the birth
region, the high bits an atomic counter. The mapping lives in globaldb (collection
``account``), so it survives restarts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.storage import DuplicateKey

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

GLOBALDB = "globaldb"
ACCOUNTS = "account"
USER_SEQ = "user_seq"


class BadServerId(ValueError):
    """server_id outside 1..65535."""


def make_userid(seq: int, server_id: int) -> int:
    return seq << 16 | server_id


class Account(Service):
    name = "account"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.db = node.database(GLOBALDB)
        self.locks = KeyedLock()

    @handler
    async def get_or_create(self, openid: str, server_id: int) -> dict[str, object]:
        """The userid of *openid*; a new one in region *server_id* if it has none yet."""
        if not isinstance(openid, str) or not openid or len(openid) > 128:
            raise ValueError("openid must be a non-empty string of at most 128 characters")
        async with self.locks(openid):
            doc = await self.db.get(ACCOUNTS, openid)
            if doc is not None:
                return {"userid": doc["userid"], "created": False}
            if not isinstance(server_id, int) or not 0 < server_id <= 0xFFFF:
                raise BadServerId(f"server_id must be 1..65535, got {server_id!r}")
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
            log.debug("account: new player {userid} for openid {openid} in region {sid}",
                     userid=userid, openid=openid, sid=server_id)
            return {"userid": userid, "created": True}
