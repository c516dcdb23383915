"""Chat on the role nodes: ``ChatSend`` and ``ChatHistory`` (rules from the chat system,
then one call to the channel's home), the ``chatgate`` service (a GM mute reaching an
online player), and the after-Auth step that loads the mute and delivers private messages
that waited (docs/social.md, "Chat").

Where each channel goes:

- world: ``chat`` on logiccenter; region: ``chat`` on ``map_node(player.mapid)``;
- private: ``privatechat`` on the recipient's birth-region rolecity (``rolecity_node``);
- guild: ``guildchat`` on ``guild_node(guildid)`` (the guild feature's service).

A player's token bucket and mute are kept here, per online instance (a new login starts
with the stored mute and the bucket its previous instance on this node left; a login on
another role node starts with a full bucket).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError, RemoteError, Service, birth_region, handler
from rltwist.ecs import import_system
from rltwist.features.chat.services import region_key, world_key
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.role.agent import ONLINE
from rltwist.nodes.role.requests import after_auth, request
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
C = pb.ChatChannel
chat = import_system("rltwist.game.chatsystem", service="gateway")

LOGICCENTER = "logiccenter"
CALL_TIMEOUT = 5.0
#: what ``guildchat.history`` raises for a player outside the guild (the guild feature's)
NOT_A_MEMBER = "NotAMember"


class ChatState:
    """What chat keeps about one online instance: its token bucket and its mute."""

    __slots__ = ("bucket", "loading", "mute_told", "muted_until_ms", "player")

    def __init__(self, player: Player) -> None:
        self.player = player
        self.bucket: list[float] | None = None
        self.muted_until_ms = 0
        #: the load of the stored state (mute, backlog); fires once it is done or failed
        self.loading: defer.Deferred[None] | None = None
        #: a GM (un)mute reached this instance directly: newer than what a load reads
        self.mute_told = False


#: userid -> the chat state of the instance online on this node (pruned by ``prune``)
STATES: dict[int, ChatState] = {}
#: userid -> the token bucket its last instance here left (pruned states), so that a
#: relogin is no way around the rate limit; the oldest are dropped past RECENT_MAX
RECENT_BUCKETS: OrderedDict[int, list[float]] = OrderedDict()
RECENT_MAX = 100_000


def state_of(player: Player) -> ChatState:
    """The chat state of *player*'s instance: a new instance starts with the stored mute
    (loaded) and the token bucket its previous instance on this node left."""
    st = STATES.get(player.userid)
    if st is None or st.player is not player:
        bucket = st.bucket if st is not None else RECENT_BUCKETS.pop(player.userid, None)
        st = STATES[player.userid] = ChatState(player)
        st.bucket = bucket
    return st


def prune() -> int:
    """Forget the states of instances that are gone (their buckets are kept in
    ``RECENT_BUCKETS``); how many were dropped."""
    gone = [u for u, st in STATES.items() if st.player.state != ONLINE]
    for userid in gone:
        bucket = STATES.pop(userid).bucket
        if bucket is not None:
            RECENT_BUCKETS[userid] = bucket
            RECENT_BUCKETS.move_to_end(userid)
    while len(RECENT_BUCKETS) > RECENT_MAX:
        RECENT_BUCKETS.popitem(last=False)
    return len(gone)


def now_ms() -> int:
    return int(time.time() * 1000)


def _rpc_failed(what: str, player: Player, e: Exception) -> pb.ErrorCode:
    log.warn("chat {what} of {userid}: {e}", what=what, userid=player.userid, e=e)
    return E.RETRY_LATER


@request(pb.ChatSend)
async def chat_send(gw: Gateway, player: Player, msg: pb.ChatSend) -> pb.ChatSend.Response:
    """Check the message (channel, mute, text, rate) and hand it to its channel's home."""
    R = pb.ChatSend.Response
    if msg.channel not in C.values():
        return R(code=E.BAD_REQUEST)
    st = state_of(player)
    if st.loading is None or not st.loading.called:
        # a request right after Auth must not slip past a stored mute
        await loaded(gw, player)
    t = now_ms()
    muted = chat.muted_until({"until_ms": st.muted_until_ms}, t)
    if muted:
        return R(code=E.CHAT_MUTED, muted_until_ms=muted)
    tables = sharedata().snapshot
    code = chat.check_text(msg.text, tables)
    if code != E.OK:
        return R(code=code)
    userid = player.userid
    cluster = gw.cluster
    # refusals that need no other node come before the rate limit takes a token
    to = guildid = 0
    if msg.channel == C.CHAT_PRIVATE:
        to = int(msg.to_userid)
        if to <= 0 or to == userid or cluster.rolecity_node(to) not in cluster.addresses:
            return R(code=E.NO_SUCH_PLAYER)  # nobody, oneself, or a region we do not have
    elif msg.channel == C.CHAT_GUILD:
        guildid = int(player.entity.get("guildid", 0) or 0)
        if not guildid:
            return R(code=E.CHAT_NOT_IN_GUILD)
    allowed, st.bucket = chat.take_token(st.bucket, gw.now(), tables)
    if not allowed:
        return R(code=E.RATE_LIMITED)
    name = player.entity.get("name") or ""
    region = birth_region(userid)
    try:
        if msg.channel == C.CHAT_WORLD:
            message = chat.message(msg.channel, userid, name, region, msg.text, t)
            code = await cluster.call(LOGICCENTER, "chat", "send", world_key(), message, None,
                                      timeout=CALL_TIMEOUT)
        elif msg.channel == C.CHAT_REGION:
            mapid = player.mapid
            message = chat.message(msg.channel, userid, name, region, msg.text, t,
                                   map_region=mapid)
            code = await cluster.call(cluster.map_node(mapid), "chat", "send",
                                      region_key(mapid), message, mapid, timeout=CALL_TIMEOUT)
        elif msg.channel == C.CHAT_PRIVATE:
            message = chat.message(msg.channel, userid, name, region, msg.text, t,
                                   to_userid=to)
            code = await cluster.call(cluster.rolecity_node(to), "privatechat", "send", to,
                                      message, timeout=CALL_TIMEOUT)
        else:  # CHAT_GUILD: the guild feature's service answers an ErrorCode
            message = chat.message(msg.channel, userid, name, region, msg.text, t,
                                   guild_id=guildid)
            code = await cluster.call(cluster.guild_node(guildid), "guildchat", "send",
                                      guildid, userid, message, timeout=CALL_TIMEOUT)
    except ClusterError as e:
        return R(code=_rpc_failed("send", player, e))
    answer = pb.ErrorCode.Name(int(code)) if int(code) in E.values() else E.INTERNAL
    return R(code=answer, time_ms=t if code == E.OK else 0)


