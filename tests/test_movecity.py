"""Moving a city without processes (issue 14 "Move city"): the saga owned by the source map
(reserve on the target, remove, commit, the player's transfer), its refusals, its
idempotence, retries with backoff while the target is unreachable, resuming from every
stored step after the source map lost its memory (a crash), the placement guard, and the
role side's transfer. Two real World services over two SQLite databases, a task.Clock for
the maps' time and a small in-process cluster between them."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cluster import NodeUnreachable
from rltwist.config import MapSettings
from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import shared
from rltwist.game.movecitysystem import system as move_system
from rltwist.game.tables import VALIDATORS, validate_movecity
from rltwist.game.terrain import blocked
from rltwist.nodes.common import transfer
from rltwist.nodes.map import movecity as mc
from rltwist.nodes.map.movecity import COMMIT, DONE, FAILED, REMOVE, RESERVE, MoveCity
from rltwist.nodes.map.state import APPEAR, DISAPPEAR
from rltwist.nodes.map.world import World
from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.test_world import world_table

E = pb.ErrorCode
SEED = 7
USER = (5 << 16) | 1  # born in region 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FakeCluster:
    """Routes ``call``/``send`` to the movecity services of the maps in-process; a map in
    ``down`` is unreachable."""

    def __init__(self) -> None:
        self.maps: dict[str, MoveCity] = {}
        self.down: set[str] = set()
        self.services: dict[str, Any] = {}
        self.sent: list[tuple[Any, ...]] = []

    @property
    def addresses(self) -> set[str]:
        return set(self.maps)

    def map_node(self, sid: int) -> str:
        return f"map{sid}"

    async def call(self, node: str, service: str, method: str, *args: Any,
                   timeout: float | None = None) -> Any:
        if node in self.down or node not in self.maps:
            raise NodeUnreachable(node)
        assert service == "movecity"
        result = await getattr(self.maps[node], method)(*args)
        if node in self.down:  # went down while answering: the answer is lost
            raise NodeUnreachable(node)
        return result

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        self.sent.append((node, service, method, *args))


class MoveHarness(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.clock = task.Clock()
        self.table = world_table(resources={}, monsters={"count": 0, "max_level": 1,
                                                          "respawn_seconds": 1})
        self.cluster = FakeCluster()
        self.worlds: dict[int, World] = {}
        self.moves: dict[int, MoveCity] = {}

    def backend(self, sid: int) -> EmbeddedBackend:
        b = EmbeddedBackend(os.path.join(self.dir, f"region{sid}.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(b.close()))
        return b

    async def start_map(self, sid: int) -> MoveCity:
        """Start (or restart, forgetting everything in memory: a crash) map *sid*."""
        node = SimpleNamespace(me=SimpleNamespace(number=sid), cluster=self.cluster)
        backend = self.backend(sid)
        w = World(node, backend=backend, clock=self.clock,
                  settings=MapSettings(64, 64, 16, SEED), tables=lambda: self.table,
                  fixer=False, save_interval=1000.0)
        self.addCleanup(self._stop, w)
        await w.start()
        svc = MoveCity(node, w, backend, clock=self.clock)
        old = self.moves.get(sid)
        if old is not None:
            old.stopping = True  # the dead instance does nothing more
        await svc.load()
        svc.resume_all()
        self.worlds[sid], self.moves[sid] = w, svc
        self.cluster.maps[f"map{sid}"] = svc
        return svc

    @staticmethod
    def _stop(w: World) -> None:
        w.stopping = True
        if w._refresh_call is not None and w._refresh_call.active():
            w._refresh_call.cancel()
        if w._save_loop.running:
            w._save_loop.stop()

    async def two_maps(self) -> tuple[World, World]:
        await self.start_map(1)
        await self.start_map(2)
        ans = await self.worlds[1].ensure_city(USER, "mover")
        self.assertEqual(ans["code"], E.OK)
        return self.worlds[1], self.worlds[2]

    def free_tile(self, w: World) -> tuple[int, int]:
        for y in range(5, 60):
            for x in range(5, 60):
                if w.check_tile(x, y) == 0:
                    return x, y
        raise AssertionError("no free tile")

    def blocked_tile(self) -> tuple[int, int]:
        for y in range(1, 64):
            for x in range(1, 64):
                if blocked(SEED, x, y):
                    return x, y
        raise AssertionError("no blocked tile")

    async def start(self, req: str = "r1", target: int = 2, x: int = 0, y: int = 0,
                    cost: dict[str, int] | None = None) -> dict[str, Any]:
        """Start a move; advances the clock past the answer's wait if it must."""
        from twisted.internet import reactor

        d = defer.Deferred.fromCoroutine(self.moves[1].start(
            USER, None, req, target, x, y, cost if cost is not None else {"gold": 10}))
        for _ in range(100):
            if d.called:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
            self.clock.advance(0.5)
        self.assertTrue(d.called, "start never answered")
        result: dict[str, Any] = await d
        return result

    async def settle(self, sid: int = 1, what: str = "the sagas") -> None:
        """Let the saga's storage writes and timers run until no saga drives."""
        from twisted.internet import reactor

        for _ in range(400):
            if not self.moves[sid].driving:
                return
            await task.deferLater(reactor, 0.01, lambda: None)
            self.clock.advance(0.5)
        self.fail(f"{what} did not end")

    async def reloaded_city_maps(self) -> list[int]:
        """The maps whose stored world holds the user's city (fresh instances)."""
        found = []
        for sid in (1, 2):
            node = SimpleNamespace(me=SimpleNamespace(number=sid), cluster=None)
            w = World(node, backend=self.backend(sid), clock=task.Clock(),
                      settings=MapSettings(64, 64, 16, SEED), tables=lambda: self.table,
                      fixer=False, save_interval=1000.0)
            self.addCleanup(self._stop, w)
            await w.start()
            if w.city_of(USER) is not None:
                found.append(sid)
            self.assertEqual(w.reservations(), {}, f"map {sid} leaked a reservation")
        return found

    def saga(self) -> dict[str, Any]:
        s: dict[str, Any] = self.moves[1].books[USER]["saga"]
        return s


