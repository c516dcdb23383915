"""The login/online state of DESIGN.md kept in Redis, behind one small class.

loginhandler takes the per-openid login lock, reads the player's state, picks the
least-loaded role node and stores LOGIN_STEP_FINISH with a one-time secret; the role
gateway consumes the secret, sets GAME_STEP_FINISH and counts the player online; logout
clears it all. master registers role nodes, unregisters a dead one (clearing its
players), and drives ``is_available`` around a Redis restart, after which role nodes
re-register their online players.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, NamedTuple

import attrs
from twisted.logger import Logger

from rltwist.redis import keys, scripts
from rltwist.redis.client import RedisClient
from rltwist.redis.errors import RoleNotRegistered
from rltwist.redis.scripts import GAME_STEP_FINISH, LOGIN_STEP_FINISH, LOGOUT

__all__ = [
    "GAME_STEP_FINISH",
    "LOGIN_STEP_FINISH",
    "LOGOUT",
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
    """What Redis knows about one player (the secret is never read back)."""

    userid: int
    state: str
    node: str
    host: str
    port: int
    generation: int


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


def _split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


class OnlineState:
    """Login locks, player states, role node load and ``is_available`` over one client."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    # -- per-openid login lock ----------------------------------------------------------

    async def acquire_login_lock(self, openid: str, ttl_ms: int) -> str | None:
        """Take the login lock of ``openid`` for ``ttl_ms``; its token, or None if held."""
        if ttl_ms <= 0:
            raise ValueError(f"acquire_login_lock({openid!r}): ttl_ms must be > 0, not {ttl_ms}")
        token = secrets.token_hex(16)
        if await self.client.set(keys.login_lock(openid), token, px=ttl_ms, nx=True):
            return token
        return None

    async def login_begin(self, openid: str, ttl_ms: int) -> str | bool | None:
        """Login steps in one round trip: Redis available? then the openid's lock.

        Returns the lock token, False when ``is_available`` is unset (after a Redis
        restart), None when another login of this openid holds the lock.
        """
        token = secrets.token_hex(16)
        result = await self.client.run_script(
            scripts.LOGIN_BEGIN, [keys.IS_AVAILABLE, keys.login_lock(openid)], [token, ttl_ms]
        )
        result = int(result)
        return token if result == 1 else (False if result == 0 else None)

    async def login_assign(
        self, openid: str, lock_token: str, userid: int, secret: str, ttl_ms: int
    ) -> tuple[RoleEndpoint, int] | None:
        """Pick the least-loaded role node, store LOGIN_STEP_FINISH there with the one-time
        ``secret`` and a new fencing generation, and release the login lock — one round
        trip. None (lock released too) when no role node is up."""
        picked = await self.client.run_script(
            scripts.LOGIN_ASSIGN,
            [keys.ROLE_LOAD, keys.ROLE_ADDR, keys.user(userid), keys.user_secret(userid),
             keys.user_generation(userid), keys.login_lock(openid)],
            [userid, secret, ttl_ms, lock_token],
        )
        if not picked:
            return None
        node, addr, gen = picked
        host, port = _split_addr(addr)
        return RoleEndpoint(node, host, port), int(gen)

    async def release_login_lock(self, openid: str, token: str) -> bool:
        """Release the lock if ``token`` still owns it; False if it expired or moved on."""
        released = await self.client.run_script(
            scripts.RELEASE_LOCK, [keys.login_lock(openid)], [token]
        )
        return bool(released)

    # -- player state -------------------------------------------------------------------

    async def set_login_finish(
        self, userid: int, node: str, host: str, port: int, secret: str, secret_ttl: int
    ) -> int:
        """Store LOGIN_STEP_FINISH on ``node`` with a one-time ``secret`` (``secret_ttl`` ms).

        Returns the player's new fencing generation. The state expires with the secret
        unless the role node sets GAME_STEP_FINISH first. Raises RoleNotRegistered if
        ``node`` was marked down since it was picked.
        """
        if secret_ttl <= 0:
            raise ValueError(f"set_login_finish({userid}): secret_ttl must be > 0 ms")
        gen = await self.client.run_script(
            scripts.SET_LOGIN_FINISH,
            [
                keys.user(userid),
                keys.user_secret(userid),
                keys.user_generation(userid),
                keys.ROLE_LOAD,
            ],
            [userid, node, host, port, secret, int(secret_ttl)],
        )
        if gen == -1:
            raise RoleNotRegistered(f"set_login_finish({userid}): role node {node} is not up")
        return int(gen)

    async def consume_secret(self, userid: int, secret: str, *, node: str | None = None) -> bool:
        """Accept ``secret`` if it is the player's, unexpired, unused and (given ``node``)
        issued for that role node; an accepted secret is deleted, so it works once."""
        ok = await self.client.run_script(
            scripts.CONSUME_SECRET,
            [keys.user_secret(userid), keys.user(userid)],
            [secret, node or ""],
        )
        return bool(ok)

    async def auth_begin(self, userid: int, secret: str, node: str) -> int:
        """Consume the one-time ``secret`` issued for ``node`` (one use, unexpired); the
        login's fencing generation, or 0 when refused. One round trip."""
        gen = await self.client.run_script(
            scripts.AUTH_BEGIN, [keys.user_secret(userid), keys.user(userid)], [secret, node]
        )
        return int(gen)

    async def auth_finish(self, userid: int, node: str, generation: int) -> bool:
        """GAME_STEP_FINISH on ``node`` and count the player online there, atomically;
        False when the login state moved on. Raises RoleNotRegistered when ``node`` was
        marked down."""
        count = await self.client.run_script(
            scripts.AUTH_FINISH, [keys.user(userid), keys.ROLE_LOAD], [node, generation, userid]
        )
        if count == -1:
            raise RoleNotRegistered(f"auth_finish({userid}): role node {node} is not up")
        return int(count) > 0

    async def set_game_finish(
        self, userid: int, node: str, *, generation: int | None = None
    ) -> bool:
        """Mark the player GAME_STEP_FINISH on ``node``; False if its state names another
        node, is gone, is logging out, or (given ``generation``) belongs to another login."""
        ok = await self.client.run_script(
            scripts.SET_GAME_FINISH,
            [keys.user(userid)],
            [node, "" if generation is None else generation],
        )
        return bool(ok)

    async def set_logout(self, userid: int, node: str) -> bool:
        """Mark a GAME_STEP_FINISH player on ``node`` as LOGOUT (logging out: a new login
        must wait); False if the state is something else."""
        return bool(await self.client.run_script(scripts.SET_LOGOUT, [keys.user(userid)], [node]))

    async def get_user(self, userid: int) -> UserState | None:
        """The player's state, or None when Redis knows nothing of them."""
        fields = await self.client.hgetall(keys.user(userid))
        if not fields:
            return None
        return UserState(
            userid=userid,
            state=fields["state"],
            node=fields["node"],
            host=fields["host"],
            port=int(fields["port"]),
            generation=int(fields.get("gen", 0)),
        )

    async def clear_user(self, userid: int, *, only_if_node: str | None = None) -> bool:
        """Delete the player's state and secret and uncount them online.

        With ``only_if_node`` (a role node logging a player out) that node always
        uncounts the player, but the state is only deleted if it still names that node:
        a newer login elsewhere is left alone. True when the state was deleted.
        """
        cleared = await self.client.run_script(
            scripts.CLEAR_USER,
            [keys.user(userid), keys.user_secret(userid), keys.ROLE_LOAD],
            [userid, only_if_node or ""],
        )
        return bool(cleared)

    async def next_generation(self, userid: int) -> int:
        """Bump and return the player's fencing generation (never reset by clear_user)."""
        return await self.client.incr(keys.user_generation(userid))

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

    async def incr_online(self, node: str, userid: int) -> int:
        """Count ``userid`` online on ``node`` (idempotent); returns the node's count.

        Raises RoleNotRegistered when master has marked ``node`` down.
        """
        count = await self.client.run_script(scripts.INCR_ONLINE, [keys.ROLE_LOAD], [node, userid])
        if count == -1:
            raise RoleNotRegistered(f"incr_online({userid}): role node {node} is not up")
        return int(count)

    async def decr_online(self, node: str, userid: int) -> int:
        """Uncount ``userid`` on ``node`` (idempotent); returns the node's count."""
        return int(
            await self.client.run_script(scripts.DECR_ONLINE, [keys.ROLE_LOAD], [node, userid])
        )

    async def pick_least_loaded(self) -> RoleEndpoint | None:
        """The registered role node with the fewest players, None if there is none.

        One Lua script; equal counts go to the node whose name sorts first.
        """
        picked = await self.client.run_script(
            scripts.PICK_LEAST_LOADED, [keys.ROLE_LOAD, keys.ROLE_ADDR]
        )
        if not picked:
            return None
        node, addr, _count = picked
        host, port = _split_addr(addr)
        return RoleEndpoint(node, host, port)

    async def online_count(self, node: str) -> int:
        """How many players ``node`` has online (0 for an unknown node)."""
        return int(await self.client.execute("SCARD", self.client.key(keys.role_online(node))))

    async def list_roles(self) -> list[RoleLoad]:
        """Every registered role node with its address and count, least loaded first."""
        load = await self.client.zrange_withscores(keys.ROLE_LOAD)
        addrs = await self.client.hgetall(keys.ROLE_ADDR)
        roles = []
        for node, online in load:
            if node in addrs:
                host, port = _split_addr(addrs[node])
                roles.append(RoleLoad(node, host, port, online))
        return roles

    async def reregister_online(
        self,
        node: str,
        users: Iterable[tuple[int, str] | tuple[int, str, int]],
        *,
        host: str | None = None,
        client_port: int | None = None,
    ) -> int:
        """Write back the players ``node`` has online, after a Redis restart.

        ``users`` are ``(userid, state)`` or ``(userid, state, generation)``; generations
        are restored so fencing stays monotonic. With ``host``/``client_port`` the node
        is (re-)registered for the pick in the same script. Returns players written.
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
