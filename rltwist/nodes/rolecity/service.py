"""The rolecity node's services (seed §5): the offline-reachable part of the region's
players in LRU agents behind ``rolerouter``, the region's name index, dbproxy and rolecache.

    rolerouter.call(userid, "get")                          -> {"userid", "name", "resources"}
    rolerouter.call(userid, "add_resources", {"gold": 100}) -> {"code", "resources"}  (GM)
    rolerouter.call(userid, "set_name", name, generation)   -> {"code", "name"}
    rolerouter.call(userid, "transfers")                    -> the ledger (GM, tests)
    rolerouter.call(userid, "set_guild", guildid, only_if, tid, join) -> {"result", ...}
                                                  (guild outbox entries; rltwist.features.guild)
    rolerouter.grant(userid, {"gold": 100})     -> {"code", "pending", "transfer_id", "online"}
    rolerouter.take_transfers(userid, generation)           -> [{"id", "kind", "items"}]
    rolerouter.confirm_transfers(userid, generation, ids)   -> entries deleted
    rolerouter.reserve_name(name_key, userid, name, generation) -> True, or False if taken
    rolerouter.release_name(name_key, userid, generation)   -> True if it was userid's
    rolerouter.reconcile_names(userid, generation, name)    -> {"name", "key", "released",
                                                                "reserved", "conflict"}
    rolerouter.lookup_name(name_key)                        -> userid or None

A player's rolecity entity lives in collection ``rolecity`` of ``region<sid>``; names in
collection ``names`` of the same database, keyed by ``RoleSystem.name_key(name)``.

GM grants are transfers (:mod:`rltwist.nodes.common.transfer`): ``grant`` adds an entry to
the player's ledger (saved before the answer) and tells the player's role node; that node
takes them (``take_transfers``), applies and saves them, then confirms
(``confirm_transfers``). Everything a role node does on an online player's behalf here —
take, confirm, name reservations, ``set_name`` — carries the instance's generation and is
refused (``StaleGeneration``) once a newer instance claimed the player
(:class:`~rltwist.nodes.common.playerfence.PlayerFence`). Calls without a generation (role
nodes of the previous version) are not fenced.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError, birth_region, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import RESOURCES
from rltwist.nodes.common import transfer
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.lru import Actor, LRUGroup, LRURouter, action, install_lru
from rltwist.nodes.common.node import Node
from rltwist.nodes.common.playerfence import PlayerFence
from rltwist.nodes.common.rolecache import RoleCache, install_rolecache
from rltwist.nodes.role.agent import ROLEDB
from rltwist.storage import Backend, DuplicateKey, Key

log = Logger()

ROLECITY = "rolecity"
NAMES = "names"
LEDGER = "rolecity"
"""The name of rolecity's ledger: transfer ids it makes start with ``rolecity-``."""
LEGACY_GRANTS = "grants"
"""Component where the previous version kept pending grants (migrated to the ledger)."""

role = import_system("rltwist.game.rolesystem", service="agent")
guilds = import_system("rltwist.game.guildsystem", service="rolerouter")


class NameIndex:
    """Unique keys over one collection: ``reserve`` inserts ``key -> owner`` (the storage
    insert is the arbiter, so two processes or nodes racing for a key get one winner)."""

    def __init__(self, backend: Backend, collection: str = NAMES) -> None:
        self.backend = backend
        self.collection = collection
        self._indexed = False

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

    async def owned_by(self, owner: Key) -> list[str]:
        """Every key *owner* holds (sorted); uses an index on ``owner``."""
        if not self._indexed:
            await self.backend.ensure_index(self.collection, "owner")
            self._indexed = True
        return sorted(str(key) for key, _ in await self.backend.find(
            self.collection, {"owner": owner}))


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key or len(key) > 256:
        raise ValueError(f"name key must be a non-empty string of at most 256 chars: {key!r}")


def _valid_grant(amounts: Any) -> bool:
    return isinstance(amounts, dict) and bool(amounts) and all(
        res in RESOURCES and type(n) is int and n > 0 for res, n in amounts.items())


def _migrate_legacy_grants(entity: Entity) -> None:
    """Pending grants stored by the previous version become one ledger entry."""
    old = entity.components.get(LEGACY_GRANTS)
    if old is None:
        return
    if old:
        transfer.add(entity, LEDGER, "grant", dict(old))
    del entity.components[LEGACY_GRANTS]
    entity.mark_dirty()


