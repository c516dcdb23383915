"""Rename, crash-safe (issue "one owner" item 10): a name is unique within the player's
birth region, held in rolecity's name index, and the player's own document is the truth.

Steps, each durable before the next:

1. the intent ``{"from": old, "to": new}`` is saved in the player's ``rename`` component;
2. the new name is reserved in the index (fenced by the player's generation);
3. the player is saved with the new name;
4. the old name is released (fenced), rolecity's copy of the name updated;
5. the intent is cleared.

A crash at any step leaves the intent in the saved document; the next Auth calls
``reconcile_names`` with the saved name before the player can do anything, which releases
every other name the player holds and reserves the saved one. So two players never hold
one name, and no name stays reserved by a rename that never finished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.role.requests import request, shown_changed
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
role_system = import_system("rltwist.game.rolesystem", service="gateway")

INTENT = "rename"
CALL_TIMEOUT = 10.0


async def rename(gw: Gateway, player: Player, name: str) -> pb.ErrorCode:
    """Rename *player*: name rules from the game tables, uniqueness in the birth region;
    answers an ErrorCode. OK means the new name is saved and reserved."""
    tables = sharedata().snapshot
    name = role_system.normalize_name(name)
    entity = player.entity
    old = entity.get("name") or ""
    if name == old:
        return E.OK
    if role_system.check_name(name, tables) != ErrCode.OK:
        return E.NAME_INVALID
    rolecity = gw.cluster.rolecity_node(player.userid)
    if rolecity not in gw.cluster.addresses:
        return E.NOT_AVAILABLE
    userid, gen = player.userid, player.generation

    async def save() -> bool:
        return (await gw.saver.save([(entity, gen)])).ok

    entity.set_component(INTENT, {"from": old, "to": name})
    if not await save():
        return E.RETRY_LATER  # the intent is kept; reconciled at the next Auth
    crashpoint("after_rename_intent")
    try:
        if not await gw.cluster.call(rolecity, "rolerouter", "reserve_name",
                                     role_system.name_key(name), userid, name, gen,
                                     timeout=CALL_TIMEOUT):
            entity.set_component(INTENT, {})
            return E.NAME_TAKEN
    except ClusterError as e:
        log.warn("rename of {userid}: {e}", userid=userid, e=e)
        return E.RETRY_LATER
    crashpoint("after_reserve_name")
    if role_system.rename(entity, name, tables) != ErrCode.OK:
        return E.NAME_INVALID
    if not await save():
        # not durable: go back to the old name; the intent reconciles the index later
        entity["name"] = old
        return E.RETRY_LATER
    crashpoint("after_rename_save")
    shown_changed(gw, player)  # the city on the map shows the name
    try:
        if old and role_system.name_key(old) != role_system.name_key(name):
            await gw.cluster.call(rolecity, "rolerouter", "release_name",
                                  role_system.name_key(old), userid, gen,
                                  timeout=CALL_TIMEOUT)
        await gw.cluster.call(rolecity, "rolerouter", "call", userid, "set_name", name, gen,
                              timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("rename of {userid}: could not finish at {node} ({e}); reconciled at the "
                 "next Auth", userid=userid, node=rolecity, e=e)
        return E.OK  # the name is the player's; the intent stays for the reconcile
    entity.set_component(INTENT, {})
    return E.OK


async def reconcile(gw: Gateway, player: Player) -> None:
    """At Auth, after a rename that did not finish: make the region's name index agree
    with the player's saved name. A failure keeps the intent for the next Auth."""
    entity = player.entity
    if not entity.components.get(INTENT):
        return
    rolecity = gw.cluster.rolecity_node(player.userid)
    if rolecity not in gw.cluster.addresses:
        return
    name = entity.get("name") or ""
    try:
        result = await gw.cluster.call(rolecity, "rolerouter", "reconcile_names",
                                       player.userid, player.generation, name,
                                       timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("{userid}: name reconcile at {node} failed ({e}); retried at the next Auth",
                 userid=player.userid, node=rolecity, e=e)
        return
    log.info("{userid}: names reconciled after an unfinished rename: {result}",
             userid=player.userid, result=result)
    entity.set_component(INTENT, {})


@request(pb.Rename)
async def rename_request(gw: Gateway, player: Player, msg: pb.Rename) -> pb.Rename.Response:
    return pb.Rename.Response(code=await gw.rename(player, msg.name))
