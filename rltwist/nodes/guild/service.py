"""The guild node's services (seed §5): guilds in LRU ``guildhandler<i>`` workers behind
``guildrouter``, plus dbproxy.

    guildrouter.create(owner_userid, name)        -> guildid (new id, unique name)
    guildrouter.call(guildid, "info")             -> {"guildid", "name", "owner", "members"}
    guildrouter.call(guildid, "join", userid)     -> member count
    guildrouter.call(guildid, "leave", userid)    -> member count

A guild id is ``guild_seq << 16 | sid`` (like a userid), so the guild node of any guild is
``guild<guildid & 0xFFFF>``. Guilds live in collection ``guild`` of ``region<sid>``; their
names are unique in the region (collection ``guild_names``). Errors come back as
RemoteError kinds: ``GuildExists``, ``GuildFull``, ``GuildNameTaken``, ``NotAMember``,
``OwnerCannotLeave``, ``EntityNotFound`` (no such guild).
"""

from __future__ import annotations

from typing import Any

from rltwist.cluster import handler
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import Actor, LRUGroup, LRURouter, action, install_lru
from rltwist.nodes.common.node import Node
from rltwist.nodes.rolecity.service import NameIndex

GUILDS = "guild"
GUILD_NAMES = "guild_names"
GUILD_SEQ = "guild_seq"
MAX_MEMBERS = 50
MAX_NAME = 32


class GuildExists(Exception):
    """create on an id that already has a guild."""


class GuildFull(Exception):
    """join on a guild with MAX_MEMBERS members."""


class GuildNameTaken(Exception):
    """Another guild of the region has this name."""


class NotAMember(Exception):
    """leave by a player who is not in the guild."""


class OwnerCannotLeave(Exception):
    """The owner must hand the guild over first."""


def _members(entity: Entity) -> dict[str, Any]:
    # msgpack/BSON keys are strings: members are keyed by str(userid)
    members: dict[str, Any] = entity.component("members")
    return members


class GuildActor(Actor):
    kind = "guild"
    collection = GUILDS
    auto_create = False

    @action(creates=True, save=True)
    def create(self, entity: Entity, owner: int, name: str) -> dict[str, Any]:
        if entity.get("name"):
            raise GuildExists(f"guild {entity.id} exists")
        entity["name"] = name
        entity["owner"] = owner
        _members(entity)[str(owner)] = {"role": "owner"}
        entity.mark_dirty()
        return self.info(entity)

    @action(save=True)
    def join(self, entity: Entity, userid: int) -> int:
        members = _members(entity)
        if str(userid) not in members:
            if len(members) >= MAX_MEMBERS:
                raise GuildFull(f"guild {entity.id} has {len(members)} members")
            members[str(userid)] = {"role": "member"}
            entity.mark_dirty()
        return len(members)

    @action(save=True)
    def leave(self, entity: Entity, userid: int) -> int:
        members = _members(entity)
        if str(userid) not in members:
            raise NotAMember(f"{userid} is not in guild {entity.id}")
        if userid == entity.get("owner"):
            raise OwnerCannotLeave(f"{userid} owns guild {entity.id}")
        del members[str(userid)]
        entity.mark_dirty()
        return len(members)

    @action
    def info(self, entity: Entity) -> dict[str, Any]:
        members = entity.components.get("members", {})
        return {"guildid": entity.id, "name": entity.get("name"), "owner": entity.get("owner"),
                "members": sorted(int(u) for u in members)}


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