class MoveTests(MoveHarness):
    async def test_move_to_a_chosen_tile(self) -> None:
        """OK: the city left map 1 (DISAPPEAR there) and stands on the tile of map 2
        (APPEAR), keeping its name; the player's transfer waits in map 1's ledger with the
        target map and the cost; nothing reserved is left; stored that way."""
        a, b = await self.two_maps()
        x, y = self.free_tile(b)
        seen: list[tuple[int, str]] = []
        a.state.listeners.append(lambda ev, e, _: seen.append((1, ev)))
        b.state.listeners.append(lambda ev, e, _: seen.append((2, ev)))
        ans = await self.start(x=x, y=y)
        self.assertEqual(ans, {"code": E.OK, "map_id": 2})
        self.assertIsNone(a.city_of(USER))
        city = b.city_of(USER)
        assert city is not None
        self.assertEqual((city["x"], city["y"], city["name"]), (x, y, "mover"))
        self.assertIn((1, DISAPPEAR), seen)
        self.assertIn((2, APPEAR), seen)
        self.assertEqual(self.saga()["step"], DONE)
        book = self.moves[1].books[USER]
        [entry] = transfer.entries(book).values()
        self.assertEqual(entry["items"]["mapid"], 2)
        self.assertEqual(entry["items"]["cost"], {"gold": 10})
        self.assertEqual(await self.reloaded_city_maps(), [2])

    async def test_same_request_twice_moves_once(self) -> None:
        """A retry with the same request id answers the same outcome and moves nothing
        again; a new request while the player's city is not on the map is RETRY_LATER."""
        _a, b = await self.two_maps()
        self.assertEqual((await self.start())["code"], E.OK)
        n = len(b.state.entities)
        self.assertEqual((await self.start())["code"], E.OK)
        self.assertEqual(len(b.state.entities), n)
        self.assertEqual(len(transfer.entries(self.moves[1].books[USER])), 1)
        self.assertEqual((await self.start(req="r2"))["code"], E.RETRY_LATER)

    async def test_any_free_tile(self) -> None:
        """x = y = 0: map 2 picks the next free tile of its city spiral; a tile reserved
        for a move is passed over by the placement of new cities."""
        _a, b = await self.two_maps()
        ans = await b.reserve("other", 77, 0, 0)
        self.assertEqual(ans["code"], E.OK)
        placed = await b.ensure_city(99, "n")
        c = pb.MapEntity.FromString(placed["city"])
        self.assertNotEqual((c.x, c.y), (ans["x"], ans["y"]))
        self.assertEqual((await b.reserve("again", 78, ans["x"], ans["y"]))["code"],
                         E.MOVE_TILE_TAKEN)
        self.assertEqual((await self.start())["code"], E.OK)
        city = b.city_of(USER)
        assert city is not None
        self.assertNotIn((city["x"], city["y"]), [(ans["x"], ans["y"]), (c.x, c.y)])
        self.assertTrue(await b.release("other"))
        self.assertEqual(b.reservations(), {})

    async def test_two_moves_race_for_one_tile(self) -> None:
        """Two players of map 1 move to the same tile of map 2 at once: one gets it, the
        other MOVE_TILE_TAKEN with its city still on map 1; no reservation left."""
        a, b = await self.two_maps()
        other = (6 << 16) | 1
        self.assertEqual((await a.ensure_city(other, "rival"))["code"], E.OK)
        x, y = self.free_tile(b)
        svc = self.moves[1]
        d1 = defer.Deferred.fromCoroutine(svc.start(USER, None, "m1", 2, x, y, {}))
        d2 = defer.Deferred.fromCoroutine(svc.start(other, None, "m2", 2, x, y, {}))
        await self.settle()
        codes = sorted([(await d1)["code"], (await d2)["code"]])
        self.assertEqual(codes, [E.OK, E.MOVE_TILE_TAKEN])
        winner = USER if b.city_of(USER) is not None else other
        loser = other if winner == USER else USER
        city = b.city_of(winner)
        assert city is not None
        self.assertEqual((city["x"], city["y"]), (x, y))
        self.assertIsNone(b.city_of(loser))
        self.assertIsNotNone(a.city_of(loser))
        self.assertIsNone(a.city_of(winner))
        self.assertEqual(b.reservations(), {})

    async def test_refusals(self) -> None:
        """Each refusal answers its code and moves nothing: a tile taken, blocked or
        outside (the saga ends failed), an unknown or same region, marches out."""
        a, b = await self.two_maps()
        other = await b.ensure_city(99, "there")
        taken = pb.MapEntity.FromString(other["city"])
        bx, by = self.blocked_tile()
        cases = [("t1", 2, taken.x, taken.y, E.MOVE_TILE_TAKEN),
                 ("t2", 2, bx, by, E.MOVE_TILE_BLOCKED),
                 ("t3", 2, 64, 3, E.MOVE_TILE_OUTSIDE),
                 ("t4", 9, 3, 3, E.MOVE_BAD_REGION),
                 ("t5", 1, 3, 3, E.MOVE_BAD_REGION)]
        for req, target, x, y, code in cases:
            ans = await self.start(req=req, target=target, x=x, y=y)
            self.assertEqual(ans["code"], code, req)
            self.assertIsNotNone(a.city_of(USER), req)
            self.assertEqual(b.reservations(), {}, req)
        self.assertEqual(self.saga()["step"], FAILED)
        self.cluster.services["march"] = SimpleNamespace(marches_of=lambda u: [object()])
        self.assertEqual((await self.start(req="t6"))["code"], E.MOVE_MARCHES_OUT)
        self.assertEqual(transfer.entries(self.moves[1].books[USER]), {})
        self.assertEqual(await self.reloaded_city_maps(), [1])

    async def test_no_move_while_the_march_book_holds_unpulled_returns(self) -> None:
        """A march home or a GM grant stored in the player's book here after its role node
        pulled, before the move started: the move waits (RETRY_LATER) until that is
        pulled, because the role node pulls from the city's map only."""
        a, b = await self.two_maps()
        waiting = {USER: True}

        async def unpulled(userid: int) -> bool:
            return waiting.get(userid, False)

        self.cluster.services["march"] = SimpleNamespace(marches_of=lambda u: [],
                                                         unpulled=unpulled)
        self.assertEqual((await self.start(req="m1"))["code"], E.RETRY_LATER)
        self.assertIsNotNone(a.city_of(USER))
        self.assertEqual(b.reservations(), {})
        self.assertEqual(self.moves[1].moved_to(USER), 0)
        waiting[USER] = False
        self.assertEqual((await self.start(req="m2"))["code"], E.OK)
        self.assertIsNone(a.city_of(USER))
        self.assertEqual(self.moves[1].moved_to(USER), 2)  # where a late grant is sent

    async def test_target_unreachable_retried_with_backoff(self) -> None:
        """Map 2 down: the client gets RETRY_LATER after the bounded wait while the saga
        keeps trying (backoff 0.5 s doubling to 30 s); once map 2 is back the move
        finishes and the same request answers OK."""
        a, _b = await self.two_maps()
        self.cluster.down.add("map2")
        ans = await self.start()
        self.assertEqual(ans["code"], E.RETRY_LATER)
        self.assertEqual(self.saga()["step"], RESERVE)
        self.assertIsNotNone(a.city_of(USER))
        self.assertEqual([move_system.backoff(n) for n in (1, 2, 3, 7, 20)],
                         [0.5, 1.0, 2.0, 30.0, 30.0])
        self.cluster.down.clear()
        await self.settle()
        self.assertEqual((await self.start())["code"], E.OK)
        self.assertEqual(await self.reloaded_city_maps(), [2])

    async def test_placement_guard(self) -> None:
        """While the move runs or its transfer is not taken, map 1 places no new city
        for the player (RETRY_LATER); after the take + confirm it would again."""
        a, _b = await self.two_maps()
        self.assertEqual((await self.start())["code"], E.OK)
        self.assertEqual((await a.ensure_city(USER, "x"))["code"], E.RETRY_LATER)
        svc = self.moves[1]
        taken = await svc.take_transfers(USER, 3)
        self.assertEqual(len(taken), 1)
        self.assertEqual(await svc.confirm_transfers(USER, 3, [taken[0]["id"]]), 1)
        self.assertEqual(svc._guard(USER), 0)
        # the city is not here and nothing is left to take: a move from here is refused
        self.assertEqual((await self.start(req="r9"))["code"], E.BAD_REQUEST)


