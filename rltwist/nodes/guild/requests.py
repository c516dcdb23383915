"""The guild requests of the client, answered on role nodes (imported there by
``rltwist.features.guild``): wiring from the player to the guild's node
(``cluster.guild_node(guildid)``); the rules are the guild system's, on the guild node.

GuildCreate pays first: the cost is taken from the player and saved together with an
intent (component ``guild_create``: ``{"id", "name", "open", "cost"}``); then the guild
node creates the guild, idempotent by the intent's id. A definite refusal (name taken,
already in a guild) gives the cost back; no answer (guild node down, timeout) keeps the
intent, and the next Auth finishes the create (the same id: made once) or refunds.

The player's ``guildid`` is never written here: it arrives as a ``guild`` transfer from the
player's rolecity ledger (:mod:`rltwist.nodes.role.transfers`); after a change the acting
player pulls it before the answer, so its guildid is current when it reads OK.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError, RemoteError, birth_region
from rltwist.cluster.errors import LinkLost, NodeUnreachable, UnknownNode
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.role.requests import after_auth, request
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
guilds = import_system("rltwist.game.guildsystem", service="gateway")
roles = import_system("rltwist.game.rolesystem", service="gateway")

INTENT = "guild_create"
CALL_TIMEOUT = 10.0


def guildid_of(player: Player) -> int:
    """The player's guild as the online instance knows it (0: none)."""
    return int(player.entity.get("guildid", 0) or 0)


async def _save(gw: Gateway, player: Player) -> bool:
    return (await gw.saver.save([(player.entity, player.generation)])).ok


async def _call_guild(gw: Gateway, guildid: int, method: str, *args: Any) -> Any:
    node = gw.cluster.guild_node(guildid)
    if node not in gw.cluster.addresses:
        raise UnknownNode(node, "guildrouter", method)
    return await gw.cluster.call(node, "guildrouter", method, *args, timeout=CALL_TIMEOUT)


def _code_of(e: ClusterError) -> int:
    # a remote bug is INTERNAL, a node that is down NOT_AVAILABLE (nothing ran), a call
    # without an answer RETRY_LATER (it may have run: retrying tells)
    if isinstance(e, RemoteError):
        # a replaced (stale) instance is being logged out: it may retry as the new one
        return int(E.RETRY_LATER if e.kind == "StaleGeneration" else E.INTERNAL)
    if isinstance(e, UnknownNode | NodeUnreachable) and not isinstance(e, LinkLost):
        return int(E.NOT_AVAILABLE)
    return int(E.RETRY_LATER)


# -- create ----------------------------------------------------------------------------


async def finish_create(gw: Gateway, player: Player) -> tuple[int, int]:
    """Run the saved create intent on the guild node: ``(code, guild_id)``. Definite
    answers clear the intent (refusals give the cost back); no answer keeps it."""
    entity = player.entity
    intent = dict(entity.components.get(INTENT) or {})
    if not intent:
        return int(E.OK), guildid_of(player)
    sid = birth_region(player.userid)
    try:
        r = await _call_guild(gw, sid, "create_guild", player.userid,
                              entity.get("name", ""), intent["name"], intent["open"],
                              intent["id"])
    except ClusterError as e:
        log.warn("guild create of {userid} not answered ({e}); finished at the next Auth",
                 userid=player.userid, e=e)
        return int(E.RETRY_LATER), 0
    code = int(r["code"])
    if code == E.RETRY_LATER:
        return code, 0
    if code != E.OK:
        roles.add_resources(entity, intent.get("cost") or {})
    entity.set_component(INTENT, {})
    if not await _save(gw, player):
        log.warn("guild create of {userid}: the cleared intent is not saved yet",
                 userid=player.userid)
    if code == E.OK:
        await gw.take_transfers(player)
    return code, int(r.get("guild_id") or 0)


