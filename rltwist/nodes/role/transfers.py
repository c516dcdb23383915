"""Transfers into an online player (GM grants today; gifts, mail attachments and march
loot later): the role side of the two-step transfer API (rltwist/nodes/common/transfer.py).

1. ``take_transfers(userid, generation)`` on the player's rolecity marks the pending
   entries as taken by this instance (fenced: an older generation is refused there).
2. Each entry is applied once: the player's inbox records its id, so an entry handed out
   again after a crash is recognised and not applied twice.
3. The player is saved (fenced); only then ``confirm_transfers`` deletes the entries at
   the source. A crash or timeout before that leaves them taken; the next take (this or
   a newer instance) hands them out again and the inbox decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError, RemoteError
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common import transfer

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
role_system = import_system("rltwist.game.rolesystem", service="gateway")

CALL_TIMEOUT = 10.0


async def take_transfers(gw: Gateway, player: Player) -> list[str]:
    """Move the player's pending transfers from its rolecity into the entity; the ids
    applied. A failure leaves them pending there (taken again at the next Auth/grant)."""
    userid, gen = player.userid, player.generation
    rolecity = f"rolecity{userid & 0xFFFF}"
    if rolecity not in gw.cluster.addresses or not gw.writes_allowed():
        return []
    try:
        entries: list[dict[str, Any]] = await gw.cluster.call(
            rolecity, "rolerouter", "take_transfers", userid, gen, timeout=CALL_TIMEOUT)
    except RemoteError as e:
        if e.kind != "EntityNotFound":
            log.warn("transfers of {userid}: {e}", userid=userid, e=e)
        return []
    except ClusterError as e:
        log.warn("transfers of {userid}: {e}", userid=userid, e=e)
        return []
    if not entries:
        return []
    crashpoint("after_grant_take")
    entity = player.entity
    ids = []
    for entry in entries:
        ids.append(entry["id"])
        if not transfer.accept(entity, entry["id"]):
            continue  # applied before a crash or a lost confirm: only confirm it
        code = role_system.add_resources(entity, entry.get("items") or {})
        log.info("{userid}: took {kind} {id} {items} ({code})", userid=userid,
                 kind=entry.get("kind", "?"), id=entry["id"], items=entry.get("items"),
                 code=ErrCode(code).name)
    report = await gw.saver.save([(entity, gen)])
    if not report.ok:
        log.warn("transfers of {userid}: the player's save failed ({report}); the entries "
                 "stay taken at {node} and are confirmed after a later save",
                 userid=userid, report=report.to_dict(), node=rolecity)
        return ids
    crashpoint("after_grant_apply")
    try:
        await gw.cluster.call(rolecity, "rolerouter", "confirm_transfers", userid, gen, ids,
                              timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("transfers of {userid}: confirm at {node} failed ({e}); they are handed "
                 "out again and recognised", userid=userid, node=rolecity, e=e)
        return ids
    transfer.forget(entity, ids)
    return ids
