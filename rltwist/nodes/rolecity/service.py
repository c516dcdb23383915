"""The rolecity node's services (seed §5): the offline-reachable part of the region's
players in LRU agents behind ``rolerouter``, the region's name index, dbproxy and rolecache.

    rolerouter.call(userid, "get")                          -> {"userid", "name", "resources"}
    rolerouter.call(userid, "add_resources", {"gold": 100}) -> {"code", "resources"}  (GM)
    rolerouter.call(userid, "set_name", name)               -> {"code", "name"}
    rolerouter.reserve_name(name_key, userid, name)         -> True, or False if taken
    rolerouter.release_name(name_key, userid)               -> True if it was userid's
    rolerouter.lookup_name(name_key)                        -> userid or None
    rolerouter.grant(userid, {"gold": 100})                 -> {"code", "pending", "online"} (GM)
    rolerouter.call(userid, "take_grants")                  -> pending grants, cleared (role node)

A player's rolecity entity lives in collection ``rolecity`` of ``region<sid>``; names in
collection ``names`` of the same database, keyed by ``RoleSystem.name_key(name)``.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from rltwist.cluster import handler
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import RESOURCES
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import Actor, LRUGroup, LRURouter, action, install_lru
from rltwist.nodes.common.node import Node
from rltwist.nodes.common.rolecache import RoleCache
from rltwist.storage import Backend, DuplicateKey, Key

log = Logger()

ROLECITY = "rolecity"
NAMES = "names"

role = import_system("rltwist.game.rolesystem", service="agent")


class NameIndex:
    """Unique keys over one collection: ``reserve`` inserts ``key -> owner`` (the storage
    insert is the arbiter, so two processes or nodes racing for a key get one winner)."""

    def __init__(self, backend: Backend, collection: str = NAMES) -> None:
        self.backend = backend
        self.collection = collection

    async def reserve(self, key: str, owner: Key, name: str = "") -> bool:
        """Take *key* for *owner*: True if it is now (or was already) *owner*'s."""
        _check_key(key)
        doc = {"owner": owner, "name": name or key, "time_ms": int(time.time() * 1000)}
        try:
            await self.backend.insert(self.collection, key, doc)
            return True
        except DuplicateKey:
            held = await self.backend.get(self.collection, key)
            return held is not None and held.get("owner") == owner

    async def release(self, key: str, owner: Key) -> bool:
        """Free *key* if *owner* holds it; False if it is free or someone else's."""
        _check_key(key)
        held = await self.backend.get(self.collection, key)
        if held is None or held.get("owner") != owner:
            return False
        return await self.backend.delete(self.collection, key)

    async def lookup(self, key: str) -> Any:
        """The owner of *key*, or None."""
        _check_key(key)
        held = await self.backend.get(self.collection, key)
        return None if held is None else held.get("owner")


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > 256:
        raise ValueError(f"name key must be a non-empty string of at most 256 chars: {key!r}")


class RoleCityActor(Actor):
    """A player as rolecity knows them: name and resources granted while offline."""

    kind = "rolecity"
    collection = ROLECITY

    def new_entity(self, id: Key) -> Entity:
        sid = id & 0xFFFF if isinstance(id, int) else 0
        return Entity(id, attrs={"userid": id, "name": "", "server_id": sid})

    def _view(self, entity: Entity) -> dict[str, Any]:
        return {"userid": entity.id, "name": entity.get("name", ""),
                "resources": role.resources(entity)}

    @action
    def get(self, entity: Entity) -> dict[str, Any]:
        return self._view(entity)

    @action(save=True)
    def add_resources(self, entity: Entity, amounts: dict[str, int]) -> dict[str, Any]:
        """Grant resources (GM, offline players); all or nothing; saved before the reply."""
        if not isinstance(amounts, dict):
            return {"code": int(ErrCode.RES_BAD_AMOUNT), "resources": role.resources(entity)}
        code = role.add_resources(entity, amounts)
        return {"code": int(code), "resources": role.resources(entity)}

    @action(save=True)
    def set_name(self, entity: Entity, name: str) -> dict[str, Any]:
        """Record the player's new name (after ``reserve_name`` succeeded for it)."""
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        name = role.normalize_name(name)
        if entity.get("name") == name:
            return {"code": int(ErrCode.NAME_UNCHANGED), "name": name}
        entity["name"] = name
        return {"code": int(ErrCode.OK), "name": name}


    @action(creates=True, save=True)
    def grant(self, entity: Entity, amounts: dict[str, int]) -> dict[str, Any]:
        """Record a GM grant for the player (saved before the reply); the role node that
        holds the player online takes it (``take_grants``), now or at the next Auth."""
        if not isinstance(amounts, dict) or not amounts or any(
                res not in RESOURCES or not isinstance(n, int) or isinstance(n, bool) or n <= 0
                for res, n in amounts.items()):
            return {"code": int(ErrCode.RES_BAD_AMOUNT), "pending": entity.component("grants")}
        pending = entity.component("grants")
        for res, n in amounts.items():
            pending[res] = pending.get(res, 0) + n
        entity.mark_dirty()
        return {"code": int(ErrCode.OK), "pending": dict(pending)}

    @action(save=True)
    def take_grants(self, entity: Entity) -> dict[str, int]:
        """Hand the pending grants to the player's online instance, and forget them."""
        pending = dict(entity.component("grants"))
        if pending:
            entity.set_component("grants", {})
        return pending


class RoleRouter(LRURouter):
    """``rolerouter``: routes to the agents, and owns the region's name index."""

    @handler
    async def grant(self, userid: int, amounts: dict[str, int]) -> dict[str, Any]:
        """GM: give a player resources, online or offline. The grant is durable in the
        region database before the reply; an online player's role node is told to take it
        at once, an offline player gets it at the next login."""
        result = await self.call(userid, "grant", amounts)
        cache = self.cluster.services.get("rolecache")
        online = getattr(cache, "where", {}).get(userid)
        if result.get("code") == int(ErrCode.OK) and online:
            self.cluster.send(online, "gateway", "apply_grants", userid)
        return {**result, "online": online}

    def __init__(self, group: LRUGroup) -> None:
        super().__init__(group)
        self.names = NameIndex(group.backend)

    @handler
    async def reserve_name(self, name_key: str, userid: int, name: str = "") -> bool:
        """Reserve *name_key* for *userid*; False if another player holds it."""
        return await self.names.reserve(name_key, userid, name)

    @handler
    async def release_name(self, name_key: str, userid: int) -> bool:
        """Release *name_key* if *userid* holds it (the old name after a rename)."""
        return await self.names.release(name_key, userid)

    @handler
    async def lookup_name(self, name_key: str) -> int | None:
        return await self.names.lookup(name_key)


def build(node: Node) -> None:
    install_dbproxy(node)
    node.cluster.register(RoleCache())
    install_lru(node, RoleCityActor(), router="rolerouter", worker="agent",
                db=region_db(node.me.number or 0), router_cls=RoleRouter)
