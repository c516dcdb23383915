"""Client ports of real login and role node processes (issue 11 items 13, 14, 15):
handshake deadline, connection cap and stalled frames with the config keys that set them,
requests in flight, VERSION_TOO_OLD, BAD_SERVER_ID, KICK_GM and KICK_PROTOCOL_ERROR as a
client sees them."""

from __future__ import annotations

import struct
from typing import Any

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rltwist.config import LoginSettings
from rltwist.nodes.login.loginhandler import version_allowed
from rltwist.protocols import FrameDecoder, decode_downstream, encode_request, pb
from rltwist.sdk import dev_token
from tests.login_util import FakeLoginNode, LoginCase, login_handler, offline
from tests.util import RawClient, wait_for

E = pb.ErrorCode
K = pb.KickReason


class Raw(RawClient):
    """A raw client of a game port that can decode the pushes it received."""

    def pushes(self) -> list[Any]:
        frames = FrameDecoder(downstream=True).feed(self.received)
        return [decode_downstream(*f) for f in frames if f.session == 0]


async def raw(port: int) -> Raw:
    client = Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), client)
    return client


async def closed(client: Raw, within: float, what: str) -> None:
    try:
        await client.lost.addTimeout(within, reactor)
    except defer.TimeoutError:
        raise AssertionError(f"the server did not close the connection within {within}s "
                             f"({what})") from None


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await treq.get(f"http://127.0.0.1:{port}/metrics", persistent=False)
    text = (await treq.content(response)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def protocol_error(reason: str) -> pb.KickNotify:
    return pb.KickNotify(reason=reason, code=K.KICK_PROTOCOL_ERROR)


class ClientPorts(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "rolecity2", "role1", "login1"]
    overrides = {"login": {"min_version": "1.2"},
                 "client": {"handshake_timeout": 2.0, "frame_timeout": 2.0,
                            "max_connections": 4}}

    def client(self, openid: str, **kw: Any) -> Any:
        kw.setdefault("version", "1.2")
        return super().client(openid, **kw)

    def port(self, node: str, which: str = "client_port") -> int:
        return int(self.lc.node_config(node)[which])

    # -- item 13 and 14 ---------------------------------------------------------------

    async def test_idle_connections_are_closed_and_the_cap_refuses_more(self) -> None:
        login = self.port("login1")
        idle = [await raw(login) for _ in range(4)]
        extra = await raw(login)  # the fifth: over client.max_connections
        await closed(extra, 5, "a connection over max_connections")
        self.assertEqual(extra.received, b"")
        for c in idle:  # none sent a Login: closed after handshake_timeout (2 s)
            await closed(c, 10, "an idle connection past handshake_timeout")
            self.assertEqual(c.pushes(), [protocol_error("handshake_timeout")])
        # the port takes new clients again
        await self.client("ida").play(*self.login_address())
        metrics = await scrape(self.port("login1", "metrics_port"))
        self.assertEqual(metrics[("rl_client_refused_total",
                                  (("reason", "max_connections"),))], 1.0)
        self.assertEqual(metrics[("rl_client_closes_total",
                                  (("reason", "handshake_timeout"),))], 4.0)

    async def test_a_player_whose_frame_stalls_is_disconnected_and_logged_out(self) -> None:
        c = self.client("stan")
        await c.play(*self.login_address())
        userid = c.login_response.userid
        c.conn.transport.write(encode_request(pb.Rename(name="half"), 99)[:5])
        await c.closed.addTimeout(10, reactor)
        self.assertEqual(c.pushes, [protocol_error("frame_timeout")])
        await wait_for(lambda: offline(self, userid), 10, "stan to be logged out")

    async def test_requests_over_the_in_flight_bound_close_the_connection(self) -> None:
        c = await raw(self.port("login1"))
        token = dev_token(LoginSettings().dev_sdk_secret, "flood")
        login = pb.Login(openid="flood", token=token, server_id=1, version="1.2")
        # 40 at once: the first 16 are still running (Redis, logiccenter) when the 17th
        # arrives
        c.transport.write(b"".join(encode_request(login, s) for s in range(1, 41)))
        await closed(c, 10, "a connection with 40 Logins in flight")
        self.assertIn(protocol_error("too_many_requests"), c.pushes())

    # -- item 15 --------------------------------------------------------------------------

    async def test_new_players_are_born_only_in_regions_the_cluster_has(self) -> None:
        host, port = self.login_address()
        first = self.client("rita", server_id=3)  # no node of region 3
        self.assertEqual((await first.login(host, port)).code, E.BAD_SERVER_ID)
        self.assertEqual((await self.client("rita", server_id=0).login(host, port)).code,
                         E.BAD_SERVER_ID)
        # no account was made: rita is born where she asks next
        born = self.client("rita", server_id=2)
        await born.play(host, port)
        self.assertEqual(born.login_response.userid & 0xFFFF, 2)

    async def test_clients_older_than_min_version_must_update(self) -> None:
        host, port = self.login_address()
        for version in ("1.1", "1", "", "1.2-beta"):
            r = await self.client("otto", version=version).login(host, port)
            self.assertEqual(r.code, E.VERSION_TOO_OLD, version)
        for version in ("1.2", "1.2.0", "1.10", "2"):
            r = await self.client(f"otto{version}", version=version).login(host, port)
            self.assertEqual(r.code, E.OK, version)

    async def test_gm_kick_reaches_the_client_as_kick_gm(self) -> None:
        c = self.client("gina")
        await c.play(*self.login_address())
        userid = c.login_response.userid
        status, body = await self.lc.gm("POST", f"/players/{userid}/kick",
                                        {"reason": "cheating"})
        self.assertEqual((status, body), (200, {"userid": userid, "node": "role1",
                                                "result": "kicked"}))
        await c.closed.addTimeout(10, reactor)
        self.assertEqual(c.pushes, [pb.KickNotify(reason="cheating", code=K.KICK_GM)])
        self.assertTrue(await offline(self, userid))
        status, body = await self.lc.gm("POST", f"/players/{userid}/kick")
        self.assertEqual((status, body["error"]), (404, "not_online"))
        metrics = await scrape(self.port("role1", "metrics_port"))
        self.assertEqual(metrics[("rl_role_logouts_total", (("reason", "gm kick"),))], 1.0)

    async def test_a_protocol_error_is_told_to_the_client_before_the_close(self) -> None:
        for node, payload, reason in (
                ("role1", encode_request(pb.Heartbeat(), 1), "request_before_auth"),
                ("login1", encode_request(pb.Heartbeat(), 1), "request_before_auth"),
                ("role1", struct.pack(">HHI", 6, 9999, 1), "unknown_proto")):
            c = await raw(self.port(node))
            c.transport.write(payload)
            await closed(c, 10, f"{reason} on {node}")
            self.assertEqual(c.pushes(), [protocol_error(reason)], node)


class VersionRule(unittest.TestCase):
    def test_versions_compare_number_by_number(self) -> None:
        self.assertTrue(version_allowed("anything", ""))
        self.assertTrue(version_allowed("1.10", "1.9"))
        self.assertTrue(version_allowed("1.2", "1.2.0"))
        self.assertTrue(version_allowed("1.2.0.1", "1.2"))
        self.assertFalse(version_allowed("1.9", "1.10"))
        self.assertFalse(version_allowed("1.1.9", "1.2"))
        self.assertFalse(version_allowed("", "1"))
        self.assertFalse(version_allowed("v1.2", "1"))

    async def test_a_too_old_client_is_refused_before_anything_is_asked(self) -> None:
        # no SDK, Redis or cluster behind this node: a refusal must not need them
        node = FakeLoginNode(LoginSettings(min_version="2.0"), state=None, cluster=None)
        handler = login_handler(node)
        r = await handler.login(pb.Login(openid="o", token="t", server_id=1, version="1.9"))
        self.assertEqual(r.code, E.VERSION_TOO_OLD)
