"""Moving a city to another region's map (issue 14 "Move city"; docs/world.md "Moving a
city"): wiring.

- map nodes: the ``movecity`` service (``rltwist.nodes.map.movecity``: the saga owned by
  the source map, the player's move ledger, the target side's reserve/commit), loaded
  after the world and resuming unfinished sagas;
- role nodes: ``MoveCity`` — checks (``rltwist.game.movecitysystem``), then the move's
  request id is kept on the player (attribute ``movecity``, saved) and the source map is
  asked to start the saga (idempotent by that id) and waited for; once the source map
  answers OK the move is pulled from its ledger (``mapid`` = target, cost taken, request
  id cleared: one saved write) and the rolecaches of both maps are told. After every
  Auth the move ledger of the player's map is pulled (a move finished while it was
  offline), the previous map's move ledger is looked at too (a move whose confirm a
  crash lost), and a move still pending is asked about again. ``movecitypull`` lets the
  source map tell an online player's role node to pull.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.transfer import BadTransfer, Receiver
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
CALL_TIMEOUT = 5.0
ROLEDB = "roledb"

move_system = import_system("rltwist.game.movecitysystem", service="gateway")


def _tables() -> Mapping[str, Any] | None:
    from rltwist.nodes.common.sharedatad import tables_or_none

    table: Mapping[str, Any] | None = (tables_or_none() or {}).get("movecity")
    return table


def _apply(entity: Entity, entry: dict[str, Any]) -> None:
    if entry.get("kind") != "movecity":
        raise BadTransfer(f"transfer {entry.get('id')}: unknown kind {entry.get('kind')!r}")
    try:
        move_system.apply_moved(entity, entry.get("items") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise BadTransfer(f"transfer {entry.get('id')}: {e}") from None


_receivers: dict[int, Receiver] = {}


def receiver_of(source: int) -> Receiver:
    """The receiver of map *source*'s move ledger (one per source map: see
    ``rltwist.nodes.map.movecity.ledger_name``); its crash points are
    ``after_movecity_take`` / ``after_movecity_apply``."""
    from rltwist.nodes.map.movecity import ledger_name

    found = _receivers.get(source)
    if found is None:
        found = _receivers[source] = Receiver(ledger_name(source), _apply, step="movecity")
    return found


async def pull_move(gw: Gateway, player: Player, source: int | None = None) -> bool:
    """Pull the player's move from the move ledger of map *source* (default: its map,
    the source of a move not taken yet); True if a move was applied now. When ``mapid``
    changed: tell the rolecaches of both maps."""
    from rltwist.nodes.role.transfers import pull_from

    before = player.mapid
    source = before if source is None else source
    pulled = await pull_from(gw, player, receiver_of(source), gw.cluster.map_node(source),
                             "movecity", "city move")
    if pulled is None or not pulled.applied:
        return False
    after = player.mapid
    log.info("{userid}: city moved from map {src} to map {dst}", userid=player.userid,
             src=before, dst=after)
    if after != before:
        cluster = gw.cluster
        for node, what in ((cluster.map_node(before), "clear"),
                           (cluster.map_node(after), "set")):
            if node in cluster.addresses:
                try:
                    cluster.send(node, "rolecache", what, player.userid, gw.node.name,
                                 player.generation)
                except ClusterError as e:
                    log.warn("cannot tell {node} rolecache about {userid}: {e}", node=node,
                             userid=player.userid, e=e)
    return True


async def _ask(gw: Gateway, player: Player, pending: Mapping[str, Any]) -> int:
    """Ask the source map about move *pending* (starting it if new); pull it on OK.
    The answer code (RETRY_LATER while the move is under way)."""
    entity = player.entity
    src = int(pending["src"])
    try:
        ans: dict[str, Any] = await gw.cluster.call(
            gw.cluster.map_node(src), "movecity", "start", player.userid, player.generation,
            pending["req"], int(pending["target"]), int(pending["x"]), int(pending["y"]),
            dict(pending.get("cost") or {}), timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("move of {userid}: map {src} did not answer: {e}", userid=player.userid,
                 src=src, e=e)
        return int(E.RETRY_LATER)
    code = int(ans["code"])
    if code == E.RETRY_LATER:
        # an earlier move not taken yet holds up this one: take it now (cheap when there
        # is nothing: the source map answered, and its ledger is empty while a saga runs)
        await pull_move(gw, player, src)
        return code
    if code == E.OK:
        if player.mapid == src:
            await pull_move(gw, player)
        if player.mapid == src:  # not applied yet: the next request or Auth pulls it
            return int(E.RETRY_LATER)
        return code
    current = entity.get("movecity")
    if current and current.get("req") == pending["req"]:
        entity["movecity"] = None  # refused: a new move may start
        await gw.saver.save([(entity, player.generation)])
    return code


async def _pull_march_returns(gw: Gateway, player: Player) -> None:
    """Take what came home from marches on the city's map before the city leaves it (the
    march feature's pull, when that feature is installed): the returns' ledger is on the
    source map and later pulls go to the new one."""
    import importlib

    try:
        marches = importlib.import_module("rltwist.features.marches")
    except ImportError:
        return
    await marches.pull_returns(gw, player)


async def move_city(gw: Gateway, player: Player, msg: pb.MoveCity) -> pb.MoveCity.Response:
    """MoveCity (proto/region.proto)."""
    from rltwist.nodes.map.movecity import new_request_id

    entity = player.entity
    pending = entity.get("movecity")
    if not pending and int(msg.target_sid) == player.mapid:
        # the city is there already: a retry of a move that finished meanwhile (the
        # answer was lost) gets OK, not a refusal; nothing moves
        return await _answer_city(gw, player)
    if not pending:
        cost = move_system.cost(_tables())
        target, x, y = int(msg.target_sid), int(msg.x), int(msg.y)
        code = move_system.check_start(entity, player.mapid, target, x, y, cost)
        if code == E.MOVE_NO_RESOURCES and target > 0 \
                and gw.cluster.map_node(target) not in gw.cluster.addresses:
            code = int(E.MOVE_BAD_REGION)  # an unknown region is the first thing to say
        if not code and gw.cluster.map_node(target) not in gw.cluster.addresses:
            code = int(E.MOVE_BAD_REGION)
        if code:
            return pb.MoveCity.Response(code=code)
        await _pull_march_returns(gw, player)
        await pull_move(gw, player)  # an earlier move not taken yet: src must be right
        if int(msg.target_sid) == player.mapid:
            return await _answer_city(gw, player)
        pending = {"req": new_request_id(), "src": player.mapid, "target": target,
                   "x": x, "y": y, "cost": cost}
        entity["movecity"] = pending
        report = await gw.saver.save([(entity, player.generation)])
        if not report.ok:
            entity["movecity"] = None
            return pb.MoveCity.Response(code=E.RETRY_LATER)
        crashpoint("movecity_request_saved")  # kept on the player, not sent yet
    code = await _ask(gw, player, dict(pending))
    if code != E.OK:
        return pb.MoveCity.Response(code=code)  # type: ignore[arg-type]
    return await _answer_city(gw, player)


async def _answer_city(gw: Gateway, player: Player) -> pb.MoveCity.Response:
    """OK with the player's map and its city there (read from that map)."""
    entity = player.entity
    resp = pb.MoveCity.Response(code=E.OK, map_id=player.mapid)
    try:
        ans = await gw.cluster.call(gw.cluster.map_node(player.mapid), "world", "ensure_city",
                                    player.userid, entity.get("name") or "",
                                    int(entity.get("guildid") or 0), timeout=CALL_TIMEOUT)
        if ans.get("code") == E.OK:
            resp.city.CopyFrom(pb.MapEntity.FromString(ans["city"]))
    except ClusterError as e:  # the move is done; MapMyCity shows the city later
        log.warn("move of {userid}: city not read back: {e}", userid=player.userid, e=e)
    return resp


