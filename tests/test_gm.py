"""master's GM HTTP API in-process, over real loopback HTTP: request bodies bounded before
they are buffered and deep JSON refused (issue 11 item 16), the player kick route (item 15),
and /metrics served by prometheus-client's MetricsResource."""

from __future__ import annotations

from typing import Any

import attrs
import treq
from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rltwist.cluster import NodeUnreachable
from rltwist.config import MasterSettings
from rltwist.nodes.master.gm import MAX_BODY, MAX_DEPTH, GMApi
from rltwist.nodes.master.service import GMSite
from rltwist.protocols import pb
from rltwist.redis import GAME_STEP_FINISH, LOGOUT
from rltwist.redis.state import UserState
from tests.util import RawClient

TOKEN = "test-gm-token"
AUTH = {"Authorization": [f"Bearer {TOKEN}"]}


class FakeCluster:
    """The part of Cluster the GM API uses: the name table and ``call``."""

    def __init__(self) -> None:
        self.addresses = {"role1": ("127.0.0.1", 1), "map1": ("127.0.0.1", 2)}
        self.calls: list[tuple[Any, ...]] = []
        self.answer: Any = "ok"

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        self.calls.append((node, service, method, *args))
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


class FakeState:
    def __init__(self) -> None:
        self.users: dict[int, UserState] = {}

    async def get_user(self, userid: int) -> UserState | None:
        return self.users.get(userid)


@attrs.define
class _Config:
    master: MasterSettings


class FakeNode:
    name = "master"

    def __init__(self) -> None:
        self.config = _Config(MasterSettings(gm_token=TOKEN))
        self.registry = CollectorRegistry()
        self.cluster = FakeCluster()
        self.state = FakeState()

    def redis_state(self) -> FakeState:
        return self.state


class GMCase(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.node = FakeNode()
        self.api = GMApi(self.node, object())  # type: ignore[arg-type]
        site = GMSite(self.api.resource())
        site.noisy = False
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"

    async def post(self, path: str, **kw: Any) -> tuple[int, Any]:
        response = await treq.post(self.url + path, headers=AUTH, persistent=False, **kw)
        return response.code, await treq.json_content(response)

    async def raw(self, data: bytes) -> bytes:
        """Send *data* on a fresh connection; what came back before the server closed
        it (bounded: the test fails if the server waits for more)."""
        client = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                 self.port.getHost().port), client)
        client.transport.write(data)  # type: ignore[union-attr]
        try:
            await client.lost.addTimeout(5, reactor)
        except defer.TimeoutError:
            client.transport.abortConnection()  # type: ignore[union-attr]
            self.fail(f"the GM kept the connection open after {data[:80]!r}...; "
                      f"answered {client.received[:200]!r}")
        return client.received


def _head(path: str, extra: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gm\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


class Bodies(GMCase):
    async def test_a_declared_oversized_body_is_refused_before_it_is_sent(self) -> None:
        # only the headers and a few bytes: the answer cannot wait for the body
        answer = await self.raw(_head("/call", f"Content-Length: {MAX_BODY + 1}\r\n")
                                + b'{"node": ')
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertIn(b'"error": "body_too_large"', answer)
        self.assertEqual(self.node.cluster.calls, [])
        # as curl asks for a large body: refused, and not told to go ahead
        answer = await self.raw(_head("/call", f"Content-Length: {MAX_BODY + 1}\r\n"
                                      "Expect: 100-continue\r\n"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertNotIn(b"100 Continue", answer)

    async def test_a_chunked_body_is_refused_once_it_passes_the_bound(self) -> None:
        chunk = b"x" * 65536
        stream = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk)
                          for _ in range(MAX_BODY // len(chunk) + 2))  # never terminated
        answer = await self.raw(_head("/call", "Transfer-Encoding: chunked\r\n") + stream)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertEqual(self.node.cluster.calls, [])

    async def test_a_body_within_the_bound_still_works(self) -> None:
        status, body = await self.post("/call", json={
            "node": "map1", "service": "diag", "method": "echo", "args": ["y" * 1000]})
        self.assertEqual((status, body), (200, {"result": "ok"}))

    async def test_deeply_nested_json_is_a_400_not_a_500(self) -> None:
        for depth in (MAX_DEPTH + 1, 5000, 200_000):
            nested = "[" * depth + "]" * depth
            data = ('{"node": "map1", "service": "diag", "method": "echo", "args": '
                    + nested + "}").encode()
            status, body = await self.post("/call", data=data)
            self.assertEqual((status, body["error"]), (400, "bad_json"), depth)
            self.assertIn("nests deeper", body["message"])
        self.assertEqual(self.node.cluster.calls, [])
        ok = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
        status, _ = await self.post("/call", data=(
            '{"node": "map1", "service": "diag", "method": "echo", "args": ' + ok + "}"
        ).encode())
        self.assertEqual(status, 200)


class Kick(GMCase):
    USERID = 42 << 16 | 1

    def online(self, state: str = GAME_STEP_FINISH) -> None:
        self.node.state.users[self.USERID] = UserState(
            userid=self.USERID, state=state, node="role1", host="127.0.0.1", port=1,
            generation=3)

    async def test_kick_asks_the_players_role_node_with_the_gm_code(self) -> None:
        self.online()
        self.node.cluster.answer = "kicked"
        status, body = await self.post(f"/players/{self.USERID}/kick",
                                       json={"reason": "cheating"})
        self.assertEqual((status, body), (200, {"userid": self.USERID, "node": "role1",
                                                "result": "kicked"}))
        self.assertEqual(self.node.cluster.calls, [
            ("role1", "gateway", "kick", self.USERID, "cheating", pb.KickReason.KICK_GM)])

    async def test_kick_of_a_player_not_online_is_404_and_bad_input_400(self) -> None:
        status, body = await self.post(f"/players/{self.USERID}/kick")
        self.assertEqual((status, body["error"]), (404, "not_online"))
        self.online(LOGOUT)
        status, body = await self.post(f"/players/{self.USERID}/kick")
        self.assertEqual((status, body["error"], body["state"]), (404, "not_online", LOGOUT))
        status, body = await self.post("/players/abc/kick")
        self.assertEqual((status, body["error"]), (400, "bad_userid"))
        self.online()
        status, body = await self.post(f"/players/{self.USERID}/kick", json={"reason": 7})
        self.assertEqual((status, body["field"]), (400, "reason"))
        self.node.cluster.answer = NodeUnreachable("role1", "gateway", "kick", "down")
        status, body = await self.post(f"/players/{self.USERID}/kick")
        self.assertEqual((status, body["error"], body["node"]), (503, "NodeUnreachable",
                                                                 "role1"))
        response = await treq.post(f"{self.url}/players/{self.USERID}/kick", persistent=False)
        self.assertEqual(response.code, 401)
        await treq.content(response)


class Metrics(GMCase):
    async def test_metrics_are_served_by_prometheus_client(self) -> None:
        Counter("rl_test_things", "things", registry=self.node.registry).inc(3)
        response = await treq.get(self.url + "/metrics", persistent=False)
        text = (await treq.content(response)).decode()
        self.assertEqual(response.code, 200)
        self.assertIn("rl_test_things_total 3.0", text)
        self.assertTrue(response.headers.getRawHeaders("Content-Type")[0].startswith(
            "text/plain"))
        # prometheus-client's exposition honours the name[] filter (hand-rolled did not)
        response = await treq.get(self.url + "/metrics?name[]=rl_test_things_total",
                                  persistent=False)
        text = (await treq.content(response)).decode()
        self.assertIn("rl_test_things_total 3.0", text)
        self.assertNotIn("rl_test_things_created", text)
