"""Marches and battle (issue 13): wiring on every node kind involved.

* role nodes: MarchStart, MarchRecall, MarchList, MarchTargets; the after-Auth step (the
  initial troops once, starts a crash left unconfirmed sent again, what came home
  pulled); the ``marchpull`` service a map node tells to pull; transfer kinds ``return``
  (a march's survivors and load) and ``troops`` (a GM grant).
* map nodes: the ``march`` and ``battle`` services (rltwist/nodes/map/marches.py,
  battle.py) over the map's World, the players' march books, the scheduler started once
  the world is loaded and the node's start-order predecessors are up, paused when an
  ordered cluster shutdown begins and at the map's own shutdown.
* master: ``POST /players/<userid>/troops``.

Rules: :mod:`rltwist.game.marchsystem`, :mod:`rltwist.game.battlesystem` (hot-fixable).

Durable start: the troops leave the player and the start is recorded in the player's
``troops.sending`` (saved, fenced) before the map is asked; the map saves the march before
it answers OK (idempotent by the start's transfer id); then the record is dropped. A
record a crash or a timeout left is sent again after the next Auth (and before a
MarchList). What comes home is pulled from the map's ledger through
:func:`rltwist.nodes.role.transfers.pull_from`: credited once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError, Service, handler
from rltwist.cluster.routing import birth_region
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common import transfer
from rltwist.nodes.common.sharedatad import tables_or_none
from rltwist.nodes.common.transfer import BadTransfer, Receiver
from rltwist.nodes.master.gm import GMApi, HTTPError, _cluster_error, _parse_userid
from rltwist.nodes.role.agent import ONLINE, PLAYERS, ROLEDB
from rltwist.nodes.role.requests import after_auth, as_request, request
from rltwist.nodes.role.transfers import pull_from
from rltwist.protocols import pb
from rltwist.storage import StorageError

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode

march_system = import_system("rltwist.game.marchsystem", service="gateway")
role_system = import_system("rltwist.game.rolesystem", service="gateway")

CALL_TIMEOUT = 10.0
START_LEDGER = "rolemarch"
"""Transfer ids of starts: ``rolemarch-<hex>``."""
MAX_MOVE_HOPS = 3
"""A GM troop grant follows the player's city across at most this many moves that its
stored ``mapid`` did not show yet."""
MARCH_TYPES = {pb.MarchType.MARCH_GATHER: "gather", pb.MarchType.MARCH_ATTACK: "attack"}
MAX_RADIUS = 64


def _troops_pb(army: Mapping[str, int]) -> list[Any]:
    return [pb.TroopCount(type=t, count=int(n)) for t, n in sorted(army.items()) if n > 0]


def _info(view: Mapping[str, Any] | None) -> Any:
    from rltwist.nodes.map.marches import info_of_view

    return None if view is None else info_of_view(view)


# -- transfers home ---------------------------------------------------------------------


def _apply(entity: Entity, entry: dict[str, Any]) -> None:
    """Credit a march's way home (troops + load) or a GM troops grant, all or nothing."""
    kind, items = entry.get("kind"), entry.get("items") or {}
    troops = items.get("troops") or {}
    if not isinstance(troops, dict) or any(type(n) is not int or n < 0
                                           for n in troops.values()):
        raise BadTransfer(f"transfer {entry.get('id')}: bad troops {troops!r}")
    if kind == "return":
        load = {k: v for k, v in (items.get("load") or {}).items() if v}
        code = role_system.add_resources(entity, load)
        if code != ErrCode.OK:
            raise BadTransfer(f"transfer {entry.get('id')}: {ErrCode(code).name}")
    elif kind != "troops":
        raise BadTransfer(f"transfer {entry.get('id')}: unknown kind {kind!r}")
    march_system.credit_troops(entity, troops)


receiver = Receiver("march", _apply, step="marchreturn")


async def pull_returns(gw: Gateway, player: Player) -> list[dict[str, Any]]:
    """Pull what came home from the player's map into the entity; the entries applied
    now ([] when the map could not be reached: they stay there for the next pull)."""
    pulled = await pull_from(gw, player, receiver, gw.cluster.map_node(player.mapid),
                             "march", "march returns")
    if pulled is None:
        return []
    for entry in pulled.applied:
        log.info("{userid}: {kind} {id} credited: {items}", userid=player.userid,
                 kind=entry["kind"], id=entry["id"], items=entry["items"])
    return pulled.applied


# -- starting ------------------------------------------------------------------------------


