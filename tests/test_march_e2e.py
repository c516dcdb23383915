"""Marches across real processes (issue 13 "Marches and battle", "Must show"): two regions,
two role nodes, real Redis, embedded storage. The troops table of these tests is a copy of
etc/game with fast troops (a march takes seconds, not minutes).

* a player of region 2 on role2 gathers at a resource point near its city: the march
  arrives, gathers, comes home; the owner hears each step (MarchNotify) and the load and
  the troops are credited once; an attack march's battle report is pushed and kept in
  the mail, its survivors and rewards credited once; GM troops are given once per key;
* kill -9 of the map node with marches in flight: after its restart every march
  completes once and the loads are credited once;
* an ordered GM shutdown and a full start with marches in flight lose nothing.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from rltwist.protocols import pb
from tests.login_util import GameClient
from tests.social_util import SocialCase
from tests.util import wait_for

E = pb.ErrorCode
K = pb.MapEntityKind
EV = pb.MarchEvent
REPO = Path(__file__).resolve().parent.parent
TROOPS = 100  # cavalry per march: load 6 each -> 600, below any point's amount
LOAD = 600


def fast_tables(root: Path) -> None:
    """etc/game under *root* with marches of a few seconds."""
    shutil.copytree(REPO / "etc" / "game", root / "etc" / "game")
    path = root / "etc" / "game" / "troops.toml"
    table = tomllib.loads(path.read_text())
    for stats in table["types"].values():
        stats["speed"] = stats["speed"] * 8  # cavalry: 16 tiles/s
    table["march"]["gather_per_second"] = 300  # 600 in 2 s
    path.write_text(tomli_w.dumps(table))


class Marches(SocialCase):
    async def setUp(self) -> None:
        root = Path(self.mktemp()).absolute()
        fast_tables(root)
        self.overrides = {"hotreload": {"root": str(root), "hotfix_interval": 0,
                                        "config_interval": 0}}
        await super().setUp()

    # -- helpers ----------------------------------------------------------------------

    async def player_on(self, region: int, role: str) -> GameClient:
        """A new player born in *region* served by *role*, with its city on the map."""
        # the others stay online meanwhile: the login's least-loaded pick then moves on
        others: list[GameClient] = []
        for _ in range(8):
            c = await self.player(region)
            if c.role == role:
                break
            others.append(c)
        else:
            raise AssertionError(f"no player of region {region} landed on {role}")
        for other in others:
            other.close()
        await wait_for(lambda: self._has_city(c), 20, f"{c.openid}'s city on map{region}")
        return c

    async def _has_city(self, c: GameClient) -> bool:
        r = await c.request(pb.MarchList())
        return r.code == E.OK and r.HasField("city")

    async def targets(self, c: GameClient, kind: int, n: int) -> list[Any]:
        r = await self.request_ok(c, pb.MarchTargets(around_city=True, radius=64))
        found = [t for t in r.targets if t.kind == kind and t.owner_user_id == 0]
        self.assertGreaterEqual(len(found), n, f"{n} targets of kind {kind} near the city")
        return found[:n]

    async def attrs(self, c: GameClient) -> dict[str, Any]:
        info = await self.probe.cluster.call(c.role, "gateway", "player_info", c.userid,
                                             timeout=10)
        assert info is not None, f"{c.openid} is not online on {c.role}"
        return dict(info["attrs"])

    async def home_troops(self, c: GameClient) -> dict[str, int]:
        r = await self.request_ok(c, pb.MarchList())
        return {t.type: t.count for t in r.home_troops}

    async def gather(self, c: GameClient, point: Any) -> int:
        r = await c.request(pb.MarchStart(
            type=pb.MarchType.MARCH_GATHER, target_x=point.x, target_y=point.y,
            troops=[pb.TroopCount(type="cavalry", count=TROOPS)]))
        self.assertEqual(r.code, E.OK, pb.ErrorCode.Name(r.code))
        self.assertEqual(r.march.line.state, pb.MarchState.MARCH_OUTBOUND)
        return int(r.march.line.march_id)

    async def all_home(self, c: GameClient, credited: dict[str, int],
                       before: dict[str, Any], troops: dict[str, int]) -> None:
        """Wait until *c* has no march out, its troops are back and the resources are
        exactly *before* plus *credited* (a double credit overshoots: never equal)."""

        async def done() -> bool:
            r = await c.request(pb.MarchList())
            if r.code != E.OK or r.marches:
                return False
            got = await self.attrs(c)
            return {k: got[k] - before[k] for k in credited} == credited

        await wait_for(done, 60, f"{c.openid}'s marches home and credited {credited}")
        self.assertEqual(await self.home_troops(c), troops)

    # -- the flows --------------------------------------------------------------------

    async def test_a_region2_player_on_role2_gathers_attacks_and_is_credited_once(self) -> None:
        c = await self.player_on(2, "role2")
        troops = await self.home_troops(c)
        self.assertEqual(troops, {"infantry": 1000, "cavalry": 500, "archer": 500})
        before = await self.attrs(c)
        [point] = await self.targets(c, K.MAP_RESOURCE, 1)
        mid = await self.gather(c, point)
        self.assertEqual((await self.home_troops(c))["cavalry"], 500 - TROOPS)
        for event in (EV.MARCH_GATHERING, EV.MARCH_RETURNING_HOME, EV.MARCH_HOME):
            note = await self.wait_push(c, pb.MarchNotify, lambda m, e=event: m.event == e
                                        and m.march.line.march_id == mid, timeout=30)
        self.assertEqual(dict(note.march.load), {point.resource: LOAD})
        await self.all_home(c, {point.resource: LOAD}, before, troops)
        # the recall of a march that is home: not found
        r = await c.request(pb.MarchRecall(march_id=mid))
        self.assertEqual(r.code, E.MARCH_NOT_FOUND)
        # an attack: the report is pushed and kept in the mail; survivors and rewards home
        [monster] = await self.targets(c, K.MAP_MONSTER, 1)
        before = await self.attrs(c)
        army = {"infantry": 600, "cavalry": 300, "archer": 300}
        r = await c.request(pb.MarchStart(
            type=pb.MarchType.MARCH_ATTACK, target_x=monster.x, target_y=monster.y,
            troops=[pb.TroopCount(type=t, count=n) for t, n in army.items()]))
        self.assertEqual(r.code, E.OK, pb.ErrorCode.Name(r.code))
        mid = r.march.line.march_id
        report = await self.wait_push(c, pb.BattleReportNotify,
                                      lambda m: m.march_id == mid, timeout=30)
        self.assertEqual((report.monster_id, report.monster_level),
                         (monster.id, monster.level))
        self.assertEqual({t.type: t.count for t in report.troops_before}, army)
        lost = {t.type: t.count for t in report.troops_lost}
        await self.wait_push(c, pb.MarchNotify, lambda m: m.event == EV.MARCH_HOME
                             and m.march.line.march_id == mid, timeout=30)
        rewards = {k: v for k, v in report.rewards.items() if v}
        self.assertEqual(bool(rewards), report.won)
        await self.all_home(c, rewards, before,
                            {t: n - lost.get(t, 0) for t, n in troops.items()})
        troops = await self.home_troops(c)

        async def reports() -> int:
            mails = await self.request_ok(c, pb.MailList())
            return [m.title for m in mails.mails].count("Battle report")

        await wait_for(lambda: self._is(reports(), 1), 20, "the battle report in the mail")
        # GM troops: a transfer through the map of the city, given once per key
        path = f"/players/{c.userid}/troops"
        answers = [await self.lc.gm("POST", path, {"troops": {"archer": 7}, "key": "gm1"},
                                    timeout=20) for _ in range(2)]
        self.assertEqual([a[0] for a in answers], [200, 200], answers)
        self.assertEqual(answers[0][1]["transfer_id"], answers[1][1]["transfer_id"])
        self.assertEqual(answers[0][1]["node"], "map2")
        want = dict(troops, archer=troops["archer"] + 7)
        await wait_for(lambda: self._troops_are(c, want), 20, f"troops {want}")
        status, _ = await self.lc.gm("POST", path, {"troops": {"dragon": 1}}, timeout=20)
        self.assertEqual(status, 400)
        status, _ = await self.lc.gm("POST", "/players/999999/troops",
                                     {"troops": {"archer": 1}}, timeout=20)
        self.assertEqual(status, 404)
        self.assertEqual(await self.home_troops(c), want)

    @staticmethod
    async def _is(value: Any, want: Any) -> bool:
        return bool(await value == want)

    async def _troops_are(self, c: GameClient, want: dict[str, int]) -> bool:
        return await self.home_troops(c) == want

    async def test_kill_9_of_the_map_with_marches_in_flight(self) -> None:
        c = await self.player_on(2, "role2")
        troops = await self.home_troops(c)
        before = await self.attrs(c)
        points = await self.targets(c, K.MAP_RESOURCE, 3)
        for p in points:
            await self.gather(c, p)
        self.assertLess(await self.lc.nodes["map2"].kill(), 0)  # acknowledged: saved
        await self.lc.start("map2")
        await self.lc.wait_up(self.names)
        credited: dict[str, int] = {}
        for p in points:
            credited[p.resource] = credited.get(p.resource, 0) + LOAD
        await self.all_home(c, credited, before, troops)

    async def test_ordered_shutdown_and_start_with_marches_in_flight(self) -> None:
        c = await self.player_on(2, "role2")
        troops = await self.home_troops(c)
        points = await self.targets(c, K.MAP_RESOURCE, 2)
        for p in points:
            await self.gather(c, p)
        before = await self.attrs(c)  # the troops left; nothing is home yet
        status, _ = await self.lc.gm("POST", "/shutdown")
        self.assertEqual(status, 202)
        codes = {n: await self.lc.nodes[n].wait_exit(60) for n in self.names}
        self.assertEqual(codes, dict.fromkeys(self.names, 0))
        await self.lc.start(*self.names)
        await self.lc.wait_up(self.names)
        await self.wait_logins_available()
        c = await self.relogin(c)
        credited: dict[str, int] = {}
        for p in points:
            credited[p.resource] = credited.get(p.resource, 0) + LOAD
        await self.all_home(c, credited, before, troops)
