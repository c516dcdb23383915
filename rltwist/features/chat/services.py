"""Chat services on the global and region nodes (docs/social.md, "Chat").

``chat`` (logiccenter: the world channel; each map node: its region's channel) is an LRU
group whose entities are channels (``"world"``, ``"region<mapid>"``)::

    chat.send(key, message, mapid)  -> ErrorCode   keep it, then one broadcast per role node
    chat.history(key)               -> [message]   the last ``chat.history`` (oldest first)

``privatechat`` (each rolecity node) is an LRU group of the region's players (by userid):
the history of each private pair the player is in and the offline backlog::

    privatechat.send(to, message)          -> ErrorCode   on the recipient's rolecity
    privatechat.keep(userid, peer, message)               the sender's side of the pair
    privatechat.history(userid, peer)      -> [message]
    privatechat.login(userid)              -> {"backlog": [message], "mute": {...} | None}
    privatechat.mute(userid, seconds, reason) -> {"code", "muted_until_ms", "online"}

A message is a dict whose keys are ``ChatMessage`` field names. Channel histories and
private pairs are saved by the group's periodic saver (``[storage] save_interval``), not
before the reply: chat's OK means accepted for delivery. The GM mute is the exception: it
is stored in the player's rolecity entity (component ``chat``, key ``mute``) before the
answer. That component also flags a waiting offline backlog (key ``backlog``, saved before
the message is accepted), so an Auth reads the private-chat entity only when something
waits: the rolecity entity is loaded at every Auth anyway (the transfer ledger).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError, handler
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common import reach
from rltwist.nodes.common.lru import Actor, LRUGroup, LRURouter, action
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.role.agent import PLAYERS, ROLEDB
from rltwist.protocols import REGISTRY, pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode
chat = import_system("rltwist.game.chatsystem", service="chat")

COMPONENT = "chat"
#: rolecity entity component of chat: ``{"mute": {"until_ms", "reason", "set_ms"},
#: "backlog": True while private messages wait for the player}``
ROLECITY_COMPONENT = "chat"
#: rolecity entity component the friends feature keeps; ``blocked`` lists userids
FRIENDS = "friends"
#: most private pairs one player keeps (the pair with the oldest last message goes first)
MAX_PAIRS = 200
#: players known to exist, kept per rolecity (a player is never deleted)
KNOWN_CAP = 200_000
KEEP_TIMEOUT = 5.0
PUSH_ID = REGISTRY.push_ids[pb.ChatNotify]


def world_key() -> str:
    return "world"


def region_key(mapid: int) -> str:
    return f"region{mapid}"


def _limits() -> tuple[int, int]:
    rules = sharedata().snapshot["chat"]
    return int(rules["history"]), int(rules["offline_backlog"])


class ChannelActor(Actor):
    """A world or region channel: its last messages."""

    kind = "chatchannel"
    collection = "chat_channels"

    @action
    def post(self, entity: Entity, message: dict[str, Any], limit: int) -> int:
        messages = entity.component(COMPONENT).setdefault("messages", [])
        chat.keep(messages, message, limit)
        entity.mark_dirty()
        return len(messages)

    @action
    def history(self, entity: Entity) -> list[dict[str, Any]]:
        return list(entity.components.get(COMPONENT, {}).get("messages", ()))


class ChannelRouter(LRURouter):
    """``chat``: keep a channel's message and broadcast it (one send per role node)."""

    @handler
    async def send(self, key: str, message: dict[str, Any], mapid: int | None = None) -> int:
        """Keep *message* in channel *key* and push it to every online player (of map
        *mapid*) but those who block its sender."""
        history, _ = _limits()
        await self.group.call(key, "post", message, history)
        note = pb.ChatNotify(message=chat.to_pb(message))
        reach.broadcast(self.cluster, note, mapid=mapid, sender=message.get("from_userid"))
        return int(E.OK)

    @handler
    async def history(self, key: str) -> list[dict[str, Any]]:
        """The last messages of channel *key*, oldest first."""
        found: list[dict[str, Any]] = await self.group.call(key, "history")
        return found