class ResumeTests(MoveHarness):
    """The source map forgets everything at each step (a crash: the in-memory services
    are dropped, new ones load the same databases): the resumed saga ends with the city
    on exactly one map and no reservation left."""

    async def crash_at(self, step: str) -> None:
        _a, b = await self.two_maps()
        self.cluster.down.add("map2")
        x, y = self.free_tile(b)
        svc = self.moves[1]
        # drive the saga by hand up to *step*, as stored before the step's effect
        self.assertEqual((await self.start(x=x, y=y))["code"], E.RETRY_LATER)
        self.cluster.down.clear()
        svc.stopping = True  # the old instance stops between steps
        await self.settle(what="the old instance")
        book = svc.books[USER]
        order = [RESERVE, REMOVE, COMMIT]
        while self.saga()["step"] != step:
            self.assertTrue(await svc._step(book, self.saga()))
            self.assertIn(self.saga()["step"], order)
        # the effect of the step landed on map 2, its record on map 1 did not
        if step == RESERVE:
            await b.reserve(self.saga()["id"], USER, x, y)
        if step == COMMIT:
            await b.commit(self.saga()["id"], USER, {"name": "mover"})
        await self.start_map(1)
        await self.settle()
        self.assertEqual(self.moves[1].books[USER]["saga"]["step"], DONE)
        self.assertEqual(await self.reloaded_city_maps(), [2])

    async def test_resume_at_reserve(self) -> None:
        await self.crash_at(RESERVE)

    async def test_resume_at_remove(self) -> None:
        await self.crash_at(REMOVE)

    async def test_resume_at_commit(self) -> None:
        await self.crash_at(COMMIT)

    async def test_target_restarts_keep_reservation(self) -> None:
        """The reservation is stored on map 2: a map 2 restart between reserve and
        commit keeps it (placement still passes the tile over) and the commit uses it."""
        _a, b = await self.two_maps()
        x, y = self.free_tile(b)
        ans = await b.reserve("k", USER, x, y)
        self.assertEqual(ans["code"], E.OK)
        await self.start_map(2)
        b2 = self.worlds[2]
        self.assertEqual(b2.reservations(), {"k": [x, y, USER]})
        self.assertTrue(b2.is_blocked(x, y))
        self.assertEqual((await b2.reserve("k", USER, 0, 0))["x"], x)  # idempotent
        self.assertEqual((await b2.commit("k", USER, {"name": "n"}))["code"], E.OK)
        self.assertEqual((await b2.commit("k", USER, {"name": "n"}))["code"], E.OK)
        self.assertEqual(b2.reservations(), {})
        self.assertEqual((await b2.reserve("k", USER, 0, 0))["code"], E.OK)