@request(pb.ChatHistory)
async def chat_history(gw: Gateway, player: Player,
                       msg: pb.ChatHistory) -> pb.ChatHistory.Response:
    """The last messages of a channel the player is in, from the channel's home."""
    R = pb.ChatHistory.Response
    cluster = gw.cluster
    userid = player.userid
    try:
        if msg.channel == C.CHAT_WORLD:
            found = await cluster.call(LOGICCENTER, "chat", "history", world_key(),
                                       timeout=CALL_TIMEOUT)
        elif msg.channel == C.CHAT_REGION:
            mapid = player.mapid
            found = await cluster.call(cluster.map_node(mapid), "chat", "history",
                                       region_key(mapid), timeout=CALL_TIMEOUT)
        elif msg.channel == C.CHAT_PRIVATE:
            peer = int(msg.peer_userid)
            if peer <= 0 or cluster.rolecity_node(peer) not in cluster.addresses:
                return R(code=E.NO_SUCH_PLAYER)
            found = await cluster.call(cluster.rolecity_node(userid), "privatechat",
                                       "history", userid, peer, timeout=CALL_TIMEOUT)
        elif msg.channel == C.CHAT_GUILD:
            guildid = int(player.entity.get("guildid", 0) or 0)
            if not guildid:
                return R(code=E.CHAT_NOT_IN_GUILD)
            found = await cluster.call(cluster.guild_node(guildid), "guildchat", "history",
                                       guildid, userid, timeout=CALL_TIMEOUT)
        else:
            return R(code=E.BAD_REQUEST)
    except RemoteError as e:
        if e.kind == NOT_A_MEMBER:  # the guild does not list the player (any more)
            return R(code=E.CHAT_NOT_IN_GUILD)
        return R(code=_rpc_failed("history", player, e))
    except ClusterError as e:
        return R(code=_rpc_failed("history", player, e))
    return R(code=E.OK, messages=chat.to_pb_list(found))


def loaded(gw: Gateway, player: Player) -> defer.Deferred[None]:
    """Fires once the instance's stored chat state is loaded (its GM mute; the private
    messages that waited are pushed then): started by the after-Auth step or by a
    ChatSend that comes first, once per instance; never fails (a failed load is logged
    and the player is taken as not muted)."""
    st = state_of(player)
    if st.loading is None:
        st.loading = defer.Deferred.fromCoroutine(_load(gw, player, st))
    waiter: defer.Deferred[None] = defer.Deferred()

    def done(result: Any) -> Any:
        waiter.callback(None)
        return result

    st.loading.addBoth(done)
    return waiter


async def _load(gw: Gateway, player: Player, st: ChatState) -> None:
    cluster = gw.cluster
    node = cluster.rolecity_node(player.userid)
    if node not in cluster.addresses:
        return
    try:
        found = await cluster.call(node, "privatechat", "login", player.userid,
                                   timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("chat state of {userid} not loaded at Auth: {e}", userid=player.userid, e=e)
        return
    except Exception:
        log.failure("chat state of {userid} not loaded at Auth", userid=player.userid)
        return
    if not st.mute_told:  # else the GM's word came while we read: it is the newer one
        st.muted_until_ms = chat.muted_until(found.get("mute"), now_ms())
    conn = player.conn
    if conn is None or player.state != ONLINE:
        return
    for message in found.get("backlog") or ():
        conn.push(pb.ChatNotify(message=chat.to_pb(message)))


@after_auth
async def chat_login(gw: Gateway, player: Player) -> None:
    """Load the player's GM mute and push the private messages that waited, oldest
    first (then they are gone from the backlog; the pair histories keep them)."""
    await loaded(gw, player)


class ChatGate(Service):
    """``chatgate`` on role nodes: what other nodes tell the online players' chat."""

    name = "chatgate"

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    @handler
    def set_mute(self, userid: int, until_ms: int) -> bool:
        """A GM (un)muted *userid*: apply it to its instance here; False if not online
        here (the stored mute applies at its next Auth)."""
        player = self.gateway.players.get(userid)
        if player is None or player.state != ONLINE:
            return False
        st = state_of(player)
        st.muted_until_ms = int(until_ms)
        st.mute_told = True
        return True
