"""Viewport AOI on ``map<sid>`` (issue 13 "Viewport AOI"): services ``aoiscene`` (who
watches which blocks) and ``aoibroadcast`` (the batched pushes).

    aoiscene.watch(userid, generation, x, y, w, h, role_node) -> [seq, epoch, answer]
    aoiscene.unwatch(userid, generation=None)                 -> [seq, epoch]
    aoiscene.drop_node(role_node)                             -> watchers dropped
    aoiscene.count()                                          -> watchers

``watch`` answers the encoded ``MapView.Response`` (the snapshot of the blocks that
became visible) for the player's instance *generation* online on *role_node*; a watch of
an older generation than the one watching is refused (RETRY_LATER), one of a newer
generation or from another node replaces it (relogin). The scene listens to the map's
:class:`~rltwist.nodes.map.state.WorldState`: each change marks, on every watcher of the
blocks it concerns, the entity or line as touched; nothing is encoded then.

``aoibroadcast`` flushes the touched watchers every ``FLUSH_INTERVAL`` seconds after the
first change of a batch, or as soon as ``FLUSH_TOUCHES`` touches are waiting: per watcher
one MapNotify with, for each touched entity or line, its current state if the watcher
sees it now, else its id as gone (rules: :mod:`rltwist.game.aoisystem`). Watchers are
grouped by role node: one ``mapview.deliver(map_node, epoch, seq, groups)`` cluster
message per role node per batch, never one per watcher, with ``groups`` =
``[[body, [[userid, generation], ...]], ...]`` (watchers sent the same content share one
encoded body). *seq* counts the batches sent to that role node (per *epoch*, a number
drawn when the service starts): ``watch`` first flushes the batch waiting for the
watcher's node, then answers the last *seq* sent there, so the role node writes every
notify meant for the old view before the answer and every later one after it
(rltwist/features/aoi.py).

A map node that (re)starts asks every role node to renew its players' watches
(``mapview.rewatch``): each role node watches their last view again (``renew``) and pushes
the whole view as a ``MapNotify{reset: true}``.

Watchers go when the player logs out (the rolecache of this map clears the player), when
master marks their role node down (the rolecache's ``node_down``), or on MapViewClear.
"""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet import task
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.reach import role_nodes
from rltwist.nodes.map.state import APPEAR, MARCH, MARCH_END, entity_pb, march_pb
from rltwist.protocols import REGISTRY, pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.map.world import World

log = Logger()
E = pb.ErrorCode

aoi = import_system("rltwist.game.aoisystem", service="aoiscene")

#: seconds a batch collects changes after its first one (change-to-client latency adds
#: up to this much; fewer, larger cluster messages)
FLUSH_INTERVAL = 0.025
#: touches (entity or line changes x watchers) that flush a batch at once
FLUSH_TOUCHES = 5000
MAP_NOTIFY = REGISTRY.push_ids[pb.MapNotify]


