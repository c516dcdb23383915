"""Every interleaving of two logins of one player, against a real redis-server.

Issue 10, section A: a player is online in at most one place. Each test enumerates every
order of the steps of two logins of the same openid (and of one fault, where the scenario
has one) and checks after every step that at most one role node counts the player online
(the ``role_online`` sets in Redis) and at most one gateway instance accepts its requests.

The login side is the real ``LoginHandler``; its ``login_begin`` (which is followed by
``get_user`` without a scheduling point), its gateway kick and its ``login_assign`` wait at
a gate the scheduler opens. The role gateways are a model of
``rltwist/nodes/role/gateway.py``'s Auth, kick and logout, written over the real
``OnlineState`` methods: Auth is ``auth_begin`` (a gate), then, under the gateway's
per-user lock, the logout of an older instance on the same node, the storage claim
(modelled: the final generation is ``max(ticket, stored + 1)``) and ``auth_finish`` (a
gate). "The gateway accepts requests" is: ``auth_finish`` returned True and the instance
has not been kicked since; nothing else fences an instance in this model, so the Redis
scripts alone must keep the invariant.

The faults are a third actor whose steps land between any two others: the login lock
expiring (its key deleted), Redis losing everything (FLUSHALL, then master's
reregister-and-set-``is_available`` as a later step), role1 cut off and then marked down
by master; and kicks that fail with LinkLost. On the scripts before issue 10 (commit
7aa08ad, the same schedules through an adapter for the new method signatures) 2,488 of
15,522 schedules put the player on two role nodes or two accepting gateways.

The schedules are explored depth first by re-execution: each run follows a prefix of
choices (which waiting actor goes next), then takes the first choice; the next prefix
bumps the last choice that had an alternative. Redis is flushed and rebuilt before each
run, so a run only depends on its choices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial import unittest

from rltwist.cluster import LinkLost
from rltwist.config import LoginSettings
from rltwist.nodes.login.loginhandler import LoginHandler
from rltwist.protocols import pb
from rltwist.redis import (
    GAME_STEP_FINISH,
    OnlineState,
    RedisClient,
    RedisServer,
    RoleNotRegistered,
    keys,
)
from rltwist.sdk import dev_token
from tests.login_util import FakeLoginNode, login_handler

log = Logger()
E = pb.ErrorCode

OPENID = "player-1"
USERID = (7 << 16) | 1
ROLES = {"role1": 7001, "role2": 7002}
SETTINGS = LoginSettings(handlers=1, lock_ttl=10.0, secret_ttl=60.0)
#: a step that does not come back within this long is a hang, not a slow Redis
STEP_BOUND = 10.0


class Scheduler:
    """Runs actors (coroutines) one step at a time in the order a list of choices says.

    An actor calls ``point(actor, step)`` before each step; the scheduler lets exactly one
    waiting actor go at a time and waits until it reaches its next point or ends.
    """

    def __init__(self, choices: list[int], check: Callable[[], Awaitable[list[str]]]) -> None:
        self.choices = choices
        self.check = check
        #: (choice taken, number of waiting actors) at each decision
        self.trace: list[tuple[int, int]] = []
        self.steps: list[str] = []
        self.violations: list[str] = []
        self.errors: list[str] = []
        self._waiting: dict[str, tuple[str, defer.Deferred[None]]] = {}
        self._settled: defer.Deferred[None] | None = None

    async def point(self, actor: str, step: str) -> None:
        gate: defer.Deferred[None] = defer.Deferred()
        self._waiting[actor] = (step, gate)
        self._settle()
        await gate

    def _settle(self) -> None:
        settled, self._settled = self._settled, None
        if settled is not None:
            settled.callback(None)

    def _ended(self, result: Any, actor: str) -> None:
        if isinstance(result, Failure):
            self.errors.append(f"{actor} raised {result.getTraceback()}")
        self._settle()

    async def _until_settled(self, settled: defer.Deferred[None], what: str) -> None:
        try:
            await settled.addTimeout(STEP_BOUND, reactor)
        except defer.TimeoutError:
            raise AssertionError(f"{what} neither reached its next step nor ended within "
                                 f"{STEP_BOUND:g}s (steps so far: {self.steps})") from None

    async def run(self, actors: dict[str, Callable[[], Awaitable[None]]]) -> None:
        """Start every actor, then let them go one step at a time until all have ended."""
        for name, actor in sorted(actors.items()):
            settled = self._settled = defer.Deferred()
            d = defer.ensureDeferred(actor())
            d.addBoth(self._ended, name)
            await self._until_settled(settled, f"{name} (start)")
        while self._waiting:
            waiting = sorted(self._waiting)
            n = len(self.trace)
            choice = self.choices[n] if n < len(self.choices) else 0
            self.trace.append((choice, len(waiting)))
            actor = waiting[choice]
            step, gate = self._waiting.pop(actor)
            self.steps.append(f"{actor}:{step}")
            settled = self._settled = defer.Deferred()
            gate.callback(None)
            await self._until_settled(settled, f"{actor}:{step}")
            self.violations += [f"after {self.steps}: {v}" for v in await self.check()]


def next_choices(trace: list[tuple[int, int]]) -> list[int] | None:
    """The choice prefix of the next schedule in depth-first order; None when all ran."""
    for i in range(len(trace) - 1, -1, -1):
        choice, options = trace[i]
        if choice + 1 < options:
            return [c for c, _ in trace[:i]] + [choice + 1]
    return None


@attrs.define
class Instance:
    """A player instance on a modelled gateway."""

    userid: int
    generation: int
    accepting: bool = True


class GatewayModel:
    """The parts of rltwist/nodes/role/gateway.py that touch the login state."""

    def __init__(self, world: World, node: str) -> None:
        self.world = world
        self.node = node
        self.instances: dict[int, Instance] = {}

    @property
    def state(self) -> OnlineState:
        return self.world.state

    async def auth_begin(self, userid: int, secret: str) -> int:
        return await self.state.auth_begin(userid, secret, self.node)

    async def auth_finish(self, userid: int, ticket: int) -> bool:
        old = self.instances.get(userid)
        if old is not None:  # a second Auth here: the older instance logs out first
            await self.logout(old)
        # the storage claim of issue 10 item 4, modelled: the final generation is above
        # both the ticket and whatever was stored (the Redis counter restarts after FLUSHALL)
        generation = max(ticket, self.world.stored.get(userid, 0) + 1)
        self.world.stored[userid] = generation
        try:
            finished = await self.state.auth_finish(userid, self.node, ticket, generation)
        except RoleNotRegistered:
            finished = False
        if finished:
            self.instances[userid] = Instance(userid, generation)
        return finished

    async def kick(self, userid: int) -> str:
        instance = self.instances.get(userid)
        if instance is None:
            await self.state.clear_user(userid, only_if_node=self.node)
            return "absent"
        await self.logout(instance)
        return "kicked"

    async def logout(self, instance: Instance) -> None:
        instance.accepting = False
        await self.state.set_logout(instance.userid, self.node, instance.generation)
        await self.state.clear_user(instance.userid, only_if_node=self.node,
                                    generation=instance.generation)
        if self.instances.get(instance.userid) is instance:
            del self.instances[instance.userid]

    async def reregister(self) -> None:
        entries = [(i.userid, GAME_STEP_FINISH, i.generation)
                   for i in self.instances.values() if i.accepting]
        await self.state.reregister_online(self.node, entries, host="127.0.0.1",
                                           client_port=ROLES[self.node])


class GatedState:
    """The OnlineState a login sees: login_begin and login_assign wait for their turn."""

    GATED = {"login_begin": "begin", "login_assign": "assign"}

    def __init__(self, real: OnlineState, sched: Scheduler, actor: str) -> None:
        self._real = real
        self._sched = sched
        self._actor = actor

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        step = self.GATED.get(name)
        if step is None:
            return attr

        async def gated(*args: Any, **kw: Any) -> Any:
            await self._sched.point(self._actor, step)
            return await attr(*args, **kw)

        return gated


class FakeCluster:
    """logiccenter's account lookup, and the kick sent to a modelled gateway."""

    def __init__(self, world: World, actor: str) -> None:
        self.world = world
        self.actor = actor

    async def call(self, node: str, service: str, method: str, *args: Any,
                   timeout: float | None = None) -> Any:
        if (service, method) == ("account", "get_or_create"):
            created = self.world.new_account
            self.world.new_account = False
            return {"userid": USERID, "created": created}
        if (service, method) == ("gateway", "kick"):
            await self.world.sched.point(self.actor, "kick")
            if node in self.world.unreachable:
                raise LinkLost(node, service, method, "connection reset by the test")
            return await self.world.gateways[node].kick(args[0])
        raise AssertionError(f"unexpected call {node}.{service}.{method}")


