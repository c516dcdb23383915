"""Login, Auth, kick and logout against real login/role/logiccenter/master processes and
a real redis-server."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from rltwist.cluster import LinkLost, UnknownNode
from rltwist.config import LoginSettings
from rltwist.nodes.login.loginhandler import SDK_MAX_BODY, LoginFailed
from rltwist.protocols import pb
from rltwist.redis import OnlineState, RedisClient, RedisServer, keys
from rltwist.sdk import dev_token
from tests.login_util import FakeLoginNode, LoginCase, login_handler, offline
from tests.util import wait_for

E = pb.ErrorCode


class Login(LoginCase):
    async def test_new_player_gets_an_id_in_its_region_and_keeps_it(self) -> None:
        host, port = self.login_address()
        c = self.client("alice", server_id=1)
        auth = await c.play(host, port)
        userid = c.login_response.userid
        self.assertEqual(userid & 0xFFFF, 1)
        self.assertEqual((auth.userid, auth.server_id), (userid, 1))
        hb = await c.request(pb.Heartbeat())
        self.assertEqual(hb.code, E.OK)
        c.close()
        await wait_for(lambda: offline(self, userid), 10, "alice to be logged out")
        # relogin: the same id whatever region the client asks for (even one the cluster
        # does not have: only a new player needs a region)
        again = self.client("alice", server_id=3)
        await again.play(host, port)
        self.assertEqual(again.login_response.userid, userid)

    async def test_wrong_token_is_refused(self) -> None:
        r = await self.client("mallory", token="00" * 32).login(*self.login_address())
        self.assertEqual(r.code, E.BAD_TOKEN)

    async def test_second_device_kicks_the_first_session(self) -> None:
        host, port = self.login_address()
        first = self.client("bob")
        await first.play(host, port)
        second = self.client("bob")
        await second.play(host, port)
        await first.closed  # the first socket was closed by the server
        self.assertEqual([type(p).__name__ for p in first.pushes], ["KickNotify"])
        self.assertEqual(first.pushes[0].code, pb.KickReason.KICK_LOGIN_ELSEWHERE)
        hb = await second.request(pb.Heartbeat())
        self.assertEqual(hb.code, E.OK)
        user = await self.state.get_user(second.login_response.userid)
        self.assertEqual(user.state, "GAME_STEP_FINISH")

    async def test_fifty_simultaneous_logins_of_one_openid_end_with_one_session(self) -> None:
        host, port = self.login_address()
        clients = [self.client("carol") for _ in range(50)]

        async def attempt(c):
            r = await c.login(host, port)
            if r.code != E.OK:
                return r.code
            a = await c.auth(r)
            return a.code

        codes = await defer.gatherResults([defer.ensureDeferred(attempt(c)) for c in clients])
        self.assertIn(E.OK, codes)
        for code in codes:
            self.assertIn(code, (E.OK, E.LOGIN_IN_PROGRESS, E.RETRY_LATER, E.BAD_SECRET))
        userid = next(c.login_response.userid for c in clients
                      if c.login_response is not None and c.login_response.code == E.OK)
        # every session but the last one standing gets kicked or refused
        await wait_for(lambda: _one_online(self, clients), 20,
                       "exactly one carol session to stay connected")
        players = []
        for role in ("role1", "role2"):
            _, body = await self.lc.gm("POST", "/call", {
                "node": role, "service": "gateway", "method": "online_players"})
            players += body["result"]
        self.assertEqual(players.count(userid), 1)
        roles = {r.node: r.online for r in await self.state.list_roles()}
        self.assertEqual(sum(roles.values()), 1)

    async def test_two_role_nodes_split_players_by_least_load(self) -> None:
        host, port = self.login_address()
        for i in range(6):
            await self.client(f"p{i}").play(host, port)
        roles = {r.node: r.online for r in await self.state.list_roles()}
        self.assertEqual(roles, {"role1": 3, "role2": 3})

    async def test_logins_closed_by_gm_are_refused_until_opened(self) -> None:
        async def code_is(expected: int) -> bool:
            return (await _login_code(self, "dave")) == expected

        await self.lc.gm("POST", "/login/close")
        await wait_for(lambda: code_is(E.NOT_AVAILABLE), 10, "login1 to refuse logins")
        await self.lc.gm("POST", "/login/open")
        await wait_for(lambda: code_is(E.OK), 10, "login1 to accept logins again")

    async def test_secret_is_one_use(self) -> None:
        host, port = self.login_address()
        c = self.client("erin")
        r = await c.login(host, port)
        self.assertEqual((await c.auth(r)).code, E.OK)
        # replayed while the first session is live (its state still GAME_STEP_FINISH)
        replay = self.client("erin")
        self.assertEqual((await replay.auth(r)).code, E.BAD_SECRET)
        await replay.closed
        self.assertEqual((await c.request(pb.Heartbeat())).code, E.OK)
        user = await self.state.get_user(r.userid)
        self.assertEqual((user.state, user.port), ("GAME_STEP_FINISH", r.port))
        self.assertEqual(c.pushes, [])

    async def test_a_second_login_before_auth_gets_the_same_node_and_secret(self) -> None:
        host, port = self.login_address()
        first = self.client("fay")
        r1 = await first.login(host, port)
        second = self.client("fay")
        r2 = await second.login(host, port)
        self.assertEqual((r2.code, r2.userid, r2.host, r2.port, r2.secret),
                         (E.OK, r1.userid, r1.host, r1.port, r1.secret))
        # both race to Auth with the one secret: one wins, the other is refused ...
        codes = await defer.gatherResults([defer.ensureDeferred(first.auth(r1)),
                                           defer.ensureDeferred(second.auth(r2))])
        self.assertEqual(sorted(a.code for a in codes), [E.OK, E.BAD_SECRET])
        winner, loser = (first, second) if codes[0].code == E.OK else (second, first)
        await loser.closed
        # ... logs in again and kicks the winner
        await loser.play(host, port)
        await winner.closed
        self.assertEqual(winner.pushes[0].code, pb.KickReason.KICK_LOGIN_ELSEWHERE)
        self.assertEqual((await loser.request(pb.Heartbeat())).code, E.OK)
        roles = {r.node: r.online for r in await self.state.list_roles()}
        self.assertEqual(sum(roles.values()), 1)


async def _login_code(case: LoginCase, openid: str) -> int:
    r = await case.client(openid).login(*case.login_address())
    return r.code


def _one_online(case: LoginCase, clients: list) -> bool:
    alive = [c for c in clients if c.conn is not None and not c.closed.called]
    return len(alive) == 1


class SecretExpiry(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    overrides = {"login": {"secret_ttl": 0.5}}

    async def test_an_expired_secret_is_refused(self) -> None:
        c = self.client("frank")
        r = await c.login(*self.login_address())
        self.assertEqual(r.code, E.OK)
        await wait_for(lambda: offline(self, r.userid), 10, "the secret to expire")
        self.assertEqual((await c.auth(r)).code, E.BAD_SECRET)


class HeartbeatTimeout(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    overrides = {"role": {"heartbeat_timeout": 1.0}}

    async def test_no_heartbeat_logs_the_player_out_and_uncounts_it(self) -> None:
        c = self.client("gina")
        await c.play(*self.login_address())
        roles = {r.node: r.online for r in await self.state.list_roles()}
        self.assertEqual(roles, {"role1": 1})
        await c.closed  # kicked after ~1 s without heartbeats
        self.assertEqual(c.pushes[0].code, pb.KickReason.KICK_HEARTBEAT_TIMEOUT)
        await wait_for(lambda: _count_is(self, 0), 10, "role1's online count to drop to 0")
        self.assertIsNone(await self.state.get_user(c.login_response.userid))


async def _count_is(case: LoginCase, n: int) -> bool:
    return {r.node: r.online for r in await case.state.list_roles()} == {"role1": n}


class BadInput(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]

    def raw(self, port: int, payload: bytes) -> defer.Deferred[bytes]:
        """Send raw bytes; return what came back before the server closed the socket."""

        def run() -> bytes:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            try:
                s.sendall(payload)
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                return data
            except ConnectionResetError:
                return b""
            finally:
                s.close()

        return deferToThread(run)

    async def test_each_bad_input_closes_only_that_connection(self) -> None:
        role_port = self.lc.node_config("role1")["client_port"]
        login_port = self.lc.node_config("login1")["client_port"]
        good = self.client("harry")
        await good.play(*self.login_address())
        heartbeat = struct.pack(">HHI", 6, 3, 1)
        cases = {
            "length below 6": struct.pack(">H", 3) + b"\0\1\0",
            "unknown proto id": struct.pack(">HHI", 6, 9999, 1),
            "undecodable body": struct.pack(">HHI", 6 + 3, 1, 1) + b"\xff\xff\xff",
            "request before auth": heartbeat,
            "auth twice": struct.pack(">HHI", 6, 2, 1) + struct.pack(">HHI", 6, 2, 2),
        }
        for what, payload in cases.items():
            for port in (role_port, login_port):
                data = await self.raw(port, payload)
                self.assertFalse(data.startswith(b"\0\0\0\x0a\0\3"), f"{what}: answered")
        # nothing else was affected
        self.assertEqual((await good.request(pb.Heartbeat())).code, E.OK)
        _, body = await self.lc.gm("GET", "/nodes")
        self.assertTrue(all(n["state"] == "up" for n in body["nodes"]))


class RoleNodeCrash(LoginCase):
    async def test_players_of_a_killed_role_node_log_in_again_on_a_live_one(self) -> None:
        host, port = self.login_address()
        clients = [self.client(f"r{i}") for i in range(6)]
        for c in clients:
            await c.play(host, port)
        on_role1 = [c for c in clients if c.login_response.port ==
                    self.lc.node_config("role1")["client_port"]]
        self.assertEqual(len(on_role1), 3)
        await self.lc.nodes["role1"].kill()
        await wait_for(lambda: _roles_are(self, {"role2"}), 15,
                       "master to drop the killed role1 from the pick")
        for c in on_role1:
            self.assertIsNone(await self.state.get_user(c.login_response.userid))
        for c in on_role1:  # at once, and onto the live node
            again = self.client(c.openid)
            await again.play(host, port)
            self.assertEqual(again.login_response.port,
                             self.lc.node_config("role2")["client_port"])
        await self.lc.start("role1")
        await wait_for(lambda: _roles_are(self, {"role1", "role2"}), 15,
                       "the restarted role1 to rejoin the pick")
        loads = {r.node: r.online for r in await self.state.list_roles()}
        self.assertEqual(loads, {"role1": 0, "role2": 6})


async def _roles_are(case: LoginCase, names: set[str]) -> bool:
    return {r.node for r in await case.state.list_roles()} == names


class RedisRestart(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]

    async def test_logins_wait_for_role_nodes_to_reregister_after_a_redis_restart(self) -> None:
        host, port = self.login_address()
        online = self.client("ivan")
        await online.play(host, port)
        userid = online.login_response.userid
        await self.redis.restart()  # a fresh, empty Redis on the same port
        # master notices is_available is unset, role1 writes ivan back, logins resume
        await wait_for(self.state.get_available, 20, "master to set is_available again")
        user = await self.state.get_user(userid)
        self.assertEqual((user.state, user.node), ("GAME_STEP_FINISH", "role1"))
        self.assertEqual({r.node: r.online for r in await self.state.list_roles()},
                         {"role1": 1})
        # the restored state still routes a second login through a kick
        second = self.client("ivan")
        await second.play(host, port)
        await online.closed
        self.assertEqual(online.pushes[0].code, pb.KickReason.KICK_LOGIN_ELSEWHERE)


class SdkAnswer(Resource):
    """A platform SDK stand-in: answers every POST with ``body`` and ``code``; with
    ``endless`` it streams chunks until the client hangs up."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.body = b'{"ok": true}'
        self.code = 200
        self.endless = False
        self.hung_up: defer.Deferred[int] = defer.Deferred()
        self.asked: list[tuple[list[bytes], Any]] = []  # (Content-Type, JSON body)

    def render_POST(self, request: Any) -> Any:
        self.asked.append((request.requestHeaders.getRawHeaders(b"Content-Type"),
                           json.loads(request.content.read())))
        request.setResponseCode(self.code)
        if not self.endless:
            return self.body
        sent = [0]
        chunk = b" " * 8192

        def more() -> None:
            if self.hung_up.called:
                return
            request.write(chunk)
            sent[0] += len(chunk)
            reactor.callLater(0, more)

        request.notifyFinish().addBoth(lambda _: self.hung_up.callback(sent[0]))
        request.write(b'{"ok": true, "pad": "')
        more()
        return NOT_DONE_YET