class Watcher:
    """One player's view: its instance, role node, blocks, and what changed since the
    last batch (entity / march id -> True when its first change was an appearance)."""

    __slots__ = ("blocks", "ents", "generation", "marches", "node", "userid")

    def __init__(self, userid: int, generation: int, node: str) -> None:
        self.userid = userid
        self.generation = generation
        self.node = node
        self.blocks: frozenset[int] = frozenset()
        self.ents: dict[int, bool] = {}
        self.marches: dict[int, bool] = {}


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (a sub-message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


#: MapNotify field numbers (proto/map.proto); the body of a batch is built by joining
#: encoded fields, each entity / line encoded once per batch however many watch it
F_MAP_ID, F_APPEARED, F_UPDATED, F_DISAPPEARED, F_MARCHES, F_ENDED = 1, 2, 3, 4, 5, 6
_T_DISAPPEARED = _varint(F_DISAPPEARED << 3)
_T_ENDED = _varint(F_ENDED << 3)


class AoiBroadcast(Service):
    """``aoibroadcast``: the touched watchers, flushed in batches, one cluster message per
    role node per batch."""

    name = "aoibroadcast"

    def __init__(self, node: Node, world: World) -> None:
        self.node = node
        self.world = world
        self.reactor = node.reactor
        self.dirty: set[Watcher] = set()
        self.touches = 0
        self.timer: Any = None
        #: batches sent per role node in this epoch (the order the role node checks)
        self.seq: dict[str, int] = {}
        self.epoch = int.from_bytes(os.urandom(6), "big")
        self.batches = 0
        self.deliveries = 0
        registry = getattr(node, "registry", None) or CollectorRegistry()
        self.batches_total = Counter("rl_aoi_batches", "MapNotify batches sent to role "
                                     "nodes (one message per role node per batch)",
                                     registry=registry)
        self.deliveries_total = Counter("rl_aoi_deliveries", "MapNotify pushes sent "
                                        "(one per watcher per batch)", registry=registry)
        self.watchers_gauge = Gauge("rl_aoi_watchers", "Players watching this map",
                                    registry=registry)

    def touched(self, n: int) -> None:
        """*n* touches were added to ``dirty``: flush now if too many wait, else within
        ``FLUSH_INTERVAL``."""
        self.touches += n
        if self.touches >= FLUSH_TOUCHES:
            self.flush()
        elif self.timer is None and self.dirty:
            self.timer = self.reactor.callLater(FLUSH_INTERVAL, self._timed)

    def _timed(self) -> None:
        self.timer = None
        self.flush()

    def forget(self, watcher: Watcher) -> None:
        """*watcher* goes: what it had waiting is not sent."""
        self.dirty.discard(watcher)
        watcher.ents.clear()
        watcher.marches.clear()

    def flush(self, only_node: str | None = None) -> int:
        """Send the waiting batch (of the watchers on *only_node*, when given): one
        ``mapview.deliver`` per role node. How many role nodes were sent one."""
        if only_node is None:
            dirty, self.dirty = self.dirty, set()
            self.touches = 0
            if self.timer is not None:
                if self.timer.active():
                    self.timer.cancel()
                self.timer = None
        else:
            dirty = {w for w in self.dirty if w.node == only_node}
            self.dirty -= dirty
        if not dirty:
            return 0
        state = self.world.state
        head = _varint(F_MAP_ID << 3) + _varint(self.world.map_id)
        ents: dict[int, bytes | None] = {}
        lines: dict[int, bytes | None] = {}
        by_node: dict[str, dict[bytes, list[list[int]]]] = {}
        taken: dict[str, list[tuple[Watcher, dict[int, bool], dict[int, bool]]]] = {}
        for w in dirty:
            body = self._body(w, state, head, ents, lines)
            taken.setdefault(w.node, []).append((w, w.ents, w.marches))
            w.ents, w.marches = {}, {}
            if body is not None:
                by_node.setdefault(w.node, {}).setdefault(body, []).append(
                    [w.userid, w.generation])
        sent = 0
        me = self.node.name
        for node, bodies in by_node.items():
            seq = self.seq.get(node, 0) + 1
            groups = [[body, users] for body, users in bodies.items()]
            try:
                self.cluster.send(node, "mapview", "deliver", me, self.epoch, seq, groups)
            except ClusterError as e:
                # not lost: marked again and sent with the next batch (a node master
                # marks down loses its watchers, and this with them)
                log.warn("aoi: cannot send a batch to {node} ({n} watchers): {e}; "
                         "retried with the next batch", node=node,
                         n=sum(len(u) for u in bodies.values()), e=e)
                self._requeue(taken.get(node, []))
                continue
            self.seq[node] = seq
            told = sum(len(u) for u in bodies.values())
            self.batches += 1
            self.deliveries += told
            self.batches_total.inc()
            self.deliveries_total.inc(told)
            sent += 1
        return sent

    def _requeue(self, items: list[tuple[Watcher, dict[int, bool], dict[int, bool]]]) -> None:
        for w, ents, marches in items:
            for key, appeared in ents.items():
                w.ents.setdefault(key, appeared)
            for key, appeared in marches.items():
                w.marches.setdefault(key, appeared)
            self.dirty.add(w)
        if self.timer is None and self.dirty:
            self.timer = self.reactor.callLater(FLUSH_INTERVAL, self._timed)

    def _body(self, w: Watcher, state: Any, head: bytes, ents: dict[int, bytes | None],
              lines: dict[int, bytes | None]) -> bytes | None:
        """The encoded MapNotify of watcher *w*, or None when it has nothing to say."""
        parts = [head]
        blocks = w.blocks
        for eid, appeared in w.ents.items():
            entity = aoi.entity_visible(state, eid, blocks)
            if entity is None:
                parts.append(_T_DISAPPEARED + _varint(eid))
                continue
            enc = ents.get(eid)
            if enc is None:
                enc = ents[eid] = entity_pb(entity).SerializeToString()
            parts.append(_field(F_APPEARED if appeared else F_UPDATED, enc))
        for mid in w.marches:
            march = aoi.march_visible(state, mid, blocks)
            if march is None:
                parts.append(_T_ENDED + _varint(mid))
                continue
            enc = lines.get(mid)
            if enc is None:
                enc = lines[mid] = march_pb(march).SerializeToString()
            parts.append(_field(F_MARCHES, enc))
        return b"".join(parts) if len(parts) > 1 else None

    @handler
    def stats(self) -> dict[str, Any]:
        """Counters (benchmarks, operators): batches and deliveries sent, watchers."""
        return {"batches": self.batches, "deliveries": self.deliveries,
                "waiting": len(self.dirty)}


class AoiScene(Service):
    """``aoiscene``: the watchers of the map's blocks, and the world listener that turns
    every change into touches of those watchers."""

    name = "aoiscene"

    def __init__(self, node: Node, world: World, broadcast: AoiBroadcast) -> None:
        self.node = node
        self.world = world
        self.broadcast = broadcast
        self.watchers: dict[int, Watcher] = {}
        self.by_block: dict[int, set[Watcher]] = {}
        world.state.listeners.append(self.on_change)
        broadcast.watchers_gauge.set_function(lambda: len(self.watchers))

    # -- the world's changes ------------------------------------------------------------

    def on_change(self, event: str, entity: Entity, blocks: frozenset[int]) -> None:
        """A WorldState listener: mark *entity* touched on the watchers of *blocks*."""
        eid = int(entity.id)
        is_march = event == MARCH or event == MARCH_END
        appear = event == APPEAR
        by_block = self.by_block
        dirty = self.broadcast.dirty
        n = 0
        for b in blocks:
            ws = by_block.get(b)
            if not ws:
                continue
            for w in ws:
                touched = w.marches if is_march else w.ents
                if eid not in touched:
                    touched[eid] = appear
                    dirty.add(w)
                    n += 1
        if n:
            self.broadcast.touched(n)

    # -- watchers -----------------------------------------------------------------------

    def info(self) -> Any:
        state = self.world.state
        return pb.MapInfo(map_id=self.world.map_id, width=state.width, height=state.height,
                          seed=int(getattr(self.world, "seed", 0) or 0), block=state.block)

    def _index(self, w: Watcher, blocks: frozenset[int]) -> None:
        for b in w.blocks - blocks:
            ws = self.by_block.get(b)
            if ws is not None:
                ws.discard(w)
                if not ws:
                    del self.by_block[b]
        for b in blocks - w.blocks:
            self.by_block.setdefault(b, set()).add(w)
        w.blocks = blocks

    def _drop(self, w: Watcher) -> None:
        self._index(w, frozenset())
        self.broadcast.forget(w)
        if self.watchers.get(w.userid) is w:
            del self.watchers[w.userid]

    @handler
    async def watch(self, userid: int, generation: int, x: int, y: int, width: int,
                    height: int, role_node: str, renew: bool = False) -> list[Any]:
        """Watch the view [x, x + width) x [y, y + height) for *userid*'s instance
        *generation* on *role_node*: ``[seq, epoch, MapView.Response bytes]``, *seq* the
        last batch sent to *role_node* before the answer (module docstring). *renew*:
        answer the whole view as if it were the first (the role node renews its players'
        watches after this node restarted)."""
        for v in (userid, generation):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError("userid and generation are non-negative ints")
        if not isinstance(role_node, str) or not role_node:
            raise ValueError("role_node must be a node name")
        await self.world.ready
        bc = self.broadcast
        state = self.world.state
        code, blocks = aoi.view_blocks(x, y, width, height, state)
        old = self.watchers.get(userid)
        if code == E.OK and old is not None and generation < old.generation:
            log.info("aoi: watch of {userid} generation {gen} refused: {cur} watches",
                     userid=userid, gen=generation, cur=old.generation)
            code = E.RETRY_LATER
        if code != E.OK:
            return [bc.seq.get(role_node, 0), bc.epoch,
                    pb.MapView.Response(code=code).SerializeToString()]
        if old is not None and old.generation == generation and old.node == role_node \
                and not renew:
            # what waits for this node was computed against the old view: it goes first
            bc.flush(role_node)
            w = old
        else:
            if old is not None:  # a newer instance (relogin), maybe on another node
                self._drop(old)
            w = self.watchers[userid] = Watcher(userid, generation, role_node)
        added, removed, kept = aoi.view_move(w.blocks, blocks)
        self._index(w, blocks)
        entities, marches = aoi.snapshot(state, added, kept)
        answer = pb.MapView.Response(
            code=E.OK, info=self.info(), blocks=sorted(blocks), added_blocks=sorted(added),
            removed_blocks=sorted(removed), entities=[entity_pb(e) for e in entities],
            marches=[march_pb(m) for m in marches],
            removed_marches=aoi.dropped_marches(state, removed, blocks))
        return [bc.seq.get(role_node, 0), bc.epoch, answer.SerializeToString()]

    @handler
    def unwatch(self, userid: int, generation: int | None = None) -> list[int]:
        """Stop *userid*'s watch (of instance *generation* or older; any without one):
        ``[seq, epoch]`` of its role node as in :meth:`watch`."""
        w = self.watchers.get(userid)
        bc = self.broadcast
        if w is None:
            return [0, bc.epoch]
        if generation is not None and w.generation > generation:
            return [bc.seq.get(w.node, 0), bc.epoch]
        self._drop(w)
        return [bc.seq.get(w.node, 0), bc.epoch]

    @handler
    def drop_node(self, role_node: str) -> int:
        """Drop every watcher on *role_node* (master marked it down). How many."""
        gone = [w for w in self.watchers.values() if w.node == role_node]
        for w in gone:
            self._drop(w)
        if gone:
            log.info("aoi: {n} watchers of {node} dropped (node down)", n=len(gone),
                     node=role_node)
        return len(gone)

    @handler
    def count(self) -> int:
        return len(self.watchers)

    @handler
    def watching(self, userid: int) -> dict[str, Any] | None:
        """A watcher's instance, role node and blocks (tests, operators)."""
        w = self.watchers.get(userid)
        if w is None:
            return None
        return {"generation": w.generation, "node": w.node, "blocks": sorted(w.blocks)}


def install_aoi(node: Node, world: World) -> AoiScene:
    """Register ``aoibroadcast`` and ``aoiscene`` on map *node* and hook them to its
    rolecache (logout clears, node_down)."""
    broadcast = AoiBroadcast(node, world)
    scene = AoiScene(node, world, broadcast)
    node.cluster.register(broadcast)
    node.cluster.register(scene)
    def announce() -> None:
        # a restarted map knows no watchers: the role nodes renew their players' views
        for role in role_nodes(node.cluster):
            try:
                node.cluster.send(role, "mapview", "rewatch", node.name)
            except ClusterError as e:
                log.info("aoi: cannot ask {role} to renew its views: {e}", role=role, e=e)

    if hasattr(node, "add_ready_hook"):
        node.add_ready_hook(announce)
    cache = node.cluster.services.get("rolecache")
    if cache is not None:
        def cleared(userid: int) -> None:
            # the instance that logged out (or older) stops watching; a newer one's
            # watch stays
            scene.unwatch(userid, getattr(cache, "ended", {}).get(userid))

        cache.on_clear.append(cleared)  # type: ignore[attr-defined]
        cache.on_node_down.append(scene.drop_node)  # type: ignore[attr-defined]
    return scene


class WorldDebug(Service):
    """``worlddebug`` (only with the ``worlddebug`` test flag): changes the map's world
    directly, so tests and bench/world.py can make entities and march lines appear,
    change, move and go without the world and march features' rules. Never registered
    on a production node."""

    name = "worlddebug"

    def __init__(self, world: World) -> None:
        self.world = world
        self.churning: Any = None
        self.changes = 0

    @property
    def state(self) -> Any:
        return self.world.state

    @handler
    def add(self, attrs: dict[str, Any]) -> int:
        """Put a new entity (``kind``, ``x``, ``y``, ...) on the map: its id."""
        entity = Entity(self.state.new_id(), attrs=dict(attrs))
        self.state.add(entity)
        return int(entity.id)

    @handler
    def update(self, eid: int, changes: dict[str, Any]) -> bool:
        entity = self.state.entities.get(eid)
        if entity is None:
            return False
        self.state.update(entity, **changes)
        return True

    @handler
    def remove(self, eid: int) -> bool:
        return self.state.remove(eid) is not None

    @handler
    def march(self, attrs: dict[str, Any], mid: int = 0) -> int:
        """Start a march line, or replace march *mid*'s line (a turn): its id."""
        march = Entity(mid or self.state.new_id(), attrs={"kind": "march", **attrs})
        self.state.add_march(march)
        return int(march.id)

    @handler
    def march_end(self, mid: int) -> bool:
        return self.state.remove_march(mid) is not None

    @handler
    def populate(self, count: int, seed: int = 1) -> int:
        """Add *count* resource points at random free tiles: how many are on the map."""
        rng = random.Random(seed)
        state = self.state
        for _ in range(count):
            for _try in range(20):
                x, y = rng.randrange(state.width), rng.randrange(state.height)
                if (x, y) not in state.tiles:
                    self.add({"kind": "resource", "x": x, "y": y, "resource": "food",
                              "level": 1, "amount": 0, "owner": 0})
                    break
        return len(state.entities)

    @handler
    def churn(self, rate: float, seconds: float, move_every: int = 4, seed: int = 2) -> bool:
        """For *seconds*, change *rate* random entities a second (every *move_every*-th
        change moves it to a random free tile, the others change in place); each
        change stamps ``amount`` with the wall-clock time in microseconds, so a receiver
        measures change-to-client latency. False if a churn runs already."""
        if self.churning is not None:
            return False
        rng = random.Random(seed)
        state = self.state
        ids = list(state.entities)
        reactor = self.world.node.reactor
        tick = 0.01
        end = reactor.seconds() + seconds
        owed = [0.0]

        def step() -> None:
            if reactor.seconds() >= end or not ids:
                self.churning.stop()
                self.churning = None
                return
            owed[0] += rate * tick
            n, owed[0] = int(owed[0]), owed[0] - int(owed[0])
            for _ in range(n):
                entity = state.entities.get(rng.choice(ids))
                if entity is None:
                    continue
                stamp = int(time.time() * 1_000_000)
                self.changes += 1
                if self.changes % move_every == 0:
                    x, y = rng.randrange(state.width), rng.randrange(state.height)
                    if (x, y) not in state.tiles:
                        state.update(entity, x=x, y=y, amount=stamp)
                        continue
                state.update(entity, amount=stamp)

        self.churning = task.LoopingCall(step)
        self.churning.clock = reactor
        self.churning.start(tick, now=False)
        return True

    @handler
    def churn_state(self) -> dict[str, Any]:
        """``{"running", "changes"}``: whether a churn runs, changes made so far."""
        return {"running": self.churning is not None, "changes": self.changes}

    @handler
    def in_view(self, x: int, y: int, width: int, height: int) -> list[list[int]]:
        """``[entity ids, march ids]`` the map holds on the blocks of that view (what a
        client watching it must hold)."""
        entities, marches = self.state.in_blocks(self.state.blocks_of_rect(x, y, width,
                                                                           height))
        return [sorted(int(e.id) for e in entities), sorted(int(m.id) for m in marches)]
