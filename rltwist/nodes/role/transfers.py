"""Transfers into an online player (GM grants today; gifts, mail attachments and march
loot later): the role side of the two-step transfer API (rltwist/nodes/common/transfer.py).

``take_transfers`` runs one pull of the player's rolecity ledger through a
:class:`~rltwist.nodes.common.transfer.Receiver`: take (fenced by the instance's
generation at rolecity), apply each entry once (the player's inbox remembers applied ids),
save the player (fenced in storage), then confirm so rolecity deletes them. A crash or
timeout anywhere leaves the entries at rolecity; the next pull (this instance's next
grant notification, or the next Auth) resumes and the inbox prevents a double apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common.transfer import BadTransfer, Pulled, Receiver
from rltwist.nodes.role.requests import shown_changed

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
role_system = import_system("rltwist.game.rolesystem", service="gateway")

CALL_TIMEOUT = 10.0
LEDGER = "rolecity"


def _apply_grant(entity: Entity, entry: dict[str, Any]) -> None:
    code = role_system.add_resources(entity, entry.get("items") or {})
    if code != ErrCode.OK:
        raise BadTransfer(f"transfer {entry.get('id')}: {ErrCode(code).name}")


KINDS: dict[str, Callable[[Entity, dict[str, Any]], None]] = {"grant": _apply_grant}
"""Transfer kind -> how it is applied to the player (a feature adds its kinds with
:func:`register_kind`, e.g. ``guild``: the player's guildid)."""


def register_kind(kind: str, apply: Callable[[Entity, dict[str, Any]], None]) -> None:
    """Apply ledger entries of *kind* with ``apply(entity, entry)`` (all or nothing,
    synchronous; raising leaves the entry at the source)."""
    KINDS[kind] = apply


def _apply(entity: Entity, entry: dict[str, Any]) -> None:
    """Apply one transfer, all or nothing; raising leaves it at the source."""
    apply = KINDS.get(entry.get("kind"))  # type: ignore[arg-type]
    if apply is None:
        raise BadTransfer(f"transfer {entry.get('id')}: unknown kind {entry.get('kind')!r}")
    apply(entity, entry)


receiver = Receiver(LEDGER, _apply, step="grant")


async def pull_from(gw: Gateway, player: Player, receiver: Receiver, node: str,
                    service: str, what: str) -> Pulled | None:
    """Pull the player's transfers that *service* on *node* recorded (its
    ``take_transfers``/``confirm_transfers``, fenced by the instance's generation) into
    the entity through *receiver*: the :class:`Pulled` result, or None when the node is
    unknown, this node may not write, or the pull failed (they stay there for the next
    pull)."""
    userid, gen = player.userid, player.generation
    if node not in gw.cluster.addresses or not gw.writes_allowed():
        return None
    entity = player.entity

    async def take() -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = await gw.cluster.call(
            node, service, "take_transfers", userid, gen, timeout=CALL_TIMEOUT)
        return entries

    async def save() -> bool:
        return (await gw.saver.save([(entity, gen)])).ok

    async def confirm(ids: list[str]) -> int:
        n: int = await gw.cluster.call(node, service, "confirm_transfers", userid, gen,
                                       ids, timeout=CALL_TIMEOUT)
        return n

    try:
        return await receiver.pull(entity, take=take, save=save, confirm=confirm)
    except (ClusterError, BadTransfer) as e:
        log.warn("{what} of {userid}: {e}; they stay at {node} for the next pull",
                 what=what, userid=userid, e=e, node=node)
        return None


async def take_transfers(gw: Gateway, player: Player) -> list[str]:
    """Pull the player's pending transfers from its rolecity into the entity; the ids
    applied now. Failures leave them pending there (taken at the next Auth or grant)."""
    userid = player.userid
    entity = player.entity
    shown = (entity.get("name"), entity.get("guildid"))
    pulled = await pull_from(gw, player, receiver, gw.cluster.rolecity_node(userid),
                             "rolerouter", "transfers")
    if pulled is None:
        return []
    for entry in pulled.applied:
        log.info("{userid}: took {kind} {id} {items}", userid=userid, kind=entry["kind"],
                 id=entry["id"], items=entry["items"])
    if pulled.applied and pulled.saved and \
            (entity.get("name"), entity.get("guildid")) != shown:
        shown_changed(gw, player)  # a guild join/leave: the city on the map shows it
    return [e["id"] for e in pulled.applied]
