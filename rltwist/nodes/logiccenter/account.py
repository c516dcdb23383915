"""account: openid -> userid, creating ids for new players (seed §9).

A new player's userid is ``user_seq << 16 | server_id``: the low 16 bits carry the birth
region, the high bits an atomic counter. The mapping lives in globaldb (collection
``account``), so it survives restarts.

A new player can only be born in a region the cluster has: one with a node of that region
(``map<sid>``, ``guild<sid>``, ``mail<sid>``, ``rolecity<sid>``) in the name table, from the
config or registered at run time. Any other ``server_id`` is :class:`BadServerId` (the
client is told BAD_SERVER_ID) and no account is made. An existing player logs in whatever
``server_id`` its client asks for: its region is in its userid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.cluster.routing import MAX_SID
from rltwist.config import REGION_KINDS, parse_node_name
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.storage import DuplicateKey

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

GLOBALDB = "globaldb"
ACCOUNTS = "account"
USER_SEQ = "user_seq"


class BadServerId(ValueError):
    """A new player asked for a region the cluster does not have."""


def make_userid(seq: int, server_id: int) -> int:
    return seq << 16 | server_id


class Account(Service):
    name = "account"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.db = node.database(GLOBALDB)
        self.locks = KeyedLock()

    def check_new_player_region(self, server_id: object) -> None:
        """Raise :class:`BadServerId` unless a new player may be born in *server_id*: the
        one place that decides which regions take new players."""
        if isinstance(server_id, bool) or not isinstance(server_id, int) \
                or not 0 < server_id <= MAX_SID:
            raise BadServerId(f"server_id must be 1..{MAX_SID}, got {server_id!r}")
        if server_id not in self.regions():
            raise BadServerId(f"region {server_id} does not exist (no map, guild, mail or "
                              f"rolecity node of sid {server_id} in the name table)")

    def regions(self) -> set[int]:
        """The regions the cluster has: the sids of the region nodes this node knows."""
        found = set()
        for name in self.node.cluster.addresses:
            try:
                kind, number = parse_node_name(name)
            except ValueError:
                continue
            if kind in REGION_KINDS and number is not None:
                found.add(number)
        return found

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
                self.check_new_player_region(server_id)
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
            log.debug("account: new player {userid} for openid {openid} in region {sid}",
                     userid=userid, openid=openid, sid=server_id)
            return {"userid": userid, "created": True}
