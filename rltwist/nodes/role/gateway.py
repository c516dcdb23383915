"""gateway: the role node's client connections and the ``gateway`` service (seed §8 steps
9-10, logout).

This module is the transport (one :class:`GatewayConnection` per game client: Auth first,
then requests, heartbeats) and the service other nodes call (kick, grants, reregister,
player info). The flows live one per module: :mod:`~rltwist.nodes.role.auth` (secret,
generation claim, GAME_STEP_FINISH), :mod:`~rltwist.nodes.role.logout` (final save until
storage takes it), :mod:`~rltwist.nodes.role.rename` (crash-safe rename) and
:mod:`~rltwist.nodes.role.transfers` (grants into the player, two steps).

While the node has lost master (``node.writes_allowed`` is False) it answers RETRY_LATER to
Auth and to every request but heartbeats; once fenced it saves and kicks everyone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, birth_region, handler
from rltwist.nodes.common.hotfix import hotfix_of, register_online_entities
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.role import auth, transfers
from rltwist.nodes.role import logout as logout_flow
from rltwist.nodes.role import rename as rename_flow
from rltwist.nodes.role.agent import LOGGING_OUT, ONLINE, PLAYERS, ROLEDB, Agent, Player
from rltwist.nodes.role.metrics import RoleMetrics, regions_of
from rltwist.protocols import pb
from rltwist.protocols.server import (
    CloseReason,
    ProtocolViolation,
    ServerProtocol,
    ServerProtocolFactory,
)
from rltwist.redis import RedisError

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode
K = pb.KickReason
#: ``rl_role_logouts_total`` labels of kicks by code (the kick's text is free)
KICK_LABELS: dict[int, str] = {K.KICK_LOGIN_ELSEWHERE: "login elsewhere",
                               K.KICK_GM: "gm kick"}
MAX_KICK_TEXT = 200
ROLECACHE_WAIT = 2.0
"""How long an Auth waits for each rolecache to record the player before it answers."""


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
        ServerProtocolFactory.__init__(self, limits=node.config.client, clock=node.reactor)
        self.node = node
        self.settings = node.config.role
        self.state = node.redis_state()
        self.agents = [Agent(self, i) for i in range(self.settings.agents)]
        self.user_locks = KeyedLock()
        self.players: dict[int, Player] = {}
        self.sweeper = LoopingCall(self._sweep)
        self.sweeper.clock = node.reactor
        reg = node.registry
        self.metrics = RoleMetrics(
            reg, lambda: self.players,
            lambda: regions_of([*node.cluster.addresses, *node.config.nodes]))
        self.online = self.metrics.online
        self.auths = self.metrics.auths
        self.logouts = self.metrics.logouts
        self.saver = Saver(
            node.database(ROLEDB), PLAYERS, self._held_items,
            interval=node.config.storage.save_interval, clock=node.reactor, registry=reg,
            name="role_players", on_stale=self._fenced)
        self.final_save_retries = self.metrics.final_save_retries
        self.saver.setServiceParent(node)
        self.hotfix = hotfix_of(node)
        register_online_entities("role", lambda: [p.entity for p in self.players.values()
                                                  if p.state == ONLINE])
        self.auth_latency = self.metrics.auth_latency
        self.auth_steps = self.metrics.auth_steps

    def now(self) -> float:
        return float(self.node.reactor.seconds())

    def buildProtocol(self, addr: Any) -> ServerProtocol | None:
        p = ServerProtocolFactory.buildProtocol(self, addr)
        if p is not None:  # None: refused (connection caps)
            p.gateway = self  # type: ignore[attr-defined]
        return p

    # -- the flows (one module each) -------------------------------------------------------

    async def authenticate(self, conn: GatewayConnection, msg: Any, session: int) -> None:
        await auth.authenticate(self, conn, msg, session)

    def start_logout(self, player: Player, reason: str,
                     kick: pb.KickReason | None = None) -> None:
        defer.Deferred.fromCoroutine(self.logout(player, reason, kick)).addErrback(
            lambda f: log.failure("logout of {userid} failed", f, userid=player.userid))

    async def logout(self, player: Player, reason: str, kick: pb.KickReason | None = None,
                     notice: str | None = None) -> None:
        """Take *player* offline once, saving it (retried until storage takes it)."""
        await logout_flow.logout(self, player, reason, kick, notice)

    async def rename(self, player: Player, name: str) -> pb.ErrorCode:
        return await rename_flow.rename(self, player, name)

    async def reconcile_name(self, player: Player) -> None:
        await rename_flow.reconcile(self, player)

    async def take_transfers(self, player: Player) -> list[str]:
        return await transfers.take_transfers(self, player)

    def writes_allowed(self) -> bool:
        """False while this node has lost master (it may be fenced off any moment)."""
        return bool(self.node.writes_allowed)

    def tell_rolecaches(self, player: Player, what: str) -> defer.Deferred[None]:
        """Tell the rolecaches that reach the player (its rolecity and mail, the map of its
        city) where the player is (``"set"``) or no more (``"clear"``).

        A set is a call, and the Deferred fires once every rolecache answered (or failed,
        or ``ROLECACHE_WAIT`` s passed; logged, never an error): Auth answers the client
        after it, so a mail, chat or friend request sent to a player who saw its Auth OK
        finds it and is pushed. A clear is a send (fired at once): the logout does not wait,
        and it follows the set on the same link, so it cannot overtake it."""
        userid = player.userid
        cluster = self.cluster
        waits: list[defer.Deferred[Any]] = []
        for node in (cluster.rolecity_node(userid), cluster.mail_node(userid),
                     cluster.map_node(player.mapid)):
            if node not in cluster.addresses:
                continue
            args = (what, userid, self.node.name, player.generation)
            try:
                if what != "set":
                    cluster.send(node, "rolecache", *args)
                    continue
                d = cluster.call(node, "rolecache", *args, timeout=ROLECACHE_WAIT)
            except ClusterError as e:
                log.warn("cannot tell {node} rolecache about {userid}: {e}", node=node,
                         userid=userid, e=e)
                continue
            d.addErrback(self._rolecache_not_told, node, userid)
            waits.append(d)
        return defer.gatherResults(waits).addCallback(lambda _: None)  # [] fires at once

    @staticmethod
    def _rolecache_not_told(failure: Any, node: str, userid: int) -> None:
        log.warn("{node} rolecache did not confirm {userid} online: {e} (a push may miss "
                 "the player until the rolecache refills)", node=node, userid=userid,
                 e=failure.value)

    # -- persistence, data fixes --------------------------------------------------------

    def _held_items(self) -> list[tuple[Any, int]]:
        """What the saver saves: online players and those logging out (their final save
        may be failing and retried; SIGTERM's final flush must include them)."""
        return [(p.entity, p.generation) for p in self.players.values()
                if p.state in (ONLINE, LOGGING_OUT)]

    def _fenced(self, entity: Any, error: Exception) -> None:
        """A newer instance of this player owns its data: this copy must go."""
        player = self.players.get(entity.id)
        if player is not None and player.state == ONLINE:
            log.warn("{userid}: fenced off by a newer instance ({e}); logging this one out",
                     userid=player.userid, e=error)
            self.start_logout(player, "fenced off by a newer login", K.KICK_LOGIN_ELSEWHERE)

    def datafix_version(self) -> int:
        """The data version a new player starts at (every fix already applies)."""
        return self.hotfix.data_fixer("role").latest_version

    def fix_entity(self, entity: Any) -> None:
        report = self.hotfix.fix_entity("role", entity)
        if report.failed is not None:
            log.warn("data fix of player {id} failed: {failure}", id=entity.id,
                     failure=report.to_dict())

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
    async def kick(self, userid: int, reason: str,
                   code: int = K.KICK_LOGIN_ELSEWHERE) -> str:
        """Log *userid* out (login elsewhere, GM), telling the client ``KickNotify{reason,
        code}`` (a ``KickReason``): "kicked", "absent" or "logging_out"."""
        if isinstance(code, bool) or code not in K.values():
            raise ValueError(f"kick code {code!r} is not a KickReason")
        player = self.players.get(userid)
        if player is None:
            # not here: drop a stale Redis state that still names this node
            await self.state.clear_user(userid, only_if_node=self.node.name)
            return "absent"
        if player.state != ONLINE:
            return "logging_out"
        # the text goes to the client; the logout is counted under a fixed label
        label = KICK_LABELS.get(code, "kick")
        # code came over the wire as an int; checked against K.values() above
        kick = cast("pb.KickReason", code)
        await self.logout(player, label, kick, notice=str(reason)[:MAX_KICK_TEXT])
        return "kicked"

    @handler
    async def apply_grants(self, userid: int) -> list[str] | None:
        """rolecity recorded a transfer (GM grant) for this online player: take it now;
        the ids taken, None when the player is not online here (taken at the next Auth)."""
        player = self.players.get(userid)
        if player is None or player.state != ONLINE:
            return None
        return await self.take_transfers(player)

    @handler
    def player_info(self, userid: int) -> dict[str, Any] | None:
        """An online player's data (operators, tests); None if not online here."""
        player = self.players.get(userid)
        if player is None:
            return None
        return {"userid": userid, "generation": player.generation, "state": player.state,
                "inflight": player.inflight, "attrs": dict(player.entity.attrs)}

    # -- pushes to online players (rltwist.nodes.common.reach sends these) ---------------

    @handler
    def push(self, userids: list[int], msgid: int, body: bytes,
             sender: int | None = None) -> int:
        """Write the push *msgid* (encoded *body*) to each of *userids* online here but
        those who block *sender*; one cluster message per role node however many
        recipients. How many got it."""
        sent = 0
        for userid in userids:
            player = self.players.get(userid)
            if player is not None and player.state == ONLINE and player.conn is not None \
                    and sender not in player.blocked \
                    and player.conn.push_encoded(msgid, body):
                sent += 1
        return sent

    @handler
    def broadcast(self, msgid: int, body: bytes, mapid: int | None = None,
                  exclude: list[int] | None = None, sender: int | None = None,
                  regions: list[int] | None = None) -> int:
        """Write the push to every player online here — those whose city is on map
        *mapid*, or who were born in one of *regions*, when given — but *exclude* and
        those who block *sender*; how many got it."""
        skip = set(exclude or ())
        born = set(regions) if regions is not None else None
        sent = 0
        for userid, player in list(self.players.items()):
            if player.state != ONLINE or player.conn is None or userid in skip:
                continue
            if mapid is not None and player.mapid != mapid:
                continue
            if born is not None and birth_region(userid) not in born:
                continue
            if sender in player.blocked:
                continue
            if player.conn.push_encoded(msgid, body):
                sent += 1
        return sent

    @handler
    def whereabouts(self, node: str) -> list[list[int]]:
        """``[[userid, generation], ...]`` of the players online here whose rolecache is
        on *node* (their rolecity, mail or map node): how a restarted rolecache refills."""
        cluster = self.cluster
        found = []
        for userid, player in list(self.players.items()):
            if player.state == ONLINE and node in (
                    cluster.rolecity_node(userid), cluster.mail_node(userid),
                    cluster.map_node(player.mapid)):
                found.append([userid, player.generation])
        return found

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

    async def _logout_everyone(self, reason: str, kick: pb.KickReason) -> None:
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
