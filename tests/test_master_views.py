"""What master tells operators and Prometheus about the rest of the cluster, with real
processes: ``rl_node_up{node}`` from its table, ``GET /sd`` listing nodes that are down or
never came, and ``GET /players/<userid>``."""

from __future__ import annotations

from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families

from rltwist.launcher import free_ports
from rltwist.protocols import pb
from tests.login_util import LoginCase, offline
from tests.util import wait_for

E = pb.ErrorCode
_p = free_ports(3)
#: configured, never started: master must call it down (a node that died while master
#: was away looks the same to a restarted master)
NEVER_STARTED = {"host": "127.0.0.1", "port": _p[0], "metrics_port": _p[1],
                 "client_port": _p[2]}


class MasterViews(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    overrides = {"nodes.login2": NEVER_STARTED}

    async def master_metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        m = self.lc.node_config("master")
        response = await treq.get(f"http://{m['host']}:{m['metrics_port']}/metrics",
                                  persistent=False).addTimeout(10, _reactor())
        text = (await treq.content(response)).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    async def node_up(self) -> dict[str, float]:
        return {dict(labels)["node"]: v for (name, labels), v in
                (await self.master_metrics()).items() if name == "rl_node_up"}

    async def sd_nodes(self) -> dict[str, dict[str, Any]]:
        status, body = await self.lc.gm("GET", "/sd")
        self.assertEqual(status, 200, body)
        return {g["labels"]["node"]: g for g in body}

    async def test_node_up_and_sd_cover_killed_and_never_started_nodes(self) -> None:
        up = await wait_for(lambda: _has(self.node_up(), "login2"), 20,
                            "master to export rl_node_up for the never-started login2")
        self.assertEqual(up["login2"], 0.0)
        for name in ("master", "logiccenter", "rolecity1", "role1", "login1"):
            self.assertEqual(up[name], 1.0, up)
        labels = {dict(lb)["node"]: dict(lb) for (n, lb), _ in
                  (await self.master_metrics()).items() if n == "rl_node_up"}
        self.assertEqual(labels["rolecity1"]["kind"], "rolecity")
        self.assertEqual(labels["rolecity1"]["sid"], "1")
        sd = await self.sd_nodes()
        self.assertEqual(sd["login2"]["targets"], [f"127.0.0.1:{NEVER_STARTED['metrics_port']}"])
        self.assertEqual(sd["login2"]["labels"]["kind"], "login")

        await self.lc.process("role1").kill()
        await wait_for(lambda: _value_is(self.node_up(), "role1", 0.0), 20,
                       "rl_node_up{node=role1} to drop to 0 after SIGKILL")
        sd = await self.sd_nodes()
        self.assertIn("role1", sd)  # Prometheus keeps scraping it and sees up == 0

    async def test_players_shows_online_state_node_region_name_and_generation(self) -> None:
        host, port = self.login_address()
        c = self.client("views-1")
        auth = await c.play(host, port)
        userid = auth.userid
        status, body = await self.lc.gm("GET", f"/players/{userid}")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["online"], True)
        self.assertEqual(body["state"], "online")
        self.assertEqual(body["role_node"], "role1")
        self.assertEqual(body["birth_region"], 1)
        self.assertEqual(body["name"], "")
        self.assertGreaterEqual(body["generation"], 1)
        self.assertNotIn("mapid", body)  # no world map yet
        generation = body["generation"]

        self.assertEqual((await c.request(pb.Rename(name="Vera"))).code, E.OK)
        c.close()
        await wait_for(lambda: offline(self, userid), 20, f"{userid} to log out")
        status, body = await self.lc.gm("GET", f"/players/{userid}")
        self.assertEqual(status, 200, body)
        self.assertEqual((body["online"], body["state"], body["role_node"]),
                         (False, "offline", None))
        self.assertEqual(body["name"], "Vera")
        self.assertEqual(body["generation"], generation)

    async def test_players_refuses_unknown_bad_and_unauthorized(self) -> None:
        status, body = await self.lc.gm("GET", f"/players/{(999 << 16) | 1}")
        self.assertEqual((status, body["error"]), (404, "unknown_player"), body)
        status, body = await self.lc.gm("GET", "/players/abc")
        self.assertEqual((status, body["error"]), (400, "bad_userid"), body)
        status, body = await self.lc.gm("GET", "/players/0")
        self.assertEqual((status, body["error"]), (400, "bad_userid"), body)
        status, body = await self.lc.gm("GET", "/players/65537", token="wrong")
        self.assertEqual(status, 401, body)


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def _has(d: Any, name: str) -> Any:
    found = await d
    return found if name in found else None


async def _value_is(d: Any, name: str, value: float) -> bool:
    return (await d).get(name) == value
