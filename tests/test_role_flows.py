"""The role gateway's flows in process, with storage and Redis behaving badly on purpose:
a logout whose final save fails keeps the player and retries (never drops data), and an
Auth whose Redis confirmation is lost leaves nothing behind (no GAME_STEP_FINISH without an
instance, no player left in the agent). Storage is real SQLite; time is a task.Clock."""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.role import auth, logout, requests
from rltwist.nodes.role.agent import GONE, LOGGING_OUT, PLAYERS, Agent, Player
from rltwist.nodes.role.gateway import Gateway
from rltwist.protocols import pb
from rltwist.redis import RedisTimeout
from rltwist.storage import Document, EmbeddedBackend, Key, StorageTimeout
from tests.util import wait_for

USERID = (7 << 16) | 1


class FlakyDB:
    """An embedded backend whose saves can be made to fail."""

    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.fail_saves = False
        self.save_attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def save_entities(self, collection: str,
                            items: Sequence[tuple[Key, Document, int]]) -> Any:
        self.save_attempts += 1
        if self.fail_saves:
            raise StorageTimeout("test: storage is down")
        return await self.backend.save_entities(collection, items)


class FakeState:
    """The OnlineState calls the flows make, recorded; auth_finish can lose its answer."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.lose_auth_finish = False

    async def set_logout(self, userid: int, node: str, generation: int) -> bool:
        self.calls.append(("set_logout", userid, generation))
        return True

    async def clear_user(self, userid: int, *, only_if_node: str | None = None,
                         generation: int | None = None) -> bool:
        self.calls.append(("clear_user", userid, only_if_node, generation))
        return True

    async def auth_finish(self, userid: int, node: str, ticket: int, generation: int) -> bool:
        self.calls.append(("auth_finish", userid, ticket, generation))
        if self.lose_auth_finish:
            raise RedisTimeout("test: the answer of auth_finish never came")
        return True


class FlowCase(unittest.TestCase):
    """A role gateway stand-in over real SQLite storage and a task.Clock."""

    timeout = 30

    def setUp(self) -> None:
        path = os.path.join(self.mktemp(), "roledb.sqlite3")
        os.makedirs(os.path.dirname(path))
        self.backend = EmbeddedBackend(path)
        self.addCleanup(lambda: defer.ensureDeferred(self.backend.close()))
        self.db = FlakyDB(self.backend)
        self.clock = task.Clock()
        reg = CollectorRegistry()
        self.state = FakeState()
        node = SimpleNamespace(name="role1", reactor=self.clock,
                               database=lambda name: self.db)
        self.gw: Any = SimpleNamespace(
            node=node, state=self.state, settings=SimpleNamespace(logout_wait=5.0),
            players={}, user_locks=KeyedLock(),
            online=Gauge("online", "", registry=reg),
            logouts=Counter("logouts", "", ["reason"], registry=reg),
            final_save_retries=Counter("retries", "", registry=reg),
            tell_rolecaches=lambda player, what: None,
            datafix_version=lambda: 0, fix_entity=lambda entity: None,
            now=lambda: 0.0)
        self.gw.saver = Saver(self.db, PLAYERS, lambda: [], clock=self.clock, registry=reg)
        self.agent = Agent(self.gw, 0)
        self.gw.agents = [self.agent]

    def player(self, gold: int = 5, generation: int = 1) -> Player:
        entity = Entity(USERID, attrs={"gold": gold})
        entity.mark_dirty()
        p = Player(self.agent, USERID, entity, generation, 0.0)
        self.agent.players[USERID] = p
        self.gw.players[USERID] = p
        return p

    async def stored_gold(self) -> Any:
        doc = await self.backend.get(PLAYERS, USERID)
        return None if doc is None else doc["attrs"]["gold"]


class RoleFlows(FlowCase):
    async def test_a_failed_final_save_keeps_the_player_and_retries_until_stored(self) -> None:
        p = self.player(gold=42)
        self.db.fail_saves = True
        d = defer.Deferred.fromCoroutine(logout.logout(self.gw, p, "test"))
        for attempt in (1, 2, 3):
            await wait_for(lambda a=attempt: self.db.save_attempts >= a, 5,
                           f"final save attempt {attempt}")
            # the player is kept, logging out, in the saver's reach; Redis keeps LOGOUT
            self.assertEqual(p.state, LOGGING_OUT)
            self.assertIs(self.gw.players.get(USERID), p)
            self.assertNotIn("clear_user", [c[0] for c in self.state.calls])
            self.assertFalse(d.called)
            self.clock.advance(logout.RETRY_MAX)
        self.assertIsNone(await self.stored_gold())
        self.assertGreaterEqual(self.gw.final_save_retries._value.get(), 3)
        self.db.fail_saves = False
        self.clock.advance(logout.RETRY_MAX)
        await d
        self.assertEqual(await self.stored_gold(), 42)
        self.assertEqual(p.state, GONE)
        self.assertNotIn(USERID, self.gw.players)
        self.assertIn(("clear_user", USERID, "role1", 1), self.state.calls)
        self.assertIn(("set_logout", USERID, 1), self.state.calls)

    async def test_a_final_save_refused_by_a_newer_owner_ends_the_logout(self) -> None:
        await self.backend.claim_generation(PLAYERS, USERID, 5, {"attrs": {"gold": 1}})
        p = self.player(gold=99, generation=4)
        await logout.logout(self.gw, p, "test")
        self.assertEqual(p.state, GONE)
        self.assertEqual(await self.stored_gold(), 1)  # the newer owner's data stands
        self.assertEqual(self.db.save_attempts, 1)

    def test_the_saver_keeps_saving_players_that_are_logging_out(self) -> None:
        online, leaving, gone = (self.player() for _ in range(3))
        leaving.state, gone.state = LOGGING_OUT, GONE
        fake = SimpleNamespace(players={1: online, 2: leaving, 3: gone})
        held = [e for e, _ in Gateway._held_items(fake)]  # type: ignore[arg-type]
        self.assertEqual(held, [online.entity, leaving.entity])

    async def test_an_auth_whose_redis_answer_is_lost_leaves_nothing_behind(self) -> None:
        self.state.lose_auth_finish = True
        with self.assertRaises(auth.AuthRefused):
            await auth._create_instance(self.gw, USERID, 3)
        self.assertEqual(self.agent.players, {})
        # the state the lost script may have written is removed, fenced by generation
        self.assertIn(("clear_user", USERID, "role1", 3), self.state.calls)

    async def test_auth_claims_above_what_storage_has_when_redis_forgot(self) -> None:
        await self.backend.claim_generation(PLAYERS, USERID, 9, {"attrs": {"gold": 7}})
        player = await auth._create_instance(self.gw, USERID, 1)  # Redis counter restarted
        self.assertEqual(player.generation, 10)
        stored = await self.backend.get_entity(PLAYERS, USERID)
        self.assertEqual(stored.generation, 10)
        self.assertEqual(player.entity.get("gold"), 7)
        self.assertIn(("auth_finish", USERID, 1, 10), self.state.calls)

    async def test_a_new_player_is_stored_when_it_is_claimed(self) -> None:
        player = await auth._create_instance(self.gw, USERID, 1)
        stored = await self.backend.get_entity(PLAYERS, USERID)
        self.assertEqual((stored.generation, stored.doc["attrs"]["gold"]),
                         (1, player.entity.get("gold")))


class FakeConn:
    """The GatewayConnection calls Auth makes, recorded."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.is_open = True
        self.player: Any = None
        self.authenticating = True

    def reply(self, session: int, message: Any) -> None:
        self.replies.append(message)

    def replyError(self, session: int, request: Any, code: int) -> None:
        self.replies.append(("error", code))

    def closeWithReason(self, reason: str, **kw: Any) -> None:
        self.is_open = False

    def handshakeDone(self) -> None:
        pass