@request(pb.GuildCreate)
async def guild_create(gw: Gateway, player: Player,
                       msg: pb.GuildCreate) -> pb.GuildCreate.Response:
    tables = sharedata().snapshot
    entity = player.entity
    if entity.components.get(INTENT):
        code, guildid = await finish_create(gw, player)  # an earlier create first
        if code != E.OK:
            return pb.GuildCreate.Response(code=code)  # type: ignore[arg-type]
    if guildid_of(player):
        return pb.GuildCreate.Response(code=E.GUILD_ALREADY_IN_GUILD)
    if guilds.check_name(msg.name, tables) != E.OK:
        return pb.GuildCreate.Response(code=E.GUILD_NAME_INVALID)
    if gw.cluster.guild_node(birth_region(player.userid)) not in gw.cluster.addresses:
        return pb.GuildCreate.Response(code=E.NOT_AVAILABLE)
    cost = dict(tables["guilds"].get("cost", {}))
    if roles.spend_resources(entity, cost) != ErrCode.OK:
        return pb.GuildCreate.Response(code=E.GUILD_NOT_ENOUGH_RESOURCES)
    entity.set_component(INTENT, {"id": uuid.uuid4().hex, "name": guilds.normalize_name(
        msg.name), "open": bool(msg.open), "cost": cost})
    if not await _save(gw, player):
        roles.add_resources(entity, cost)
        entity.set_component(INTENT, {})
        return pb.GuildCreate.Response(code=E.RETRY_LATER)
    crashpoint("after_guild_create_paid")
    code, guildid = await finish_create(gw, player)
    return pb.GuildCreate.Response(code=code, guild_id=guildid)  # type: ignore[arg-type]


@after_auth
async def finish_create_at_auth(gw: Gateway, player: Player) -> None:
    """A create the player paid for whose answer never came: finish it (or refund)."""
    if player.entity.components.get(INTENT):
        code, guildid = await finish_create(gw, player)
        log.info("{userid}: unfinished guild create resumed: {code} {guildid}",
                 userid=player.userid, code=E.Name(code), guildid=guildid)


# -- membership --------------------------------------------------------------------------


async def _op(gw: Gateway, player: Player, guildid: int, op: str, *args: Any) -> int:
    """Membership operation *op* on guild *guildid*; pulls the player's own guildid
    change before answering OK."""
    if not guildid:
        return int(E.GUILD_NOT_IN_GUILD if op not in ("join", "apply") else E.GUILD_NOT_FOUND)
    try:
        code = int(await _call_guild(gw, guildid, "fenced_op", guildid, op, player.userid,
                                     player.generation, player.entity.get("name", ""),
                                     *args))
    except ClusterError as e:
        log.warn("guild {op} of {userid} on {guildid}: {e}", op=op, userid=player.userid,
                 guildid=guildid, e=e)
        return _code_of(e)
    if code == E.OK:
        await gw.take_transfers(player)
    return code


@request(pb.GuildJoin)
async def guild_join(gw: Gateway, player: Player, msg: pb.GuildJoin) -> pb.GuildJoin.Response:
    if guildid_of(player):
        return pb.GuildJoin.Response(code=E.GUILD_ALREADY_IN_GUILD)
    return pb.GuildJoin.Response(code=await _op(gw, player, msg.guild_id, "join"))  # type: ignore[arg-type]


@request(pb.GuildApply)
async def guild_apply(gw: Gateway, player: Player,
                      msg: pb.GuildApply) -> pb.GuildApply.Response:
    if guildid_of(player):
        return pb.GuildApply.Response(code=E.GUILD_ALREADY_IN_GUILD)
    code = await _op(gw, player, msg.guild_id, "apply")
    return pb.GuildApply.Response(code=code,  # type: ignore[arg-type]
                                  joined=code == E.OK and guildid_of(player) == msg.guild_id)


@request(pb.GuildApprove)
async def guild_approve(gw: Gateway, player: Player,
                        msg: pb.GuildApprove) -> pb.GuildApprove.Response:
    code = await _op(gw, player, guildid_of(player), "approve", msg.user_id)
    return pb.GuildApprove.Response(code=code)  # type: ignore[arg-type]


@request(pb.GuildRejectApply)
async def guild_reject(gw: Gateway, player: Player,
                       msg: pb.GuildRejectApply) -> pb.GuildRejectApply.Response:
    code = await _op(gw, player, guildid_of(player), "reject", msg.user_id)
    return pb.GuildRejectApply.Response(code=code)  # type: ignore[arg-type]