class RoleCityActor(Actor):
    """A player as rolecity knows them: name, resources granted while offline, and the
    ledger of transfers waiting for the player's online instance."""

    kind = "rolecity"
    collection = ROLECITY

    def __init__(self, fence: PlayerFence | None = None) -> None:
        self.fence = fence

    async def _fence(self, userid: Key, generation: Any, what: str) -> None:
        if self.fence is not None and isinstance(userid, int):
            await self.fence.check(userid, generation, what)

    def new_entity(self, id: Key) -> Entity:
        sid = birth_region(id) if isinstance(id, int) else 0
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
    async def set_name(self, entity: Entity, name: str,
                       generation: int | None = None) -> dict[str, Any]:
        """Record the player's name (after the role node saved the player with it);
        fenced by the instance's *generation*."""
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        await self._fence(entity.id, generation, "set_name")
        name = role.normalize_name(name)
        if entity.get("name") == name:
            return {"code": int(ErrCode.NAME_UNCHANGED), "name": name}
        entity["name"] = name
        return {"code": int(ErrCode.OK), "name": name}

    @action(creates=True, save=True)
    def grant(self, entity: Entity, amounts: dict[str, int]) -> dict[str, Any]:
        """Record a GM grant as a transfer in the player's ledger (saved before the reply);
        the player's online instance takes it now or at its next Auth."""
        _migrate_legacy_grants(entity)
        if not _valid_grant(amounts):
            return {"code": int(ErrCode.RES_BAD_AMOUNT), "pending": self._pending(entity),
                    "transfer_id": None}
        tid = transfer.add(entity, LEDGER, "grant", amounts)
        return {"code": int(ErrCode.OK), "pending": self._pending(entity), "transfer_id": tid}

    @staticmethod
    def _pending(entity: Entity) -> dict[str, int]:
        total: dict[str, int] = {}
        for entry in transfer.entries(entity).values():
            if entry["kind"] == "grant":
                for res, n in entry["items"].items():
                    total[res] = total.get(res, 0) + n
        return total

    @action(save=True)
    def set_guild(self, entity: Entity, guildid: int, only_if: int, tid: str,
                  join: bool) -> dict[str, Any]:
        """A guild's outbox entry for this player (the guild feature's ``guildledger``):
        the player's guild as the ledger knows it changes and a ``guild`` transfer is
        recorded for the online instance (saved before the answer). Rules:
        ``GuildSystem.rolecity_set``."""
        _migrate_legacy_grants(entity)
        result: dict[str, Any] = guilds.rolecity_set(entity, guildid, only_if, tid, join)
        return result

    @action
    def transfers(self, entity: Entity) -> list[dict[str, Any]]:
        """The ledger, oldest first (GM, tests)."""
        return [{"id": tid, **entry} for tid, entry in sorted(
            transfer.entries(entity).items(), key=lambda kv: kv[1].get("created_ms", 0))]

    @action(save=True)
    async def take_transfers(self, entity: Entity, generation: int) -> list[dict[str, Any]]:
        """Step 1 of the transfers to the online instance *generation* (fenced): mark and
        hand them; the marks are saved before the answer. With nothing waiting (every
        Auth asks) the answer is [] without the fence's read: nothing is marked or handed."""
        _migrate_legacy_grants(entity)
        if not transfer.entries(entity):
            return []
        await self._fence(entity.id, generation, "take_transfers")
        return transfer.take(entity, entity.id, generation)

    @action(save=True)
    async def confirm_transfers(self, entity: Entity, generation: int,
                                ids: list[str]) -> int:
        """Step 3: the instance *generation* applied and saved *ids*; delete them (fenced,
        saved before the answer)."""
        ids = transfer.check_ids(ids)
        await self._fence(entity.id, generation, "confirm_transfers")
        if transfer.confirmable(entity, entity.id, generation, ids):
            crashpoint("before_grant_clear")
        return transfer.confirm(entity, entity.id, generation, ids)


