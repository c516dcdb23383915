"""The guild node's services (seed §5): guilds in LRU ``guildhandler<i>`` workers behind
``guildrouter``, guild chat (``guildchat``), plus dbproxy.

    guildrouter.create_guild(owner, owner_name, name, open, create_id)
                                                  -> {"code", "guild_id"}   (idempotent)
    guildrouter.op(guildid, op, userid, name, *args) -> ErrorCode     (membership changes)
    guildrouter.view(guildid, userid)             -> GuildInfo fields (online flags set)
    guildrouter.list(offset, limit)               -> [GuildSummary fields] of this region
    guildrouter.search(name)                      -> [GuildSummary fields] (exact name)
    guildrouter.deliver(guildid)                  -> {userid: "ok"|"conflict"|None}
    guildrouter.create(owner, name) -> guildid;  guildrouter.call(guildid, "info")  (GM, tests)
    guildchat.send(guildid, from_userid, message_dict) -> ErrorCode (OK, CHAT_NOT_IN_GUILD)
    guildchat.history(guildid, userid)            -> [message_dict]  (NotAMember)

A guild id is ``guild_seq << 16 | sid`` (like a userid), so the guild node of any guild is
``cluster.guild_node(guildid)``. Guilds live in collection ``guild`` of ``region<sid>``; their
names are unique in the region (collection ``guild_names``, keyed by
``GuildSystem.name_key``); a create is idempotent by its create id (collection
``guild_creates``). The rules are in ``rltwist.game.guildsystem``.

Membership changes reach the players' ``guildid`` through the guild's outbox (see the
guild system): after the guild action saved the guild, :meth:`GuildRouter.deliver` hands
each entry to ``guildledger.set`` on the player's birth-region rolecity, which records a
``guild`` transfer in the player's ledger (saved) and tells the online instance; then the
entry is settled (saved). Entries that could not be handed are retried every
``RETRY_INTERVAL`` seconds (guilds with ``pending`` set are found in storage, so a restart
loses none).
"""

from __future__ import annotations

import builtins
import uuid
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.game.guildsystem import NotAMember
from rltwist.nodes.common import reach
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import (
    EntityNotFound,
    LRUGroup,
    LRURouter,
    SaveFailed,
    install_lru,
)
from rltwist.nodes.common.node import Node
from rltwist.nodes.common.playerfence import PlayerFence
from rltwist.nodes.guild.actor import GUILDS, GuildActor
from rltwist.nodes.role.agent import ROLEDB
from rltwist.nodes.rolecity.service import NameIndex
from rltwist.protocols import pb
from rltwist.storage import DuplicateKey, StorageError

__all__ = ["GUILDS", "GUILD_CREATES", "GUILD_NAMES", "GUILD_SEQ", "OPS", "GuildChat",
           "GuildNameTaken", "GuildRouter", "build"]

log = Logger()
E = pb.ErrorCode
guilds = import_system("rltwist.game.guildsystem", service="guildrouter")

GUILD_NAMES = "guild_names"
GUILD_SEQ = "guild_seq"
GUILD_CREATES = "guild_creates"
CALL_TIMEOUT = 5.0
RETRY_INTERVAL = 10.0
LIST_MAX = 20
#: membership operations a role node may ask for: op -> the guild action
OPS = {"join": "join", "apply": "apply", "approve": "approve", "reject": "reject",
       "leave": "leave", "kick": "kick", "set_role": "set_role",
       "transfer": "transfer_leader", "disband": "disband"}


class GuildNameTaken(Exception):
    """Another guild of the region has this name."""


