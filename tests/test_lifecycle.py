"""Master and slaveflow with real twistd processes and real HTTP: registration, start order,
scale-out, crash detection, master restart, ordered shutdown and the GM API."""

from __future__ import annotations

import itertools
import time

from twisted.trial import unittest

from rltwist.launcher import LocalCluster
from tests.login_util import LoginCase, offline
from tests.util import equals, node_is, sleep, wait_for

REGION1 = ["master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1", "login1"]


class ClusterCase(unittest.TestCase):
    timeout = 180

    def cluster(self, names: list[str], **overrides: dict) -> LocalCluster:
        lc = LocalCluster(self.mktemp(), names, overrides=overrides or None)
        self.addCleanup(lc.stop_all)
        return lc

    async def relay(self, lc: LocalCluster, src: str, dst: str) -> str:
        status, body = await lc.gm("POST", "/call", {
            "node": src, "service": "diag", "method": "relay",
            "args": [dst, "diag", "ping", []]})
        self.assertEqual(status, 200, f"{src} -> {dst}: {body}")
        return body["result"]


#: the shutdown order operators are promised (docs/architecture.md), written out here
#: rather than taken from the code under test
SHUTDOWN_KINDS = ["login", "role", "rolecity", "mail", "guild", "map", "logiccenter"]


class StartAndShutdown(ClusterCase):
    async def test_nodes_start_in_any_order_and_shutdown_stops_them_kind_after_kind(
            self) -> None:
        # map2 is configured but never started: region 1 and the pools must not wait for it
        lc = self.cluster([*REGION1, "map2"])
        await lc.start("master", "login1")
        await wait_for(lambda: node_is(lc, "login1", "waiting"), 30,
                       "login1 to wait for logiccenter")
        rest = [n for n in REGION1 if n not in ("master", "login1")]
        for name in reversed(rest):  # rolecity first, logiccenter last
            lc.process(name).start()
        for name in rest:
            await lc.process(name).wait_ready(60)
        states = await lc.wait_up(REGION1, timeout=60)
        self.assertNotIn("map2", states)
        self.assertIn("waiting for logiccenter", lc.nodes["login1"].log_path.read_text())
        self.assertNotIn("map2", lc.nodes["guild1"].log_path.read_text())

        status, body = await lc.gm("POST", "/shutdown")
        self.assertEqual(status, 202, body)
        # follow the shutdown until master exits (it shows the finished shutdown for
        # exit_delay first); every report is the node's own, with its own clock
        last: dict = body
        deadline = time.monotonic() + 60
        while lc.nodes["master"].running and time.monotonic() < deadline:
            try:
                status, body = await lc.gm("GET", "/shutdown", timeout=2)
            except Exception:
                break  # master closed its port on its way out
            if status == 200:
                last = body
            await sleep(0.05)
        codes = {n: await lc.nodes[n].wait_exit(60) for n in REGION1}
        self.assertEqual(codes, dict.fromkeys(REGION1, 0))
        # every slave phase was over when GM last answered (master's own may be running)
        self.assertTrue(last["state"] == "done" or last["phase"] == "master", last)
        reports = [r for r in last["reports"] if r["kind"] != "master"]
        self.assertEqual(sorted(r["node"] for r in reports), sorted(REGION1[1:]))
        # in arrival order, the kinds follow the promised order ...
        arrived = [SHUTDOWN_KINDS.index(r["kind"]) for r in reports]
        self.assertEqual(arrived, sorted(arrived), [r["node"] for r in reports])
        # ... and no node of a kind began its shutdown before every node of the kinds
        # before it had finished (the nodes' own clocks: one machine)
        by_kind: dict[str, list[dict]] = {}
        for r in reports:
            by_kind.setdefault(r["kind"], []).append(r)
        kinds = [k for k in SHUTDOWN_KINDS if k in by_kind]
        for earlier, later in itertools.pairwise(kinds):
            finished = max(r["finished_at"] for r in by_kind[earlier])
            began = min(r["started_at"] for r in by_kind[later])
            self.assertLessEqual(finished, began, f"{later} began before {earlier} finished")


