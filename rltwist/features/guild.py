"""Guilds (issue 12): wiring of the guild feature into the nodes.

- guild nodes: ``guildrouter`` and ``guildchat`` (built by ``rltwist.nodes.guild.service``);
- rolecity nodes: ``guildledger.set``, how a guild's outbox entry becomes a ``guild``
  transfer in the player's ledger (then the online instance is told to take it);
- role nodes: the Guild* client requests (``rltwist.nodes.guild.requests``) and how a
  ``guild`` transfer is applied to the player (its ``guildid``).

Rules: ``rltwist.game.guildsystem``; docs/social.md "Guilds".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler

if TYPE_CHECKING:
    from rltwist.nodes.common.lru import LRUGroup
    from rltwist.nodes.common.node import Node

log = Logger()


class GuildLedger(Service):
    """``guildledger`` on rolecity nodes: a guild's word about a player's guildid."""

    name = "guildledger"

    def __init__(self, group: LRUGroup) -> None:
        self.group = group

    @handler
    async def set(self, userid: int, guildid: int, only_if: int, tid: str,
                  join: bool) -> dict[str, Any]:
        """Record the outbox entry *tid* of guild *only_if* for *userid* (idempotent):
        ``{"result": "ok" | "conflict", "added", "guildid"}``; the ledger entry is saved
        before the answer and the player's online instance is told to take it."""
        for value in (userid, guildid, only_if):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("userid, guildid and only_if are ids")
        if not isinstance(tid, str) or not 0 < len(tid) <= 64:
            raise ValueError("tid must be a short string")
        result: dict[str, Any] = await self.group.call(userid, "set_guild", guildid, only_if,
                                                       tid, bool(join))
        if result.get("added"):
            cache = self.cluster.services.get("rolecache")
            online = getattr(cache, "where", {}).get(userid)
            if online:
                try:
                    self.cluster.send(online, "gateway", "apply_grants", userid)
                except ClusterError as e:  # it stays in the ledger: taken at the next Auth
                    log.warn("guildid of {userid}: cannot tell {node}: {e}", userid=userid,
                             node=online, e=e)
        return result


def _apply_guild(entity: Any, entry: dict[str, Any]) -> None:
    from rltwist.ecs import import_system

    import_system("rltwist.game.guildsystem", service="gateway").apply_ledger(
        entity, entry.get("items") or {})


def install(node: Node) -> None:
    """Register the guild services and requests of *node*'s kind."""
    kind = node.me.kind
    if kind == "rolecity":
        router = node.cluster.services.get("rolerouter")
        group = getattr(router, "group", None)
        if group is None:  # the rolecity build did not run: nothing to hang the ledger on
            raise RuntimeError(f"{node.name}: no rolerouter group for guildledger")
        node.cluster.register(GuildLedger(group))
    elif kind == "role":
        import rltwist.nodes.guild.requests  # noqa: F401  (registers the Guild* requests)
        from rltwist.nodes.role.transfers import register_kind

        register_kind("guild", _apply_guild)