class SdkCheck(unittest.TestCase):
    """The login node's HTTP check of a token against a real (tiny) SDK server."""

    async def setUp(self) -> None:
        self.sdk = SdkAnswer()
        port = reactor.listenTCP(0, Site(self.sdk), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        settings = LoginSettings(sdk_url=f"http://127.0.0.1:{port.getHost().port}/verify",
                                 sdk_timeout=5.0)
        self.handler = login_handler(FakeLoginNode(settings), pool)

    async def verify(self) -> bool | int:
        """True/False as the SDK decided, or the error code the login answers."""
        try:
            return await self.handler._verify("alice", "token")
        except LoginFailed as e:
            self.why = str(e)
            return e.code

    async def test_only_a_json_true_is_a_yes(self) -> None:
        answers = {b'{"ok": true}': True, b'{"ok": false}': False, b'{"ok": "false"}': False,
                   b'{"ok": "true"}': False, b'{"ok": 1}': False, b'{}': False,
                   b'{"ok": [true]}': False}
        for body, expected in answers.items():
            self.sdk.body = body
            self.assertIs(await self.verify(), expected, body)
        content_type, asked = self.sdk.asked[0]
        self.assertEqual(asked, {"openid": "alice", "token": "token"})
        self.assertTrue(content_type[0].startswith(b"application/json"), content_type)

    async def test_an_answer_that_is_no_json_object_or_no_200_is_retried_later(self) -> None:
        for code, body in ((200, b"yes"), (200, b"[true]"), (200, b"true"),
                           (500, b'{"ok": true}'), (302, b'{"ok": true}')):
            self.sdk.code, self.sdk.body = code, body
            self.assertEqual(await self.verify(), E.RETRY_LATER, (code, body))

    async def test_a_body_over_the_bound_is_not_read_to_the_end(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # a complete but oversized answer (Content-Length says so)
        self.sdk.body = b'{"ok": true, "pad": "' + b" " * SDK_MAX_BODY + b'"}'
        self.assertEqual(await self.verify(), E.RETRY_LATER)
        self.assertIn(f"more than {SDK_MAX_BODY} bytes", self.why)
        # an answer that never ends: the login hangs up after the bound, not at the timeout
        self.sdk.endless = True
        started = reactor.seconds()
        self.assertEqual(await self.verify(), E.RETRY_LATER)
        self.assertIn(f"more than {SDK_MAX_BODY} bytes", self.why)
        self.assertLess(reactor.seconds() - started, 4.0)
        sent = await self.sdk.hung_up.addTimeout(5, reactor)
        self.assertLess(sent, 16 * SDK_MAX_BODY)
        warned = [e for e in events if e.get("log_level") == LogLevel.warn
                  and e.get("limit") == SDK_MAX_BODY]
        self.assertTrue(warned, "no warning names the SDK body bound")


class KickFailures(unittest.TestCase):
    """A login that cannot kick the online instance (real LoginHandler and Redis; the kick
    fails the way the cluster layer fails it)."""

    userid = (1 << 16) | 7

    async def setUp(self) -> None:
        self.redis = RedisServer(directory=self.mktemp())
        await self.redis.start()
        self.addCleanup(self.redis.stop)
        client = RedisClient(self.redis.url, prefix="k:")
        await client.connect()
        self.addCleanup(client.disconnect)
        self.state = OnlineState(client)
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.state.register_role("role2", "127.0.0.1", 7002)
        await self.state.set_available()
        # the player plays on role1
        token = await self.state.login_begin("gus", 5000)
        done = await self.state.login_assign("gus", token, self.userid, "s", 30_000,
                                             expect=None)
        ticket = await self.state.auth_begin(self.userid, "s", done.role.node)
        self.assertTrue(await self.state.auth_finish(self.userid, "role1", ticket, ticket))
        self.kick_error: Exception = LinkLost("role1", "gateway", "kick", "reset")

    async def call(self, node: str, service: str, method: str, *args: Any,
                   timeout: float | None = None) -> Any:
        if method == "get_or_create":
            return {"userid": self.userid, "created": False}
        raise self.kick_error

    async def login(self) -> Any:
        handler = login_handler(FakeLoginNode(LoginSettings(), self.state, self))
        return await handler.login(pb.Login(openid="gus", token=dev_token(
            LoginSettings().dev_sdk_secret, "gus"), server_id=7))

    async def test_a_lost_link_to_a_registered_node_answers_retry_later(self) -> None:
        before = await self.state.get_user(self.userid)
        self.assertEqual((await self.login()).code, E.RETRY_LATER)
        self.assertEqual(await self.state.get_user(self.userid), before)
        self.assertEqual({r.node: r.online for r in await self.state.list_roles()},
                         {"role1": 1, "role2": 0})
        self.assertIsInstance(await self.state.login_begin("gus", 5000), str,
                              "the refused login left its lock behind")

    async def test_an_unreachable_node_master_marked_down_is_taken_over(self) -> None:
        self.kick_error = UnknownNode("role1")
        # master took role1 out of the pick; its player's state is still there to read
        client = self.state.client
        await client.execute("ZREM", client.key(keys.ROLE_LOAD), "role1")
        await client.execute("HDEL", client.key(keys.ROLE_ADDR), "role1")
        r = await self.login()
        self.assertEqual((r.code, r.port), (E.OK, 7002))
        user = await self.state.get_user(self.userid)
        self.assertEqual((user.node, user.state), ("role2", "LOGIN_STEP_FINISH"))
        self.assertEqual(await self.state.online_count("role1"), 0)