@attrs.define
class World:
    """One schedule's Redis, gateways and modelled storage."""

    state: OnlineState
    sched: Scheduler
    gateways: dict[str, GatewayModel] = attrs.Factory(dict)
    #: modelled storage: the generation the player's document was last claimed with
    stored: dict[int, int] = attrs.Factory(dict)
    new_account: bool = False
    #: role nodes a kick cannot reach (LinkLost), registered or not
    unreachable: set[str] = attrs.Factory(set)
    answers: list[str] = attrs.Factory(list)

    def handler(self, actor: str) -> LoginHandler:
        return login_handler(FakeLoginNode(SETTINGS, GatedState(self.state, self.sched, actor),
                                           FakeCluster(self, actor)))

    async def client(self, actor: str, attempts: int = 1) -> None:
        """A game client: Login, then Auth on the role node it was sent to."""
        handler = self.handler(actor)
        for _ in range(attempts):
            r = await handler.login(pb.Login(openid=OPENID, token=dev_token(
                SETTINGS.dev_sdk_secret, OPENID), server_id=7, device_id=actor))
            if r.code != E.OK:
                self.answers.append(f"{actor} login {E.Name(r.code)}")
                continue
            gateway = next(g for g in self.gateways.values() if ROLES[g.node] == r.port)
            await self.sched.point(actor, f"auth_begin@{gateway.node}")
            ticket = await gateway.auth_begin(r.userid, r.secret)
            if not ticket:
                self.answers.append(f"{actor} auth BAD_SECRET")
                continue
            await self.sched.point(actor, f"auth_finish@{gateway.node}")
            if await gateway.auth_finish(r.userid, ticket):
                self.answers.append(f"{actor} auth OK@{gateway.node}")
                return
            self.answers.append(f"{actor} auth refused")

    async def check(self) -> list[str]:
        """The invariant: one role node at most counts the player, one instance at most
        accepts its requests."""
        client = self.state.client
        holders = [node for node in ROLES if await client.execute(
            "SISMEMBER", client.key(keys.role_online(node)), USERID)]
        accepting = [g.node for g in self.gateways.values()
                     for i in g.instances.values() if i.userid == USERID and i.accepting]
        found = []
        if len(holders) > 1:
            found.append(f"role_online of {holders} all hold {USERID}")
        if len(accepting) > 1:
            found.append(f"gateways {accepting} all accept requests of {USERID}")
        return found