class GuildRouter(LRURouter):
    """``guildrouter``: routes to the guildhandlers, creates guilds with fresh ids, runs
    membership changes through the outbox and pushes GuildNotify."""

    def __init__(self, group: LRUGroup, sid: int) -> None:
        super().__init__(group)
        self.sid = sid
        self.names = NameIndex(group.backend, GUILD_NAMES)
        self._indexed = False
        #: refuses membership changes of a stale player instance (``fenced_op``)
        self.fence: PlayerFence | None = None

    # -- create ------------------------------------------------------------------------

    @handler
    async def create_guild(self, owner: int, owner_name: str, name: str, open: bool,
                           create_id: str) -> dict[str, Any]:
        """Create a guild led by *owner*; idempotent by *create_id* (a role node retries
        the create the player paid for with the same id). ``{"code", "guild_id"}``."""
        if isinstance(owner, bool) or not isinstance(owner, int):
            raise ValueError("owner must be a userid")
        if not isinstance(create_id, str) or not 0 < len(create_id) <= 64:
            raise ValueError("create_id must be a short string")
        backend = self.group.backend
        name = guilds.normalize_name(name)
        key = guilds.name_key(name)
        record = await backend.get(GUILD_CREATES, create_id)
        if record is None:
            guildid = await backend.incr(GUILD_SEQ) << 16 | self.sid
            if not await self._reserve(key, guildid, name):
                return {"code": int(E.GUILD_NAME_TAKEN), "guild_id": 0}
            try:
                await backend.insert(GUILD_CREATES, create_id,
                                     {"guildid": guildid, "owner": owner, "code": None})
            except DuplicateKey:  # a concurrent retry of the same create won
                await self.names.release(key, guildid)
                record = await backend.get(GUILD_CREATES, create_id)
        if record is not None:
            if record.get("code") is not None:
                return {"code": int(record["code"]), "guild_id": record["guildid"]}
            guildid = record["guildid"]
        try:
            r = await self.group.call(guildid, "create", owner, name, owner_name, bool(open),
                                      self.sid)
        except SaveFailed:
            return {"code": int(E.RETRY_LATER), "guild_id": 0}
        code = r["code"]
        if code == E.OK:
            outcome = await self.deliver(guildid)
            if outcome.get(owner) == "conflict":
                code = E.GUILD_ALREADY_IN_GUILD
            elif owner in outcome and outcome[owner] is None:
                return {"code": int(E.RETRY_LATER), "guild_id": guildid}
        if code != E.OK:
            await self.names.release(key, guildid)
        await backend.update(GUILD_CREATES, create_id, {"code": int(code)})
        log.info("guild {guildid} {name!r} created by {owner}: {code}", guildid=guildid,
                 name=name, owner=owner, code=E.Name(code))
        return {"code": int(code), "guild_id": guildid if code == E.OK else 0}

    async def _reserve(self, key: str, guildid: int, name: str) -> bool:
        """Reserve *key* for *guildid*; a name still held by a guild that is gone (a
        disband or failed create cut by a crash before it released the name) is taken
        over."""
        if await self.names.reserve(key, guildid, name):
            return True
        holder = await self.names.lookup(key)
        if not isinstance(holder, int) or holder == guildid:
            return False
        try:
            alive = await self.group.call(holder, "summary")
        except EntityNotFound:
            # the create that reserved it may still be running: only a guild that
            # existed and is gone frees its name here
            return False
        if alive is not None:
            return False
        log.info("guild name {name!r} freed from the gone guild {holder}", name=name,
                 holder=holder)
        await self.names.release(key, holder)
        return await self.names.reserve(key, guildid, name)

    @handler
    async def create(self, owner: int, name: str) -> int:
        """Create an open guild led by *owner* (GM, tests); its id. GuildNameTaken,
        ValueError."""
        if not isinstance(name, str) or not name.strip() or len(name) > 32:
            raise ValueError("guild name must have 1-32 characters")
        r = await self.create_guild(owner, "", name, True, uuid.uuid4().hex)
        if r["code"] == E.GUILD_NAME_TAKEN:
            raise GuildNameTaken(f"guild name {name!r} is taken")
        if r["code"] not in (E.OK, E.RETRY_LATER):
            raise ValueError(E.Name(r["code"]))
        guildid: int = r["guild_id"]
        return guildid

    # -- membership --------------------------------------------------------------------

    @handler
    async def fenced_op(self, guildid: int, op: str, userid: int, generation: int,
                        name: str, *args: Any) -> int:
        """``op`` for the acting player's online instance *generation*: refused
        (StaleGeneration) when a newer instance owns the player, so a replaced instance
        changes no guild."""
        if self.fence is not None:
            await self.fence.check(userid, generation, f"guild_{op}")
        return await self.op(guildid, op, userid, name, *args)

    @handler
    async def op(self, guildid: int, op: str, userid: int, name: str, *args: Any) -> int:
        """Run membership operation *op* (``OPS``) for the acting player *userid* (named
        *name*); the ErrorCode. OK means the guild and the players' ledger entries are
        saved; RETRY_LATER when a player's rolecity could not be told (the change is saved
        in the guild's outbox and retried; repeating the request answers OK once it is
        through, or the join's outcome)."""
        action = OPS.get(op)
        if action is None:
            raise ValueError(f"unknown guild op {op!r}")
        if op in ("join", "apply"):
            first: list[Any] = [userid, name]
        elif op in ("leave", "disband"):
            first = [userid]
        else:
            first = [userid, *args]
        try:
            r = await self.group.call(guildid, action, *first)
        except EntityNotFound:
            return int(E.GUILD_NOT_FOUND)
        except SaveFailed:
            return int(E.RETRY_LATER)
        code = int(r["code"])
        if code != E.OK:
            return code
        subject = userid if op in ("join", "apply") else (args[0] if args else userid)
        if r["deliver"]:
            crashpoint("after_guild_outbox_saved")
            outcome = await self.deliver(guildid)
            if outcome.get(subject) == "conflict" and subject in r["deliver"]:
                return int(E.GUILD_ALREADY_IN_GUILD)
            if any(outcome.get(u, "") is None for u in r["deliver"]):
                # saved in the guild, not yet in a player's ledger: the periodic retry
                # hands it on; the client's retry answers OK once it is there
                return int(E.RETRY_LATER)
        if op == "disband":
            await self.names.release(r["name_key"], guildid)
        elif op not in ("join", "apply", "leave"):
            await self.group.call(guildid, "touch", userid, name)
        for note in r["notify"]:
            await self._notify(note)
        return int(E.OK)

    async def _notify(self, note: dict[str, Any]) -> None:
        msg = pb.GuildNotify(**{k: v for k, v in note.items() if k != "to"})
        await reach.push(self.cluster, note["to"], msg)

    @handler
    async def deliver(self, guildid: int) -> dict[int, str | None]:
        """Hand the guild's outbox entries to the players' rolecities and settle them:
        ``{userid: "ok" | "conflict" | None (not reached; retried later)}``."""
        entries = await self.group.call(guildid, "outbox")

        async def one(e: dict[str, Any]) -> tuple[int, str | None]:
            userid = e["userid"]
            node = self.cluster.rolecity_node(userid)
            try:
                r = await self.cluster.call(node, "guildledger", "set", userid, e["guildid"],
                                            e["only_if"], e["tid"], e["join"],
                                            timeout=CALL_TIMEOUT)
                await self.group.call(guildid, "settle", userid, e["tid"], r["result"])
            except (ClusterError, SaveFailed) as err:
                log.warn("guild {guildid}: guildid of {userid} not handed to {node} yet "
                         "({e}); retried", guildid=guildid, userid=userid, node=node, e=err)
                return userid, None
            return userid, str(r["result"])

        results = await defer.gatherResults([defer.Deferred.fromCoroutine(one(e))
                                             for e in entries])
        return dict(results)

    async def retry_pending(self) -> int:
        """Deliver the outboxes of every guild with pending entries (stored or resident);
        how many guilds were tried."""
        found = {e.id for e in self.group.entities() if e.get("pending")}
        try:
            if not self._indexed:  # the search runs every RETRY_INTERVAL: no scans
                await self.group.backend.ensure_index(GUILDS, "attrs.pending")
                self._indexed = True
            found.update(k for k, _ in await self.group.backend.find(
                GUILDS, {"attrs.pending": True}, limit=200))
        except StorageError as e:
            log.warn("guild outbox retry: cannot search storage ({e})", e=e)
        for guildid in sorted(found, key=str):
            if isinstance(guildid, int):
                try:
                    await self.deliver(guildid)
                except (ClusterError, EntityNotFound) as e:
                    log.warn("guild {guildid}: outbox retry failed ({e})", guildid=guildid, e=e)
        return len(found)

    # -- reading -----------------------------------------------------------------------

    @handler
    async def view(self, guildid: int, userid: int, name: str = "") -> dict[str, Any]:
        """GuildInfo fields for *userid* (a member is shown with *name* from now on), with
        the members' online flags."""
        try:
            r: dict[str, Any] = await self.group.call(guildid, "view", userid, name)
        except EntityNotFound:
            return {"code": int(E.GUILD_NOT_FOUND)}
        if r["code"] == E.OK:
            online = await reach.locate(self.cluster, [m["user_id"] for m in r["members"]])
            for m in r["members"]:
                m["online"] = m["user_id"] in online
        return r

    async def _summaries(self, guildids: list[int]) -> list[dict[str, Any]]:
        found = []
        for guildid in guildids:
            try:
                s = await self.group.call(guildid, "summary")
            except EntityNotFound:
                continue
            if s is not None:
                found.append(s)
        return found

    @handler
    async def list(self, offset: int = 0,
                   limit: int = LIST_MAX) -> builtins.list[dict[str, Any]]:
        """Guild summaries of this region in name order, *limit* (at most LIST_MAX) from
        *offset*."""
        limit = max(0, min(int(limit), LIST_MAX))
        rows = await self.group.backend.find(GUILD_NAMES, {})
        rows.sort(key=lambda kv: str(kv[0]))
        ids = [int(doc["owner"]) for _, doc in rows[max(0, int(offset)):][:limit]]
        return await self._summaries(ids)

    @handler
    async def search(self, name: str) -> builtins.list[dict[str, Any]]:
        """The guild of this region named *name* (case-insensitive), as a list."""
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            return []
        owner = await self.names.lookup(guilds.name_key(name))
        return [] if owner is None else await self._summaries([int(owner)])


