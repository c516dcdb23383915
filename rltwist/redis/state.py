"""The login/online state of docs/architecture.md kept in Redis, behind one small class.

loginhandler takes the per-openid login lock (``login_begin``), reads an existing
player's state (``get_user``), kicks a GAME_STEP_FINISH instance, then ``login_assign``:
a compare-and-set that stores LOGIN_STEP_FINISH with a one-time secret on the
least-loaded role node, or answers the pending one again, or refuses because the state
moved on. The role gateway consumes the secret and takes a new generation (the ticket,
``auth_begin``), claims the player in storage, and sets GAME_STEP_FINISH with its final
generation and counts the player online (``auth_finish``, only with its ticket); its
logout marks LOGOUT and clears the state, each refused when a newer login owns the player.
master registers role nodes, unregisters a dead one (clearing its players, which lets a
login replace a state it could not kick), and drives ``is_available`` around a Redis
restart, after which role nodes re-register their online players.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple

import attrs
from twisted.logger import Logger

from rltwist.redis import keys, scripts
from rltwist.redis.client import RedisClient
from rltwist.redis.errors import RoleNotRegistered
from rltwist.redis.scripts import (
    ASSIGNED,
    GAME_STEP_FINISH,
    HELD,
    LOGIN_STEP_FINISH,
    LOGOUT,
    LOST_LOCK,
    MOVED,
    NO_ROLE,
    PENDING,
    UNAVAILABLE,
)

__all__ = [
    "ASSIGNED",
    "GAME_STEP_FINISH",
    "HELD",
    "LOGIN_STEP_FINISH",
    "LOGOUT",
    "LOST_LOCK",
    "MOVED",
    "NO_ROLE",
    "PENDING",
    "UNAVAILABLE",
    "Assignment",
    "OnlineState",
    "RoleEndpoint",
    "RoleLoad",
    "UserState",
]

log = Logger()

#: the states a player can be in while Redis knows about them
STATES = (LOGIN_STEP_FINISH, GAME_STEP_FINISH, LOGOUT)


@attrs.frozen
class UserState:
    """What Redis knows about one player (the secret is never read back).

    ``generation`` is the owning instance's (GAME_STEP_FINISH, LOGOUT), ``ticket`` the one
    an Auth in progress took (LOGIN_STEP_FINISH after its secret was used), 0 when none;
    ``pending`` says a LOGIN_STEP_FINISH still waits for its secret.
    """

    userid: int
    state: str
    node: str
    host: str
    port: int
    generation: int
    ticket: int = 0
    pending: bool = False


class RoleEndpoint(NamedTuple):
    """A role node and the address its gateway takes client connections on."""

    node: str
    host: str
    port: int


@attrs.frozen
class RoleLoad:
    """A registered role node with its online count."""

    node: str
    host: str
    port: int
    online: int


@attrs.frozen
class Assignment:
    """What ``login_assign`` did. ``outcome`` is ASSIGNED (a new LOGIN_STEP_FINISH) or
    PENDING (the one the login read, answered again), both with ``role`` and ``secret``;
    or why nothing was written: NO_ROLE, LOST_LOCK, UNAVAILABLE, MOVED, HELD."""

    outcome: str
    role: RoleEndpoint | None = None
    secret: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (ASSIGNED, PENDING)


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


class OnlineState:
    """Login locks, player states, role node load and ``is_available`` over one client."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    # -- login ----------------------------------------------------------------------------

    async def login_begin(self, openid: str, ttl_ms: int) -> str | Literal[False] | None:
        """Login steps in one round trip: Redis available? then the openid's lock.

        Returns the lock token, False when ``is_available`` is unset (after a Redis
        restart), None when another login of this openid holds the lock.
        """
        if ttl_ms <= 0:
            raise ValueError(f"login_begin({openid!r}): ttl_ms must be > 0, not {ttl_ms}")
        token = secrets.token_hex(16)
        result = await self.client.run_script(
            scripts.LOGIN_BEGIN, [keys.IS_AVAILABLE, keys.login_lock(openid)], [token, ttl_ms]
        )
        result = int(result)
        return token if result == 1 else (False if result == 0 else None)

    async def login_assign(
        self,
        openid: str,
        lock_token: str,
        userid: int,
        secret: str,
        ttl_ms: int,
        *,
        expect: UserState | None,
        evict: bool = False,
    ) -> Assignment:
        """Send the player to a role node, if nothing changed since the login looked.

        A compare-and-set in one round trip, which also releases the login lock: it
        writes only while ``lock_token`` still holds the lock, ``is_available`` is set and
        the player's state is ``expect`` (what ``get_user`` gave; None for none, and a new
        account has none) or has gone since. A pending LOGIN_STEP_FINISH is answered again
        with its node and secret (PENDING); a state that is gone or none gets the
        least-loaded role node and ``secret``, valid ``ttl_ms`` (ASSIGNED). ``evict``: the
        login could not reach the node of the GAME_STEP_FINISH it read; that state is
        replaced only if master has marked the node down, else HELD. Any other outcome
        wrote nothing (see ``Assignment``).
        """
        if ttl_ms <= 0:
            raise ValueError(f"login_assign({userid}): ttl_ms must be > 0, not {ttl_ms}")
        if expect is None:
            read = ["", "", "", ""]
        else:
            read = [expect.state, expect.node, str(expect.generation or ""),
                    str(expect.ticket or "")]
        answer = await self.client.run_script(
            scripts.LOGIN_ASSIGN,
            [keys.IS_AVAILABLE, keys.login_lock(openid), keys.user(userid), keys.ROLE_LOAD,
             keys.ROLE_ADDR],
            [userid, secret, ttl_ms, lock_token, *read, "1" if evict else ""],
        )
        outcome = answer[0]
        if outcome not in (ASSIGNED, PENDING):
            return Assignment(outcome)
        _, node, addr, given = answer
        host, port = _split_addr(addr)
        return Assignment(outcome, RoleEndpoint(node, host, port), given)

    async def release_login_lock(self, openid: str, token: str) -> bool:
        """Release the lock if ``token`` still owns it; False if it expired or moved on."""
        released = await self.client.run_script(
            scripts.RELEASE_LOCK, [keys.login_lock(openid)], [token]
        )
        return bool(released)

    # -- Auth and logout (the role gateway) ---------------------------------------------

    async def auth_begin(self, userid: int, secret: str, node: str) -> int:
        """Consume the one-time ``secret`` issued for ``node`` (one use, unexpired) and
        take a new generation from the player's counter: the login's ticket (> 0), also
        recorded in the state; 0 when refused. One round trip."""
        ticket = await self.client.run_script(
            scripts.AUTH_BEGIN, [keys.user(userid), keys.user_generation(userid)],
            [secret, node]
        )
        return int(ticket)

    async def auth_finish(self, userid: int, node: str, ticket: int, generation: int) -> bool:
        """Finish the Auth that holds ``ticket``: GAME_STEP_FINISH on ``node`` under the
        instance's final ``generation`` (>= ticket: it also tops the stored one), the
        counter raised to it, the player counted online — atomically. False when the
        state moved on (expired, cleared, another login). Raises RoleNotRegistered when
        ``node`` was marked down."""
        if generation < ticket or ticket <= 0:
            raise ValueError(f"auth_finish({userid}): generation {generation} must be >= "
                             f"ticket {ticket} > 0")
        count = await self.client.run_script(
            scripts.AUTH_FINISH,
            [keys.user(userid), keys.ROLE_LOAD, keys.user_generation(userid)],
            [node, ticket, generation, userid],
        )
        if count == -1:
            raise RoleNotRegistered(f"auth_finish({userid}): role node {node} is not up")
        return int(count) > 0

    async def set_logout(self, userid: int, node: str, generation: int | None) -> bool:
        """Mark the GAME_STEP_FINISH instance of ``generation`` on ``node`` as LOGOUT
        (logging out: a new login must wait); False, changing nothing, when the state is
        something else or (given ``generation``) a newer login's."""
        return bool(await self.client.run_script(
            scripts.SET_LOGOUT, [keys.user(userid)],
            [node, "" if generation is None else generation]))

    async def clear_user(
        self, userid: int, *, only_if_node: str | None = None, generation: int | None = None
    ) -> bool:
        """Delete the player's state and uncount them online. True when it was deleted.

        With ``only_if_node`` (a role node logging a player out) the state is deleted only
        if it names that node, with ``generation`` only if it is that login's (its
        generation, or its ticket while Auth runs): a newer login is left alone. The named
        node's own sets keep the player only as far as the state left standing names it.
        """
        cleared = await self.client.run_script(
            scripts.CLEAR_USER,
            [keys.user(userid), keys.ROLE_LOAD],
            [userid, only_if_node or "", "" if generation is None else generation],
        )
        return bool(cleared)

    async def get_user(self, userid: int) -> UserState | None:
        """The player's state, or None when Redis knows nothing of them."""
        fields = await self.client.hgetall(keys.user(userid))
        if not fields or "state" not in fields:
            return None
        return UserState(
            userid=userid,
            state=fields["state"],
            node=fields["node"],
            host=fields["host"],
            port=int(fields["port"]),
            generation=int(fields.get("gen") or 0),
            ticket=int(fields.get("ticket") or 0),
            pending="secret" in fields,
        )

    # -- role nodes ---------------------------------------------------------------------

    async def register_role(
        self, node: str, host: str, client_port: int, *, fresh: bool = False
    ) -> int:
        """Make ``node`` eligible for the pick, its gateway at ``host:client_port``.

        Idempotent; returns the node's online count, which a node that re-registers
        (after a master restart) keeps. ``fresh`` is for a newly started process: players
        recorded for a previous process of that node are cleared first, in case it
        crashed and came back before master noticed.
        """
        if fresh:
            await self.unregister_role(node)
        count = await self.client.run_script(
            scripts.REGISTER_ROLE, [keys.ROLE_LOAD, keys.ROLE_ADDR], [node, f"{host}:{client_port}"]
        )
        log.info(
            "role node {node} registered at {host}:{port}", node=node, host=host, port=client_port
        )
        return int(count)

    async def unregister_role(self, node: str) -> int:
        """Remove ``node`` from the pick and clear the state of all its players.

        Used at shutdown and when master marks a role node down; those players can log
        in again at once. Returns how many player states were cleared.
        """
        cleared = await self.client.run_script(
            scripts.UNREGISTER_ROLE, [keys.ROLE_LOAD, keys.ROLE_ADDR], [node]
        )
        log.info("role node {node} unregistered; {count} players cleared", node=node, count=cleared)
        return int(cleared)

    async def withdraw_role(self, node: str) -> bool:
        """Take ``node`` out of the pick but leave its players: it is stopping in order and
        logs them out itself (new Auths on it then fail; ``unregister_role`` clears what is
        left once it stopped). True if it was in the pick."""
        removed = await self.client.execute("ZREM", self.client.key(keys.ROLE_LOAD), node)
        log.info("role node {node} left the pick (stopping)", node=node)
        return bool(removed)

    async def online_count(self, node: str) -> int:
        """How many players ``node`` has online (0 for an unknown node)."""
        return int(await self.client.execute("SCARD", self.client.key(keys.role_online(node))))

    async def list_roles(self) -> list[RoleLoad]:
        """Every registered role node with its address and count, least loaded first
        (equal counts: the name that sorts first), the order ``login_assign`` picks in."""
        load = await self.client.zrange_withscores(keys.ROLE_LOAD)
        addrs = await self.client.hgetall(keys.ROLE_ADDR)
        roles = []
        for node, online in load:
            if node in addrs:
                host, port = _split_addr(addrs[node])
                roles.append(RoleLoad(node, host, port, online))
        return roles

    async def pick_least_loaded(self) -> RoleEndpoint | None:
        """The role node the next new login would be sent to, None if there is none (for
        operators and tests; ``login_assign`` picks inside its script)."""
        roles = await self.list_roles()
        if not roles:
            return None
        return RoleEndpoint(roles[0].node, roles[0].host, roles[0].port)

    async def reregister_online(
        self,
        node: str,
        users: Iterable[tuple[int, str] | tuple[int, str, int]],
        *,
        host: str | None = None,
        client_port: int | None = None,
    ) -> int:
        """Write back the players ``node`` has online, after a Redis restart.

        ``users`` are ``(userid, state)`` or ``(userid, state, generation)``; each state
        keeps the instance's generation and the player's counter is raised to it (never
        lowered), so fencing stays monotonic. With ``host``/``client_port`` the node is
        (re-)registered for the pick in the same script. Returns players written.
        """
        args: list[Any] = [node, f"{host}:{client_port}" if host is not None else ""]
        for entry in users:
            userid, state = entry[0], entry[1]
            generation = entry[2] if len(entry) > 2 else 0
            if state not in STATES:
                raise ValueError(f"reregister_online({node}): bad state {state!r} of {userid}")
            args += [userid, state, generation]
        written = await self.client.run_script(
            scripts.REREGISTER_ONLINE, [keys.ROLE_LOAD, keys.ROLE_ADDR], args
        )
        if written == -1:
            raise RoleNotRegistered(
                f"reregister_online: role node {node} has no address; pass host/client_port"
            )
        return int(written)

    # -- Redis-restart fault ------------------------------------------------------------

    async def get_available(self) -> bool:
        """True once master has set ``is_available``; a restarted Redis has it unset."""
        return await self.client.get(keys.IS_AVAILABLE) == "1"

    async def set_available(self) -> None:
        """Set ``is_available``: every role node has re-registered; logins resume."""
        await self.client.set(keys.IS_AVAILABLE, "1")

    async def clear_available(self) -> None:
        """Unset ``is_available``: logins are refused until it is set again."""
        await self.client.delete(keys.IS_AVAILABLE)