class ScaleOutAndFaults(ClusterCase):
    async def test_nodes_join_at_run_time_crash_and_come_back_and_master_restarts(self) -> None:
        first = ["master", "logiccenter", "map1", "guild1", "role1"]
        lc = self.cluster(first)
        await lc.start(*first)
        await lc.wait_up(first)

        # a second region and another role node join while the cluster runs
        joining = ["map2", "guild2", "mail2", "rolecity2", "role2"]
        await lc.start(*joining)
        await lc.wait_up(first + joining)
        for src in first[1:]:
            for dst in joining:
                self.assertEqual(await self.relay(lc, src, dst), "pong")
        for src in joining:
            self.assertEqual(await self.relay(lc, src, "map1"), "pong")

        # SIGKILL map1: master marks it down within the heartbeat bound
        await lc.nodes["map1"].kill()
        await wait_for(lambda: node_is(lc, "map1", "down"), 10,
                       "master to mark map1 down after SIGKILL")
        await lc.start("map1")
        await lc.wait_up(["map1"], timeout=30)
        self.assertEqual(await self.relay(lc, "guild2", "map1"), "pong")

        # a restarted master rebuilds its table from re-registrations
        pids = {n: lc.nodes[n].pid for n in first[1:] + joining}
        await lc.nodes["master"].stop()
        await lc.start("master")
        await lc.wait_up(first + joining, timeout=30)
        self.assertEqual({n: lc.nodes[n].pid for n in pids}, pids)
        self.assertEqual(await self.relay(lc, "map2", "role1"), "pong")


class CatchUpAndDecommission(ClusterCase):
    async def test_a_node_that_missed_a_broadcast_catches_up_from_its_heartbeats(
            self) -> None:
        names = ["master", "map1"]
        lc = self.cluster(names)
        await lc.start(*names)
        await lc.wait_up(names)
        # map1 is frozen long enough to be marked down: master's broadcasts skip it
        lc.nodes["map1"].pause()
        self.addCleanup(lc.nodes["map1"].resume)
        await wait_for(lambda: node_is(lc, "map1", "down"), 15, "map1 to be marked down")
        await lc.start("map2")  # joins at run time: not in the config map1 started with
        await lc.wait_up(["map2"])
        lc.nodes["map1"].resume()
        await wait_for(lambda: node_is(lc, "map1", "up"), 15, "map1 to be back up")
        await wait_for(lambda: self.relay_ok(lc, "map1", "map2"), 15,
                       "map1 to learn map2's address from master")

    async def relay_ok(self, lc: LocalCluster, src: str, dst: str) -> bool:
        status, body = await lc.gm("POST", "/call", {
            "node": src, "service": "diag", "method": "relay",
            "args": [dst, "diag", "ping", []]})
        return status == 200 and body.get("result") == "pong"

    async def test_a_stopped_node_is_not_down_and_can_be_decommissioned(self) -> None:
        names = ["master", "map1", "map2"]
        lc = self.cluster(names)
        await lc.start(*names)
        await lc.wait_up(names)
        status, body = await lc.gm("DELETE", "/nodes/map2")
        self.assertEqual((status, body["error"]), (409, "node_running"))
        status, body = await lc.gm("DELETE", "/nodes/map9")
        self.assertEqual((status, body["error"]), (404, "unknown_node"))

        # SIGTERM: an orderly stop, reported as such; never taken for a crash
        self.assertEqual(await lc.nodes["map2"].stop(), 0)
        await wait_for(lambda: node_is(lc, "map2", "stopped"), 10, "map2 to be stopped")
        # nothing to wait for: master would mark a crashed node down within
        # heartbeat_misses x heartbeat_interval = 1.5 s; give it three times that
        await sleep(3 * 0.5 * 3)
        self.assertEqual((await lc.node_states())["map2"], "stopped")
        self.assertNotIn("map2 is down", lc.nodes["master"].log_path.read_text())

        status, body = await lc.gm("DELETE", "/nodes/map2")
        self.assertEqual((status, body), (200, {"removed": "map2", "last_state": "stopped"}))
        self.assertNotIn("map2", await lc.node_states())

        async def map1_forgot() -> bool:
            status, body = await lc.gm("POST", "/call", {"node": "map1", "service": "diag",
                                                         "method": "addresses"})
            return status == 200 and "map2" not in body["result"]

        await wait_for(map1_forgot, 10, "map1 to remove map2 from its name table")