class GuildChat(Service):
    """``guildchat``: the guild channel of chat (history saved with the guild,
    periodically: not durable at OK)."""

    name = "guildchat"

    def __init__(self, group: LRUGroup) -> None:
        self.group = group

    @handler
    async def send(self, guildid: int, from_userid: int, message: dict[str, Any]) -> int:
        """Keep *message* (ChatMessage fields) in the guild's last 50 and push ChatNotify to
        its online members (those who block the sender excepted); OK or
        CHAT_NOT_IN_GUILD."""
        if not isinstance(message, dict):
            raise ValueError("message must be a dict of ChatMessage fields")
        try:
            r = await self.group.call(guildid, "chat_add", from_userid, message)
        except EntityNotFound:
            return int(E.CHAT_NOT_IN_GUILD)
        if r["code"] != E.OK:
            return int(r["code"])
        await reach.push(self.cluster, r["members"],
                         pb.ChatNotify(message=pb.ChatMessage(**r["message"])),
                         sender=from_userid)
        return int(E.OK)

    @handler
    async def history(self, guildid: int, userid: int) -> list[dict[str, Any]]:
        """The guild's last messages, oldest first; NotAMember for a non-member."""
        try:
            found: list[dict[str, Any]] = await self.group.call(guildid, "chat_history", userid)
        except EntityNotFound:
            raise NotAMember(f"no guild {guildid}") from None
        return found


