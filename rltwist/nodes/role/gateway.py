"""gateway: the role node's client connections and player instances (seed §8 steps 9-10,
logout; DESIGN.md "Login" 8-9).

Auth checks the one-time secret (one use, expiry), creates the player instance exactly
once (per-user lock) in agent ``userid mod n_agents``, sets GAME_STEP_FINISH with a fresh
fencing generation, counts the player online, and tells the player's rolecity, mail and map
rolecache where it is. Logout (client gone, heartbeat timeout, kick, shutdown) waits for
the player's in-flight requests (bounded), saves, clears the Redis state and the count.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rltwist.cluster import ClusterError, RemoteError, Service, handler
from rltwist.ecs import import_system
from rltwist.game.errcode import ErrCode
from rltwist.nodes.common.hotfix import hotfix_of, register_online_entities
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.role.agent import GONE, LOGGING_OUT, ONLINE, PLAYERS, ROLEDB, Agent, Player
from rltwist.protocols import pb
from rltwist.protocols.server import (
    CloseReason,
    ProtocolViolation,
    ServerProtocol,
    ServerProtocolFactory,
)
from rltwist.redis import RedisError, RoleNotRegistered

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode
role_system = import_system("rltwist.game.rolesystem", service="gateway")
K = pb.KickReason


class GatewayConnection(ServerProtocol):
    """One game client on the role node: Auth first, then the player's requests."""

    gateway: Gateway
    player: Player | None = None
    authenticating = False

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        player = self.player
        if player is not None and player.conn is self and player.state == ONLINE:
            self.gateway.start_logout(player, "connection lost")

    def requestReceived(self, message: Any, session: int) -> None:
        if isinstance(message, pb.Auth):
            if self.player is not None or self.authenticating:
                raise ProtocolViolation(CloseReason.AUTH_TWICE)
            self.authenticating = True
            d = defer.Deferred.fromCoroutine(self.gateway.authenticate(self, message, session))
            d.addErrback(self._auth_failed, session)
            return
        player = self.player
        if player is None:
            raise ProtocolViolation(CloseReason.REQUEST_BEFORE_AUTH,
                                    request=type(message).__name__)
        if isinstance(message, pb.Heartbeat):
            player.last_heartbeat = self.gateway.now()
            self.reply(session, pb.Heartbeat.Response(code=E.OK,
                                                      server_time_ms=int(time.time() * 1000)))
            return
        if player.state != ONLINE or not self.gateway.writes_allowed():
            self.replyError(session, message, E.RETRY_LATER)
            return
        player.inflight += 1
        d = defer.Deferred.fromCoroutine(player.agent.handle(player, message))
        d.addCallbacks(lambda r: self.reply(session, r), self._request_failed,
                       errbackArgs=(session, message))
        d.addBoth(lambda _: player.request_done())

    def _request_failed(self, failure: Any, session: int, message: Any) -> None:
        log.failure("request {request} of {userid} failed", failure,
                    request=type(message).__name__,
                    userid=self.player.userid if self.player else None)
        self.replyError(session, message, E.INTERNAL)

    def _auth_failed(self, failure: Any, session: int) -> None:
        log.failure("Auth failed", failure)
        self.replyError(session, pb.Auth, E.INTERNAL)
        self.closeWithReason("auth_error")