class AuthTellsRolecachesFirst(FlowCase):
    """The Auth answer waits until the rolecaches that reach the player (rolecity, mail,
    map) recorded where it is: a mail or chat sent right after a client saw its Auth OK is
    pushed, not only stored (the race once seen in test_mail_e2e)."""

    def setUp(self) -> None:
        super().setUp()
        self.told: list[defer.Deferred[Any]] = []

        def tell(player: Any, what: str) -> defer.Deferred[Any]:
            d: defer.Deferred[Any] = defer.Deferred()
            self.told.append(d)
            return d

        async def auth_begin(userid: int, secret: str, node: str) -> int:
            return 1

        async def nothing(*args: Any) -> list[Any]:
            return []

        reg = CollectorRegistry()
        self.state.auth_begin = auth_begin  # type: ignore[attr-defined]
        self.gw.tell_rolecaches = tell
        self.gw.writes_allowed = lambda: True
        self.gw.reconcile_name = nothing
        self.gw.take_transfers = nothing
        self.gw.auths = Counter("auths", "", ["code"], registry=reg)
        self.gw.auth_latency = Histogram("auth_latency", "", registry=reg)
        # the features' after-Auth steps (installed by whichever tests ran before) are not
        # what this test is about
        self.patch(requests, "run_after_auth", nothing)

    async def test_the_auth_answer_waits_for_the_rolecaches(self) -> None:
        conn = FakeConn()
        msg = SimpleNamespace(userid=USERID, secret="s")
        d = defer.Deferred.fromCoroutine(auth.authenticate(self.gw, conn, msg, 1))
        await wait_for(lambda: bool(self.told), 5, "Auth telling the rolecaches")
        self.assertEqual(conn.replies, [])  # not answered while the rolecaches are not told
        self.told[0].callback(None)
        await d
        self.assertEqual([r.code for r in conn.replies], [pb.ErrorCode.OK])
