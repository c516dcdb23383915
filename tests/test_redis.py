"""The Redis layer against a real redis-server: one private server per test, stopped by PID."""

from __future__ import annotations

import inspect
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
    Assignment,
    OnlineState,
    RedisClient,
    RedisServer,
    RedisServerError,
    RedisTimeout,
    RedisUnavailable,
    RedisURL,
    RoleEndpoint,
    RoleNotRegistered,
    UserState,
    keys,
    scripts,
)
from rltwist.redis import state as state_module
from rltwist.redis.server import free_port
from rltwist.redis.service import RedisClientService, RedisServerService
from rltwist.redis.state import (
    ASSIGNED,
    HELD,
    LOST_LOCK,
    MOVED,
    NO_ROLE,
    PENDING,
    UNAVAILABLE,
)


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


class LoginTestCase(RedisTestCase):
    """role1 (and role2) registered, logins allowed; helpers that run the live scripts the
    way loginhandler and the role gateway do."""

    async def _start(self) -> None:
        await super()._start()
        await self.state.register_role("role1", "10.0.0.1", 7001)
        await self.state.set_available()

    async def assign(self, userid: int = 42, secret: str = "s3cret", *, ttl_ms: int = 30_000,
                     expect: UserState | None = None, evict: bool = False,
                     openid: str | None = None) -> Assignment:
        """login_begin then login_assign, as loginhandler runs them."""
        openid = openid or f"open-{userid}"
        token = await self.state.login_begin(openid, 5000)
        assert isinstance(token, str), f"login_begin({openid}) answered {token!r}"
        return await self.state.login_assign(openid, token, userid, secret, ttl_ms,
                                             expect=expect, evict=evict)

    async def play(self, userid: int = 42, secret: str = "s3cret") -> tuple[str, int]:
        """A whole login and Auth (final generation = ticket); (node, generation)."""
        done = await self.assign(userid, secret)
        assert done.role is not None, done
        ticket = await self.state.auth_begin(userid, done.secret, done.role.node)
        self.assertGreater(ticket, 0)
        self.assertTrue(await self.state.auth_finish(userid, done.role.node, ticket, ticket))
        return done.role.node, ticket

    async def user(self, userid: int = 42) -> UserState:
        user = await self.state.get_user(userid)
        assert user is not None, f"Redis has no state of {userid}"
        return user

    async def raw_user(self, userid: int = 42) -> dict[str, str]:
        return await self.client.hgetall(keys.user(userid))

    async def counter(self, userid: int = 42) -> int:
        return int(await self.client.get(keys.user_generation(userid)) or 0)

    async def members(self, key: str) -> set[str]:
        return await self.client.smembers(key)


class LoginLockTests(LoginTestCase):
    async def test_second_login_for_the_same_openid_is_refused_until_released(self) -> None:
        token = await self.state.login_begin("open-1", 5000)
        assert isinstance(token, str)
        self.assertIsNone(await self.state.login_begin("open-1", 5000))
        self.assertIsInstance(await self.state.login_begin("open-2", 5000), str)
        self.assertTrue(await self.state.release_login_lock("open-1", token))
        self.assertIsInstance(await self.state.login_begin("open-1", 5000), str)

    async def test_logins_are_refused_while_redis_is_not_available(self) -> None:
        await self.state.clear_available()
        self.assertIs(await self.state.login_begin("open-1", 5000), False)
        self.assertTrue(await self.gone(keys.login_lock("open-1")))
        await self.state.set_available()
        self.assertIsInstance(await self.state.login_begin("open-1", 5000), str)

    async def test_lock_expires_and_its_stale_owner_cannot_release_the_new_owners(self) -> None:
        old = await self.state.login_begin("open-1", 50)
        assert isinstance(old, str)
        await wait_until(lambda: self.gone(keys.login_lock("open-1")), what="lock expiry")
        new = await self.state.login_begin("open-1", 5000)
        assert isinstance(new, str)
        self.assertFalse(await self.state.release_login_lock("open-1", old))
        self.assertEqual(await self.client.get(keys.login_lock("open-1")), new)
        self.assertTrue(await self.state.release_login_lock("open-1", new))
        self.assertFalse(await self.state.release_login_lock("open-1", new))

    async def test_fifty_concurrent_logins_for_one_openid_have_exactly_one_owner(self) -> None:
        # five connections, as from five loginhandlers, ten attempts each, all in flight
        states = [OnlineState(await self.connect(self.prefix)) for _ in range(5)]
        attempts = [
            defer.ensureDeferred(states[i % 5].login_begin("open-race", 5000))
            for i in range(50)
        ]
        tokens = await defer.gatherResults(attempts)
        winners = [t for t in tokens if t is not None]
        self.assertEqual(len(winners), 1)
        self.assertEqual(await self.client.get(keys.login_lock("open-race")), winners[0])


