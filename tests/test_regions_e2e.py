"""Opening a region while the cluster runs, as an operator does it (issue 14): real
processes — ``rl-cluster up``, bots playing, ``rl-cluster region add --sid 3``, the GM
``/regions`` routes, clients logging in, ``rl-cluster down``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from rltwist.bot import BotOptions, BotSwarm, run_bots
from rltwist.cli.cluster import _gm_request
from rltwist.config import load_config
from rltwist.protocols import pb
from tests.login_util import GameClient
from tests.test_rl_cluster import RL_CLUSTER, Output, alive
from tests.util import wait_for

REPO = Path(__file__).resolve().parent.parent
E = pb.ErrorCode


def write_config(path: Path) -> str:
    """etc/cluster.toml with region 1, one role and one login node on free ports."""
    from rltwist.launcher import free_ports, render_config

    base = load_config(REPO / "etc" / "cluster.toml")
    sections = {k: dict(v) for k, v in base.raw.items() if k != "nodes"}
    names = ("master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1",
             "login1")
    ports = iter(free_ports(1 + 3 * len(names)))
    sections["master"]["gm_port"] = next(ports)
    sections["hotreload"]["root"] = str(REPO)
    for name in names:
        node = {"host": "127.0.0.1", "port": next(ports), "metrics_port": next(ports)}
        client_port = next(ports)
        if name in ("role1", "login1"):
            node["client_port"] = client_port
        sections[f"nodes.{name}"] = node
    path.write_text(render_config(sections))
    return str(path)


class OpenRegionWhileRunning(unittest.TestCase):
    timeout = 300

    async def gm(self, method: str, path: str) -> tuple[int, Any]:
        return await _gm_request(reactor, method, f"{self.state['gm_url']}{path}",
                                 self.state["gm_token"], 10.0)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        import treq

        response = await treq.post(
            f"{self.state['gm_url']}{path}", json.dumps(body).encode(), persistent=False,
            headers={"Authorization": [f"Bearer {self.state['gm_token']}"]}
        ).addTimeout(10, reactor)
        content = await treq.content(response).addTimeout(10, reactor)
        return response.code, json.loads(content)

    async def regions(self) -> dict[int, dict[str, Any]]:
        status, body = await self.gm("GET", "/regions")
        self.assertEqual(status, 200, body)
        return {r["sid"]: r for r in body["regions"]}

    async def region_list(self) -> Any:
        c = GameClient("lister")
        conn = await c.connect(*self.login)
        try:
            return await conn.request(pb.RegionList())
        finally:
            conn.transport.loseConnection()

    async def stop_up(self, up: Any, out: Output) -> None:
        """After a failure: SIGTERM to `rl-cluster up` (its ordered shutdown stops every
        node it started, region 3's too), SIGKILL if it is still there after a bound."""
        if out.ended.called or not up.pid or not alive(up.pid):
            return
        os.kill(up.pid, 15)
        try:
            await defer.Deferred.fromCoroutine(wait_for(lambda: out.ended.called, 90,
                                                        "rl-cluster up to stop"))
        except Exception:
            os.kill(up.pid, 9)

    def rl_cluster(self, *args: str) -> defer.Deferred[subprocess.CompletedProcess[str]]:
        return deferToThread(subprocess.run, [*RL_CLUSTER, *args], capture_output=True,
                             text=True, timeout=200, cwd=REPO)

    async def test_a_region_added_and_opened_while_bots_play(self) -> None:
        run_dir = str(Path(self.mktemp()).absolute())
        config = write_config(Path(self.mktemp() + ".toml").absolute())
        out = Output()
        up = reactor.spawnProcess(out, sys.executable,
                                  [*RL_CLUSTER, "up", "--run-dir", run_dir, "--config", config,
                                   "--regions", "1", "--roles", "1", "--logins", "1"],
                                  env=dict(os.environ), path=str(REPO))
        self.addCleanup(self.stop_up, up, out)
        await wait_for(lambda: "cluster up in" in out.text or out.ended.called, 120,
                       f"rl-cluster up to report the cluster up:\n{out.text}")
        self.assertIn("cluster up in", out.text, out.text)
        self.state = json.loads((Path(run_dir) / "cluster.json").read_text())
        login = load_config(self.state["config"]).node("login1")
        self.login = (login.host, login.client_port)

        # bots playing in region 1 the whole time
        options = BotOptions.from_config(load_config(self.state["config"]), count=10,
                                         script="heartbeat", hold=None, heartbeat=1.0,
                                         openid_prefix="players")
        swarm = BotSwarm(options)
        self.addCleanup(lambda: None if released else swarm.release())
        released = False
        await swarm.login()
        before = await self.regions()
        self.assertEqual(sorted(before), [1])
        self.assertEqual((before[1]["state"], before[1]["players"], before[1]["online"],
                          before[1]["nodes_up"]), ("open", 10, 10, 4), before)

        # region 3 added: started, registered, known and closed
        added = await self.rl_cluster("region", "add", "--sid", "3", "--run-dir", run_dir)
        self.assertEqual(added.returncode, 0, added.stdout + added.stderr)
        for words in ("[4/4] rolecity3 ready", "master reports map3, guild3, mail3, "
                      "rolecity3 up", "region 3 added", "/regions/3/open"):
            self.assertIn(words, added.stdout)
        again = await self.rl_cluster("region", "add", "--sid", "3", "--run-dir", run_dir)
        self.assertEqual(again.returncode, 1, again.stdout)
        self.assertIn("already running: map3", again.stdout)
        three = (await self.regions())[3]
        self.assertEqual((three["state"], three["source"], three["players"], three["nodes_up"],
                          three["online"]), ("closed", "registered", 0, 4, 0), three)
        newcomer = GameClient("newcomer", server_id=3)
        self.assertEqual((await newcomer.login(*self.login)).code, E.BAD_SERVER_ID)
        listing = await self.region_list()
        self.assertEqual(([r.sid for r in listing.regions], listing.recommended), ([1], 1))

        # opened: new players land in it, the region list recommends it
        status, body = await self.gm("POST", "/regions/3/open")
        self.assertEqual((status, body["changed"], body["region"]["state"]),
                         (200, True, "open"), body)
        await newcomer.play(*self.login)
        self.assertEqual(newcomer.login_response.userid & 0xFFFF, 3)
        newcomer.close()

        async def recommends_3() -> bool:
            listing = await self.region_list()
            return ([r.sid for r in listing.regions], listing.recommended) == ([1, 3], 3)
        await wait_for(recommends_3, 10, "RegionList to list region 3 and recommend it")
        self.assertEqual(await self.post("/regions/recommend", {"sid": 1}),
                         (200, {"chosen": 1, "recommended": 1}))
        self.assertEqual((await self.regions())[1]["recommended"], True)
        self.assertEqual((await self.post("/regions/recommend", {"sid": "3"}))[0], 400)
        self.assertEqual(await self.post("/regions/recommend", {"sid": 0}),
                         (200, {"chosen": 0, "recommended": 3}))
        pickers = BotOptions.from_config(load_config(self.state["config"]), count=5,
                                         script="heartbeat", hold=0.0,
                                         recommended_region=True, openid_prefix="pickers")
        report = await run_bots(pickers)
        self.assertEqual((report.ok, report.failed), (5, 0), report.format_table())
        self.assertEqual(report.latency["region_list"].count, 5)
        self.assertEqual((await self.regions())[3]["players"], 1 + 5)

        # closed again: refused for new players, the region's players still log in
        status, body = await self.gm("POST", "/regions/3/close")
        self.assertEqual((status, body["region"]["state"]), (200, "closed"), body)
        self.assertEqual((await GameClient("late", server_id=3).login(*self.login)).code,
                         E.BAD_SERVER_ID)

        async def logs_in_again() -> bool:
            r = await newcomer.login(*self.login)  # RETRY_LATER while the old one logs out
            return r.code == E.OK and r.userid & 0xFFFF == 3
        await wait_for(logs_in_again, 20, "the region-3 player to log in again")

        async def recommends_1() -> bool:
            listing = await self.region_list()
            return ([r.sid for r in listing.regions], listing.recommended) == ([1], 1)
        await wait_for(recommends_1, 10, "RegionList to list region 1 alone")

        # operator mistakes are named
        self.assertEqual((await self.gm("POST", "/regions/9/open"))[0], 404)
        status, body = await self.gm("POST", "/regions/x/open")
        self.assertEqual((status, body["error"]), (400, "bad_region"))

        # the bots played through all of it
        report = await swarm.release()
        released = True
        self.assertEqual((report.ok, report.failed, report.kicked), (10, 0, 0),
                         report.format_table())

        state = json.loads((Path(run_dir) / "cluster.json").read_text())
        self.assertTrue({"map3", "guild3", "mail3", "rolecity3"} <= set(state["pids"]))
        pids = list(state["pids"].values())
        down = await self.rl_cluster("down", "--run-dir", run_dir)
        self.assertEqual(down.returncode, 0, down.stdout + down.stderr)
        self.assertEqual(await out.ended, 0, out.text)
        self.assertIn("cluster stopped cleanly", out.text)
        await wait_for(lambda: not any(alive(p) for p in pids), 10, "every node to exit")