class PrivateActor(Actor):
    """One player's private chat: the history of each pair and the offline backlog."""

    kind = "privatechat"
    collection = "chat_private"

    @action
    def keep(self, entity: Entity, peer: int, message: dict[str, Any], limit: int,
             backlog: int = 0) -> None:
        """Add *message* to the pair with *peer*; *backlog* > 0: the player is offline,
        keep it for the next login too (at most *backlog* waiting)."""
        comp = entity.component(COMPONENT)
        pairs = comp.setdefault("pairs", {})
        chat.keep(pairs.setdefault(str(peer), []), message, limit)
        if len(pairs) > MAX_PAIRS:
            oldest = min(pairs, key=lambda p: pairs[p][-1].get("time_ms", 0) if pairs[p] else 0)
            del pairs[oldest]
        if backlog > 0:
            chat.keep(comp.setdefault("backlog", []), message, backlog)
        entity.mark_dirty()

    @action
    def backlog(self, entity: Entity, message: dict[str, Any], limit: int) -> None:
        """Keep *message* for the player's next login (at most *limit* waiting)."""
        chat.keep(entity.component(COMPONENT).setdefault("backlog", []), message, limit)
        entity.mark_dirty()

    @action
    def pair(self, entity: Entity, peer: int) -> list[dict[str, Any]]:
        return list(entity.components.get(COMPONENT, {}).get("pairs", {}).get(str(peer), ()))

    @action
    def take_backlog(self, entity: Entity) -> list[dict[str, Any]]:
        comp = entity.components.get(COMPONENT)
        if not comp or not comp.get("backlog"):
            return []
        backlog = comp.pop("backlog")
        entity.mark_dirty()
        return list(backlog)


# -- business methods chat adds to the rolecity entity (rolerouter's group) ---------------


def rolecity_blocks(entity: Entity, sender: int) -> bool:
    """Does this player block *sender* (the friends feature's block list)?"""
    return bool(chat.blocks(entity.components.get(FRIENDS), int(sender)))


def rolecity_state(entity: Entity) -> dict[str, Any]:
    """What Auth needs: the GM mute (or None) and whether a backlog waits."""
    comp = entity.components.get(ROLECITY_COMPONENT) or {}
    mute = comp.get("mute")
    return {"mute": dict(mute) if mute else None, "backlog": bool(comp.get("backlog"))}


def rolecity_set_mute(entity: Entity, seconds: int, reason: str, now_ms: int) -> dict[str, Any]:
    record = chat.mute_record(int(seconds), str(reason), int(now_ms))
    entity.component(ROLECITY_COMPONENT)["mute"] = record
    entity.mark_dirty()
    return record


def rolecity_flag_backlog(entity: Entity, waiting: bool) -> None:
    """Flag (or unflag) a waiting offline backlog; no change, no write."""
    comp = entity.components.get(ROLECITY_COMPONENT) or {}
    if bool(comp.get("backlog")) == waiting:
        return
    entity.component(ROLECITY_COMPONENT)["backlog"] = waiting
    entity.mark_dirty()


def rolecity_unflag_backlog(entity: Entity) -> None:
    rolecity_flag_backlog(entity, False)


