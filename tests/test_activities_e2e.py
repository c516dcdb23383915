"""Global activities end to end (issue 12): scheduled through master's GM API, started and
ended by logiccenter's timer, pushed to the online players of their regions, listed by
the client, and kept across a kill -9 of logiccenter. Two regions, two role nodes, real
processes."""

from __future__ import annotations

import time
from typing import Any

from rltwist.protocols import pb
from tests.social_util import SocialCase
from tests.util import wait_for

EV = pb.ActivityEvent


class Activities(SocialCase):
    async def gm(self, method: str, path: str, body: Any = None,
                 expect: int = 200) -> dict[str, Any]:
        status, answer = await self.lc.gm(method, path, body, timeout=30)
        self.assertEqual(status, expect, f"{method} {path}: {answer}")
        result: dict[str, Any] = answer
        return result

    async def schedule(self, **body: Any) -> int:
        answer = await self.gm("POST", "/activities", body)
        activity_id: int = answer["activity"]["id"]
        return activity_id

    async def listed(self, client: Any) -> list[tuple[int, str]]:
        r = await self.request_ok(client, pb.ActivityList())
        return [(a.id, a.kind) for a in r.activities]

    def event(self, event: int, activity_id: int) -> Any:
        return lambda m: m.event == event and m.activity.id == activity_id

    async def test_gm_activities_reach_their_regions_and_survive_a_logiccenter_kill(
            self) -> None:
        a, b = await self.players_apart(1, 2)
        await self.gm("POST", "/activities", {"kind": "no_such_kind", "duration": 5},
                      expect=400)
        await self.gm("POST", "/activities", {"kind": "world_boss"}, expect=400)
        await self.gm("DELETE", "/activities/99", expect=404)
        await self.gm("POST", "/activities/x/extend", {"by": 5}, expect=400)

        # region 2 only; then one for every region
        boss = await self.schedule(kind="world_boss", start_in=0.5, duration=3600,
                                   regions=[2])
        got = await self.wait_push(b, pb.ActivityNotify, self.event(EV.ACTIVITY_STARTED, boss))
        self.assertEqual((got.activity.kind, got.activity.title, list(got.activity.regions)),
                         ("world_boss", "World boss", [2]))
        bonus = await self.schedule(kind="login_bonus", start_in=0.5, duration=3600,
                                    params={"gold": 9})
        got = await self.wait_push(a, pb.ActivityNotify,
                                   self.event(EV.ACTIVITY_STARTED, bonus))
        self.assertEqual(dict(got.activity.params), {"gold": 9, "times": 1})
        await self.wait_push(b, pb.ActivityNotify, self.event(EV.ACTIVITY_STARTED, bonus))
        # one link per role node keeps order: region 2's start would have come first
        self.assertEqual([m for m in a.pushes if isinstance(m, pb.ActivityNotify)], [])
        self.assertEqual(await self.listed(a), [(bonus, "login_bonus")])
        self.assertEqual(await self.listed(b), [(boss, "world_boss"), (bonus, "login_bonus")])

        # while logiccenter is dead: one region-1 activity runs and ends, and one that
        # starts later must still start (the timer is armed again from storage)
        short = await self.schedule(kind="world_boss", start_in=2, duration=1, regions=[1])
        late = await self.schedule(kind="world_boss", start_in=15, duration=600)
        listing = {x["id"]: x for x in (await self.gm("GET", "/activities"))["activities"]}
        self.assertLess(await self.lc.nodes["logiccenter"].kill(), 0)
        end_ms = listing[short]["end_ms"]
        await wait_for(lambda: time.time() * 1000 > end_ms + 200, 10,
                       "the end of the short activity to pass while logiccenter is dead")
        await self.lc.start("logiccenter")
        await self.lc.wait_up(self.names)

        # the run it missed is reported ended (never started) to region 1 only
        await self.wait_push(a, pb.ActivityNotify, self.event(EV.ACTIVITY_ENDED, short),
                             timeout=20)
        states = {x["id"]: x["state"] for x in (await self.gm("GET", "/activities"))
                  ["activities"]}
        self.assertEqual(states, {boss: "running", bonus: "running", short: "ended",
                                  late: "scheduled"})
        self.assertEqual(await self.listed(b), [(boss, "world_boss"), (bonus, "login_bonus")])
        for c in (a, b):
            await self.wait_push(c, pb.ActivityNotify, self.event(EV.ACTIVITY_STARTED, late),
                                 timeout=30)
        self.assertEqual([m for m in b.pushes if isinstance(m, pb.ActivityNotify)], [])

        # GM changes after the restart: extend the boss, stop the bonus
        extended = await self.gm("POST", f"/activities/{boss}/extend", {"by": 60})
        got = await self.wait_push(b, pb.ActivityNotify,
                                   self.event(EV.ACTIVITY_EXTENDED, boss))
        self.assertEqual(got.activity.end_ms, extended["activity"]["end_ms"])
        await self.gm("DELETE", f"/activities/{bonus}")
        for c in (a, b):
            await self.wait_push(c, pb.ActivityNotify, self.event(EV.ACTIVITY_ENDED, bonus))
        await self.gm("DELETE", f"/activities/{bonus}", expect=409)
        self.assertEqual(await self.listed(a), [(late, "world_boss")])