class LoginAssignTests(LoginTestCase):
    """LOGIN_ASSIGN: a compare-and-set against what the login read."""

    async def test_a_player_with_no_state_gets_a_pending_login_and_the_lock_is_released(
        self,
    ) -> None:
        done = await self.assign(42, "s3cret", ttl_ms=30_000)
        self.assertEqual((done.outcome, done.role, done.secret),
                         (ASSIGNED, RoleEndpoint("role1", "10.0.0.1", 7001), "s3cret"))
        user = await self.user()
        self.assertEqual((user.state, user.node, user.host, user.port, user.generation,
                          user.ticket, user.pending),
                         (LOGIN_STEP_FINISH, "role1", "10.0.0.1", 7001, 0, 0, True))
        self.assertTrue(await self.gone(keys.login_lock("open-42")))
        self.assertEqual(await self.members(keys.role_users("role1")), {"42"})
        self.assertEqual(await self.members(keys.role_online("role1")), set())
        # the pending login expires with its secret unless Auth finishes first
        self.assertGreater(await self.client.pttl(keys.user(42)), 25_000)
        # no generation is taken before Auth
        self.assertEqual(await self.counter(), 0)

    async def test_an_unfinished_login_expires_with_its_secret(self) -> None:
        done = await self.assign(42, "s3cret", ttl_ms=50)
        self.assertEqual(done.outcome, ASSIGNED)
        await wait_until(lambda: self.gone(keys.user(42)), what="state expiry")
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 0)

    async def test_a_second_login_during_a_pending_one_gets_the_same_node_and_secret(
        self,
    ) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        first = await self.assign(42, "first", ttl_ms=30_000)
        self.assertEqual(first.role.node if first.role else None, "role1")
        await self.client.execute("PEXPIRE", self.client.key(keys.user(42)), 20_000)
        read = await self.user()
        second = await self.assign(42, "second", expect=read)
        self.assertEqual((second.outcome, second.role, second.secret),
                         (PENDING, first.role, "first"))
        # nothing was rewritten: same expiry (not extended), "second" is no secret at all
        self.assertLessEqual(await self.client.pttl(keys.user(42)), 20_000)
        self.assertEqual(await self.state.auth_begin(42, "second", "role1"), 0)
        # the two clients now hold one secret: one Auth wins, the other is refused
        self.assertGreater(await self.state.auth_begin(42, "first", "role1"), 0)
        self.assertEqual(await self.state.auth_begin(42, "first", "role1"), 0)

    async def test_a_state_that_appeared_since_the_read_is_not_overwritten(self) -> None:
        openid = "open-42"
        token = await self.state.login_begin(openid, 5000)
        assert isinstance(token, str)
        # meanwhile (another path, e.g. a role node writing its players back) the player
        # became online on role1
        await self.state.reregister_online("role1", [(42, GAME_STEP_FINISH, 3)])
        done = await self.state.login_assign(openid, token, 42, "s", 30_000, expect=None)
        self.assertEqual((done.outcome, done.role), (MOVED, None))
        user = await self.user()
        self.assertEqual((user.state, user.generation), (GAME_STEP_FINISH, 3))
        self.assertTrue(await self.gone(keys.login_lock(openid)))

    async def test_a_pending_login_whose_auth_began_since_the_read_is_not_answered_again(
        self,
    ) -> None:
        await self.assign(42, "first")
        read = await self.user()
        token = await self.state.login_begin("open-42", 5000)
        assert isinstance(token, str)
        ticket = await self.state.auth_begin(42, "first", "role1")
        self.assertGreater(ticket, 0)
        done = await self.state.login_assign("open-42", token, 42, "x", 30_000, expect=read)
        self.assertEqual(done.outcome, MOVED)
        self.assertTrue(await self.state.auth_finish(42, "role1", ticket, ticket))
        # and a login that read the Auth in progress does not answer its (used) secret
        await self.client.execute("HSET", self.client.key(keys.user(42)), "state",
                                  LOGIN_STEP_FINISH, "ticket", ticket + 1)
        self.assertEqual((await self.assign(42, expect=await self.user())).outcome, MOVED)

    async def test_a_game_finish_state_that_finished_since_the_read_is_not_overwritten(
        self,
    ) -> None:
        """The issue's interleaving: B reads A's pending login, A's Auth finishes, then
        B's assign must not send the player to a second role node."""
        await self.state.register_role("role2", "10.0.0.2", 7002)
        a = await self.assign(42, "a")
        b_read = await self.user()
        b_token = await self.state.login_begin("open-42", 5000)
        assert isinstance(b_token, str) and a.role is not None
        ticket = await self.state.auth_begin(42, "a", a.role.node)
        self.assertTrue(await self.state.auth_finish(42, a.role.node, ticket, ticket))
        b = await self.state.login_assign("open-42", b_token, 42, "b", 30_000, expect=b_read)
        self.assertEqual(b.outcome, MOVED)
        self.assertEqual(await self.members(keys.role_online("role1")), {"42"})
        self.assertEqual(await self.members(keys.role_online("role2")), set())
        self.assertEqual(await self.members(keys.role_users("role2")), set())

    async def test_a_login_whose_lock_expired_writes_nothing(self) -> None:
        token = await self.state.login_begin("open-42", 50)
        assert isinstance(token, str)
        await wait_until(lambda: self.gone(keys.login_lock("open-42")), what="lock expiry")
        other = await self.state.login_begin("open-42", 5000)
        done = await self.state.login_assign("open-42", token, 42, "s", 30_000, expect=None)
        self.assertEqual(done.outcome, LOST_LOCK)
        self.assertIsNone(await self.state.get_user(42))
        # the other login's lock is not released by the stale one
        self.assertEqual(await self.client.get(keys.login_lock("open-42")), other)

    async def test_a_login_across_a_redis_flush_writes_nothing(self) -> None:
        token = await self.state.login_begin("open-42", 5000)
        assert isinstance(token, str)
        await self.client.execute("FLUSHALL")
        await self.state.reregister_online("role1", [], host="10.0.0.1", client_port=7001)
        done = await self.state.login_assign("open-42", token, 42, "s", 30_000, expect=None)
        self.assertEqual(done.outcome, LOST_LOCK)
        self.assertIsNone(await self.state.get_user(42))

    async def test_nothing_is_written_while_redis_is_not_available(self) -> None:
        token = await self.state.login_begin("open-42", 5000)
        assert isinstance(token, str)
        await self.state.clear_available()
        done = await self.state.login_assign("open-42", token, 42, "s", 30_000, expect=None)
        self.assertEqual(done.outcome, UNAVAILABLE)
        self.assertIsNone(await self.state.get_user(42))
        self.assertTrue(await self.gone(keys.login_lock("open-42")))

    async def test_no_registered_role_node_means_no_login(self) -> None:
        await self.state.unregister_role("role1")
        done = await self.assign(42)
        self.assertEqual((done.outcome, done.ok), (NO_ROLE, False))
        self.assertIsNone(await self.state.get_user(42))
        self.assertTrue(await self.gone(keys.login_lock("open-42")))

    async def test_a_kicked_player_whose_state_is_gone_logs_in(self) -> None:
        await self.play(42)
        read = await self.user()
        await self.state.set_logout(42, "role1", read.generation)
        await self.state.clear_user(42, only_if_node="role1", generation=read.generation)
        done = await self.assign(42, "again", expect=read)
        self.assertEqual(done.outcome, ASSIGNED)

    async def test_a_kick_that_left_the_state_in_place_is_refused(self) -> None:
        await self.play(42)
        read = await self.user()
        done = await self.assign(42, "again", expect=read)
        self.assertEqual(done.outcome, HELD)
        self.assertEqual((await self.user()).state, GAME_STEP_FINISH)

    async def test_an_unreachable_node_that_is_still_registered_keeps_its_player(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        await self.play(42)
        read = await self.user()
        done = await self.assign(42, "again", expect=read, evict=True)
        self.assertEqual(done.outcome, HELD)
        self.assertEqual((await self.user()).generation, read.generation)
        self.assertEqual(await self.members(keys.role_online("role1")), {"42"})

    async def test_an_unreachable_node_master_marked_down_loses_its_player(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        await self.play(42)
        read = await self.user()
        # role1 left the pick but its player's state stayed (what unregister_role clears
        # anyway; here it is put back, as a state a login could still read)
        await self.state.unregister_role("role1")
        await self.state.reregister_online("role1", [(42, GAME_STEP_FINISH, read.generation)],
                                           host="10.0.0.1", client_port=7001)
        await self.client.execute("ZREM", self.client.key(keys.ROLE_LOAD), "role1")
        await self.client.execute("HDEL", self.client.key(keys.ROLE_ADDR), "role1")
        done = await self.assign(42, "again", expect=read, evict=True)
        self.assertEqual((done.outcome, done.role.node if done.role else None),
                         (ASSIGNED, "role2"))
        self.assertEqual(await self.members(keys.role_online("role1")), set())
        self.assertEqual(await self.members(keys.role_users("role1")), set())

    async def test_a_state_of_another_generation_is_not_taken_for_the_one_read(self) -> None:
        await self.play(42)
        read = await self.user()
        await self.state.set_logout(42, "role1", read.generation)
        await self.state.clear_user(42, only_if_node="role1", generation=read.generation)
        await self.play(42)  # a newer login finished in between
        done = await self.assign(42, "x", expect=read, evict=True)
        self.assertEqual(done.outcome, MOVED)

    async def test_the_pick_goes_to_the_least_loaded_node_and_ties_to_the_first_name(
        self,
    ) -> None:
        for node, port in (("role3", 7003), ("role2", 7002)):
            await self.state.register_role(node, "10.0.0.1", port)
        placed = [(await self.play(uid))[0] for uid in (1, 2, 3, 4)]
        self.assertEqual(placed, ["role1", "role2", "role3", "role1"])
        self.assertEqual([(r.node, r.online) for r in await self.state.list_roles()],
                         [("role2", 1), ("role3", 1), ("role1", 2)])
        self.assertEqual(await self.state.pick_least_loaded(),
                         RoleEndpoint("role2", "10.0.0.1", 7002))
        # a pending login does not count: the next one goes to the same node
        self.assertEqual((await self.assign(5)).role, RoleEndpoint("role2", "10.0.0.1", 7002))


class AuthTests(LoginTestCase):
    """AUTH_BEGIN and AUTH_FINISH: the gateway's two steps."""

    async def test_auth_takes_the_next_generation_and_finishes_with_the_final_one(self) -> None:
        await self.client.set(keys.user_generation(42), "4")
        await self.assign(42, "s3cret")
        ticket = await self.state.auth_begin(42, "s3cret", "role1")
        self.assertEqual(ticket, 5)
        user = await self.user()
        self.assertEqual((user.state, user.ticket, user.pending, user.generation),
                         (LOGIN_STEP_FINISH, 5, False, 0))
        # storage had generation 8 (Redis lost its counter once): the instance takes 9
        self.assertTrue(await self.state.auth_finish(42, "role1", ticket, 9))
        user = await self.user()
        self.assertEqual((user.state, user.generation, user.ticket), (GAME_STEP_FINISH, 9, 0))
        self.assertEqual(await self.counter(), 9)
        self.assertEqual(await self.state.online_count("role1"), 1)
        self.assertEqual([(r.node, r.online) for r in await self.state.list_roles()],
                         [("role1", 1)])
        # an online player's state does not expire
        self.assertEqual(await self.client.pttl(keys.user(42)), -1)
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 0)

    async def test_the_counter_is_never_lowered(self) -> None:
        await self.assign(42, "s")
        ticket = await self.state.auth_begin(42, "s", "role1")
        await self.client.set(keys.user_generation(42), "20")
        self.assertTrue(await self.state.auth_finish(42, "role1", ticket, ticket))
        self.assertEqual(await self.counter(), 20)

    async def test_a_secret_works_once_only_on_its_node_and_only_unexpired(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        await self.assign(42, "s3cret")
        self.assertEqual(await self.state.auth_begin(42, "wrong", "role1"), 0)
        self.assertEqual(await self.state.auth_begin(42, "", "role1"), 0)
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role2"), 0)
        self.assertEqual(await self.state.auth_begin(7, "s3cret", "role1"), 0)
        self.assertEqual(await self.counter(), 0)  # a refused Auth takes no generation
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 1)
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 0)

    async def test_an_expired_secret_is_refused(self) -> None:
        await self.assign(42, "s3cret", ttl_ms=50)
        await wait_until(lambda: self.gone(keys.user(42)), what="secret expiry")
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 0)

    async def test_the_secret_is_refused_once_the_player_is_online(self) -> None:
        await self.play(42, "s3cret")
        self.assertEqual(await self.state.auth_begin(42, "s3cret", "role1"), 0)

    async def test_only_the_auth_that_holds_the_ticket_finishes(self) -> None:
        await self.assign(42, "s")
        ticket = await self.state.auth_begin(42, "s", "role1")
        self.assertFalse(await self.state.auth_finish(42, "role1", ticket + 1, ticket + 1))
        self.assertFalse(await self.state.auth_finish(7, "role1", ticket, ticket))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertEqual((await self.user()).state, LOGIN_STEP_FINISH)
        self.assertTrue(await self.state.auth_finish(42, "role1", ticket, ticket))
        # a retried finish (a reply lost to a timeout) changes nothing and counts once
        self.assertFalse(await self.state.auth_finish(42, "role1", ticket, ticket))
        self.assertEqual(await self.state.online_count("role1"), 1)

    async def test_an_auth_whose_login_expired_and_was_replaced_does_not_finish(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        await self.assign(42, "a", ttl_ms=50)
        ticket = await self.state.auth_begin(42, "a", "role1")
        await wait_until(lambda: self.gone(keys.user(42)), what="state expiry")
        # another device logs in meanwhile (role1 and role2 tie: role1 again)
        b = await self.assign(42, "b")
        self.assertEqual(b.outcome, ASSIGNED)
        self.assertFalse(await self.state.auth_finish(42, "role1", ticket, ticket))
        b_ticket = await self.state.auth_begin(42, "b", "role1")
        self.assertGreater(b_ticket, ticket)
        self.assertTrue(await self.state.auth_finish(42, "role1", b_ticket, b_ticket))

    async def test_auth_cannot_finish_on_a_node_master_marked_down(self) -> None:
        await self.assign(42, "s")
        ticket = await self.state.auth_begin(42, "s", "role1")
        await self.state.unregister_role("role1")
        with self.assertRaises(RoleNotRegistered):
            await self.state.auth_finish(42, "role1", ticket, ticket)
        self.assertIsNone(await self.state.get_user(42))
        self.assertEqual(await self.state.online_count("role1"), 0)

    async def test_the_final_generation_cannot_be_below_the_ticket(self) -> None:
        with self.assertRaises(ValueError):
            await self.state.auth_finish(42, "role1", 5, 4)
        with self.assertRaises(ValueError):
            await self.state.auth_finish(42, "role1", 0, 0)


class LogoutTests(LoginTestCase):
    """SET_LOGOUT and CLEAR_USER: only the instance that owns the state changes it."""

    async def test_logout_then_clear(self) -> None:
        _, gen = await self.play(42)
        self.assertTrue(await self.state.set_logout(42, "role1", gen))
        self.assertEqual((await self.user()).state, LOGOUT)
        self.assertTrue(await self.state.clear_user(42, only_if_node="role1", generation=gen))
        self.assertIsNone(await self.state.get_user(42))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertEqual(await self.members(keys.role_users("role1")), set())
        self.assertEqual(await self.counter(), gen)  # the counter outlives the state

    async def test_a_stale_instance_can_neither_mark_logout_nor_clear_a_newer_login(
        self,
    ) -> None:
        _, old = await self.play(42)
        # the old instance is kicked away in Redis terms (as after a missed logout) and
        # the player logs in again on the same node
        await self.state.clear_user(42)
        _, new = await self.play(42)
        self.assertGreater(new, old)
        self.assertFalse(await self.state.set_logout(42, "role1", old))
        self.assertFalse(await self.state.clear_user(42, only_if_node="role1", generation=old))
        user = await self.user()
        self.assertEqual((user.state, user.generation), (GAME_STEP_FINISH, new))
        # the newer login's count on the same node stays
        self.assertEqual(await self.members(keys.role_online("role1")), {"42"})
        self.assertEqual(await self.members(keys.role_users("role1")), {"42"})
        self.assertTrue(await self.state.set_logout(42, "role1", new))
        self.assertFalse(await self.state.set_logout(42, "role1", new))

    async def test_logout_is_refused_for_another_node_or_a_login_not_finished(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        _, gen = await self.play(42)
        self.assertFalse(await self.state.set_logout(42, "role2", gen))
        self.assertFalse(await self.state.set_logout(7, "role1", gen))
        await self.assign(43, "s")
        self.assertFalse(await self.state.set_logout(43, "role1", None))
        self.assertEqual((await self.user(43)).state, LOGIN_STEP_FINISH)

    async def test_an_old_role_node_logout_keeps_a_newer_login_elsewhere(self) -> None:
        await self.state.register_role("role2", "10.0.0.2", 7002)
        _, old = await self.play(42)
        self.assertEqual(await self.members(keys.role_online("role1")), {"42"})
        # role1 did not manage to clear (Redis blip) and the player went to role2 after
        # master cleared role1's state by hand; role1's count of the player is stale
        await self.client.delete(keys.user(42))
        await self.client.execute("ZADD", self.client.key(keys.ROLE_LOAD), 5, "role1")
        b = await self.assign(42, "b")
        self.assertEqual(b.role.node if b.role else None, "role2")
        self.assertFalse(await self.state.clear_user(42, only_if_node="role1", generation=old))
        self.assertEqual(await self.members(keys.role_online("role1")), set())
        self.assertEqual(await self.members(keys.role_users("role1")), set())
        self.assertEqual([(r.node, r.online) for r in await self.state.list_roles()],
                         [("role1", 0), ("role2", 0)])
        user = await self.user()
        self.assertEqual((user.node, user.state), ("role2", LOGIN_STEP_FINISH))

    async def test_a_generation_guarded_clear_never_removes_a_pending_login(self) -> None:
        await self.assign(42, "s")
        self.assertFalse(await self.state.clear_user(42, only_if_node="role1", generation=3))
        self.assertEqual(await self.members(keys.role_users("role1")), {"42"})
        self.assertTrue((await self.user()).pending)

    async def test_an_auth_that_gives_up_clears_its_own_login_by_its_ticket(self) -> None:
        await self.assign(42, "s")
        ticket = await self.state.auth_begin(42, "s", "role1")
        self.assertFalse(await self.state.clear_user(42, only_if_node="role1",
                                                     generation=ticket + 1))
        self.assertTrue(await self.state.clear_user(42, only_if_node="role1",
                                                    generation=ticket))
        self.assertIsNone(await self.state.get_user(42))
        self.assertEqual(await self.members(keys.role_users("role1")), set())

    async def test_an_unguarded_clear_removes_whatever_state_and_counts(self) -> None:
        await self.play(42)
        self.assertTrue(await self.state.clear_user(42))
        self.assertIsNone(await self.state.get_user(42))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertFalse(await self.state.clear_user(42))


class RoleLoadTests(LoginTestCase):
    async def test_unregistered_node_leaves_the_pick_and_its_players_can_log_in_again(self) -> None:
        await self.state.register_role("role2", "10.0.0.1", 7002)
        for uid in (1, 2, 4):
            await self.play(uid)  # role1, role2, role1
        await self.assign(3, "pending")  # role2 (1 online) vs role1 (2): role2
        await self.assign(5, "pending")  # role2 again (pending logins do not count)
        self.assertEqual({(await self.user(u)).node for u in (1, 4)}, {"role1"})
        self.assertEqual(await self.state.unregister_role("role2"), 3)
        for uid in (2, 3, 5):
            self.assertIsNone(await self.state.get_user(uid))
        self.assertEqual(await self.state.auth_begin(3, "pending", "role2"), 0)
        self.assertIsNotNone(await self.state.get_user(1))
        self.assertEqual(await self.state.online_count("role2"), 0)
        self.assertEqual(await self.state.online_count("role1"), 2)
        self.assertEqual([r.node for r in await self.state.list_roles()], ["role1"])
        self.assertEqual((await self.assign(2)).role.node, "role1")  # type: ignore[union-attr]
        self.assertEqual(await self.state.unregister_role("role2"), 0)

    async def test_a_restarted_role_node_registers_fresh_and_a_reregistering_one_keeps_players(
        self,
    ) -> None:
        await self.play(1)
        self.assertEqual(await self.state.register_role("role1", "10.0.0.1", 7001), 1)
        self.assertIsNotNone(await self.state.get_user(1))
        # crashed and restarted before master noticed: its old players are gone
        self.assertEqual(await self.state.register_role("role1", "10.0.0.1", 7001, fresh=True), 0)
        self.assertIsNone(await self.state.get_user(1))
        self.assertEqual(await self.state.online_count("role1"), 0)
        self.assertEqual((await self.state.pick_least_loaded() or ("",))[0], "role1")

    async def test_role_nodes_reregister_their_players_after_redis_lost_everything(self) -> None:
        await self.client.execute("FLUSHDB")
        self.assertFalse(await self.state.get_available())
        self.assertIsNone(await self.state.pick_least_loaded())
        with self.assertRaises(RoleNotRegistered):
            await self.state.reregister_online("role1", [(1, GAME_STEP_FINISH)])

        written = await self.state.reregister_online(
            "role1",
            [(1, GAME_STEP_FINISH), (2, LOGOUT, 7)],
            host="10.0.0.1",
            client_port=7001,
        )
        self.assertEqual(written, 2)
        self.assertEqual(await self.state.online_count("role1"), 2)
        user = await self.user(2)
        self.assertEqual(
            (user.state, user.node, user.port, user.generation), (LOGOUT, "role1", 7001, 7)
        )
        self.assertEqual(await self.counter(2), 7)
        self.assertEqual(
            await self.state.pick_least_loaded(), RoleEndpoint("role1", "10.0.0.1", 7001)
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

    async def test_reregistering_keeps_the_instances_generation_and_never_lowers_the_counter(
        self,
    ) -> None:
        await self.client.set(keys.user_generation(42), "12")
        await self.state.reregister_online("role1", [(42, GAME_STEP_FINISH, 9)])
        self.assertEqual((await self.user()).generation, 9)
        self.assertEqual(await self.counter(), 12)
        # so that instance can still log itself out
        self.assertTrue(await self.state.set_logout(42, "role1", 9))
        self.assertTrue(await self.state.clear_user(42, only_if_node="role1", generation=9))


class PrefixTests(LoginTestCase):
    async def test_two_prefixes_on_one_redis_do_not_see_each_other(self) -> None:
        a = self.state
        b = OnlineState(await self.connect("clusterB:"))
        self.assertIsInstance(await a.login_begin("open-1", 5000), str)
        await self.play(42)

        self.assertIsNone(await b.pick_least_loaded())
        self.assertFalse(await b.get_available())
        await b.set_available()
        self.assertIsInstance(await b.login_begin("open-1", 5000), str)
        self.assertIsNone(await b.get_user(42))
        await b.register_role("role1", "127.0.0.1", 8001)
        self.assertEqual(await b.unregister_role("role1"), 0)
        self.assertIsNotNone(await a.get_user(42))

        everything = await self.client.execute("KEYS", "*")
        self.assertTrue(everything)
        for key in everything:
            self.assertTrue(key.startswith((self.prefix, "clusterB:")), key)


class ScriptCacheTests(RedisTestCase):
    async def test_scripts_run_again_after_script_flush(self) -> None:
        await self.client.load_scripts(scripts.ALL)
        await self.client.script_flush()
        sha = scripts.REGISTER_ROLE.sha
        self.assertEqual(await self.client.execute("SCRIPT", "EXISTS", sha), [0])
        await self.state.register_role("role1", "127.0.0.1", 7001)
        self.assertIsNotNone(await self.state.pick_least_loaded())
        # the EVAL fallback cached it again, so the next call is an EVALSHA hit
        self.assertEqual(await self.client.execute("SCRIPT", "EXISTS", sha), [1])

    def test_every_script_is_used_by_the_state_layer(self) -> None:
        source = inspect.getsource(state_module)
        for script in scripts.ALL:
            name = next(n for n, v in vars(scripts).items() if v is script)
            self.assertIn(f"scripts.{name}", source, f"{name} is not used")


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