class GMApi(ClusterCase):
    async def test_tokens_and_bad_input_are_refused_clearly(self) -> None:
        names = ["master", "map1", "login1"]
        lc = self.cluster(names)
        await lc.start(*names)
        await lc.wait_up(names)

        status, body = await lc.gm("GET", "/nodes", token="wrong-token")
        self.assertEqual((status, body["error"]), (401, "unauthorized"))
        status, body = await lc.gm("GET", "/health", token="wrong-token")
        self.assertEqual((status, body["ok"]), (200, True))
        status, _ = await lc.gm("GET", "/metrics", token="wrong-token")
        self.assertEqual(status, 200)

        status, body = await lc.gm("POST", "/call", {"service": "diag", "method": "ping"})
        self.assertEqual((status, body["error"], body["field"]), (400, "missing_field", "node"))
        status, body = await lc.gm("POST", "/call", {"node": "map9", "service": "diag",
                                                     "method": "ping"})
        self.assertEqual((status, body["error"]), (404, "unknown_node"))
        status, body = await lc.gm("POST", "/call", {"node": "map1", "service": "diag",
                                                     "method": "nosuch"})
        self.assertEqual((status, body["error"]), (502, "UnknownMethod"))
        status, body = await lc.gm("POST", "/call", {"node": "map1", "service": "diag",
                                                     "method": "echo", "args": [{"a": [1]}]})
        self.assertEqual((status, body["result"]), (200, {"a": [1]}))
        # the diag helpers that hold a node up are for tests only (RLTWIST_TEST_FLAGS)
        status, body = await lc.gm("POST", "/call", {"node": "map1", "service": "diag",
                                                     "method": "sleep", "args": [30]})
        self.assertEqual((status, body["error"]), (502, "UnknownMethod"))

        import treq

        response = await treq.post(lc.gm_url("/call"), data=b"{not json",
                                   headers={"Authorization": ["Bearer " + _token(lc)]},
                                   persistent=False)
        body = await treq.json_content(response)
        self.assertEqual((response.code, body["error"]), (400, "bad_json"))

        status, sd = await lc.gm("GET", "/sd")
        self.assertEqual(status, 200)
        self.assertEqual({t["labels"]["node"] for t in sd}, set(names))
        map1 = next(t for t in sd if t["labels"]["node"] == "map1")
        self.assertEqual(map1["labels"]["sid"], "1")
        self.assertEqual(map1["targets"], [f"127.0.0.1:{lc.node_config('map1')['metrics_port']}"])

        # logins: closed and opened again, and the login node hears it
        status, _ = await lc.gm("POST", "/login/close")
        self.assertEqual(status, 200)
        await wait_for(lambda: _login_open(lc, False), 10, "login1 to see logins closed")
        await lc.gm("POST", "/login/open")
        await wait_for(lambda: _login_open(lc, True), 10, "login1 to see logins open")

    async def test_stuck_shutdown_names_the_node_and_force_goes_on(self) -> None:
        names = ["master", "map1", "guild1"]
        lc = self.cluster(names, cluster={"phase_timeout": 1.0, "heartbeat_interval": 10.0})
        await lc.start(*names)
        await lc.wait_up(names)
        lc.nodes["guild1"].pause()  # SIGSTOP: it cannot answer the shutdown
        self.addCleanup(lc.nodes["guild1"].resume)
        await lc.gm("POST", "/shutdown")
        body = await wait_for(lambda: _shutdown_if(lc, "stuck"), 20, "the shutdown to get stuck")
        self.assertEqual(body["phase"], "guild")
        guild = next(p for p in body["phases"] if p["kind"] == "guild")
        # frozen before master ever linked to it: the call was never written
        # (NodeUnreachable); frozen after: it may have run (CallTimeout) or the link's
        # liveness pings gave up on it (LinkLost). Each names the node and why.
        self.assertRegex(guild["nodes"]["guild1"], r"^(CallTimeout|NodeUnreachable|LinkLost): ")
        status, _ = await lc.gm("POST", "/shutdown", {"force": True})
        self.assertEqual(status, 202)
        self.assertEqual(await lc.nodes["map1"].wait_exit(30), 0)
        self.assertEqual(await lc.nodes["master"].wait_exit(30), 0)