class Interleavings(unittest.TestCase):
    """One private redis-server; each scenario explores all its schedules."""

    timeout = 900

    async def setUp(self) -> None:
        self.redis = RedisServer(directory=self.mktemp())
        await self.redis.start()
        self.addCleanup(self.redis.stop)
        self.client = RedisClient(self.redis.url, prefix="il:", connect_timeout=5.0,
                                  command_timeout=5.0)
        await self.client.connect()
        self.addCleanup(self.client.disconnect)
        self.state = OnlineState(self.client)

    async def fresh_world(self, choices: list[int], *, online: bool) -> World:
        """Empty Redis with role1 and role2 up and logins allowed; with ``online`` the
        player is already playing on role1 (logged in by a run of its own)."""
        await self.client.execute("FLUSHALL")
        sched = Scheduler(choices, lambda: world.check())
        world = World(self.state, sched)
        for node, port in ROLES.items():
            await self.state.register_role(node, "127.0.0.1", port)
            world.gateways[node] = GatewayModel(world, node)
        await self.state.set_available()
        if online:
            setup = Scheduler([], sched.check)
            world.sched = setup
            await setup.run({"first": lambda: world.client("first")})
            world.sched = sched
            if world.answers != ["first auth OK@role1"] or setup.violations or setup.errors:
                raise AssertionError(f"setup login failed: {world.answers} "
                                     f"{setup.violations} {setup.errors}")
            world.answers.clear()
        return world

    async def explore(self, name: str, *, online: bool = False, new_account: bool = False,
                      unreachable: frozenset[str] = frozenset(), attempts: int = 1,
                      event: Callable[[World], Callable[[], Awaitable[None]]] | None = None
                      ) -> list[str]:
        """Run every schedule of two logins (and ``event``'s steps); the schedules that
        broke the invariant, one line each. Prints how many ran and how many broke it."""
        choices: list[int] | None = []
        schedules = 0
        violations: list[str] = []
        outcomes: dict[str, int] = {}
        while choices is not None:
            world = await self.fresh_world(choices, online=online)
            world.new_account = new_account
            world.unreachable = set(unreachable)
            actors: dict[str, Callable[[], Awaitable[None]]] = {
                "A": partial(world.client, "A", attempts),
                "B": partial(world.client, "B", attempts)}
            if event is not None:
                actors["ev"] = event(world)
            await world.sched.run(actors)
            schedules += 1
            if world.sched.errors:
                self.fail(f"{name}: {world.sched.steps}: {world.sched.errors[0]}")
            internal = [a for a in world.answers if "INTERNAL" in a]
            if internal:
                self.fail(f"{name}: {world.sched.steps}: {internal}")
            if world.sched.violations:
                violations.append(f"{name}: {world.sched.violations[0]} "
                                  f"(answers {world.answers})")
            key = ", ".join(sorted(world.answers))
            outcomes[key] = outcomes.get(key, 0) + 1
            choices = next_choices(world.sched.trace)
        summary = (f"interleavings {name}: {schedules} schedules checked, "
                   f"{len(violations)} with two owners")
        print(summary)
        log.info("{summary}; outcomes {outcomes}", summary=summary, outcomes=outcomes)
        self.assertGreater(schedules, 1, f"{name}: the scheduler found no interleaving")
        return violations

    def assertNoViolations(self, violations: list[str]) -> None:
        for v in violations[:3]:
            print(f"  e.g. {v}")
        self.assertEqual(len(violations), 0, "\n".join(violations[:3]))

    async def test_two_logins_of_a_player_with_no_state(self) -> None:
        self.assertNoViolations(await self.explore("no state", attempts=2))

    async def test_two_logins_of_a_new_account(self) -> None:
        self.assertNoViolations(await self.explore("new account", new_account=True))

    async def test_two_logins_of_a_player_online_elsewhere(self) -> None:
        self.assertNoViolations(await self.explore("online on role1", online=True, attempts=2))

    async def test_the_login_lock_expires_between_any_two_steps(self) -> None:
        self.assertNoViolations(
            await self.explore("lock expiry", event=_lock_expires, attempts=2)
            + await self.explore("lock expiry, online on role1", online=True,
                                 event=_lock_expires))

    async def test_redis_loses_everything_between_any_two_steps(self) -> None:
        self.assertNoViolations(
            await self.explore("FLUSHALL", event=_flushall)
            + await self.explore("FLUSHALL, online on role1", online=True, event=_flushall))

    async def test_a_kick_that_loses_its_link_to_a_registered_node(self) -> None:
        self.assertNoViolations(await self.explore(
            "LinkLost kick", online=True, unreachable=frozenset({"role1"}), attempts=2))

    async def test_a_kick_that_cannot_reach_a_node_master_marks_down(self) -> None:
        self.assertNoViolations(await self.explore(
            "LinkLost kick, role1 marked down", online=True,
            unreachable=frozenset({"role1"}), event=_role1_marked_down))


def _lock_expires(world: World) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await world.sched.point("ev", "lock expires")
        await world.state.client.delete(keys.login_lock(OPENID))

    return run


def _flushall(world: World) -> Callable[[], Awaitable[None]]:
    """Redis restarts empty; master then has every role node write its players back and
    sets is_available (rltwist/nodes/master/service.py ``_check_available``)."""

    async def run() -> None:
        await world.sched.point("ev", "FLUSHALL")
        await world.state.client.execute("FLUSHALL")
        await world.sched.point("ev", "master reregisters")
        for gateway in world.gateways.values():
            await gateway.reregister()
        await world.state.set_available()

    return run


def _role1_marked_down(world: World) -> Callable[[], Awaitable[None]]:
    """role1 is cut off: it stops taking writes once its heartbeats go unanswered (issue 10
    item 5), then master marks it down and unregisters it, clearing its players."""

    async def run() -> None:
        await world.sched.point("ev", "role1 cut off")
        for instance in world.gateways["role1"].instances.values():
            instance.accepting = False
        await world.sched.point("ev", "master marks role1 down")
        await world.state.unregister_role("role1")

    return run
