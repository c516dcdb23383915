"""Moving a city across real processes (issue 14 "Move city", issue 13's cross-region
visibility): a region-2 player on role2 moves its city to a chosen tile of map1; a
region-1 player on role1 watching that part of map1 sees it appear, a region-2 player
watching map2 sees it disappear; the mover's MapMyCity and MapView go to map1 from then
on (also after a new login), the cost is taken once, the city is on map1 only. Then the
kill -9 cases: map A, map B and the role node killed at each step of the saga
(crash points), restarted, and the city found on exactly one map with the player's mapid
agreeing and no reservation left."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer

from rltwist.game.terrain import blocked
from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.social_util import SocialCase
from tests.util import node_is, wait_for

E = pb.ErrorCode
COST = 5000  # etc/game/movecity.toml; a new player has 1000 gold


class MoveCase(SocialCase):
    async def rows(self, node: str, userid: int) -> list[list[Any]]:
        rows: list[list[Any]] = await self.probe.cluster.call(node, "world", "entities",
                                                              "city", timeout=10)
        return [r for r in rows if r[4] == userid]

    async def player_doc(self, userid: int) -> dict[str, Any]:
        db = EmbeddedBackend(os.path.join(self.lc.run_dir, "data", "roledb.sqlite3"))
        try:
            doc = await db.get("player", userid)
        finally:
            await defer.ensureDeferred(db.close())
        assert doc is not None
        attrs: dict[str, Any] = doc["attrs"]
        return attrs

    async def grant_gold(self, c: Any, amount: int) -> None:
        sid = c.userid & 0xFFFF
        await self.probe.cluster.call(f"rolecity{sid}", "rolerouter", "grant", c.userid,
                                      {"gold": amount}, timeout=10)

        async def credited() -> bool:
            return int((await self.player_doc(c.userid)).get("gold", 0)) >= 1000 + amount
        await wait_for(credited, 20, f"the gold grant to {c.openid} saved")

    async def free_tile(self, info: Any, near: Any) -> tuple[int, int]:
        """A free, unblocked tile of map *info* next to entity *near*."""
        taken = {(r[2], r[3]) for r in await self.probe.cluster.call(
            f"map{info.map_id}", "world", "entities", None, timeout=10)}
        for dy in range(-6, 7):
            for dx in range(-6, 7):
                x, y = near.x + dx, near.y + dy
                if (x, y) not in taken and not blocked(info.seed, x, y) and (dx or dy) \
                        and 0 < x < info.width and 0 < y < info.height:
                    return x, y
        raise AssertionError("no free tile near the city")

    async def move(self, c: Any, target: int, x: int, y: int,
                   timeout: float = 30) -> Any:
        """MoveCity, asked again while it answers RETRY_LATER (the saga continues)."""
        answers: list[Any] = []

        async def answered() -> bool:
            r = await c.request(pb.MoveCity(target_sid=target, x=x, y=y))
            if r.code == E.RETRY_LATER:
                return False
            answers.append(r)
            return True
        await wait_for(answered, timeout, f"MoveCity of {c.openid} to be answered")
        return answers[0]

    async def on_one_map(self, userid: int, expect: int, reservations: bool = True) -> None:
        """The city is on map *expect* only, no reservation anywhere (unless other moves
        may be in flight: *reservations* False), and the player's stored mapid agrees
        (once its move was taken)."""
        for sid in (1, 2):
            n = len(await self.rows(f"map{sid}", userid))
            self.assertEqual(n, 1 if sid == expect else 0, f"cities of {userid} on map{sid}")
            if reservations:
                await self.no_reservation(sid)

        async def agrees() -> bool:
            return int((await self.player_doc(userid)).get("mapid") or 0) == expect
        await wait_for(agrees, 20, f"the stored mapid of {userid} to be {expect}")

    async def no_reservation(self, sid: int) -> None:
        left = await self.probe.cluster.call(f"map{sid}", "movecity", "reservations",
                                             timeout=10)
        self.assertEqual(left, {}, f"reservation left on map{sid}")


class MoveAcrossRegions(MoveCase):
    async def test_a_region_2_city_moves_to_map1_and_is_seen_there(self) -> None:
        a, b = await self.players_apart(1, 2)
        c = await self.player(2)  # watches map2 where b's city was
        ra = await self.request_ok(a, pb.MapMyCity())
        rb = await self.request_ok(b, pb.MapMyCity())
        self.assertEqual((ra.info.map_id, rb.info.map_id), (1, 2))
        x, y = await self.free_tile(ra.info, ra.city)
        await self.request_ok(a, pb.MapView(x=max(0, x - 8), y=max(0, y - 8), width=16,
                                            height=16))
        await self.request_ok(c, pb.MapView(x=max(0, rb.city.x - 8),
                                            y=max(0, rb.city.y - 8), width=16, height=16))
        # refused: the cost (no gold yet), an unknown region; the city's own map: OK
        self.assertEqual((await b.request(pb.MoveCity(target_sid=1, x=x, y=y))).code,
                         E.MOVE_NO_RESOURCES)
        here = await self.request_ok(b, pb.MoveCity(target_sid=2, x=x, y=y))  # no move
        self.assertEqual((here.map_id, here.city.id), (2, rb.city.id))
        self.assertEqual((await b.request(pb.MoveCity(target_sid=7, x=x, y=y))).code,
                         E.MOVE_BAD_REGION)
        await self.grant_gold(b, COST)
        moved = await self.move(b, 1, x, y)
        self.assertEqual(moved.code, E.OK)
        self.assertEqual((moved.map_id, moved.city.x, moved.city.y), (1, x, y))
        self.assertEqual(moved.city.owner_user_id, b.userid)
        # the region-1 player on the other role node sees it appear on map1
        seen = await self.wait_push(a, pb.MapNotify, lambda m: any(
            e.owner_user_id == b.userid for e in m.appeared))
        self.assertEqual(seen.map_id, 1)
        gone = await self.wait_push(c, pb.MapNotify, lambda m: rb.city.id in m.disappeared)
        self.assertEqual(gone.map_id, 2)
        # routing follows the new mapid: MapMyCity and MapView go to map1
        mine = await self.request_ok(b, pb.MapMyCity())
        self.assertEqual((mine.info.map_id, mine.city.id), (1, moved.city.id))
        view = await self.request_ok(b, pb.MapView(x=max(0, x - 4), y=max(0, y - 4),
                                                   width=8, height=8))
        self.assertEqual(view.info.map_id, 1)
        self.assertIn(moved.city.id, [e.id for e in view.entities])
        await self.on_one_map(b.userid, 1)
        doc = await self.player_doc(b.userid)
        self.assertEqual((doc["gold"], doc.get("prevmapid"), doc.get("movecity")),
                         (1000, 2, None))
        # a new login keeps it there; a second move back is refused for the cost
        await self.relogin(b)
        again = await self.request_ok(b, pb.MapMyCity())
        self.assertEqual((again.info.map_id, again.city.id), (1, moved.city.id))
        self.assertEqual((await b.request(pb.MoveCity(target_sid=2))).code,
                         E.MOVE_NO_RESOURCES)
        await self.on_one_map(b.userid, 1)


CRASH = {"RLTWIST_TEST_FLAGS": "crashpoints"}


class _MoveCrash:
    # a mixin (not a TestCase): only the armed classes below run
    """Kill -9 of one node (``victim``) at each step of a move, one player per step: the
    node is armed with the step's crash point, a region-2 player (source map2, target
    map1) asks to move, the node dies there and is restarted armed with the next point;
    the move is then asked about again (the same request id) until it answers, and the
    city must be on map1 only, the stored mapid 1, no reservation anywhere."""

    victim = ""
    points: tuple[str, ...] = ()

    def setUp(self) -> Any:
        self.node_env = {self.victim: {**CRASH, "RLTWIST_CRASH_POINTS": self.points[0]}}
        self.others: list[Any] = []
        return super().setUp()  # type: ignore[misc]

    async def mover(self) -> Any:
        """A region-2 player (on the victim when the victim is a role node) with gold."""
        for _ in range(10):
            c = await self.player(2)
            if not self.victim.startswith("role") or c.role == self.victim:
                await self.request_ok(c, pb.MapMyCity())
                await self.grant_gold(c, COST)
                return c
            self.others.append(c)  # stays online: the next one goes to the other node
        raise AssertionError(f"no region-2 player landed on {self.victim}")

    async def restart(self, armed: str | None) -> None:
        """Start the dead victim again (armed with *armed*, or with nothing)."""
        proc = self.lc.nodes[self.victim]
        if armed is None:
            proc.env.pop("RLTWIST_CRASH_POINTS", None)
        else:
            proc.env["RLTWIST_CRASH_POINTS"] = armed
        if self.victim.startswith("role"):
            await wait_for(lambda: node_is(self.lc, self.victim, "down"), 30,
                           f"{self.victim} marked down")
        await self.lc.start(self.victim)
        await self.lc.wait_up(self.names)
        if self.victim.startswith("role"):
            await self.wait_logins_available()

    async def load(self, n: int) -> list[Any]:
        """*n* players of regions 1 and 2 with gold for many moves."""
        players: list[Any] = []
        i = 0
        while len(players) < n:
            i += 1
            c = await self.player(1 + i % 2)
            if c.role == self.victim:  # its moves would reach the armed points first
                self.others.append(c)
                continue
            await self.request_ok(c, pb.MapMyCity())
            await self.grant_gold(c, 50 * COST)
            players.append(c)
        return players

    async def keep_moving(self, c: Any, stop: list[bool]) -> None:
        """Move *c*'s city between map1 and map2 until *stop*; answers other than OK
        (RETRY_LATER while a node is down, a lost connection) just go on."""
        from twisted.internet import reactor, task

        target = 2 if c.userid & 0xFFFF == 1 else 1
        while not stop:
            try:
                r = await c.request(pb.MoveCity(target_sid=target))
            except Exception:
                return  # its role node died: settled after a new login (settle_load)
            if r.code == E.OK:
                target = 1 if target == 2 else 2
            await task.deferLater(reactor, 0.05, lambda: None)

    async def settle_load(self, players: list[Any]) -> None:
        """Each load player's last move answered (a new login if its connection was
        lost), then its city on exactly one map agreeing with its stored mapid."""
        for c in players:
            if c.conn is None or c.conn.transport is None or c.closed.called:
                await self.relogin(c)
            for _ in range(3):  # a pending move's answer can move mapid once more
                mapid = int((await self.player_doc(c.userid)).get("mapid") or 0)
                r = await self.move(c, mapid, 0, 0, timeout=60)
                self.assertEqual(r.code, E.OK)
                if r.map_id == mapid:
                    break
            await self.on_one_map(c.userid, r.map_id, reservations=False)
        for sid in (1, 2):  # every move answered: nothing may be reserved any more
            await self.no_reservation(sid)

    async def test_the_city_ends_on_one_map_at_every_step(self) -> None:
        proc = self.lc.nodes[self.victim]
        role = self.victim.startswith("role")
        # the movers first (a role victim's die with it: made after each restart there)
        movers = [] if role else [await self.mover() for _ in self.points]
        # under load: players moving their cities back and forth all along; against a
        # map their moves may reach the armed point first, and are checked the same way
        loaders = await self.load(4)
        stop: list[bool] = []
        running = [defer.Deferred.fromCoroutine(self.keep_moving(c, stop)) for c in loaders]
        for i, point in enumerate(self.points):
            if i:  # arm the next step: kill -9 (moves of the load in flight), start armed
                self.assertLess(await proc.kill(), 0)
                await self.restart(point)
            c = movers[i] if movers else await self.mover()
            reply = c.request(pb.MoveCity(target_sid=1))
            reply.addErrback(lambda f: None)
            await proc.wait_exit(30)
            self.assertFalse(proc.running, f"{self.victim} did not die at {point}")
            await self.restart(None)
            if self.victim.startswith("role"):
                await self.relogin(c)  # the next Auth resumes the move
            moved = await self.move(c, 1, 0, 0, timeout=60)
            self.assertEqual(moved.code, E.OK, point)
            self.assertEqual(moved.map_id, 1, point)
            await self.on_one_map(c.userid, 1, reservations=False)
            self.assertEqual((await self.player_doc(c.userid))["gold"], 1000, point)
            c.close()
        stop.append(True)
        await defer.gatherResults(running)
        await self.settle_load(loaders)


class SourceMapKilled(_MoveCrash, MoveCase):
    victim = "map2"
    points = ("movecity_after_reserve", "movecity_after_remove", "movecity_after_commit",
              "movecity_after_done")


class TargetMapKilled(_MoveCrash, MoveCase):
    victim = "map1"
    points = ("movecity_reserved_here", "movecity_committed_here")


class RoleNodeKilled(_MoveCrash, MoveCase):
    victim = "role2"
    points = ("movecity_request_saved", "after_movecity_take", "after_movecity_apply")


class MarchesAfterAMove(MoveCase):
    """Issue 13's cross-region visibility: once a region-2 player's city is on map1, its
    march there is seen by a region-1 player on the other role node watching that part of
    map1; while it is out the city cannot move (MOVE_MARCHES_OUT)."""

    if not hasattr(pb, "MarchStart"):
        skip = "marches (branch march) are not merged here yet"

    async def test_a_moved_players_march_is_seen_by_a_region_1_watcher(self) -> None:
        a, b = await self.players_apart(1, 2)
        ra = await self.request_ok(a, pb.MapMyCity())
        await self.request_ok(b, pb.MapMyCity())
        x, y = await self.free_tile(ra.info, ra.city)
        await self.grant_gold(b, 2 * COST)  # this move and one more (refused below)
        moved = await self.move(b, 1, x, y)
        self.assertEqual((moved.code, moved.map_id), (E.OK, 1))
        await self.request_ok(a, pb.MapView(x=max(0, x - 32), y=max(0, y - 32), width=64,
                                            height=64))
        found = await self.request_ok(b, pb.MarchTargets(around_city=True, radius=30))
        point = next(t for t in found.targets if t.kind == pb.MapEntityKind.MAP_RESOURCE)
        home = (await self.request_ok(b, pb.MarchList())).home_troops
        troop = next(t for t in home if t.count)
        start = await self.request_ok(b, pb.MarchStart(
            type=pb.MarchType.MARCH_GATHER, target_x=point.x, target_y=point.y,
            troops=[pb.TroopCount(type=troop.type, count=min(10, troop.count))]))
        line = start.march.line
        self.assertEqual((line.from_x, line.from_y), (x, y))
        seen = await self.wait_push(a, pb.MapNotify, lambda m: any(
            m2.march_id == line.march_id for m2 in m.marches))
        self.assertEqual(seen.map_id, 1)
        self.assertEqual((await b.request(pb.MoveCity(target_sid=2))).code,
                         E.MOVE_MARCHES_OUT)
        await self.on_one_map(b.userid, 1)
