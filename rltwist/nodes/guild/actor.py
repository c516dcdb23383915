"""The guild's business logic: ``GuildActor``, run by the ``guildhandler<i>`` LRU workers
behind ``guildrouter`` (wiring in ``rltwist.nodes.guild.service``).

This module is game code: a fix list may name ``rltwist.nodes.guild.actor``, and the running
guild groups take the new methods for their next message (see ``rltwist.nodes.common.lru``).
It therefore holds only the actor and what its methods raise — nothing that wiring code
keeps a reference to — and imports no other game module.

Errors come back to callers as RemoteError kinds: ``GuildExists``, ``GuildFull``,
``NotAMember``, ``OwnerCannotLeave``.
"""

from __future__ import annotations

from typing import Any

from rltwist.ecs.entity import Entity
from rltwist.nodes.common.lru import Actor, action

GUILDS = "guild"
MAX_MEMBERS = 50


class GuildExists(Exception):
    """create on an id that already has a guild."""


class GuildFull(Exception):
    """join on a guild with MAX_MEMBERS members."""


class NotAMember(Exception):
    """leave by a player who is not in the guild."""


class OwnerCannotLeave(Exception):
    """The owner must hand the guild over first."""


def _members(entity: Entity) -> dict[str, Any]:
    # msgpack/BSON keys are strings: members are keyed by str(userid)
    members: dict[str, Any] = entity.component("members")
    return members


class GuildActor(Actor):
    """A guild: attributes ``name`` and ``owner``, component ``members`` (str(userid) ->
    {"role": ...})."""

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
