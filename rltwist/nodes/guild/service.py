"""The guild node's services (seed §5): guilds in LRU ``guildhandler<i>`` workers behind
``guildrouter``, plus dbproxy.

    guildrouter.create(owner_userid, name)        -> guildid (new id, unique name)
    guildrouter.call(guildid, "info")             -> {"guildid", "name", "owner", "members"}
    guildrouter.call(guildid, "join", userid)     -> member count
    guildrouter.call(guildid, "leave", userid)    -> member count

A guild id is ``guild_seq << 16 | sid`` (like a userid), so the guild node of any guild is
``cluster.guild_node(guildid)``. Guilds live in collection ``guild`` of ``region<sid>``; their
names are unique in the region (collection ``guild_names``). Errors come back as
RemoteError kinds: ``GuildExists``, ``GuildFull``, ``GuildNameTaken``, ``NotAMember``,
``OwnerCannotLeave``, ``EntityNotFound`` (no such guild).

The business methods live in ``rltwist.nodes.guild.actor`` (game code a fix list may name);
this module only wires them up.
"""

from __future__ import annotations

from rltwist.cluster import handler
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import LRUGroup, LRURouter, install_lru
from rltwist.nodes.common.node import Node
from rltwist.nodes.guild.actor import (
    GUILDS,
    MAX_MEMBERS,
    GuildActor,
    GuildExists,
    GuildFull,
    NotAMember,
    OwnerCannotLeave,
)
from rltwist.nodes.rolecity.service import NameIndex

__all__ = ["GUILDS", "GUILD_NAMES", "GUILD_SEQ", "MAX_MEMBERS", "MAX_NAME", "GuildActor",
           "GuildExists", "GuildFull", "GuildNameTaken", "GuildRouter", "NotAMember",
           "OwnerCannotLeave", "build"]

GUILD_NAMES = "guild_names"
GUILD_SEQ = "guild_seq"
MAX_NAME = 32


class GuildNameTaken(Exception):
    """Another guild of the region has this name."""


class GuildRouter(LRURouter):
    """``guildrouter``: routes to the guildhandlers and creates guilds with fresh ids."""

    def __init__(self, group: LRUGroup, sid: int) -> None:
        super().__init__(group)
        self.sid = sid
        self.names = NameIndex(group.backend, GUILD_NAMES)

    @handler
    async def create(self, owner: int, name: str) -> int:
        """Create a guild owned by *owner*; return its id."""
        if not isinstance(name, str) or not 0 < len(name.strip()) <= MAX_NAME:
            raise ValueError(f"guild name must have 1-{MAX_NAME} characters")
        if isinstance(owner, bool) or not isinstance(owner, int):
            raise ValueError("owner must be a userid")
        name = name.strip()
        key = name.casefold()
        seq = await self.group.backend.incr(GUILD_SEQ)
        guildid = seq << 16 | self.sid
        if not await self.names.reserve(key, guildid, name):
            raise GuildNameTaken(f"guild name {name!r} is taken")
        try:
            await self.group.call(guildid, "create", owner, name)
        except BaseException:
            await self.names.release(key, guildid)
            raise
        return guildid


def build(node: Node) -> None:
    sid = node.me.number or 0
    install_dbproxy(node)
    install_lru(node, GuildActor(), router="guildrouter", worker="guildhandler",
                db=region_db(sid), router_cls=lambda group: GuildRouter(group, sid))
