"""The guild entity's LRU actions: wiring from ``guildhandler<i>`` messages to the guild
system (``rltwist.game.guildsystem``, reached through the import registry so
``POST /hotfix`` changes the rules in running guild nodes).

Each action reads the game tables once (one consistent snapshot) and hands the entity to
the system. Membership actions are ``save=True``: their answer means the guild (members and
outbox) is saved. Chat messages are not (saved with the next periodic save).

Errors come back to callers as RemoteError kinds: ``EntityNotFound`` (no such guild),
``NotAMember`` (chat history of a non-member), ``SaveFailed``.
"""

from __future__ import annotations

from typing import Any

from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.lru import Actor, action
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.protocols import pb

GUILDS = "guild"

guilds = import_system("rltwist.game.guildsystem", service="guildrouter")


def _tables() -> Any:
    return sharedata().snapshot


class GuildActor(Actor):
    """A guild (see ``rltwist.game.guildsystem`` for its data)."""

    kind = "guild"
    collection = GUILDS
    auto_create = False

    @action(creates=True, save=True)
    def create(self, entity: Entity, owner: int, name: str, owner_name: str = "",
               open: bool = True, region: int = 0) -> dict[str, Any]:
        return guilds.create(entity, owner, owner_name, name, open, region)

    @action(save=True)
    def join(self, entity: Entity, userid: int, name: str = "") -> dict[str, Any]:
        return guilds.join(entity, userid, name, _tables())

    @action(save=True)
    def apply(self, entity: Entity, userid: int, name: str = "") -> dict[str, Any]:
        return guilds.apply(entity, userid, name, _tables())

    @action(save=True)
    def approve(self, entity: Entity, by: int, userid: int) -> dict[str, Any]:
        return guilds.approve(entity, by, userid, _tables())

    @action(save=True)
    def reject(self, entity: Entity, by: int, userid: int) -> dict[str, Any]:
        return guilds.reject(entity, by, userid, _tables())

    @action(save=True)
    def leave(self, entity: Entity, userid: int) -> dict[str, Any]:
        return guilds.leave(entity, userid, _tables())

    @action(save=True)
    def kick(self, entity: Entity, by: int, userid: int) -> dict[str, Any]:
        return guilds.kick(entity, by, userid, _tables())

    @action(save=True)
    def set_role(self, entity: Entity, by: int, userid: int, role: int) -> dict[str, Any]:
        return guilds.set_role(entity, by, userid, role, _tables())

    @action(save=True)
    def transfer_leader(self, entity: Entity, by: int, userid: int) -> dict[str, Any]:
        return guilds.transfer_leader(entity, by, userid, _tables())

    @action(save=True)
    def disband(self, entity: Entity, by: int) -> dict[str, Any]:
        return guilds.disband(entity, by, _tables())

    @action
    def outbox(self, entity: Entity) -> list[dict[str, Any]]:
        return guilds.outbox(entity)

    @action(save=True)
    def settle(self, entity: Entity, userid: int, tid: str, result: str) -> dict[str, Any]:
        return guilds.settle(entity, userid, tid, result)

    @action
    def view(self, entity: Entity, userid: int, name: str = "") -> dict[str, Any]:
        if not guilds.exists(entity):
            return {"code": int(pb.ErrorCode.GUILD_NOT_FOUND)}
        guilds.touch(entity, userid, name)
        return guilds.view(entity, userid, _tables())

    @action
    def touch(self, entity: Entity, userid: int, name: str) -> bool:
        return guilds.touch(entity, userid, name)

    @action
    def summary(self, entity: Entity) -> dict[str, Any] | None:
        if not guilds.exists(entity):
            return None
        return guilds.summary(entity, _tables())

    @action
    def info(self, entity: Entity) -> dict[str, Any]:
        return guilds.info(entity)

    @action
    def chat_add(self, entity: Entity, userid: int, message: dict[str, Any]) -> dict[str, Any]:
        return guilds.chat_add(entity, userid, message)

    @action
    def chat_history(self, entity: Entity, userid: int) -> list[dict[str, Any]]:
        return guilds.chat_history(entity, userid)
