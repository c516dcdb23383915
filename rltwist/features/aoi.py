"""Viewport AOI (issue 13 "Viewport AOI"): the wiring of the map view into the nodes.

- map nodes: ``aoiscene`` and ``aoibroadcast`` (:mod:`rltwist.nodes.map.aoi`), hooked to
  the map's rolecache (a logout clears the player's watch, a role node master marks down
  loses its watchers); with the ``worlddebug`` test flag also ``worlddebug``, which
  changes the world directly (tests and benchmarks; never on a production node);
- role nodes: the MapView / MapViewClear requests, sent to the map holding the player's
  city (``cluster.map_node(player.mapid)``), and the ``mapview`` service that writes each
  batch of MapNotify pushes the map sends (one cluster message per role node per batch).

Order: a map numbers the batches it sends to each role node (``seq``) and answers a
watch with the last number sent there (after flushing what waited for that node). While a
player's MapView is in flight, the pushes for that player are held; once the answer and
every batch up to its number have arrived, the held pushes of those batches are written,
then the answer, then the rest — so the client sees every notify computed for the old
view before the answer, and every one computed for the new view after it. A batch that
does not arrive within ``ORDER_WAIT`` (its link broke) does not hold the answer longer.

Rules: :mod:`rltwist.game.aoisystem`; docs/world.md "Viewport".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import test_flag
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.role.agent import ONLINE
from rltwist.nodes.role.requests import request
from rltwist.protocols import REGISTRY, pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode

CALL_TIMEOUT = 5.0
#: seconds an answer waits for the batches sent before it (module docstring)
ORDER_WAIT = 2.0
MAP_NOTIFY = REGISTRY.push_ids[pb.MapNotify]

Held = list[tuple[tuple[str, int], int, bytes]]


class MapViewPush(Service):
    """``mapview`` on role nodes: writes the map's MapNotify batches to the players and
    orders them around MapView answers."""

    name = "mapview"

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.locks = KeyedLock()
        #: (map node, epoch) -> highest batch number received
        self.received: dict[tuple[str, int], int] = {}
        self.waiters: dict[tuple[str, int], list[tuple[int, defer.Deferred[None]]]] = {}
        #: userid -> pushes held while its MapView is in flight
        self.holding: dict[int, Held] = {}
        self.written = 0
        #: userid -> (generation, x, y, width, height) of its current view, renewed when
        #: its map restarts
        self.views: dict[int, tuple[int, int, int, int, int]] = {}

    @handler
    def deliver(self, source: str, epoch: int, seq: int, groups: list[Any]) -> int:
        """Batch *seq* of map node *source*: ``[[body, [[userid, generation], ...]],
        ...]``; write each body to those of its players online here as that instance.
        How many were written."""
        key = (source, epoch)
        players = self.gw.players
        written = 0
        for body, users in groups:
            for userid, generation in users:
                player = players.get(userid)
                if player is None or player.generation != generation \
                        or player.state != ONLINE or player.conn is None:
                    continue
                held = self.holding.get(userid)
                if held is not None:
                    held.append((key, seq, body))
                elif player.conn.push_encoded(MAP_NOTIFY, body):
                    written += 1
        last = self.received.get(key, 0)
        if seq > last + 1 and last:
            # a batch in between never came (its link broke): its players' views are
            # stale in ways nobody can tell, so every view on that map is renewed whole
            log.warn("mapview: batches {first}..{last} of {map} lost; renewing its views",
                     first=last + 1, last=seq - 1, map=source)
            self.gw.node.reactor.callLater(0, self.rewatch, source)
        if seq > last:
            self.received[key] = seq
            waiting = self.waiters.get(key)
            if waiting:
                ready = [d for s, d in waiting if s <= seq]
                waiting[:] = [(s, d) for s, d in waiting if s > seq]
                if not waiting:
                    del self.waiters[key]
                for d in ready:
                    d.callback(None)
        self.written += written
        return written

    async def _reached(self, key: tuple[str, int], seq: int) -> bool:
        """Wait (at most ORDER_WAIT) until batch *seq* of *key* has arrived."""
        if self.received.get(key, 0) >= seq:
            return True
        d: defer.Deferred[None] = defer.Deferred()
        self.waiters.setdefault(key, []).append((seq, d))
        try:
            await d.addTimeout(ORDER_WAIT, self.gw.node.reactor)
            return True
        except defer.TimeoutError:
            waiting = self.waiters.get(key, [])
            waiting[:] = [(s, w) for s, w in waiting if w is not d]
            if not waiting:
                self.waiters.pop(key, None)
            log.warn("mapview: batch {seq} of {map} did not arrive within {t}s; answering",
                     seq=seq, map=key[0], t=ORDER_WAIT)
            return False

    async def ordered(self, player: Player, method: str, *args: Any) -> Any:
        """Call ``aoiscene.<method>(*args)`` on the player's map and return its answer
        once the batches sent before it are written (None: the map did not answer)."""
        userid = player.userid
        node = self.cluster.map_node(player.mapid)
        async with self.locks(userid):
            # the pushes that came after the previous answer are written on the turn
            # after it (_release): wait for that, so they go before this answer too
            for _ in range(10):
                if userid not in self.holding:
                    break
                await task.deferLater(self.gw.node.reactor, 0)
            else:
                self._release(player, self.holding[userid])
            held: Held = []
            self.holding[userid] = held
            release = True
            try:
                try:
                    answer = await self.cluster.call(node, "aoiscene", method, *args,
                                                     timeout=CALL_TIMEOUT)
                except ClusterError as e:
                    log.warn("mapview: {method} of {userid} on {node} failed: {e}",
                             method=method, userid=userid, node=node, e=e)
                    return None
                seq, epoch = int(answer[0]), int(answer[1])
                key = (node, epoch)
                await self._reached(key, seq)
                before = [b for k, s, b in held if k != key or s <= seq]
                held[:] = [(k, s, b) for k, s, b in held if k == key and s > seq]
                self._write(player, before)
                # the answer is written when this coroutine returns (synchronously, by
                # the gateway); what came after it is written on the next turn
                self.gw.node.reactor.callLater(0, self._release, player, held)
                release = False
                return answer
            finally:
                if release and self.holding.get(userid) is held:
                    del self.holding[userid]
                    self._write(player, [b for _, _, b in held])

    @handler
    def rewatch(self, map_node: str) -> int:
        """Map node *map_node* (re)started and knows no watchers (or a batch of it was
        lost): watch the current view of each player here whose city is on it again and
        push it whole (``MapNotify{reset: true}``). How many are renewed."""
        renewed = 0
        for userid, (generation, x, y, w, h) in list(self.views.items()):
            player = self.gw.players.get(userid)
            if player is None or player.generation != generation or player.state != ONLINE:
                del self.views[userid]  # logged out (or a newer instance)
                continue
            if self.cluster.map_node(player.mapid) != map_node:
                continue
            defer.Deferred.fromCoroutine(self._renew(player, x, y, w, h)).addErrback(
                self._renew_failed, userid)
            renewed += 1
        log.info("mapview: renewing {n} views of {map}", map=map_node, n=renewed)
        return renewed

    def prune(self) -> int:
        """Forget the views of players no longer online here as that instance (they
        logged out; nothing tells this service). How many."""
        players = self.gw.players
        gone = [u for u, (gen, *_) in self.views.items()
                if (p := players.get(u)) is None or p.generation != gen]
        for u in gone:
            del self.views[u]
        return len(gone)

    def _renew_failed(self, failure: Any, userid: int) -> None:
        log.failure("mapview: renewing {userid}'s view failed", failure, userid=userid)

    async def _renew(self, player: Player, x: int, y: int, w: int, h: int) -> None:
        answer = await self.ordered(player, "watch", player.userid, player.generation, x, y,
                                    w, h, self.gw.node.name, True)
        if answer is None:
            return
        r = pb.MapView.Response.FromString(answer[2])
        if r.code != E.OK:
            return
        # written before the pushes held behind the answer (released on the next turn)
        note = pb.MapNotify(map_id=r.info.map_id, reset=True, appeared=r.entities,
                            marches=r.marches)
        self._write(player, [note.SerializeToString()])

    def _release(self, player: Player, held: Held) -> None:
        if self.holding.get(player.userid) is not held:
            return  # written already
        del self.holding[player.userid]
        self._write(player, [b for _, _, b in held])

    def _write(self, player: Player, bodies: list[bytes]) -> None:
        conn = player.conn
        if not bodies or conn is None or player.state != ONLINE:
            return
        for body in bodies:
            if conn.push_encoded(MAP_NOTIFY, body):
                self.written += 1


def _service(gw: Gateway) -> MapViewPush:
    return gw.cluster.services["mapview"]  # type: ignore[return-value]


@request(pb.MapView)
async def map_view(gw: Gateway, player: Player, msg: Any) -> Any:
    """Watch a rectangle of the player's city's map (rltwist.nodes.map.aoi)."""
    answer = await _service(gw).ordered(
        player, "watch", player.userid, player.generation, msg.x, msg.y, msg.width,
        msg.height, gw.node.name)
    if answer is None:
        return pb.MapView.Response(code=E.RETRY_LATER)
    response = pb.MapView.Response.FromString(answer[2])
    if response.code == E.OK:
        svc = _service(gw)
        svc.views[player.userid] = (player.generation, msg.x, msg.y, msg.width, msg.height)
        if len(svc.views) > 2 * len(gw.players) + 100:
            svc.prune()
    return response


@request(pb.MapViewClear)
async def map_view_clear(gw: Gateway, player: Player, msg: Any) -> Any:
    """Stop watching the map (the watch also ends at logout)."""
    answer = await _service(gw).ordered(player, "unwatch", player.userid,
                                        player.generation)
    if answer is None:
        return pb.MapViewClear.Response(code=E.RETRY_LATER)
    _service(gw).views.pop(player.userid, None)
    return pb.MapViewClear.Response(code=E.OK)


def install(node: Node) -> None:
    """Register the viewport services of *node*'s kind."""
    kind = node.me.kind
    if kind == "map":
        from rltwist.nodes.map.aoi import install_aoi
        from rltwist.nodes.map.world import world_of

        world = world_of(node)
        install_aoi(node, world)
        if test_flag("worlddebug"):
            from rltwist.nodes.map.aoi import WorldDebug

            node.cluster.register(WorldDebug(world))
    elif kind == "role":
        gw = node.cluster.services.get("gateway")
        if gw is None:
            raise RuntimeError(f"{node.name}: no gateway for the mapview service")
        node.cluster.register(MapViewPush(gw))  # type: ignore[arg-type]
