"""A march start across a kill -9 at each step (issue 13 "A march is durable at its OK"):
real processes, one region. The role node dies at a named crash point
(rltwist/crashpoint.py) during a MarchStart, is restarted, the player logs in again, and
the after-Auth step settles the recorded start: exactly one march, the troops taken once,
everything home again in the end.

* ``after_march_take_save``: the troops left the player and the start is recorded (saved)
  but the map was never asked: the start is sent at the next Auth and the march starts;
* ``after_march_start_ok``: the map saved the march and answered OK, the role node died
  before it dropped its record: sent again at the next Auth, the map recognises the
  transfer id and starts nothing twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rltwist.protocols import pb
from tests.login_util import GameClient, LoginCase
from tests.test_march_e2e import TROOPS, fast_tables
from tests.util import node_is, wait_for

E = pb.ErrorCode
K = pb.MapEntityKind
CRASH = {"RLTWIST_TEST_FLAGS": "crashpoints"}
INITIAL = {"infantry": 1000, "cavalry": 500, "archer": 500}


class _StartCrash:
    """The flow; the test classes below mix it into LoginCase with their crash point."""

    names = ["master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1",
             "login1"]
    timeout = 240
    point = ""

    async def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        fast_tables(root)
        self.overrides = {"hotreload": {"root": str(root), "hotfix_interval": 0,
                                        "config_interval": 0}}
        self.node_env = {"role1": {**CRASH, "RLTWIST_CRASH_POINTS": self.point}}
        await super().setUp()  # type: ignore[misc]  # (LoginCase, mixed in below)

    async def login(self, openid: str) -> GameClient:
        return await self.logged_in(openid, 30, server_id=1)

    async def listing(self, c: GameClient) -> Any:
        r = await c.request(pb.MarchList())
        return r if r.code == E.OK else None

    async def test_the_start_is_settled_once_after_the_crash(self) -> None:
        c = await self.login("marcher")

        async def has_city() -> bool:
            r = await self.listing(c)
            return r is not None and r.HasField("city")

        await wait_for(has_city, 20, "the city")
        found = await c.request(pb.MarchTargets(around_city=True, radius=64))
        [point] = [t for t in found.targets if t.kind == K.MAP_RESOURCE][:1]
        proc = self.lc.nodes["role1"]
        reply = c.request(pb.MarchStart(
            type=pb.MarchType.MARCH_GATHER, target_x=point.x, target_y=point.y,
            troops=[pb.TroopCount(type="cavalry", count=TROOPS)]))
        reply.addErrback(lambda f: None)
        await proc.wait_exit(30)
        self.assertFalse(proc.running, f"role1 did not die at {self.point}")
        proc.env.pop("RLTWIST_CRASH_POINTS")
        await wait_for(lambda: node_is(self.lc, "role1", "down"), 20, "role1 marked down")
        await self.lc.start("role1")
        await self.lc.wait_up(self.names)
        await self.wait_logins_available()
        c = await self.login("marcher")
        # the after-Auth step settles the start: one march out, the troops taken once
        seen: list[int] = []

        async def one_march_out() -> bool:
            r = await self.listing(c)
            if r is None:
                return False
            seen.append(len(r.marches))
            home = {t.type: t.count for t in r.home_troops}
            return len(r.marches) == 1 and home["cavalry"] == INITIAL["cavalry"] - TROOPS

        async def all_home() -> bool:
            r = await self.listing(c)
            return r is not None and not r.marches and \
                {t.type: t.count for t in r.home_troops} == INITIAL

        # a fast march may be home already when the first listing comes: either is fine,
        # as long as no second march ever shows and the troops end where they began
        await wait_for(lambda: self._either(one_march_out, all_home), 30,
                       "the recorded start settled")
        self.assertLessEqual(max(seen, default=0), 1)
        await wait_for(all_home, 30, "the march home")
        doc = await self.stored_player(c.userid)
        self.assertEqual(doc["components"]["troops"].get("sending"), {})

    async def _either(self, *checks: Any) -> bool:
        for check in checks:
            if await check():
                return True
        return False

    async def stored_player(self, userid: int) -> Any:
        from rltwist.storage import EmbeddedBackend

        backend = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            found = await backend.get_entity("player", userid)
        finally:
            await backend.close()
        assert found is not None
        return found.doc


class RoleKilledAfterTheTroopsLeft(_StartCrash, LoginCase):
    point = "after_march_take_save"


class RoleKilledAfterTheMapsOk(_StartCrash, LoginCase):
    point = "after_march_start_ok"
