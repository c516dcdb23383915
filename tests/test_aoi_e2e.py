"""The viewport across real processes (issue 13 "Must show"): two players of region 1
online on two role nodes watch overlapping views of map1 and see each other's part of the
world change — entities appearing, changing, moving out of one view, march lines starting
and ending — through batched MapNotify pushes; a player of region 2 watching map2 sees
none of it; a relogin re-watches and gets the snapshot; after a kill -9 and restart of the map
node the clients get their whole views again; a logout ends the watch.

The changes are made through the map node's test-only ``worlddebug`` service (test flag
``worlddebug``): the viewport only listens to the map's WorldState, whoever changes it. The
maps get no resource points or monsters (a game table with counts 0), so what the views
hold is what the test makes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from rltwist.game.aoisystem import ClientView
from rltwist.protocols import pb
from tests.social_util import SocialCase
from tests.util import wait_for

DEBUG = {"RLTWIST_TEST_FLAGS": "worlddebug"}
REPO = Path(__file__).resolve().parents[1]


def line(fx: int, fy: int, tx: int, ty: int) -> dict[str, Any]:
    return {"owner": 1, "type": "attack", "state": "outbound", "x": fx, "y": fy,
            "from_x": fx, "from_y": fy, "to_x": tx, "to_y": ty, "start_ms": 1,
            "arrive_ms": 60_000, "speed": 1.0, "troops": 50}


class Seen(ClientView):
    """A ClientView that counts the resets it applied."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def notify(self, note: Any) -> None:
        self.resets += bool(note.reset)
        super().notify(note)


class Viewport(SocialCase):
    node_env = {"map1": DEBUG, "map2": DEBUG}

    async def setUp(self) -> None:
        # the game tables of this test: etc/game with no resource points or monsters
        root = Path(self.mktemp()).absolute()
        shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
        table = root / "etc" / "game" / "world.toml"
        table.write_text(re.sub(r"(?m)^count = \d+", "count = 0", table.read_text()))
        self.overrides = {"hotreload": {"root": str(root), "hotfix_interval": 0,
                                        "config_interval": 0}}
        await super().setUp()

    async def debug(self, method: str, *args: Any) -> Any:
        return await self.probe.cluster.call("map1", "worlddebug", method, *args, timeout=10)

    async def notes_until(self, client: Any, view: ClientView, done: Any,
                          what: str) -> None:
        """Apply *client*'s MapNotify pushes to *view* until ``done(view)``."""
        def check() -> bool:
            for m in [m for m in client.pushes if isinstance(m, pb.MapNotify)]:
                client.pushes.remove(m)
                view.notify(m)
            return bool(done(view))

        await wait_for(check, 10, f"{client.openid}: {what}")

    async def test_two_role_nodes_watch_overlapping_views_of_one_map(self) -> None:
        a, b = await self.players_apart(1, 1)
        c = await self.player(2)
        va, vb, vc = Seen(), Seen(), Seen()
        # a: blocks 0, 1, 32, 33; b: blocks 1, 2, 33, 34 (shared: 1 and 33)
        ra = await self.request_ok(a, pb.MapView(x=0, y=0, width=30, height=20))
        rb = await self.request_ok(b, pb.MapView(x=16, y=0, width=30, height=20))
        rc = await self.request_ok(c, pb.MapView(x=0, y=0, width=30, height=20))
        for v, r in ((va, ra), (vb, rb), (vc, rc)):
            v.view(r)
        self.assertEqual(sorted(ra.blocks), [0, 1, 32, 33])
        self.assertEqual(sorted(rb.added_blocks), [1, 2, 33, 34])
        self.assertEqual((ra.info.map_id, rc.info.map_id), (1, 2))
        w = await self.probe.cluster.call("map1", "aoiscene", "watching", b.userid)
        self.assertEqual(w["node"], b.role)

        # an entity on a shared block: both see it appear, then change
        city = await self.debug("add", {"kind": "city", "x": 20, "y": 5, "owner": 99,
                                        "name": "shared", "level": 1, "guildid": 0})
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: city in v.entities, "the city appears")
        await self.debug("update", city, {"level": 7})
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: v.entities[city].level == 7,
                                   "the city's level changes")
        # it moves to block 2: b sees it move, a sees it go
        await self.debug("update", city, {"x": 40})
        await self.notes_until(a, va, lambda v: city not in v.entities, "the city leaves")
        await self.notes_until(b, vb, lambda v: v.entities.get(city) is not None
                               and v.entities[city].x == 40, "the city moves")
        # a march line from a's block 0 to b's block 2: both see it start and end
        mid = await self.debug("march", line(3, 3, 45, 10))
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: mid in v.marches, "the march line")
        self.assertEqual(va.marches[mid].to_x, 45)
        await self.debug("march_end", mid)
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: mid not in v.marches, "the line ends")
        # region 2's map is another map: its watcher heard nothing
        self.assertEqual([m for m in c.pushes if isinstance(m, pb.MapNotify)], [])
        stats2 = await self.probe.cluster.call("map2", "aoibroadcast", "stats")
        self.assertEqual(stats2["batches"], 0)
        stats1 = await self.probe.cluster.call("map1", "aoibroadcast", "stats")
        # every batch went to a role node once: never one message per watcher
        self.assertGreaterEqual(stats1["deliveries"], stats1["batches"])

        # a view move sends only the new blocks and says what left
        rb2 = await self.request_ok(b, pb.MapView(x=32, y=0, width=30, height=20))
        self.assertEqual(sorted(rb2.added_blocks), [3, 35])
        self.assertEqual(sorted(rb2.removed_blocks), [1, 33])
        vb.view(rb2)
        self.assertIn(city, vb.entities)

        # relogin: the new instance watches afresh (maybe on the other role node)
        old_generation = (await self.probe.cluster.call("map1", "aoiscene", "watching",
                                                        b.userid))["generation"]
        await self.relogin(b)
        vb = Seen()
        vb.view(await self.request_ok(b, pb.MapView(x=16, y=0, width=30, height=20)))
        self.assertIn(city, vb.entities)
        w = await self.probe.cluster.call("map1", "aoiscene", "watching", b.userid)
        self.assertGreater(w["generation"], old_generation)
        self.assertEqual(w["node"], b.role)
        await self.debug("update", city, {"level": 8})
        await self.notes_until(b, vb, lambda v: v.entities[city].level == 8,
                               "the relogged-in player sees changes")

        # kill -9 of the map node: once restarted it asks the role nodes to renew their
        # players' views, and each client gets its whole view again (reset)
        self.assertLess(await self.lc.nodes["map1"].kill(), 0)
        await self.lc.start("map1")
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: v.resets > 0, "the renewed view")
        # what the restarted map holds there (what its last save kept), nothing else
        for v, (x, y) in ((va, (0, 0)), (vb, (16, 0))):
            held = await self.debug("in_view", x, y, 30, 20)
            self.assertEqual([sorted(v.entities), sorted(v.marches)], held)
        again = await self.debug("add", {"kind": "monster", "x": 20, "y": 6, "level": 3})
        for cl, v in ((a, va), (b, vb)):
            await self.notes_until(cl, v, lambda v: again in v.entities,
                                   "changes after the map's restart")

        # MapViewClear and logout end the watches
        await self.request_ok(b, pb.MapViewClear())
        self.assertIsNone(await self.probe.cluster.call("map1", "aoiscene", "watching",
                                                        b.userid))
        a.close()

        async def a_gone() -> bool:
            return await self.probe.cluster.call("map1", "aoiscene", "watching",
                                                 a.userid) is None

        await wait_for(a_gone, 20, "a's watch to end at its logout")