@request(pb.GuildLeave)
async def guild_leave(gw: Gateway, player: Player,
                      msg: pb.GuildLeave) -> pb.GuildLeave.Response:
    return pb.GuildLeave.Response(code=await _op(gw, player, guildid_of(player), "leave"))  # type: ignore[arg-type]


@request(pb.GuildKick)
async def guild_kick(gw: Gateway, player: Player, msg: pb.GuildKick) -> pb.GuildKick.Response:
    code = await _op(gw, player, guildid_of(player), "kick", msg.user_id)
    return pb.GuildKick.Response(code=code)  # type: ignore[arg-type]


@request(pb.GuildSetRole)
async def guild_set_role(gw: Gateway, player: Player,
                         msg: pb.GuildSetRole) -> pb.GuildSetRole.Response:
    code = await _op(gw, player, guildid_of(player), "set_role", msg.user_id, int(msg.role))
    return pb.GuildSetRole.Response(code=code)  # type: ignore[arg-type]


@request(pb.GuildTransferLeader)
async def guild_transfer(gw: Gateway, player: Player,
                         msg: pb.GuildTransferLeader) -> pb.GuildTransferLeader.Response:
    code = await _op(gw, player, guildid_of(player), "transfer", msg.user_id)
    return pb.GuildTransferLeader.Response(code=code)  # type: ignore[arg-type]


@request(pb.GuildDisband)
async def guild_disband(gw: Gateway, player: Player,
                        msg: pb.GuildDisband) -> pb.GuildDisband.Response:
    return pb.GuildDisband.Response(code=await _op(gw, player, guildid_of(player), "disband"))  # type: ignore[arg-type]


# -- reading ---------------------------------------------------------------------------


@request(pb.GuildInfo)
async def guild_info(gw: Gateway, player: Player, msg: pb.GuildInfo) -> pb.GuildInfo.Response:
    guildid = msg.guild_id or guildid_of(player)
    if not guildid:
        return pb.GuildInfo.Response(code=E.GUILD_NOT_IN_GUILD)
    try:
        r = await _call_guild(gw, guildid, "view", guildid, player.userid,
                              player.entity.get("name", ""))
    except ClusterError as e:
        return pb.GuildInfo.Response(code=_code_of(e))  # type: ignore[arg-type]
    if r["code"] != E.OK:
        return pb.GuildInfo.Response(code=r["code"])
    return pb.GuildInfo.Response(
        code=E.OK, guild=pb.GuildSummary(**r["guild"]),
        members=[pb.GuildMember(**m) for m in r["members"]],
        applications=[pb.GuildApplication(**a) for a in r["applications"]])


def _region(gw: Gateway, player: Player, region: int) -> int | None:
    sid = region or birth_region(player.userid)
    node = gw.cluster.guild_node(sid)
    return sid if node in gw.cluster.addresses else None


@request(pb.GuildList)
async def guild_list(gw: Gateway, player: Player, msg: pb.GuildList) -> pb.GuildList.Response:
    sid = _region(gw, player, msg.region)
    if sid is None:
        return pb.GuildList.Response(code=E.BAD_REQUEST)
    try:
        found = await _call_guild(gw, sid, "list", msg.offset)
    except ClusterError as e:
        return pb.GuildList.Response(code=_code_of(e))  # type: ignore[arg-type]
    return pb.GuildList.Response(code=E.OK, guilds=[pb.GuildSummary(**g) for g in found])


@request(pb.GuildSearch)
async def guild_search(gw: Gateway, player: Player,
                       msg: pb.GuildSearch) -> pb.GuildSearch.Response:
    sid = _region(gw, player, msg.region)
    if sid is None or not msg.name.strip():
        return pb.GuildSearch.Response(code=E.BAD_REQUEST)
    try:
        found = await _call_guild(gw, sid, "search", msg.name)
    except ClusterError as e:
        return pb.GuildSearch.Response(code=_code_of(e))  # type: ignore[arg-type]
    return pb.GuildSearch.Response(code=E.OK, guilds=[pb.GuildSummary(**g) for g in found])