class Gateway(Service, ServerProtocolFactory):
    """The ``gateway`` service (kick, online, reregister) and the client-side factory."""

    name = "gateway"
    protocol = GatewayConnection

    def __init__(self, node: Node) -> None:
        ServerProtocolFactory.__init__(self)
        self.node = node
        self.settings = node.config.role
        self.state = node.redis_state()
        self.agents = [Agent(self, i) for i in range(self.settings.agents)]
        self.user_locks = KeyedLock()
        self.players: dict[int, Player] = {}
        self.sweeper = LoopingCall(self._sweep)
        self.sweeper.clock = node.reactor
        reg = node.registry
        self.online = Gauge("rl_role_online_players", "Players online on this role node",
                            registry=reg)
        self.auths = Counter("rl_role_auth", "Auth requests by outcome", ["outcome"],
                             registry=reg)
        self.logouts = Counter("rl_role_logouts", "Logouts by reason", ["reason"],
                               registry=reg)
        self.saver = Saver(
            node.database(ROLEDB), PLAYERS, self._online_items,
            interval=node.config.storage.save_interval, clock=node.reactor, registry=reg,
            name="role_players", on_stale=self._fenced)
        self.saver.setServiceParent(node)
        self.hotfix = hotfix_of(node)
        register_online_entities("role", lambda: [p.entity for p in self.players.values()
                                                  if p.state == ONLINE])
        self.auth_latency = Histogram("rl_role_auth_seconds", "Time to answer an Auth",
                                      registry=reg)

    def now(self) -> float:
        return float(self.node.reactor.seconds())

    def buildProtocol(self, addr: Any) -> ServerProtocol:
        p = ServerProtocolFactory.buildProtocol(self, addr)
        p.gateway = self  # type: ignore[attr-defined]
        return p

    # -- Auth -----------------------------------------------------------------------------

    async def authenticate(self, conn: GatewayConnection, msg: Any, session: int) -> None:
        started = time.monotonic()
        userid = msg.userid
        me = self.node.name
        if not self.writes_allowed():
            self.auths.labels("RETRY_LATER").inc()
            conn.authenticating = False
            conn.replyError(session, pb.Auth, E.RETRY_LATER)
            return
        try:
            generation = await self.state.auth_begin(userid, msg.secret, me)
        except RedisError as e:
            log.warn("Auth of {userid}: Redis unavailable ({e})", userid=userid, e=e)
            self.auths.labels("RETRY_LATER").inc()
            conn.authenticating = False
            conn.replyError(session, pb.Auth, E.RETRY_LATER)
            return
        if not generation:
            self.auths.labels("BAD_SECRET").inc()
            conn.replyError(session, pb.Auth, E.BAD_SECRET)
            conn.closeWithReason("bad_secret", userid=userid)
            return
        async with self.user_locks(userid):
            old = self.players.get(userid)
            if old is not None:
                # a second Auth with a fresh secret while the old instance lives here
                await self.logout(old, "login elsewhere", K.KICK_LOGIN_ELSEWHERE)
            # the fencing generation was taken atomically (INCR) when login issued the
            # secret; this instance owns the player's data under it
            agent = self.agents[userid % len(self.agents)]
            player = await agent.load(userid, generation)
            try:
                finished = await self.state.auth_finish(userid, me, generation)
            except RoleNotRegistered:
                finished = False
            if not finished:
                agent.forget(player)
                return self._refuse(conn, session, userid, "a newer login took over")
            self.players[userid] = player
            self.online.set(len(self.players))
            player.conn = conn
            conn.player = player
            conn.authenticating = False
            self._tell_rolecaches(userid, "set")
        await self._take_grants(player)
        self.auths.labels("OK").inc()
        self.auth_latency.observe(time.monotonic() - started)
        e = player.entity
        conn.reply(session, pb.Auth.Response(
            code=E.OK, userid=userid, name=e.get("name", ""), server_id=userid & 0xFFFF,
            basics=player.basics(), server_time_ms=int(time.time() * 1000)))
        if not conn.is_open:  # the client left while we were creating the instance
            self.start_logout(player, "connection lost")

    def writes_allowed(self) -> bool:
        """False while this node has lost master (it may be fenced off any moment)."""
        return bool(getattr(self.node, "writes_allowed", True))

    def _refuse(self, conn: GatewayConnection, session: int, userid: int, why: str) -> None:
        self.auths.labels("RETRY_LATER").inc()
        log.info("Auth of {userid} refused: {why}", userid=userid, why=why)
        conn.replyError(session, pb.Auth, E.RETRY_LATER)
        conn.closeWithReason("auth_refused", userid=userid, why=why)

    def _tell_rolecaches(self, userid: int, what: str) -> None:
        sid = userid & 0xFFFF
        for kind in ("rolecity", "mail", "map"):
            node = f"{kind}{sid}"
            if node not in self.cluster.addresses:
                continue
            try:
                self.cluster.send(node, "rolecache", what, userid, self.node.name)
            except ClusterError as e:
                log.warn("cannot tell {node} rolecache about {userid}: {e}", node=node,
                         userid=userid, e=e)

    # -- logout ---------------------------------------------------------------------------

    def start_logout(self, player: Player, reason: str, kick: int | None = None) -> None:
        defer.Deferred.fromCoroutine(self.logout(player, reason, kick)).addErrback(
            lambda f: log.failure("logout of {userid} failed", f, userid=player.userid))

    async def logout(self, player: Player, reason: str, kick: int | None = None) -> None:
        """Take *player* offline once; every caller waits for the same logout."""
        if player.state != ONLINE:
            if player.state == LOGGING_OUT:
                done: defer.Deferred[None] = defer.Deferred()
                player.logout_waiters.append(done)
                await done
            return
        player.state = LOGGING_OUT
        userid, me = player.userid, self.node.name
        try:
            try:
                await self.state.set_logout(userid, me)
            except RedisError as e:
                log.warn("logout of {userid}: cannot mark LOGOUT in Redis ({e})",
                         userid=userid, e=e)
            conn = player.conn
            if conn is not None and conn.is_open:
                notify = pb.KickNotify(reason=reason, code=kick) if kick is not None else None
                conn.closeWithReason(CloseReason.KICKED, notify=notify, userid=userid,
                                     why=reason)
            try:
                await player.idle().addTimeout(self.settings.logout_wait, self.node.reactor)
            except defer.TimeoutError:
                log.warn("logout of {userid}: {n} requests still running after {t}s; going on",
                         userid=userid, n=player.inflight, t=self.settings.logout_wait)
            report = await self.saver.save([(player.entity, player.generation)])
            if not report.ok:
                log.warn("logout of {userid}: final save not acknowledged ({report})",
                         userid=userid, report=report.to_dict())
            try:
                await self.state.clear_user(userid, only_if_node=me)
            except RedisError as e:
                log.warn("logout of {userid}: cannot clear Redis state ({e})", userid=userid,
                         e=e)
            self._tell_rolecaches(userid, "clear")
        finally:
            player.state = GONE
            player.agent.forget(player)
            if self.players.get(userid) is player:
                del self.players[userid]
            self.online.set(len(self.players))
            self.logouts.labels(reason).inc()
            waiters, player.logout_waiters = player.logout_waiters, []
            for w in waiters:
                w.callback(None)

    # -- persistence, data fixes, game requests ------------------------------------------

    def _online_items(self) -> list[tuple[Any, int]]:
        return [(p.entity, p.generation) for p in self.players.values() if p.state == ONLINE]

    def _fenced(self, entity: Any, error: Exception) -> None:
        """A newer instance of this player owns its data: this copy must go."""
        player = self.players.get(entity.id)
        if player is not None and player.state == ONLINE:
            log.warn("{userid}: fenced off by a newer instance ({e}); logging this one out",
                     userid=player.userid, e=error)
            self.start_logout(player, "fenced off by a newer login", K.KICK_LOGIN_ELSEWHERE)

    async def _take_grants(self, player: Player) -> dict[str, int]:
        """Move the player's pending GM grants from its rolecity into the entity. A failure
        leaves them pending there (taken at the next Auth or grant)."""
        rolecity = f"rolecity{player.userid & 0xFFFF}"
        if rolecity not in self.cluster.addresses:
            return {}
        try:
            pending = await self.cluster.call(rolecity, "rolerouter", "call", player.userid,
                                              "take_grants", timeout=10)
        except RemoteError as e:
            if e.kind != "EntityNotFound":
                log.warn("grants of {userid}: {e}", userid=player.userid, e=e)
            return {}
        except ClusterError as e:
            log.warn("grants of {userid}: {e}", userid=player.userid, e=e)
            return {}
        if pending:
            code = role_system.add_resources(player.entity, pending)
            log.info("{userid}: took GM grants {pending} ({code})", userid=player.userid,
                     pending=pending, code=ErrCode(code).name)
        return pending

    def datafix_version(self) -> int:
        """The data version a new player starts at (every fix already applies)."""
        return self.hotfix.data_fixer("role").latest_version

    def fix_entity(self, entity: Any) -> None:
        report = self.hotfix.fix_entity("role", entity)
        if report.failed is not None:
            log.warn("data fix of player {id} failed: {failure}", id=entity.id,
                     failure=report.to_dict())

    async def rename(self, player: Player, name: str) -> int:
        """Rename: name rules from the game tables, uniqueness in the player's region
        (rolecity's name index), then the entity; answers an ErrorCode."""
        tables = sharedata().snapshot
        name = role_system.normalize_name(name)
        entity = player.entity
        if name == entity.get("name"):
            return E.OK
        if role_system.check_name(name, tables) != ErrCode.OK:
            return E.NAME_INVALID
        sid = player.userid & 0xFFFF
        rolecity = f"rolecity{sid}"
        if rolecity not in self.cluster.addresses:
            return E.NOT_AVAILABLE
        old = entity.get("name") or ""
        try:
            if not await self.cluster.call(rolecity, "rolerouter", "reserve_name",
                                           role_system.name_key(name), player.userid, name,
                                           timeout=10):
                return E.NAME_TAKEN
        except ClusterError as e:
            log.warn("rename of {userid}: {e}", userid=player.userid, e=e)
            return E.RETRY_LATER
        if role_system.rename(entity, name, tables) != ErrCode.OK:
            return E.NAME_INVALID
        try:
            if old:  # freed before the answer: whoever asks next may take it
                await self.cluster.call(rolecity, "rolerouter", "release_name",
                                        role_system.name_key(old), player.userid, timeout=10)
            self.cluster.send(rolecity, "rolerouter", "call", player.userid, "set_name", name)
        except ClusterError as e:
            log.warn("rename of {userid}: could not update {node}: {e}", userid=player.userid,
                     node=rolecity, e=e)
        return E.OK

    def _sweep(self) -> None:
        limit = self.settings.heartbeat_timeout
        now = self.now()
        for player in list(self.players.values()):
            if player.state == ONLINE and now - player.last_heartbeat > limit:
                log.info("{userid}: no heartbeat for {t:.0f}s; kicking", userid=player.userid,
                         t=now - player.last_heartbeat)
                self.start_logout(player, "heartbeat timeout", K.KICK_HEARTBEAT_TIMEOUT)

    # -- handlers other nodes call ------------------------------------------------------

    @handler
    async def kick(self, userid: int, reason: str) -> str:
        """Log *userid* out (login elsewhere, GM): "kicked", "absent" or "logging_out"."""
        player = self.players.get(userid)
        if player is None:
            # not here: drop a stale Redis state that still names this node
            await self.state.clear_user(userid, only_if_node=self.node.name)
            return "absent"
        if player.state != ONLINE:
            return "logging_out"
        await self.logout(player, reason, K.KICK_LOGIN_ELSEWHERE)
        return "kicked"

    @handler
    async def apply_grants(self, userid: int) -> dict[str, int] | None:
        """rolecity recorded a GM grant for this online player: take it now."""
        player = self.players.get(userid)
        if player is None or player.state != ONLINE:
            return None  # taken at the next Auth instead
        return await self._take_grants(player)

    @handler
    def player_info(self, userid: int) -> dict[str, Any] | None:
        """An online player's data (operators, tests); None if not online here."""
        player = self.players.get(userid)
        if player is None:
            return None
        return {"userid": userid, "generation": player.generation, "state": player.state,
                "inflight": player.inflight, "attrs": dict(player.entity.attrs)}

    @handler
    def online_players(self) -> list[int]:
        return sorted(self.players)

    @handler
    async def reregister(self) -> int:
        """After a Redis restart: write this node and its online players back to Redis."""
        me = self.node.me
        entries = [(p.userid, "GAME_STEP_FINISH", p.generation)
                   for p in self.players.values() if p.state == ONLINE]
        await self.state.reregister_online(me.name, entries, host=me.host,
                                           client_port=me.client_port)
        return len(entries)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        tick = min(max(self.settings.heartbeat_timeout / 4, 0.05), 5.0)
        self.sweeper.start(tick, now=False)

    async def fence(self) -> None:
        """This node has been without master for ``fence_after``: another node may own its
        players by now, so save (fenced) and kick every one of them."""
        await self._logout_everyone("fenced: lost master", K.KICK_SERVER_SHUTDOWN)

    async def drop_all(self) -> None:
        """Master marked this node down while it was alive: its players were cleared from
        Redis and may play elsewhere now, so every instance here goes (their final saves
        are refused by fencing if a newer instance saved meanwhile)."""
        await self._logout_everyone("node was marked down", K.KICK_LOGIN_ELSEWHERE)

    async def _logout_everyone(self, reason: str, kick: int) -> None:
        await defer.DeferredList([
            defer.Deferred.fromCoroutine(self.logout(p, reason, kick))
            for p in list(self.players.values())])

    async def shutdown(self) -> None:
        """Kick every player (saving them), then leave the least-loaded pick."""
        if self.sweeper.running:
            self.sweeper.stop()
        await self._logout_everyone("server shutdown", K.KICK_SERVER_SHUTDOWN)
        try:
            await self.state.unregister_role(self.node.name)
        except RedisError as e:
            log.warn("could not leave the role pick in Redis: {e}", e=e)