class PrivateRouter(LRURouter):
    """``privatechat`` on a rolecity node: private messages to the region's players."""

    def __init__(self, group: LRUGroup, node: Node) -> None:
        super().__init__(group)
        self.node = node
        self.known: set[int] = set()

    @property
    def roles(self) -> LRUGroup:
        """The rolecity entities' group (rolerouter) of this node."""
        group: LRUGroup = self.node.cluster.services["rolerouter"].group  # type: ignore
        return group

    def where(self, userid: int) -> str | None:
        """The role node of *userid* if it is online (this region's rolecache)."""
        cache = self.node.cluster.services.get("rolecache")
        found = getattr(cache, "where", {}).get(userid)
        return None if found is None else str(found)

    async def exists(self, userid: int) -> bool:
        """Is *userid* a player of this region (online, or stored in the role database)?"""
        if userid in self.known or self.where(userid) is not None:
            return True
        if self.node.cluster.rolecity_node(userid) != self.node.name:
            return False
        stored = await self.node.database(ROLEDB).get_entity(PLAYERS, userid)
        if stored is None:
            return False
        if len(self.known) >= KNOWN_CAP:
            self.known.clear()
        self.known.add(userid)
        return True

    @handler
    async def send(self, to: int, message: dict[str, Any]) -> int:
        """A private *message* to *to* (a player of this region): refused if *to* does
        not exist or blocks the sender; kept in both sides' pair history, pushed to *to*
        if online, else kept in *to*'s offline backlog."""
        sender = int(message["from_userid"])
        if not await self.exists(to):
            return int(E.NO_SUCH_PLAYER)
        if await self.roles.call(to, "chat_blocks", sender):
            return int(E.CHAT_BLOCKED)
        history, backlog = _limits()
        online = self.where(to)
        if online is None:
            await self.roles.call(to, "chat_flag_backlog", True)  # saved before the OK
            await self.group.call(to, "keep", sender, message, history, backlog)
            await self._keep_senders_copy(sender, to, message)
            return int(E.OK)
        await self.group.call(to, "keep", sender, message, history, 0)
        copy = defer.Deferred.fromCoroutine(self._keep_senders_copy(sender, to, message))
        pushed = await self._push(online, to, message)  # the sender's copy meanwhile
        await copy
        if not pushed:
            # the recipient logged out meanwhile, or its role node did not answer: kept
            # for its next login (a push whose answer was lost may then come twice)
            await self.roles.call(to, "chat_flag_backlog", True)
            await self.group.call(to, "backlog", message, backlog)
        return int(E.OK)

    async def _push(self, node: str, to: int, message: dict[str, Any]) -> bool:
        """Push *message* to *to* on role node *node*: True once that gateway wrote it."""
        body = pb.ChatNotify(message=chat.to_pb(message)).SerializeToString()
        try:
            written = await self.cluster.call(node, "gateway", "push", [to], PUSH_ID, body,
                                              int(message["from_userid"]),
                                              timeout=KEEP_TIMEOUT)
        except ClusterError as e:
            log.warn("private chat to {to}: push through {node} failed ({e}); kept for its "
                     "next login", to=to, node=node, e=e)
            return False
        return bool(written)

    async def _keep_senders_copy(self, sender: int, to: int, message: dict[str, Any]) -> None:
        try:  # the sender's side of the pair (its own birth region)
            await self.cluster.call(self.cluster.rolecity_node(sender), "privatechat",
                                    "keep", sender, to, message, timeout=KEEP_TIMEOUT)
        except ClusterError as e:
            log.warn("private chat {sender} -> {to}: the sender's copy is not kept: {e}",
                     sender=sender, to=to, e=e)

    @handler
    async def keep(self, userid: int, peer: int, message: dict[str, Any]) -> None:
        """Keep *message* in *userid*'s history of the pair with *peer*."""
        history, _ = _limits()
        await self.group.call(userid, "keep", peer, message, history, 0)

    @handler
    async def history(self, userid: int, peer: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.group.call(userid, "pair", peer)
        return found

    @handler
    async def login(self, userid: int) -> dict[str, Any]:
        """At Auth: the private messages that waited for *userid* (taken: the backlog is
        cleared) and its GM mute."""
        state = await self.roles.call(userid, "chat_state")
        backlog: list[dict[str, Any]] = []
        if state["backlog"]:
            # unflag first: a message kept meanwhile flags again (at worst one read for
            # nothing at the next Auth, never a backlog nobody looks for)
            await self.roles.call(userid, "chat_unflag_backlog")
            backlog = await self.group.call(userid, "take_backlog")
        return {"backlog": backlog, "mute": state["mute"]}

    @handler
    async def mute(self, userid: int, seconds: int, reason: str,
                   timeout: float = 5.0) -> dict[str, Any]:
        """GM: mute *userid* for *seconds* (0 lifts it). Stored in the rolecity entity
        before the answer; an online instance is told at once."""
        if not await self.exists(userid):
            return {"code": int(E.NO_SUCH_PLAYER)}
        record = await self.roles.call(userid, "chat_set_mute", seconds, reason,
                                       int(time.time() * 1000))
        online = self.where(userid)
        applied = False
        if online is not None:
            try:
                applied = bool(await self.cluster.call(online, "chatgate", "set_mute", userid,
                                                       record["until_ms"], timeout=timeout))
            except ClusterError as e:  # stored: the next Auth applies it
                log.warn("mute of {userid}: cannot tell {node}: {e}", userid=userid,
                         node=online, e=e)
        return {"code": int(E.OK), "muted_until_ms": record["until_ms"],
                "reason": record["reason"], "online": online, "applied": applied}