class RoleSideTests(unittest.TestCase):
    def test_apply_moved(self) -> None:
        """The transfer sets mapid and prevmapid, takes the cost (not below 0), and
        clears the pending request of that move only."""
        e = Entity(USER, attrs={"gold": 50, "mapid": 1,
                                "movecity": {"req": "r1", "target": 2}})
        move_system.apply_moved(e, {"mapid": 2, "from": 1, "cost": {"gold": 80},
                                    "req": "r1"})
        self.assertEqual((e["mapid"], e["prevmapid"], e["gold"], e["movecity"]),
                         (2, 1, 0, None))
        e["movecity"] = {"req": "r2"}
        move_system.apply_moved(e, {"mapid": 3, "from": 2, "cost": {}, "req": "r1"})
        self.assertEqual(e["movecity"], {"req": "r2"})

    def test_check_start(self) -> None:
        e = Entity(USER, attrs={"gold": 5})
        check = move_system.check_start
        self.assertEqual(check(e, 1, 2, 3, 3, {"gold": 5}), 0)
        self.assertEqual(check(e, 1, 2, 3, 3, {"gold": 6}), E.MOVE_NO_RESOURCES)
        self.assertEqual(check(e, 1, 1, 3, 3, {}), E.MOVE_BAD_REGION)
        self.assertEqual(check(e, 1, 0, 3, 3, {}), E.BAD_REQUEST)
        self.assertEqual(check(e, 1, 2, -1, 3, {}), E.BAD_REQUEST)

    def test_table(self) -> None:
        snapshot = shared(os.path.join(REPO, "etc", "game"), VALIDATORS).snapshot
        self.assertEqual(move_system.cost(snapshot["movecity"]), {"gold": 5000})
        self.assertEqual(list(validate_movecity({"cost": {"gold": 1}})), [])
        self.assertEqual([k for k, _ in validate_movecity({"cost": {"wood": 1}, "x": 1})],
                         ["x", "cost.wood"])
        self.assertEqual(mc.WAIT_SECONDS, 2.0)


