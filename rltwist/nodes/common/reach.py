"""Reaching online players from any node (seed §10): locate through the birth regions'
rolecaches, then one cluster message per role node, never one per recipient.

    where = await locate(cluster, userids)          # {userid: role node} of those online
    result = await push(cluster, userids, pb.ChatNotify(...))
    result.online, result.offline                   # who got it sent, who is offline
    send_located(cluster, where, message)           # when the caller already located them
    broadcast(cluster, message, mapid=None)         # every online player (of map *mapid*)
    broadcast(cluster, message, regions=[1, 2])     # ... born in regions 1 or 2

A player's rolecache is on its birth region's rolecity node
(``cluster.rolecity_node(userid)``): ``locate`` asks each region involved once, in
parallel, within *timeout*. A region whose rolecity does not answer counts its players as
offline (logged): callers that must not lose anything store first (mail, friend requests,
private chat backlog) and push second, so a push is only ever a shortcut.

The push is encoded once and written by each role node's gateway to its players
(``gateway.push(userids, msgid, body)``); a player who logged out meanwhile is skipped
there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from google.protobuf.message import Message
from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.config import parse_node_name
from rltwist.protocols import REGISTRY

if TYPE_CHECKING:
    from rltwist.cluster import Cluster

__all__ = ["PushResult", "broadcast", "locate", "push", "role_nodes", "send_located"]

log = Logger()

LOCATE_TIMEOUT = 5.0


@attrs.frozen
class PushResult:
    online: dict[int, str]
    """userid -> role node the push was sent to."""
    offline: list[int]
    """Recipients no rolecache knows online (or whose region did not answer)."""


def _encode(message: Message) -> tuple[int, bytes]:
    msgid = REGISTRY.push_ids.get(type(message))
    if msgid is None:
        raise ValueError(f"{type(message).__qualname__} is not a registered push (Notify)")
    return msgid, message.SerializeToString()


async def locate(cluster: Cluster, userids: Iterable[int],
                 timeout: float = LOCATE_TIMEOUT) -> dict[int, str]:
    """``{userid: role node}`` for the players of *userids* that are online."""
    by_rolecity: dict[str, list[int]] = {}
    for userid in set(userids):
        by_rolecity.setdefault(cluster.rolecity_node(userid), []).append(userid)

    async def ask(node: str, ids: list[int]) -> list[Any]:
        try:
            return list(await cluster.call(node, "rolecache", "locate", ids,
                                           timeout=timeout))
        except ClusterError as e:
            log.warn("cannot locate {n} players through {node}: {e}; treated as offline",
                     n=len(ids), node=node, e=e)
            return []

    answers = await defer.gatherResults([
        defer.Deferred.fromCoroutine(ask(node, ids)) for node, ids in by_rolecity.items()])
    where: dict[int, str] = {}
    for pairs in answers:
        for userid, node in pairs:
            where[int(userid)] = str(node)
    return where


def send_located(cluster: Cluster, where: Mapping[int, str], message: Message,
                 sender: int | None = None) -> int:
    """Push *message* to located players (but those who block *sender*): one
    ``gateway.push`` per role node. How many role nodes it was sent to."""
    if not where:
        return 0
    msgid, body = _encode(message)
    by_node: dict[str, list[int]] = {}
    for userid, node in where.items():
        by_node.setdefault(node, []).append(userid)
    sent = 0
    for node, ids in by_node.items():
        try:
            cluster.send(node, "gateway", "push", sorted(ids), msgid, body, sender)
            sent += 1
        except ClusterError as e:
            log.warn("cannot push {what} to {n} players on {node}: {e}",
                     what=type(message).__name__, n=len(ids), node=node, e=e)
    return sent


async def push(cluster: Cluster, userids: Iterable[int], message: Message,
               timeout: float = LOCATE_TIMEOUT, sender: int | None = None) -> PushResult:
    """Locate *userids* and push *message* to those online (but those who block
    *sender*)."""
    ids = list(userids)
    where = await locate(cluster, ids, timeout)
    send_located(cluster, where, message, sender)
    return PushResult(online=where, offline=sorted(u for u in set(ids) if u not in where))


def role_nodes(cluster: Cluster) -> list[str]:
    """Every role node this node knows an address for."""
    nodes = []
    for name in cluster.addresses:
        try:
            kind, _ = parse_node_name(name)
        except ValueError:
            continue
        if kind == "role":
            nodes.append(name)
    return sorted(nodes)


def broadcast(cluster: Cluster, message: Message, mapid: int | None = None,
              exclude: Iterable[int] = (), sender: int | None = None,
              regions: Iterable[int] | None = None) -> int:
    """Push *message* to every online player — whose city is on map *mapid*, or who was
    born in one of *regions*, when given — but *exclude* and those who block *sender*:
    one ``gateway.broadcast`` per role node. How many role nodes it was sent to."""
    msgid, body = _encode(message)
    skip = sorted(set(exclude))
    born = sorted(set(regions)) if regions is not None else None
    sent = 0
    for node in role_nodes(cluster):
        try:
            cluster.send(node, "gateway", "broadcast", msgid, body, mapid, skip, sender, born)
            sent += 1
        except ClusterError as e:
            log.warn("cannot broadcast {what} to {node}: {e}", what=type(message).__name__,
                     node=node, e=e)
    return sent
