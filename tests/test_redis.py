"""The Redis layer against a real redis-server: one private server per test, stopped by PID."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from rltwist.redis import (
    GAME_STEP_FINISH,
    LOGIN_STEP_FINISH,
    LOGOUT,
    OnlineState,
    RedisClient,
    RedisServer,
    RedisServerError,
    RedisTimeout,
    RedisUnavailable,
    RedisURL,
    RoleEndpoint,
    RoleNotRegistered,
    keys,
    scripts,
)
from rltwist.redis.server import free_port
from rltwist.redis.service import RedisClientService, RedisServerService


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 3.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await task.deferLater(reactor, 0.01)


class RedisTestCase(unittest.TestCase):
    """Starts a private redis-server and one connected client per test."""

    timeout = 20
    prefix = "test:"

    def setUp(self) -> defer.Deferred[None]:  # type: ignore[override]
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        self.server = RedisServer(reactor=reactor)
        # registered first, so it runs last and also when start() fails half-way
        self.addCleanup(lambda: defer.ensureDeferred(self.server.stop()))
        await self.server.start()
        self.client = await self.connect(self.prefix)
        self.state = OnlineState(self.client)

    async def connect(self, prefix: str, **kwargs: Any) -> RedisClient:
        options: dict[str, Any] = {"connect_timeout": 2.0, "command_timeout": 2.0}
        options.update(kwargs)
        client = RedisClient(self.server.url, prefix=prefix, reactor=reactor, **options)
        self.addCleanup(lambda: defer.ensureDeferred(client.disconnect()))
        await client.connect()
        return client

    async def gone(self, key: str) -> bool:
        return await self.client.pttl(key) == -2


class LoginLockTests(RedisTestCase):
    async def test_second_login_for_the_same_openid_is_refused_until_released(self) -> None:
        token = await self.state.acquire_login_lock("open-1", 5000)
        self.assertIsNotNone(token)
        self.assertIsNone(await self.state.acquire_login_lock("open-1", 5000))
        self.assertIsNotNone(await self.state.acquire_login_lock("open-2", 5000))
        assert token is not None
        self.assertTrue(await self.state.release_login_lock("open-1", token))
        self.assertIsNotNone(await self.state.acquire_login_lock("open-1", 5000))

    async def test_lock_expires_and_its_stale_owner_cannot_release_the_new_owners(self) -> None:
        old = await self.state.acquire_login_lock("open-1", 50)
        assert old is not None
        await wait_until(lambda: self.gone(keys.login_lock("open-1")), what="lock expiry")
        new = await self.state.acquire_login_lock("open-1", 5000)
        assert new is not None
        self.assertFalse(await self.state.release_login_lock("open-1", old))
        self.assertEqual(await self.client.get(keys.login_lock("open-1")), new)
        self.assertTrue(await self.state.release_login_lock("open-1", new))
        self.assertFalse(await self.state.release_login_lock("open-1", new))

    async def test_fifty_concurrent_logins_for_one_openid_have_exactly_one_owner(self) -> None:
        # five connections, as from five loginhandlers, ten attempts each, all in flight
        states = [OnlineState(await self.connect(self.prefix)) for _ in range(5)]
        attempts = [
            defer.ensureDeferred(states[i % 5].acquire_login_lock("open-race", 5000))
            for i in range(50)
        ]
        tokens = await defer.gatherResults(attempts)
        winners = [t for t in tokens if t is not None]
        self.assertEqual(len(winners), 1)
        self.assertEqual(await self.client.get(keys.login_lock("open-race")), winners[0])


class UserStateTests(RedisTestCase):
    async def setUpRole(self, node: str = "role1", port: int = 7001) -> None:
        await self.state.register_role(node, "10.0.0.1", port)

    async def test_login_then_game_finish_then_logout(self) -> None:
        await self.setUpRole()
        gen = await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "s3cret", 30_000)
        self.assertEqual(gen, 1)
        user = await self.state.get_user(42)
        assert user is not None
        self.assertEqual(
            (user.state, user.node, user.host, user.port, user.generation),
            (LOGIN_STEP_FINISH, "role1", "10.0.0.1", 7001, 1),
        )
        self.assertTrue(await self.state.consume_secret(42, "s3cret", node="role1"))
        self.assertTrue(await self.state.set_game_finish(42, "role1", generation=1))
        self.assertEqual(await self.state.incr_online("role1", 42), 1)
        user = await self.state.get_user(42)
        assert user is not None
        self.assertEqual(user.state, GAME_STEP_FINISH)
        # an online player's state does not expire with the secret
        self.assertEqual(await self.client.pttl(keys.user(42)), -1)

        self.assertTrue(await self.state.set_logout(42, "role1"))
        user = await self.state.get_user(42)
        assert user is not None
        self.assertEqual(user.state, LOGOUT)
        self.assertTrue(await self.state.clear_user(42, only_if_node="role1"))
        self.assertIsNone(await self.state.get_user(42))
        self.assertEqual(await self.state.online_count("role1"), 0)

    async def test_secret_works_once(self) -> None:
        await self.setUpRole()
        await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "s3cret", 30_000)
        self.assertFalse(await self.state.consume_secret(42, "wrong"))
        self.assertTrue(await self.state.consume_secret(42, "s3cret"))
        self.assertFalse(await self.state.consume_secret(42, "s3cret"))

    async def test_secret_is_only_good_on_the_role_node_it_was_issued_for(self) -> None:
        await self.setUpRole()
        await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "s3cret", 30_000)
        self.assertFalse(await self.state.consume_secret(42, "s3cret", node="role2"))
        self.assertTrue(await self.state.consume_secret(42, "s3cret", node="role1"))

    async def test_secret_expires_and_takes_the_unfinished_login_with_it(self) -> None:
        await self.setUpRole()
        await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "s3cret", 50)
        await wait_until(lambda: self.gone(keys.user_secret(42)), what="secret expiry")
        self.assertFalse(await self.state.consume_secret(42, "s3cret"))
        await wait_until(lambda: self.gone(keys.user(42)), what="state expiry")
        self.assertIsNone(await self.state.get_user(42))

    async def test_game_finish_is_refused_for_another_node_an_old_login_or_a_logout(self) -> None:
        await self.setUpRole()
        gen = await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "s", 30_000)
        self.assertFalse(await self.state.set_game_finish(42, "role2"))
        self.assertFalse(await self.state.set_game_finish(42, "role1", generation=gen - 1))
        self.assertFalse(await self.state.set_game_finish(7, "role1"))
        self.assertTrue(await self.state.set_game_finish(42, "role1", generation=gen))
        self.assertTrue(await self.state.set_logout(42, "role1"))
        self.assertFalse(await self.state.set_game_finish(42, "role1"))
        self.assertFalse(await self.state.set_logout(42, "role2"))

    async def test_old_role_node_logout_keeps_a_newer_login_elsewhere(self) -> None:
        await self.setUpRole("role1", 7001)
        await self.setUpRole("role2", 7002)
        await self.state.set_login_finish(42, "role1", "10.0.0.1", 7001, "a", 30_000)
        await self.state.set_game_finish(42, "role1")
        await self.state.incr_online("role1", 42)
        # kicked on role1, logged in again and sent to role2 before role1 finished
        await self.state.set_login_finish(42, "role2", "10.0.0.1", 7002, "b", 30_000)
        self.assertFalse(await self.state.clear_user(42, only_if_node="role1"))
        self.assertEqual(await self.state.online_count("role1"), 0)
        user = await self.state.get_user(42)
        assert user is not None
        self.assertEqual((user.node, user.state, user.generation), ("role2", LOGIN_STEP_FINISH, 2))

    async def test_generation_keeps_growing_across_logouts(self) -> None:
        await self.setUpRole()
        self.assertEqual(await self.state.set_login_finish(42, "role1", "h", 1, "s", 30_000), 1)
        await self.state.clear_user(42)
        self.assertEqual(await self.state.next_generation(42), 2)
        self.assertEqual(await self.state.set_login_finish(42, "role1", "h", 1, "s", 30_000), 3)

    async def test_login_cannot_be_sent_to_a_role_node_that_is_down(self) -> None:
        with self.assertRaises(RoleNotRegistered):
            await self.state.set_login_finish(42, "role9", "10.0.0.9", 7009, "s", 30_000)
        self.assertIsNone(await self.state.get_user(42))


class RoleLoadTests(RedisTestCase):
    async def test_no_registered_role_node_means_no_pick(self) -> None:
        self.assertIsNone(await self.state.pick_least_loaded())

    async def test_pick_goes_to_the_least_loaded_node_and_ties_to_the_first_name(self) -> None:
        for node, port in (("role2", 7002), ("role3", 7003), ("role1", 7001)):
            await self.state.register_role(node, "127.0.0.1", port)
        self.assertEqual(
            await self.state.pick_least_loaded(), RoleEndpoint("role1", "127.0.0.1", 7001)
        )
        await self.state.incr_online("role1", 1)
        await self.state.incr_online("role1", 2)
        await self.state.incr_online("role2", 3)
        self.assertEqual(
            await self.state.pick_least_loaded(), RoleEndpoint("role3", "127.0.0.1", 7003)
        )
        await self.state.incr_online("role3", 4)
        picked = await self.state.pick_least_loaded()
        assert picked is not None
        node, host, port = picked
        self.assertEqual((node, host, port), ("role2", "127.0.0.1", 7002))
        await self.state.decr_online("role1", 1)
        await self.state.decr_online("role1", 2)
        self.assertEqual((await self.state.pick_least_loaded() or ("",))[0], "role1")
        self.assertEqual(
            [(r.node, r.online) for r in await self.state.list_roles()],
            [("role1", 0), ("role2", 1), ("role3", 1)],
        )

    async def test_counting_a_player_twice_counts_them_once(self) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        self.assertEqual(await self.state.incr_online("role1", 1), 1)
        self.assertEqual(await self.state.incr_online("role1", 1), 1)
        self.assertEqual(await self.state.decr_online("role1", 1), 0)
        self.assertEqual(await self.state.decr_online("role1", 1), 0)
        self.assertEqual(await self.state.online_count("role1"), 0)

    async def test_unregistered_node_leaves_the_pick_and_its_players_can_log_in_again(self) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.state.register_role("role2", "127.0.0.1", 7002)
        for uid in (1, 2):
            await self.state.set_login_finish(uid, "role1", "127.0.0.1", 7001, "s", 30_000)
            await self.state.set_game_finish(uid, "role1")
            await self.state.incr_online("role1", uid)
        # 3 has a login in progress towards role1, 4 plays on role2
        await self.state.set_login_finish(3, "role1", "127.0.0.1", 7001, "s", 30_000)
        await self.state.set_login_finish(4, "role2", "127.0.0.1", 7002, "s", 30_000)
        await self.state.set_game_finish(4, "role2")
        await self.state.incr_online("role2", 4)

        self.assertEqual(await self.state.unregister_role("role1"), 3)
        for uid in (1, 2, 3):
            self.assertIsNone(await self.state.get_user(uid))
        self.assertFalse(await self.state.consume_secret(3, "s"))
        self.assertIsNotNone(await self.state.get_user(4))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertEqual(await self.state.online_count("role2"), 1)
        # role2 is busier but it is the only one left
        self.assertEqual((await self.state.pick_least_loaded() or ("",))[0], "role2")
        with self.assertRaises(RoleNotRegistered):
            await self.state.incr_online("role1", 5)
        self.assertEqual(await self.state.unregister_role("role1"), 0)

    async def test_a_restarted_role_node_registers_fresh_and_a_reregistering_one_keeps_players(
        self,
    ) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.state.set_login_finish(1, "role1", "127.0.0.1", 7001, "s", 30_000)
        await self.state.set_game_finish(1, "role1")
        await self.state.incr_online("role1", 1)
        self.assertEqual(await self.state.register_role("role1", "127.0.0.1", 7001), 1)
        self.assertIsNotNone(await self.state.get_user(1))
        # crashed and restarted before master noticed: its old players are gone
        self.assertEqual(await self.state.register_role("role1", "127.0.0.1", 7001, fresh=True), 0)
        self.assertIsNone(await self.state.get_user(1))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertEqual((await self.state.pick_least_loaded() or ("",))[0], "role1")

    async def test_role_nodes_reregister_their_players_after_redis_lost_everything(self) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.state.set_available()
        await self.client.execute("FLUSHDB")
        self.assertFalse(await self.state.get_available())
        self.assertIsNone(await self.state.pick_least_loaded())
        with self.assertRaises(RoleNotRegistered):
            await self.state.reregister_online("role1", [(1, GAME_STEP_FINISH)])

        written = await self.state.reregister_online(
            "role1",
            [(1, GAME_STEP_FINISH), (2, LOGOUT, 7)],
            host="127.0.0.1",
            client_port=7001,
        )
        self.assertEqual(written, 2)
        self.assertEqual(await self.state.online_count("role1"), 2)
        user = await self.state.get_user(2)
        assert user is not None
        self.assertEqual(
            (user.state, user.node, user.port, user.generation), (LOGOUT, "role1", 7001, 7)
        )
        self.assertEqual(await self.state.next_generation(2), 8)
        self.assertEqual(
            await self.state.pick_least_loaded(), RoleEndpoint("role1", "127.0.0.1", 7001)
        )
        # running it again (a retried call) changes nothing
        await self.state.reregister_online("role1", [(1, GAME_STEP_FINISH)])
        self.assertEqual(await self.state.online_count("role1"), 2)
        with self.assertRaises(ValueError):
            await self.state.reregister_online("role1", [(3, "PLAYING")])
        await self.state.set_available()
        self.assertTrue(await self.state.get_available())
        await self.state.clear_available()
        self.assertFalse(await self.state.get_available())


class PrefixTests(RedisTestCase):
    async def test_two_prefixes_on_one_redis_do_not_see_each_other(self) -> None:
        a = OnlineState(await self.connect("clusterA:"))
        b = OnlineState(await self.connect("clusterB:"))
        await a.register_role("role1", "127.0.0.1", 7001)
        await a.set_available()
        self.assertIsNotNone(await a.acquire_login_lock("open-1", 5000))
        await a.set_login_finish(42, "role1", "127.0.0.1", 7001, "s", 30_000)

        self.assertIsNone(await b.pick_least_loaded())
        self.assertFalse(await b.get_available())
        self.assertIsNotNone(await b.acquire_login_lock("open-1", 5000))
        self.assertIsNone(await b.get_user(42))
        await b.register_role("role1", "127.0.0.1", 8001)
        self.assertEqual(await b.unregister_role("role1"), 0)
        self.assertIsNotNone(await a.get_user(42))

        everything = await self.client.execute("KEYS", "*")
        self.assertTrue(everything)
        for key in everything:
            self.assertTrue(key.startswith(("clusterA:", "clusterB:")), key)


class ScriptCacheTests(RedisTestCase):
    async def test_scripts_run_again_after_script_flush(self) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.client.load_scripts(scripts.ALL)
        await self.client.script_flush()
        sha = scripts.PICK_LEAST_LOADED.sha
        self.assertEqual(await self.client.execute("SCRIPT", "EXISTS", sha), [0])
        self.assertIsNotNone(await self.state.pick_least_loaded())
        # the EVAL fallback cached it again, so the next call is an EVALSHA hit
        self.assertEqual(await self.client.execute("SCRIPT", "EXISTS", sha), [1])


class ServerLifecycleTests(RedisTestCase):
    async def test_restart_keeps_the_port_loses_the_state_and_the_client_reconnects(self) -> None:
        await self.state.register_role("role1", "127.0.0.1", 7001)
        await self.state.set_available()
        port, pid = self.server.port, self.server.pid
        await self.server.restart()
        self.assertEqual(self.server.port, port)
        self.assertNotEqual(self.server.pid, pid)
        await self.client.wait_connected(5.0)
        # a restarted Redis has no is_available: logins are refused until master sets it
        self.assertFalse(await self.state.get_available())
        self.assertIsNone(await self.state.pick_least_loaded())
        await self.state.register_role("role1", "127.0.0.1", 7001)
        self.assertIsNotNone(await self.state.pick_least_loaded())

    async def test_crash_restart_also_recovers(self) -> None:
        await self.server.restart(crash=True)
        await self.client.wait_connected(5.0)
        self.assertTrue(await self.client.ping())

    async def test_commands_fail_within_their_bound_while_redis_is_down(self) -> None:
        client = await self.connect(self.prefix, command_timeout=0.3)
        await self.server.stop()
        started = time.monotonic()
        with self.assertRaises(RedisUnavailable):
            await OnlineState(client).get_available()
        self.assertLess(time.monotonic() - started, 2.0)

    async def test_connecting_to_nothing_times_out(self) -> None:
        client = RedisClient(f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.3)
        self.addCleanup(lambda: defer.ensureDeferred(client.disconnect()))
        with self.assertRaises(RedisTimeout):
            await client.connect()

    async def test_stop_ends_the_process(self) -> None:
        pid = self.server.pid
        assert pid is not None
        directory = self.server.directory
        await self.server.stop()
        self.assertIsNone(self.server.pid)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)
        assert directory is not None
        self.assertFalse(directory.exists())

    async def test_a_server_that_cannot_start_names_its_binary_and_log(self) -> None:
        bad = RedisServer(reactor=reactor, extra_args=["--no-such-directive", "x"])
        self.addCleanup(lambda: defer.ensureDeferred(bad.stop()))
        with self.assertRaises(RedisServerError) as caught:
            await bad.start()
        message = str(caught.exception)
        self.assertIn(bad.executable, message)
        self.assertIn("no-such-directive", message)

    async def test_a_taken_fixed_port_is_reported(self) -> None:
        busy = RedisServer(reactor=reactor, port=self.server.port)
        self.addCleanup(lambda: defer.ensureDeferred(busy.stop()))
        with self.assertRaises(RedisServerError) as caught:
            await busy.start()
        self.assertIn("Address already in use", str(caught.exception))

    async def test_service_tree_starts_redis_then_the_client_and_stops_both(self) -> None:
        port = free_port()
        server = RedisServer(reactor=reactor, port=port)
        client = RedisClient(f"redis://127.0.0.1:{port}/0", prefix="svc:", reactor=reactor)
        self.addCleanup(lambda: defer.ensureDeferred(server.stop()))
        self.addCleanup(lambda: defer.ensureDeferred(client.disconnect()))
        tree = MultiService()
        server_service = RedisServerService(server)
        server_service.setServiceParent(tree)
        RedisClientService(client).setServiceParent(tree)
        tree.startService()
        await server_service.ready
        await client.wait_connected(5.0)
        self.assertTrue(await client.ping())
        pid = server.pid
        assert pid is not None
        await tree.stopService()
        self.assertFalse(client.connected)
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)

    def test_blocking_api_starts_and_stops(self) -> None:
        server = RedisServer()
        self.addCleanup(server.stop_sync)
        server.start_sync()
        pid = server.pid
        assert pid is not None
        self.assertTrue(server.running)
        server.stop_sync()
        with self.assertRaises(ProcessLookupError):
            os.kill(pid, 0)


class RedisURLTests(unittest.SynchronousTestCase):
    def test_url_parts_and_defaults(self) -> None:
        self.assertEqual(RedisURL.parse("redis://10.0.0.5:6380/3"), RedisURL("10.0.0.5", 6380, 3))
        self.assertEqual(RedisURL.parse("redis://localhost"), RedisURL("localhost", 6379, 0))
        url = RedisURL.parse("redis://:pa%40ss@h:1/0")
        self.assertEqual(url.password, "pa@ss")
        self.assertNotIn("pa", str(url).replace("redis", ""))

    def test_bad_urls_are_refused(self) -> None:
        for bad in ("http://h:1/0", "redis://h:notaport/0", "redis://h:1/x"):
            with self.assertRaises(ValueError):
                RedisURL.parse(bad)