async def _send_start(gw: Gateway, player: Player, tid: str,
                      req: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
    """Ask the map to start the recorded march *tid*; confirm or refund by its answer.
    ``(code, march view)``; on no answer the record stays (sent again later)."""
    entity = player.entity
    node = gw.cluster.map_node(player.mapid)
    try:
        result = await gw.cluster.call(node, "march", "start", player.userid,
                                       player.generation, tid, req, timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("march start {tid} of {userid}: {e}; sent again later", tid=tid,
                 userid=player.userid, e=e)
        return int(E.RETRY_LATER), None
    code = int(result["code"])
    if code == E.OK:
        crashpoint("after_march_start_ok")
        march_system.start_confirmed(entity, tid)
    elif code != E.RETRY_LATER:
        march_system.start_refused(entity, tid)
    if entity.dirty:
        await gw.saver.save([(entity, player.generation)])
    return code, result.get("march")


async def resend_starts(gw: Gateway, player: Player) -> int:
    """Send the starts a crash or a timeout left recorded again; how many were settled
    (confirmed or refunded)."""
    n = 0
    for tid, req in list(march_system.sending(player.entity).items()):
        code, _ = await _send_start(gw, player, tid, dict(req))
        if code != E.RETRY_LATER:
            n += 1
    return n


@request(pb.MarchStart)
async def march_start(gw: Gateway, player: Player,
                      msg: pb.MarchStart) -> pb.MarchStart.Response:
    entity = player.entity
    mtype = MARCH_TYPES.get(msg.type)
    troops: dict[str, int] = {}
    for tc in msg.troops:
        troops[tc.type] = troops.get(tc.type, 0) + tc.count
    if mtype is None or not troops:
        return pb.MarchStart.Response(code=E.BAD_REQUEST)
    req = {"type": mtype, "x": msg.target_x, "y": msg.target_y, "troops": troops}
    tid = transfer.new_transfer_id(START_LEDGER)
    code = march_system.take_for_march(entity, tid, req, tables_or_none())
    if code != E.OK:
        return pb.MarchStart.Response(code=code)
    crashpoint("before_march_take_save")
    if not (await gw.saver.save([(entity, player.generation)])).ok:
        march_system.start_refused(entity, tid)
        return pb.MarchStart.Response(code=E.RETRY_LATER)
    crashpoint("after_march_take_save")
    code, view = await _send_start(gw, player, tid, req)
    return pb.MarchStart.Response(code=cast("pb.ErrorCode", code), march=_info(view),
                                  home_troops=_troops_pb(march_system.home(entity)))


@request(pb.MarchRecall)
async def march_recall(gw: Gateway, player: Player,
                       msg: pb.MarchRecall) -> pb.MarchRecall.Response:
    try:
        result = await gw.cluster.call(gw.cluster.map_node(player.mapid), "march", "recall",
                                       player.userid, player.generation, msg.march_id,
                                       timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("MarchRecall of {userid}: {e}", userid=player.userid, e=e)
        return pb.MarchRecall.Response(code=E.RETRY_LATER)
    return pb.MarchRecall.Response(code=result["code"], march=_info(result.get("march")))


@request(pb.MarchList)
async def march_list(gw: Gateway, player: Player, msg: pb.MarchList) -> pb.MarchList.Response:
    if march_system.sending(player.entity):
        await resend_starts(gw, player)
    try:
        found = await gw.cluster.call(gw.cluster.map_node(player.mapid), "march", "list",
                                      player.userid, timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("MarchList of {userid}: {e}", userid=player.userid, e=e)
        return pb.MarchList.Response(code=E.RETRY_LATER)
    city = pb.MapEntity.FromString(found["city"]) if found.get("city") else None
    return pb.MarchList.Response(
        code=E.OK, home_troops=_troops_pb(march_system.home(player.entity)),
        marches=[_info(v) for v in found["marches"]], city=city)


@request(pb.MarchTargets)
async def march_targets(gw: Gateway, player: Player,
                        msg: pb.MarchTargets) -> pb.MarchTargets.Response:
    if not 0 < msg.radius <= MAX_RADIUS:
        return pb.MarchTargets.Response(code=E.BAD_REQUEST)
    try:
        found = await gw.cluster.call(gw.cluster.map_node(player.mapid), "march", "targets",
                                      msg.x, msg.y, msg.radius,
                                      player.userid if msg.around_city else 0,
                                      timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("MarchTargets of {userid}: {e}", userid=player.userid, e=e)
        return pb.MarchTargets.Response(code=E.RETRY_LATER)
    if found is None:  # no city (yet): nothing around it
        return pb.MarchTargets.Response(code=E.OK)
    return pb.MarchTargets.Response(code=E.OK,
                                    targets=[pb.MapEntity.FromString(b) for b in found])


# -- after Auth, pulls -------------------------------------------------------------------


@after_auth
async def resume_marches(gw: Gateway, player: Player) -> None:
    """The initial troops (once, saved now), then in the background: unconfirmed starts
    sent again, what came home while offline pulled."""
    if march_system.give_initial(player.entity, tables_or_none()):
        await gw.saver.save([(player.entity, player.generation)])

    async def resume() -> None:
        if march_system.sending(player.entity):
            await resend_starts(gw, player)
        await pull_returns(gw, player)

    defer.Deferred.fromCoroutine(as_request(player, resume())).addErrback(
        lambda f: log.failure("march resume of {userid} failed", f, userid=player.userid))


class MarchPull(Service):
    """``marchpull`` on role nodes: a map node recorded something coming home for an
    online player here; pull it now."""

    name = "marchpull"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    @handler
    async def pull(self, userid: int) -> list[str] | None:
        """The ids applied now; None when the player is not online here."""
        player = self.gw.players.get(userid)
        if player is None or player.state != ONLINE:
            return None
        applied = await as_request(player, pull_returns(self.gw, player))
        return [e["id"] for e in applied]


# -- GM ---------------------------------------------------------------------------------


@GMApi.app.route("/players/<userid>/troops", methods=["POST"])
async def gm_grant_troops(self: GMApi, request: IRequest, userid: str) -> bytes:
    """``POST /players/<userid>/troops {"troops": {"infantry": 100}, "key": "k"}``: give
    a player troops, online or offline (a transfer recorded on the map of the player's
    city, durable when this answers 200; credited once, at once when online, else at
    the next login). Retry with the same ``key`` after a failure: given once."""

    async def grant() -> dict[str, Any]:
        uid = _parse_userid(userid)
        body = self._body(request, required=("troops",))
        unknown = sorted(set(body) - {"troops", "key", "timeout"})
        if unknown:
            raise HTTPError(400, "bad_field", f"unknown fields {unknown}; use troops, key",
                            field=unknown[0])
        troops, key = body["troops"], body.get("key")
        if not isinstance(troops, dict) or not troops or not all(
                isinstance(t, str) and type(n) is int and n > 0 for t, n in troops.items()):
            raise HTTPError(400, "bad_troops", "troops maps troop types to positive counts",
                            field="troops")
        if key is not None and (not isinstance(key, str) or not key.isalnum()
                                or len(key) > 64):
            raise HTTPError(400, "bad_key", "key is 1-64 letters or digits", field="key")
        timeout = self._timeout(body, default=CALL_TIMEOUT)
        node = self.node
        try:
            known = await node.database(ROLEDB).get_entity(PLAYERS, uid)
        except StorageError as e:
            raise HTTPError(503, "unavailable", f"cannot read the role database: {e}") from None
        if known is None:
            raise HTTPError(404, "unknown_player", f"no player {uid}", userid=uid)
        mapid = (known.doc.get("attrs") or {}).get("mapid") or birth_region(uid)
        target = node.cluster.map_node(int(mapid))
        for _ in range(MAX_MOVE_HOPS):
            try:
                result = await node.cluster.call(target, "march", "grant_troops", uid, troops,
                                                 key, timeout=timeout)
            except ClusterError as e:
                status, payload = _cluster_error(e)
                raise HTTPError(status, payload.pop("error"), payload.pop("message"),
                                **payload) from None
            moved = int(result.get("moved_to") or 0)
            if not moved:
                break
            # the stored mapid was older than the city's move: follow it
            target = node.cluster.map_node(moved)
        if result["code"] == E.BAD_REQUEST:
            raise HTTPError(400, "bad_troops", "unknown troop type", field="troops")
        if result["code"] != E.OK:
            raise HTTPError(503, "unavailable", f"{target} could not save the grant; retry "
                            "with the same key")
        log.info("GM troops to {userid} on {node}: {troops} ({tid})", userid=uid,
                 node=target, troops=troops, tid=result["transfer_id"])
        return {"userid": uid, "node": target, "transfer_id": result["transfer_id"]}

    return await self._guard(request, grant)


# -- install ------------------------------------------------------------------------------


def install(node: Any) -> None:
    """Role nodes: the transfer kinds and ``marchpull``. Map nodes: the march and battle
    services (see the module docstring)."""
    kind = node.me.kind
    if kind == "role":
        gw = node.cluster.services.get("gateway")
        if gw is not None:
            node.cluster.register(MarchPull(gw))
    elif kind == "map":
        _install_map(node)


def _install_map(node: Any) -> None:
    from rltwist.nodes.common.dbproxy import region_db
    from rltwist.nodes.common.playerfence import PlayerFence
    from rltwist.nodes.map.battle import Battle
    from rltwist.nodes.map.marches import Books, MarchService
    from rltwist.nodes.map.world import world_of

    world = world_of(node)
    books = Books(node.database(region_db(node.me.number or 0)), node.reactor,
                  interval=node.config.storage.save_interval, registry=node.registry)
    books.saver.setServiceParent(node)  # periodic saves, and a final flush at stop
    fence = PlayerFence(node.database(ROLEDB), registry=node.registry)
    service = MarchService(node, world, fence=fence, books=books)
    node.cluster.register(service)
    node.cluster.register(Battle(node, world.map_id))

    loaded: defer.Deferred[None] = defer.Deferred()

    def on_loaded(_: Any) -> None:
        n = service.load()
        log.info("{node}: {n} marches in flight loaded", node=node.name, n=n)
        loaded.callback(None)

    world.ready.addCallback(on_loaded).addErrback(
        lambda f: log.failure("{node}: marches not loaded", f, node=node.name))

    def start() -> None:
        # not awaited by the ready hook: a world that loads late holds up no other hook
        loaded.addCallback(lambda _: None if service.stopping else service.scheduler.start())

    def pause() -> None:
        service.stopping = True
        service.scheduler.pause()

    async def stop() -> None:
        pause()
        await service.scheduler.drained()
        await books.saver.flush()

    node.add_ready_hook(start)
    node.add_shutdown_handler("marches", stop)
    node.add_cluster_stopping_hook(pause)
