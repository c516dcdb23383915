"""Logout on the role gateway (DESIGN "Login" 9): take a player offline without losing data.

Order: mark LOGOUT in Redis (a new login of the player waits with RETRY_LATER), close the
connection, wait for the player's in-flight requests (bounded), save, clear the Redis
state. The final save is the only copy of what changed since the last periodic save, so a
failed save is never the end: the instance stays (state ``logging_out``, still in the
saver's provider, so SIGTERM's final flush includes it) and the save is retried with
backoff until storage takes it — or until storage refuses it because a newer instance of
the player claimed the data (then this copy is void by design).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.nodes.role import served
from rltwist.nodes.role.agent import GONE, LOGGING_OUT, ONLINE
from rltwist.protocols import pb
from rltwist.protocols.server import CloseReason
from rltwist.redis import RedisError

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()

#: first retry delay of a failed final save, doubled per failure up to RETRY_MAX seconds
RETRY_FIRST = 0.5
RETRY_MAX = 30.0


async def logout(gw: Gateway, player: Player, reason: str, kick: pb.KickReason | None = None,
                 notice: str | None = None) -> None:
    """Take *player* offline once; every caller waits for the same logout.

    *reason* is a fixed phrase (it labels ``rl_role_logouts_total``); a kick (*kick*, a
    ``KickReason``) pushes ``KickNotify{notice or reason, kick}`` before the close."""
    if player.state != ONLINE:
        if player.state == LOGGING_OUT:
            done: defer.Deferred[None] = defer.Deferred()
            player.logout_waiters.append(done)
            await done
        return
    player.state = LOGGING_OUT
    served.ended(gw, player)  # it takes no more requests: the served interval ends
    userid, me = player.userid, gw.node.name
    if kick is not None:
        gw.metrics.kicked(kick)
    try:
        try:
            await gw.state.set_logout(userid, me, player.generation)
        except RedisError as e:
            log.warn("logout of {userid}: cannot mark LOGOUT in Redis ({e})",
                     userid=userid, e=e)
        conn = player.conn
        if conn is not None and conn.is_open:
            text = notice if notice is not None else reason
            notify = pb.KickNotify(reason=text, code=kick) if kick is not None else None
            conn.closeWithReason(CloseReason.KICKED, notify=notify, userid=userid, why=text)
        try:
            await player.idle().addTimeout(gw.settings.logout_wait, gw.node.reactor)
        except defer.TimeoutError:
            log.warn("logout of {userid}: {n} requests still running after {t}s; going on",
                     userid=userid, n=player.inflight, t=gw.settings.logout_wait)
        await final_save(gw, player)
        try:
            await gw.state.clear_user(userid, only_if_node=me, generation=player.generation)
        except RedisError as e:
            log.warn("logout of {userid}: cannot clear Redis state ({e})", userid=userid, e=e)
        gw.tell_rolecaches(player, "clear")
    finally:
        player.state = GONE
        player.agent.forget(player)
        if gw.players.get(userid) is player:
            del gw.players[userid]
        gw.online.set(len(gw.players))
        gw.logouts.labels(reason).inc()
        waiters, player.logout_waiters = player.logout_waiters, []
        for w in waiters:
            w.callback(None)


async def final_save(gw: Gateway, player: Player) -> bool:
    """Save the player until storage acknowledges it; False when storage refused it for
    good (a newer instance owns the data). Retries with backoff, counted."""
    delay = RETRY_FIRST
    while True:
        report = await gw.saver.save([(player.entity, player.generation)])
        if report.stale:
            log.warn("logout of {userid}: a newer instance owns the data; this copy "
                     "(generation {gen}) is dropped", userid=player.userid,
                     gen=player.generation)
            return False
        if report.ok:
            return True
        gw.final_save_retries.inc()
        log.warn("logout of {userid}: final save failed; the player is kept and the save "
                 "retried in {delay:g}s", userid=player.userid, delay=delay)
        await task.deferLater(gw.node.reactor, delay)
        delay = min(delay * 2, RETRY_MAX)