class BotActionTests(unittest.TestCase):
    def test_move_city_action(self) -> None:
        """``move_city`` asks MapMyCity, then moves to map 1 (or back to the birth map;
        map 2 for bots of region 1): valid MoveCity requests."""
        from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script

        self.assertEqual(parse_script("move_city*2"), ("move_city", "move_city"))
        act = ACTIONS["move_city"]
        bot = BotIdentity(index=0, openid="b", userid=(3 << 16) | 2, run_token="ab")
        self.assertIsInstance(act.build(bot), pb.MapMyCity)
        assert act.then is not None
        home = pb.MapMyCity.Response(info=pb.MapInfo(map_id=2))
        away = pb.MapMyCity.Response(info=pb.MapInfo(map_id=1))
        self.assertEqual(act.then(bot, home), pb.MoveCity(target_sid=1))
        self.assertEqual(act.then(bot, away), pb.MoveCity(target_sid=2))
        one = BotIdentity(index=0, openid="c", userid=(3 << 16) | 1, run_token="ab")
        self.assertEqual(act.then(one, pb.MapMyCity.Response(info=pb.MapInfo(map_id=1))),
                         pb.MoveCity(target_sid=2))
        self.assertIsNone(act.then(bot, pb.MapMyCity.Response()))
        for req in (act.then(bot, home), act.then(bot, away)):
            self.assertEqual(pb.MoveCity.FromString(req.SerializeToString()), req)
        self.assertIn(pb.ErrorCode.MOVE_NO_RESOURCES, act.ok_codes)
