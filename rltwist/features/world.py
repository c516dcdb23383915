"""The world map (issue 13 "World"): wiring of the map's ``world`` service and of the
player's city.

- map nodes: the ``world`` service (``rltwist.nodes.map.world``: the map's entities,
  their persistence, the refresh timer), created here unless another map feature asked
  for it first (``world_of``);
- role nodes: after every Auth the player's city is made sure of — a player without a
  ``mapid`` gets a city on its birth region's map (``world.ensure_city``, stored before
  it answers) and the map's id in ``mapid`` (saved); a player with one has the name and
  guild shown on its city refreshed (best effort), and again whenever the name or the
  guild changes (a rename, a guild joined or left). ``MapMyCity`` answers the city and
  its map's MapInfo.

Rules: ``rltwist.game.worldsystem``; docs/world.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
CALL_TIMEOUT = 5.0


async def ensure_city(gw: Gateway, player: Player) -> dict[str, Any] | None:
    """Ask the player's map for its city (placed there if it has none); record the map
    in the player's ``mapid`` and save the player. None if the map did not answer."""
    entity = player.entity
    node = gw.cluster.map_node(player.mapid)
    if node not in gw.cluster.addresses:  # a cluster without that map (or region)
        return None
    try:
        answer: dict[str, Any] = await gw.cluster.call(
            node, "world", "ensure_city", player.userid, entity.get("name") or "",
            int(entity.get("guildid") or 0), timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("city of {userid}: {node} did not answer: {error}", userid=player.userid,
                 node=node, error=e)
        return None
    if answer.get("code") == E.OK and entity.get("mapid") != answer["map_id"]:
        entity["mapid"] = int(answer["map_id"])
        report = await gw.saver.save([(entity, player.generation)])
        if not report.ok:  # kept dirty: the periodic save retries it
            log.warn("city of {userid}: mapid not saved yet: {counts}",
                     userid=player.userid, counts=report.to_dict())
    return answer


async def city_after_auth(gw: Gateway, player: Player) -> None:
    """After Auth: a player without a city gets one (awaited, bounded); one with a city
    has its name and guild refreshed on the map (not awaited)."""
    if player.entity.get("mapid"):
        refresh_city(gw, player)
        return
    await ensure_city(gw, player)


def refresh_city(gw: Gateway, player: Player) -> None:
    """Tell the map of the player's city its current name and guild (a send: best effort;
    every login sends it again)."""
    if not player.entity.get("mapid"):
        return  # no city yet: it is placed with the current name and guild
    node = gw.cluster.map_node(player.mapid)
    if node not in gw.cluster.addresses:
        return
    try:
        gw.cluster.send(node, "world", "refresh_city", player.userid,
                        player.entity.get("name") or "",
                        int(player.entity.get("guildid") or 0))
    except ClusterError as e:
        log.debug("city of {userid}: no refresh at {node}: {error}",
                  userid=player.userid, node=node, error=e)


async def map_my_city(gw: Gateway, player: Player,
                      msg: pb.MapMyCity) -> pb.MapMyCity.Response:
    """MapMyCity: the player's city and its map (placing it if the Auth step could not)."""
    answer = await ensure_city(gw, player)
    if answer is None:
        return pb.MapMyCity.Response(code=E.RETRY_LATER)
    if answer["code"] != E.OK:
        return pb.MapMyCity.Response(code=answer["code"])
    return pb.MapMyCity.Response(code=E.OK, info=pb.MapInfo.FromString(answer["info"]),
                                 city=pb.MapEntity.FromString(answer["city"]))


def install(node: Node) -> None:
    """Register the world's services and requests of *node*'s kind."""
    kind = node.me.kind
    if kind == "map":
        from rltwist.nodes.map.world import world_of

        world_of(node)
    elif kind == "role":
        from rltwist.nodes.role.requests import after_auth, on_shown_change, request

        after_auth(city_after_auth)
        on_shown_change(refresh_city)  # a rename, a guild joined or left
        request(pb.MapMyCity)(map_my_city)
