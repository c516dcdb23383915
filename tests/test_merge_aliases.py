"""The region alias table (issue 14 item "Routing alias"), with real processes: set
through GM, broadcast to every node, caught up by a node that missed the broadcast,
handed to nodes that start later, kept across a master restart (globaldb)."""

from __future__ import annotations

import signal
from typing import Any

from twisted.trial import unittest

from rltwist.cluster import Cluster, ClusterError
from rltwist.cluster.routing import Routing
from rltwist.config import ClusterSettings
from rltwist.launcher import DEV_SECRET, LocalCluster
from tests.util import node_is, wait_for

NODES = ["master", "logiccenter", "map1", "rolecity1"]


class AliasBroadcast(unittest.TestCase):
    timeout = 180

    async def aliases_of(self, node: str) -> Any:
        try:
            return await self.tester.call(node, "slaveflow", "aliases", timeout=3)
        except ClusterError:
            return None

    async def has(self, node: str, table: dict[str, int]) -> bool:
        return await self.aliases_of(node) == table

    async def gm_aliases(self) -> Any:
        status, body = await self.lc.gm("GET", "/regions/aliases")
        return body if status == 200 else None

    async def test_alias_reaches_every_node_and_survives_a_master_restart(self) -> None:
        self.lc = lc = LocalCluster(self.mktemp(), NODES)
        self.addCleanup(lc.stop_all)
        await lc.start(*NODES)
        await lc.wait_up(NODES)
        lc.add_node("mail1")
        self.tester = Cluster("tester", ClusterSettings(secret=DEV_SECRET.encode(),
                                                        call_timeout=10.0),
                              {n: lc.address(n) for n in [*NODES[1:], "mail1"]})
        self.tester.startService()
        self.addCleanup(self.tester.stopService)

        async def loaded() -> bool:
            body = await self.gm_aliases()
            return bool(body and body["loaded"])

        await wait_for(loaded, 20, "master to load the region aliases from globaldb")
        self.assertEqual((await self.gm_aliases())["aliases"], {})
        # map1 frozen long enough to be marked down: the broadcast skips it
        lc.process("map1").signal(signal.SIGSTOP)
        try:
            await wait_for(lambda: node_is(lc, "map1", "down"), 20, "master to mark map1 down")
            status, body = await lc.gm("POST", "/regions/aliases", {"from": 2, "into": 1})
            self.assertEqual((status, body), (200, {"aliases": {"2": 1}}))
            for node in ("logiccenter", "rolecity1"):
                await wait_for(lambda node=node: self.has(node, {"2": 1}), 10,
                               f"{node} to take the broadcast alias")
        finally:
            lc.process("map1").signal(signal.SIGCONT)
        await wait_for(lambda: self.has("map1", {"2": 1}), 20,
                       "map1 to catch the alias up through its heartbeats")
        # refused tables change nothing
        for bad in ({"from": 1, "into": 1}, {"from": 1, "into": 2}, {"from": 0, "into": 1},
                    {"from": 3}):
            status, body = await lc.gm("POST", "/regions/aliases", bad)
            self.assertEqual(status, 400, (bad, body))
        self.assertEqual((await self.gm_aliases())["aliases"], {"2": 1})
        # master restarted: the table comes back from globaldb, and a node started now
        # gets it when it registers
        await lc.process("master").stop()
        await lc.start("master")
        await wait_for(loaded, 20, "the restarted master to load the region aliases")
        self.assertEqual((await self.gm_aliases())["aliases"], {"2": 1})
        await lc.start("mail1")
        await wait_for(lambda: self.has("mail1", {"2": 1}), 20,
                       "mail1, started after the merge, to have the alias")
        status, body = await lc.gm("POST", "/regions/aliases", {"from": 3, "into": 2})
        self.assertEqual(body, {"aliases": {"2": 1, "3": 1}})  # chains resolve to the end
        for node in ("logiccenter", "map1", "rolecity1", "mail1"):
            await wait_for(lambda node=node: self.has(node, {"2": 1, "3": 1}), 10,
                           f"{node} to take the second alias")
        # the routing helpers resolve through it (what every node now does)
        r = Routing({2: 1, 3: 1})
        self.assertEqual([r.rolecity_node(7 << 16 | 3), r.mail_node(9 << 16 | 2),
                          r.guild_node(5 << 16 | 2), r.map_node(3)],
                         ["rolecity1", "mail1", "guild1", "map1"])