class OutboxRetry(service.Service):
    """Retries undelivered outbox entries every RETRY_INTERVAL seconds."""

    def __init__(self, router: GuildRouter, clock: Any) -> None:
        self.router = router
        self.loop = LoopingCall(self._round)
        self.loop.clock = clock
        self.running_round: defer.Deferred[Any] | None = None

    def _round(self) -> None:
        if self.running_round is not None:
            return  # the previous round is still delivering
        d = defer.Deferred.fromCoroutine(self.router.retry_pending())
        self.running_round = d
        d.addErrback(lambda f: log.failure("guild outbox retry failed", f))
        d.addBoth(lambda _: setattr(self, "running_round", None))

    def startService(self) -> None:
        super().startService()
        self.loop.start(RETRY_INTERVAL, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self.loop.running:
            self.loop.stop()
        return self.running_round


def build(node: Node) -> None:
    sid = node.me.number or 0
    install_dbproxy(node)
    group = install_lru(node, GuildActor(), router="guildrouter", worker="guildhandler",
                        db=region_db(sid), router_cls=lambda group: GuildRouter(group, sid))
    node.cluster.register(GuildChat(group))
    router = group.router
    assert isinstance(router, GuildRouter)
    router.fence = PlayerFence(node.database(ROLEDB), registry=node.registry)
    OutboxRetry(router, node.reactor).setServiceParent(node)