async def move_after_auth(gw: Gateway, player: Player) -> None:
    """After Auth: pull a move finished while the player was offline; ask again about
    a move still pending (bounded: the source map answers within its wait)."""
    await pull_move(gw, player)
    prev = int(player.entity.get("prevmapid") or 0)
    if prev and prev != player.mapid:
        # a move applied and saved whose confirm was lost (a crash): the source still
        # holds the entry; this pull skips it (applied already) and confirms it away
        await pull_move(gw, player, prev)
    pending = player.entity.get("movecity")
    if pending:
        await _ask(gw, player, dict(pending))


class MoveCityPull(Service):
    """``movecitypull`` on role nodes: the source map finished an online player's move."""

    name = "movecitypull"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    @handler
    async def pull(self, userid: int) -> bool:
        """True if a move was applied now (False: offline here, or nothing to take)."""
        from rltwist.nodes.role.agent import ONLINE

        player = self.gw.players.get(userid)
        if player is None or player.state != ONLINE:
            return False
        return await pull_move(self.gw, player)


def _install_map(node: Node) -> None:
    from rltwist.nodes.common.dbproxy import region_db
    from rltwist.nodes.common.playerfence import PlayerFence
    from rltwist.nodes.map.movecity import MoveCity
    from rltwist.nodes.map.world import world_of

    world = world_of(node)
    backend = node.database(region_db(node.me.number or 0))
    fence = PlayerFence(node.database(ROLEDB), registry=node.registry)
    svc = MoveCity(node, world, backend, fence=fence, clock=node.reactor,
                   registry=node.registry)
    svc.saver.setServiceParent(node)
    node.cluster.register(svc)

    async def load() -> None:
        n = await svc.load()
        log.info("{node}: move-city sagas loaded, {n} unfinished", node=node.name, n=n)
        svc.resume_all()

    def start() -> None:
        defer.Deferred.fromCoroutine(load()).addErrback(
            lambda f: log.failure("{node}: move-city sagas not loaded", f, node=node.name))

    world.ready.addCallback(lambda _: start())

    async def stop() -> None:
        # the shutdown phase: no new step starts (a saga stopped between steps resumes at
        # the next start from its stored step)
        svc.stopping = True

    node.add_shutdown_handler("movecity", stop)


def install(node: Node) -> None:
    """Map nodes: the ``movecity`` service. Role nodes: MoveCity, the after-Auth pull and
    ``movecitypull``."""
    kind = node.me.kind
    if kind == "map":
        _install_map(node)
    elif kind == "role":
        from rltwist.nodes.role.requests import after_auth, request

        request(pb.MoveCity)(move_city)
        after_auth(move_after_auth)
        gw = node.cluster.services.get("gateway")
        if gw is not None:
            node.cluster.register(MoveCityPull(gw))  # type: ignore[arg-type]