def _token(lc: LocalCluster) -> str:
    return str(lc.sections["master"]["gm_token"])


async def _login_open(lc: LocalCluster, expected: bool) -> bool:
    status, body = await lc.gm("POST", "/call", {"node": "login1", "service": "diag",
                                                 "method": "status"})
    return status == 200 and body["result"]["login_open"] is expected


async def _shutdown_if(lc: LocalCluster, state: str) -> dict | None:
    status, body = await lc.gm("GET", "/shutdown")
    return body if status == 200 and body.get("state") == state else None




class RoleNodesInRedis(ClusterCase):
    async def test_master_records_role_nodes_and_removes_a_crashed_one(self) -> None:
        from rltwist.redis import OnlineState, RedisClient, RedisServer

        server = RedisServer(directory=self.mktemp())
        await server.start()
        self.addCleanup(server.stop)
        names = ["master", "role1", "role2"]
        lc = self.cluster(names, redis={"url": server.url, "prefix": "t:"})
        await lc.start(*names)
        await lc.wait_up(names)
        client = RedisClient(server.url, prefix="t:")
        await client.connect()
        self.addCleanup(client.disconnect)
        state = OnlineState(client)

        async def roles() -> dict[str, int]:
            return {r.node: r.port for r in await state.list_roles()}

        expected = {n: lc.node_config(n)["client_port"] for n in ("role1", "role2")}
        await wait_for(lambda: equals(roles(), expected), 10, "both role nodes in Redis")
        await lc.nodes["role2"].kill()
        await wait_for(lambda: equals(roles(), {"role1": expected["role1"]}), 10,
                       "the crashed role2 to leave the least-loaded pick")
        pick = await state.pick_least_loaded()
        self.assertEqual(pick.node if pick else None, "role1")



class RoleNodeStops(LoginCase):
    # rolecity1: new players are born only in a region the cluster has nodes of
    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]

    async def test_a_role_node_stopped_by_sigterm_is_stopped_not_down_and_frees_its_players(
            self) -> None:
        c = self.client("stopper")
        await c.play(*self.login_address())
        userid = c.login_response.userid
        ports = {self.lc.node_config(n)["client_port"]: n for n in ("role1", "role2")}
        holder = ports[c.login_response.port]
        self.assertEqual(await self.lc.nodes[holder].stop(), 0)
        await wait_for(lambda: node_is(self.lc, holder, "stopped"), 10,
                       f"master to report {holder} stopped")
        await wait_for(lambda: offline(self, userid), 10,
                       f"the player's state on the stopped {holder} to be cleared")
        self.assertNotIn(f"{holder} is down", self.lc.nodes["master"].log_path.read_text())
        again = self.client("stopper")
        await again.play(*self.login_address())
        self.assertEqual(again.login_response.userid, userid)
        self.assertNotEqual(ports[again.login_response.port], holder)