class RoleRouter(LRURouter):
    """``rolerouter``: routes to the agents, owns the region's name index, and fences what
    role nodes write on an online player's behalf."""

    def __init__(self, group: LRUGroup, fence: PlayerFence | None = None) -> None:
        super().__init__(group)
        self.names = NameIndex(group.backend)
        self.fence = fence
        # fence check + index write of one player run one at a time: a stale write whose
        # check passed lands before a newer owner's reconcile looks at the index
        self.name_locks = KeyedLock()

    async def _fence(self, userid: int, generation: Any, what: str) -> None:
        if self.fence is not None:
            await self.fence.check(userid, generation, what)

    # -- transfers ------------------------------------------------------------------------

    @handler
    async def grant(self, userid: int, amounts: dict[str, int]) -> dict[str, Any]:
        """GM: give a player resources, online or offline. The grant is durable in the
        region database before the reply; an online player's role node is told to take it
        at once, an offline player gets it at the next login."""
        result = await self.call(userid, "grant", amounts)
        cache = self.cluster.services.get("rolecache")
        online = getattr(cache, "where", {}).get(userid)
        if result.get("code") == int(ErrCode.OK) and online:
            try:
                self.cluster.send(online, "gateway", "apply_grants", userid)
            except ClusterError as e:  # it stays in the ledger: taken at the next Auth
                log.warn("grant to {userid}: cannot tell {node}: {e}", userid=userid,
                         node=online, e=e)
        return {**result, "online": online}

    @handler
    async def take_transfers(self, userid: int, generation: int) -> list[dict[str, Any]]:
        """Step 1 for the player's online instance *generation*: the transfers to apply,
        ``[{"id", "kind", "items"}]``, marked as taken and saved. StaleGeneration if a
        newer instance owns the player."""
        handed: list[dict[str, Any]] = await self.group.call(userid, "take_transfers",
                                                             generation)
        if handed:
            crashpoint("after_ledger_take")  # marks saved, the answer not sent
        return handed

    @handler
    async def confirm_transfers(self, userid: int, generation: int, ids: list[str]) -> int:
        """Step 3: the instance *generation* applied and saved *ids*; they are deleted (and
        saved) before the answer. Returns how many were deleted (0 for a repeat)."""
        n: int = await self.group.call(userid, "confirm_transfers", generation, ids)
        return n

    # -- the name index -------------------------------------------------------------------

    @handler
    async def reserve_name(self, name_key: str, userid: int, name: str = "",
                           generation: int | None = None) -> bool:
        """Reserve *name_key* for *userid* (fenced by *generation*); False if another
        player holds it."""
        async with self.name_locks(userid):
            await self._fence(userid, generation, "reserve_name")
            return await self.names.reserve(name_key, userid, name)

    @handler
    async def release_name(self, name_key: str, userid: int,
                           generation: int | None = None) -> bool:
        """Release *name_key* if *userid* holds it (the old name after a rename; fenced)."""
        async with self.name_locks(userid):
            await self._fence(userid, generation, "release_name")
            return await self.names.release(name_key, userid)

    @handler
    async def lookup_name(self, name_key: str) -> int | None:
        return await self.names.lookup(name_key)

    @handler
    async def reconcile_names(self, userid: int, generation: int,
                              name: str) -> dict[str, Any]:
        """At Auth: make the name index agree with the player's saved *name* (the player's
        document is the truth): release every key *userid* holds but ``name_key(name)``,
        reserve that one if needed, and record the name on the rolecity entity.

        ``conflict`` is the other owner when someone else holds the key (a bug or a
        hand-edited database: logged as critical, left for an operator)."""
        if not isinstance(name, str):
            raise ValueError("name must be a string")
        name = role.normalize_name(name)
        want = role.name_key(name) if name else None
        released: list[str] = []
        reserved = False
        conflict = None
        async with self.name_locks(userid):
            await self._fence(userid, generation, "reconcile_names")
            owned = await self.names.owned_by(userid)
            for key in owned:
                if key != want and await self.names.release(key, userid):
                    released.append(key)
            if want is not None and want not in owned:
                if await self.names.reserve(want, userid, name):
                    reserved = True
                else:
                    conflict = await self.names.lookup(want)
                    log.critical("name {name!r} of player {userid} is held by {other} in the "
                                 "name index: two players share a name; an operator must "
                                 "rename one", name=name, userid=userid, other=conflict)
        if released or reserved:
            log.info("names of {userid} reconciled with {name!r}: released {released}, "
                     "reserved {reserved}", userid=userid, name=name, released=released,
                     reserved=reserved)
        await self.group.call(userid, "set_name", name, generation)
        return {"name": name, "key": want, "released": released, "reserved": reserved,
                "conflict": conflict}


def build(node: Node) -> None:
    install_dbproxy(node)
    fence = PlayerFence(node.database(ROLEDB), registry=node.registry)
    install_rolecache(node, RoleCache(on_generation=fence.observe))
    install_lru(node, RoleCityActor(fence), router="rolerouter", worker="agent",
                db=region_db(node.me.number or 0),
                router_cls=lambda group: RoleRouter(group, fence))
