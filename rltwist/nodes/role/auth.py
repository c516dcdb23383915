"""Auth on the role gateway: the one place a player instance comes to life (DESIGN "Login" 8).

The steps, each a fence for the next:

1. ``auth_begin`` (Redis, one script) consumes the one-time secret login issued for this
   node and draws a *ticket* from the player's Redis generation counter.
2. The player's generation is ``max(ticket, stored generation + 1)`` and is *claimed* in
   storage with a compare-and-set on the player document before anything else happens:
   from that moment every write of an older instance (entity saves, and the writes other
   services fence against the stored generation: name index, grant transfers) is refused,
   even if that instance is frozen and wakes later. Taking the maximum with the stored
   generation keeps generations increasing when Redis lost its keys (FLUSHALL, restart).
3. The document is read *after* the claim, so no older instance can change it underneath.
4. ``auth_finish`` (Redis, one script) turns the login state into GAME_STEP_FINISH for
   this node and this ticket only, and counts the player online.

Any failure after step 1 removes what this Auth left in Redis (fenced by generation, so a
newer login is never touched) and the client logs in again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import birth_region
from rltwist.nodes.role import requests, served
from rltwist.nodes.role.agent import ONLINE
from rltwist.protocols import pb
from rltwist.redis import RedisError, RoleNotRegistered
from rltwist.storage import StaleGeneration, StorageError

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway, GatewayConnection

log = Logger()
E = pb.ErrorCode
K = pb.KickReason


class AuthRefused(Exception):
    """Auth cannot complete; ``code`` is what the client is told."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


async def authenticate(gw: Gateway, conn: GatewayConnection, msg: Any, session: int) -> None:
    """Answer one ``Auth`` request (never raises for expected failures)."""
    started = time.monotonic()
    userid = msg.userid
    me = gw.node.name
    if not gw.writes_allowed():
        return _refuse(gw, conn, session, userid, E.RETRY_LATER,
                       "this role node has lost master; it accepts no new players")
    steps = _Steps(gw)
    try:
        ticket = await gw.state.auth_begin(userid, msg.secret, me)
        steps.done("begin")
    except RedisError as e:
        # nothing was consumed: the client may send the same Auth again on this connection
        return _refuse(gw, conn, session, userid, E.RETRY_LATER, f"Redis unavailable ({e})",
                       close=False)
    if not ticket:
        gw.auths.labels("BAD_SECRET").inc()
        conn.replyError(session, pb.Auth, E.BAD_SECRET)
        conn.closeWithReason("bad_secret", userid=userid)
        return
    async with gw.user_locks(userid):
        old = gw.players.get(userid)
        if old is not None:
            # a second Auth with a fresh secret while the old instance lives here
            await gw.logout(old, "login elsewhere", K.KICK_LOGIN_ELSEWHERE)
        try:
            player = await _create_instance(gw, userid, ticket, steps)
        except AuthRefused as e:
            await _undo(gw, userid, ticket)
            return _refuse(gw, conn, session, userid, e.code, str(e))
        gw.players[userid] = player
        served.started(gw, player)  # rl-chaos's double-online proof reads these records
        gw.online.set(len(gw.players))
        player.conn = conn
        conn.player = player
        conn.authenticating = False
        conn.handshakeDone()
        told = gw.tell_rolecaches(player, "set")
        steps.restart()
        await gw.reconcile_name(player)
        steps.done("reconcile")
    await gw.take_transfers(player)
    steps.done("transfers")
    await told  # a push sent to the player after it saw its Auth OK finds it
    steps.done("rolecaches")
    gw.auths.labels("OK").inc()
    gw.auth_latency.observe(time.monotonic() - started)
    player.settled = False  # requests sent after this answer wait for the after-Auth steps
    conn.reply(session, pb.Auth.Response(
        code=E.OK, userid=userid, name=player.entity.get("name", ""),
        server_id=birth_region(userid),
        basics=player.basics(), server_time_ms=int(time.time() * 1000)))
    try:
        if not conn.is_open and player.state == ONLINE:  # the client left during the Auth
            gw.start_logout(player, "connection lost")
            return
        await requests.run_after_auth(gw, player)
    finally:
        player.settle()


async def _create_instance(gw: Gateway, userid: int, ticket: int,
                           steps: _Steps | None = None) -> Player:
    """Claim the player's data for a new generation, load it, make it GAME_STEP_FINISH."""
    agent = gw.agents[userid % len(gw.agents)]
    steps = steps or _Steps(gw)
    try:
        steps.restart()  # not the wait for the per-user lock
        player = await agent.load(userid, ticket)
        steps.done("claim")
    except StaleGeneration as e:
        raise AuthRefused(E.RETRY_LATER, f"a newer login took over ({e})") from None
    except StorageError as e:
        raise AuthRefused(E.RETRY_LATER, f"storage unavailable ({e})") from None
    try:
        finished = await gw.state.auth_finish(userid, gw.node.name, ticket, player.generation)
        steps.done("finish")
    except RoleNotRegistered:
        finished = False
    except RedisError as e:
        # The script may have run even though its answer was lost: GAME_STEP_FINISH may
        # name this node with no instance behind it. Remove it (fenced by generation).
        agent.forget(player)
        await _clear(gw, userid, player.generation)
        raise AuthRefused(E.RETRY_LATER, f"Redis did not confirm the Auth ({e})") from None
    if not finished:
        agent.forget(player)
        raise AuthRefused(E.RETRY_LATER, "the login state moved on (a newer login)")
    return player


class _Steps:
    """Times the steps of one Auth into ``rl_role_auth_step_seconds`` as each completes
    (a step that fails is not recorded)."""

    __slots__ = ("histogram", "last")

    def __init__(self, gw: Gateway) -> None:
        # a gateway stand-in of a flow test may have no metrics
        self.histogram = getattr(gw, "auth_steps", None)
        self.last = time.monotonic()

    def restart(self) -> None:
        self.last = time.monotonic()

    def done(self, step: str) -> None:
        now = time.monotonic()
        if self.histogram is not None:
            self.histogram.labels(step).observe(now - self.last)
        self.last = now


async def _undo(gw: Gateway, userid: int, ticket: int) -> None:
    """Drop this Auth's login state (still LOGIN_STEP_FINISH with our ticket), so the
    client's next login starts afresh instead of waiting for the state to expire."""
    await _clear(gw, userid, ticket)


async def _clear(gw: Gateway, userid: int, generation: int) -> None:
    try:
        await gw.state.clear_user(userid, only_if_node=gw.node.name, generation=generation)
    except RedisError as e:
        log.warn("Auth of {userid}: cannot clear its Redis state ({e}); the next login "
                 "kicks here and finds nobody", userid=userid, e=e)


def _refuse(gw: Gateway, conn: GatewayConnection, session: int, userid: int, code: int,
            why: str, close: bool = True) -> None:
    gw.auths.labels(E.Name(code)).inc()
    log.info("Auth of {userid} refused: {why}", userid=userid, why=why)
    conn.authenticating = False
    conn.replyError(session, pb.Auth, code)
    if close:
        conn.closeWithReason("auth_refused", userid=userid, why=why)
