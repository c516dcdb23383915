"""In-process fakes for the viewport tests: a map node's aoiscene/aoibroadcast and a role
node's ``mapview`` service around one WorldState, with the map -> role link (batches, in
order) and the answers of calls (another path) released when the test says, on a
``task.Clock``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task

from rltwist.cluster import ClusterError
from rltwist.ecs.entity import Entity
from rltwist.features.aoi import MapViewPush
from rltwist.nodes.common.rolecache import RoleCache
from rltwist.nodes.map.aoi import AoiScene, install_aoi
from rltwist.nodes.map.state import WorldState
from rltwist.nodes.role.agent import ONLINE
from rltwist.protocols import REGISTRY, pb

MAP = "map1"


class FakeWorld:
    def __init__(self, node: Any, state: WorldState) -> None:
        self.node = node
        self.state = state
        self.map_id = state.map_id
        self.ready: defer.Deferred[None] = defer.succeed(None)


class FakeNode:
    def __init__(self, name: str, clock: task.Clock, cluster: Any) -> None:
        self.name = name
        self.reactor = clock
        self.cluster = cluster
        self.registry = CollectorRegistry()


class MapCluster:
    """The map node's cluster: ``send`` to a role node queues on that node's link."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.services: dict[str, Any] = {}

    def register(self, svc: Any) -> None:
        svc.cluster = self
        self.services[svc.name] = svc

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        if node in self.net.down:
            raise ClusterError(f"{node} is down")
        self.net.links.setdefault(node, []).append((service, method, args))
        self.net.sent.append((node, service, method, args))


class RoleCluster:
    """A role node's cluster: calls to the map run at once there, their answers come back
    when the test releases them (``Net.answer``)."""

    def __init__(self, net: Net, name: str) -> None:
        self.net = net
        self.name = name
        self.services: dict[str, Any] = {}

    def register(self, svc: Any) -> None:
        svc.cluster = self
        self.services[svc.name] = svc

    def map_node(self, mapid: int) -> str:
        return MAP

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float = 0.0) -> defer.Deferred[Any]:
        fn = getattr(self.net.map_cluster.services[service], method)
        result = defer.maybeDeferred(fn, *args)
        out: defer.Deferred[Any] = defer.Deferred()
        self.net.replies.append((result, out))
        return out


class FakeConn:
    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def push_encoded(self, proto: int, body: bytes) -> bool:
        assert proto == REGISTRY.push_ids[pb.MapNotify]
        self.events.append(("notify", pb.MapNotify.FromString(body)))
        return True


class FakePlayer:
    def __init__(self, userid: int, generation: int, events: list[Any]) -> None:
        self.userid = userid
        self.generation = generation
        self.mapid = 1
        self.state = ONLINE
        self.conn: FakeConn | None = FakeConn(events)


class FakeGateway:
    def __init__(self, node: FakeNode) -> None:
        self.node = node
        self.cluster = node.cluster
        self.players: dict[int, FakePlayer] = {}


SETTLE_ROUNDS = 1000


class Net:
    """One map node (``map1``) and role nodes on one clock."""

    def __init__(self, state: WorldState, roles: tuple[str, ...] = ("role1",)) -> None:
        self.clock = task.Clock()
        self.links: dict[str, list[Any]] = {}
        self.sent: list[Any] = []
        self.replies: list[tuple[defer.Deferred[Any], defer.Deferred[Any]]] = []
        self.down: set[str] = set()
        self.map_cluster = MapCluster(self)
        self.map_node = FakeNode(MAP, self.clock, self.map_cluster)
        self.rolecache = RoleCache()
        self.map_cluster.register(self.rolecache)
        self.world = FakeWorld(self.map_node, state)
        self.scene: AoiScene = install_aoi(self.map_node, self.world)  # type: ignore[arg-type]
        self.broadcast = self.scene.broadcast
        self.roles: dict[str, tuple[FakeGateway, MapViewPush]] = {}
        for name in roles:
            cluster = RoleCluster(self, name)
            gw = FakeGateway(FakeNode(name, self.clock, cluster))
            push = MapViewPush(gw)  # type: ignore[arg-type]
            cluster.register(push)
            self.roles[name] = (gw, push)

    def player(self, role: str, userid: int, generation: int = 1) -> tuple[Any, list[Any]]:
        events: list[Any] = []
        gw, _ = self.roles[role]
        p = gw.players[userid] = FakePlayer(userid, generation, events)
        return p, events

    def deliver(self, role: str, n: int | None = None) -> int:
        """Let *n* (all) batches queued on the link to *role* arrive, in order."""
        link = self.links.get(role, [])
        take = len(link) if n is None else min(n, len(link))
        _, push = self.roles[role]
        for _ in range(take):
            _service, method, args = link.pop(0)
            getattr(push, method)(*args)
        return take

    def answer(self, n: int | None = None) -> int:
        """Let *n* (all) call answers arrive, oldest first."""
        take = len(self.replies) if n is None else min(n, len(self.replies))
        for _ in range(take):
            result, out = self.replies.pop(0)
            result.chainDeferred(out)
        return take

    def settle(self) -> None:
        """Everything in flight arrives: flush, batches, answers, the next turn — round
        after round, because a player's requests are serialized (each call is made once
        the previous one answered), so a queue of N requests needs N rounds. It once
        stopped after 10 rounds, and the viewport property then compared a client with
        answers still in flight (a failure of the test, found by hypothesis)."""
        for _ in range(SETTLE_ROUNDS):
            self.broadcast.flush()
            moved = sum(self.deliver(r) for r in self.roles) + self.answer()
            self.clock.advance(0)
            if not moved and not any(self.links.values()) and not self.replies:
                return
        raise AssertionError(f"the network did not settle in {SETTLE_ROUNDS} rounds: "
                             f"{len(self.replies)} answers and "
                             f"{sum(map(len, self.links.values()))} batches in flight")


def view(gw: Any, player: Any, x: int, y: int, w: int, h: int,
         events: list[Any]) -> defer.Deferred[Any]:
    """A MapView request as the gateway runs it: the answer is recorded in *events* the
    moment the handler returns."""
    from rltwist.features.aoi import map_view

    d = defer.Deferred.fromCoroutine(map_view(gw, player, pb.MapView(x=x, y=y, width=w,
                                                                     height=h)))
    d.addCallback(lambda r: events.append(("answer", r)) or r)
    return d


def clear(gw: Any, player: Any, events: list[Any]) -> defer.Deferred[Any]:
    from rltwist.features.aoi import map_view_clear

    d = defer.Deferred.fromCoroutine(map_view_clear(gw, player, pb.MapViewClear()))
    d.addCallback(lambda r: events.append(("clear", r)) or r)
    return d


def entity(state: WorldState, kind: str, x: int, y: int, **attrs: Any) -> Entity:
    e = Entity(state.new_id(), attrs={"kind": kind, "x": x, "y": y, "owner": 0,
                                      "level": 1, **attrs})
    state.add(e)
    return e


def march(state: WorldState, fx: int, fy: int, tx: int, ty: int, mid: int = 0,
          st: str = "outbound") -> Entity:
    m = Entity(mid or state.new_id(), attrs={
        "kind": "march", "owner": 7, "type": "attack", "state": st, "x": fx, "y": fy,
        "from_x": fx, "from_y": fy, "to_x": tx, "to_y": ty, "start_ms": 1000,
        "arrive_ms": 9000, "speed": 2.0, "troops": 100})
    state.add_march(m)
    return m
