"""Friends and block lists (issue 12): the wiring. Rules: :mod:`rltwist.game.friendsystem`.

Where things run:

* rolecity<sid>: each player's lists are component ``friends`` of the player's rolecity
  entity (the rolecity LRU group, action ``friends``, saved before every answer). Service
  ``friends`` there takes the players' operations (from their role nodes), delivers each
  player's outbox to the other player's rolecity (``friends.deliver``), pushes
  FriendNotify to the players concerned, answers lists (names and last-seen times from
  each friend's own rolecity, online flags from the rolecaches) and retries undelivered
  outboxes every ``RETRY_INTERVAL`` seconds: the players with an outbox are indexed in
  collection ``friend_outbox`` of the region database (written before the outbox itself),
  so a restarted rolecity resumes them. Last-seen times are recorded when the rolecache
  clears a player (its logout).
* role<n>: the client requests (FriendRequest … FriendList), which call the player's
  rolecity; ``Player.blocked`` is loaded after Auth and kept up to date by
  FriendBlock/FriendUnblock; requests waiting for the player are pushed after Auth.

    friends.request(userid, to)        -> {"code", "state", "userid"}
    friends.accept(userid, frm, all)   -> {"code", "accepted"}
    friends.reject|remove|block|unblock(userid, other) -> {"code"}
    friends.list(userid)               -> {"friends", "requests_in", "requests_out", ...}
    friends.login(userid)              -> {"blocked", "requests_in"}
    friends.deliver(msg)               -> the answer of the other side (between rolecities)
    friends.info(userids)              -> {userid: {"name", "last_seen_ms"}}
    friends.exists(userid)             -> True if the player was ever created
    friends.outbox(userid)             -> undelivered messages (GM, tests)
    friends.retry()                    -> run a retry round now (GM, tests)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, birth_region, handler
from rltwist.cluster.errors import RemoteError
from rltwist.ecs import import_system
from rltwist.nodes.common import reach
from rltwist.nodes.common.dbproxy import region_db
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.lru import LRURouter
from rltwist.nodes.common.names import NoSuchRegion, userid_by_name
from rltwist.nodes.common.playerfence import PlayerFence
from rltwist.nodes.common.sharedatad import tables_or_none
from rltwist.nodes.role.agent import PLAYERS, ROLEDB
from rltwist.nodes.role.requests import after_auth, request
from rltwist.protocols import REGISTRY, pb
from rltwist.storage import DuplicateKey

if TYPE_CHECKING:
    from rltwist.ecs.entity import Entity
    from rltwist.nodes.common.lru import LRUGroup
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode

friends = import_system("rltwist.game.friendsystem", service="friends")

OUTBOX_INDEX = "friend_outbox"
"""Collection (region database) of the players whose outbox is not empty."""
RETRY_INTERVAL = 2.0
"""Seconds between retry rounds of undelivered outboxes."""
DELIVER_TIMEOUT = 3.0
CALL_TIMEOUT = 10.0
#: a player's own changes: sent through ``friends.fenced`` with the instance's generation
FENCED_OPS = frozenset({"request", "accept", "reject", "remove", "block", "unblock"})
INFO_TIMEOUT = 3.0

EV = pb.FriendEvent
EVENTS = {"request": EV.FRIEND_EVENT_REQUEST, "accepted": EV.FRIEND_EVENT_ACCEPTED,
          "removed": EV.FRIEND_EVENT_REMOVED}
STATES = {"out": pb.FriendState.FRIENDSHIP_PENDING,
          "friends": pb.FriendState.FRIENDSHIP_FRIENDS}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tables() -> Any:
    return tables_or_none() or {}  # no tables in this process (unit tests): the defaults


# -- the LRU actions on rolecity's entities --------------------------------------------

def friends_action(entity: Entity, op: str, *args: Any) -> Any:
    """Run friend operation *op* on a rolecity entity (saved by the group if changed)."""
    now, tables = _now_ms(), _tables()
    if op == "request":
        code, state = friends.request(entity, int(args[0]), now, tables)
        return {"code": int(code), "state": state}
    if op == "accept":
        if args[1]:
            code, accepted = friends.accept_all(entity, now, tables)
            return {"code": int(code), "accepted": accepted}
        return {"code": int(friends.accept(entity, int(args[0]), now, tables)),
                "accepted": [int(args[0])]}
    if op == "reject":
        return {"code": int(friends.reject(entity, int(args[0]), now))}
    if op == "remove":
        return {"code": int(friends.remove(entity, int(args[0]), now))}
    if op == "block":
        return {"code": int(friends.block(entity, int(args[0]), now, tables))}
    if op == "unblock":
        return {"code": int(friends.unblock(entity, int(args[0])))}
    if op == "receive":
        answer, event = friends.receive(entity, args[0], now, tables)
        return {"answer": answer, "event": event}
    if op == "settle":
        dropped, event = friends.settle(entity, args[0], args[1], now, tables)
        return {"dropped": dropped, "event": event}
    if op == "pending":
        return friends.pending(entity)
    if op == "relation":
        return friends.relation(entity, int(args[0]))
    if op == "view":
        return {**friends.view(entity), "name": entity.get("name", "") or ""}
    raise ValueError(f"unknown friends operation {op!r}")


def friends_seen(entity: Entity, ms: int) -> None:
    """The player logged out at *ms*: kept with the entity's next periodic save."""
    friends.seen(entity, ms)


class FriendService(Service):
    """``friends`` on a rolecity node: the region's players' friend operations, the
    delivery of their outboxes and its retries."""

    name = "friends"

    def __init__(self, node: Node, group: LRUGroup) -> None:
        self.node = node
        self.group = group
        self.region_db = node.database(region_db(node.me.number or 0))
        self.roledb = node.database(ROLEDB)
        self.locks = KeyedLock()
        self.flushing: set[int] = set()
        self.retry_rounds = 0
        self.loop: task.LoopingCall | None = None
        #: rolecity's fence: refuses changes of a stale instance (``fenced``)
        self.fence: PlayerFence | None = None

    # -- helpers ----------------------------------------------------------------------

    async def _act(self, userid: int, op: str, *args: Any) -> Any:
        return await self.group.call(userid, "friends", op, *args)

    async def _mark(self, userid: int) -> None:
        """Index *userid* as having an outbox: written before the outbox is saved, so a
        restarted node finds every outbox it has to deliver."""
        try:
            await self.region_db.insert(OUTBOX_INDEX, userid, {"time_ms": _now_ms()})
        except DuplicateKey:
            pass

    async def _change(self, userid: int, op: str, *args: Any) -> Any:
        """A player's own change: indexed, applied and saved, under the player's lock."""
        async with self.locks(userid):
            await self._mark(userid)
            return await self._act(userid, op, *args)

    async def _push(self, userid: int, event: str | None, peer: int, name: str = "",
                    sender: int | None = None) -> None:
        if event is None:
            return
        info = pb.FriendInfo(userid=peer, name=name, region=birth_region(peer))
        note = pb.FriendNotify(event=EVENTS[event], peer=info)
        try:
            await reach.push(self.cluster, [userid], note, sender=sender)
        except Exception:
            log.failure("friends: push to {userid} failed", userid=userid)

    async def flush(self, userid: int, push_self: bool = True,
                    skip: set[str] | None = None) -> dict[int, dict[str, Any]]:
        """Deliver *userid*'s outbox and settle the answers: ``{peer: {"delivered",
        "vetoed"}}``. Undelivered messages stay for the next round; the index entry goes
        once the outbox is empty. *push_self*: push this player the events the answers
        bring (off for a request the player is waiting on)."""
        results: dict[int, dict[str, Any]] = {}
        skip = set() if skip is None else skip  # a region that failed once is not waited
        msgs = await self._act(userid, "pending")
        for msg in msgs:
            peer = int(msg["to"])
            node = self.cluster.rolecity_node(peer)
            if node in skip:
                results[peer] = {"delivered": False, "vetoed": False}
                continue
            try:
                answer = await self.cluster.call(node, "friends", "deliver", msg,
                                                 timeout=DELIVER_TIMEOUT)
            except ClusterError as e:
                log.info("friends: {userid} -> {peer} not delivered ({e}); retried",
                         userid=userid, peer=peer, e=e)
                skip.add(node)
                results[peer] = {"delivered": False, "vetoed": False}
                continue
            if answer.get("nosuch"):
                answer = {"state": "none", "vetoed": True, "ver": 1 << 62}
            settled = await self._act(userid, "settle", msg, answer)
            results[peer] = {"delivered": True, "vetoed": bool(answer.get("vetoed"))}
            if push_self:
                await self._push(userid, settled["event"], peer)
        async with self.locks(userid):
            if not await self._act(userid, "pending"):
                await self.region_db.delete(OUTBOX_INDEX, userid)
        return results

    async def deliver_now(self, userid: int) -> dict[int, dict[str, Any]]:
        """After a player's change (already saved): try its delivery at once. A failure
        here is not the request's: the change is durable and the retries deliver it."""
        try:
            return await self.flush(userid, push_self=False)
        except Exception:
            log.failure("friends: delivery of {userid}'s change failed; retried later",
                        userid=userid)
            return {}

    def flush_soon(self, userid: int) -> None:
        d = defer.Deferred.fromCoroutine(self.flush(userid))
        d.addErrback(lambda f: log.failure("friends: flush of {userid} failed", f,
                                           userid=userid))

    async def retry_round(self) -> int:
        """Deliver every indexed outbox once (players already being delivered are
        skipped, and so is a region once it failed this round); how many players."""
        found = await self.region_db.find(OUTBOX_INDEX, {})
        skip: set[str] = set()
        done = 0
        for key, _ in found:
            userid = int(key)
            if userid in self.flushing:
                continue
            self.flushing.add(userid)
            try:
                await self.flush(userid, push_self=True, skip=skip)
                done += 1
            except Exception:
                log.failure("friends: retry of {userid} failed", userid=userid)
            finally:
                self.flushing.discard(userid)
        self.retry_rounds += 1
        return done

    def start_retries(self) -> None:
        """Retry undelivered outboxes every RETRY_INTERVAL (from the node's ready hook)."""
        if self.loop is not None:
            return

        async def round_() -> None:
            try:
                await self.retry_round()
            except Exception:
                log.failure("friends: retry round failed")

        self.loop = task.LoopingCall(lambda: defer.Deferred.fromCoroutine(round_()))
        self.loop.clock = self.node.reactor
        self.loop.start(RETRY_INTERVAL, now=True).addErrback(
            lambda f: log.failure("friends: retry loop stopped", f))

    def stop_retries(self) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        self.loop = None

    # -- a player's operations (from the player's role node) ----------------------------

    @handler
    async def fenced(self, userid: int, generation: int, method: str,
                     args: list[Any]) -> Any:
        """A change by the player's online instance *generation*: run friends *method*
        (request, accept, reject, remove, block, unblock) with *args* unless a newer
        instance owns the player (StaleGeneration): a stale instance changes nothing."""
        if method not in FENCED_OPS:
            raise ValueError(f"friends.{method} is not a player's change")
        if self.fence is not None:
            await self.fence.check(userid, generation, f"friends_{method}")
        return await getattr(self, method)(userid, *args)

    @handler
    async def exists(self, userid: int) -> bool:
        """True if player *userid* was ever created (its role document exists)."""
        return await self.roledb.get(PLAYERS, int(userid)) is not None

    @handler
    async def request(self, userid: int, to: int) -> dict[str, Any]:
        """*userid* asks *to* to be friends; see FriendRequest in proto/friend.proto."""
        node = self.cluster.rolecity_node(to)
        if node not in self.cluster.addresses:
            return {"code": int(E.NO_SUCH_PLAYER), "state": "none"}
        if to != userid:
            try:
                if not await self.cluster.call(node, "friends", "exists", to,
                                               timeout=DELIVER_TIMEOUT):
                    return {"code": int(E.NO_SUCH_PLAYER), "state": "none"}
            except ClusterError as e:
                log.info("friends: {node} cannot check {to} ({e})", node=node, to=to, e=e)
                return {"code": int(E.RETRY_LATER), "state": "none"}
        result = await self._change(userid, "request", to)
        if result["code"] != E.OK:
            return result
        delivered = (await self.deliver_now(userid)).get(to, {})
        state = await self._act(userid, "relation", to)
        if delivered.get("vetoed") or (delivered.get("delivered") and state == "none"):
            return {"code": int(E.FRIEND_REFUSED), "state": "none"}
        return {"code": int(E.OK), "state": state}

    @handler
    async def accept(self, userid: int, frm: int, all: bool = False) -> dict[str, Any]:
        result = await self._change(userid, "accept", frm, bool(all))
        if result["code"] == E.OK:
            await self.deliver_now(userid)
        return result

    async def _simple(self, userid: int, op: str, other: int, deliver: bool = True
                      ) -> dict[str, Any]:
        result = await self._change(userid, op, other)
        if result["code"] == E.OK and deliver:
            await self.deliver_now(userid)
        return result

    @handler
    async def reject(self, userid: int, frm: int) -> dict[str, Any]:
        return await self._simple(userid, "reject", frm)

    @handler
    async def remove(self, userid: int, other: int) -> dict[str, Any]:
        return await self._simple(userid, "remove", other)

    @handler
    async def block(self, userid: int, other: int) -> dict[str, Any]:
        return await self._simple(userid, "block", other)

    @handler
    async def unblock(self, userid: int, other: int) -> dict[str, Any]:
        return await self._simple(userid, "unblock", other, deliver=False)

    @handler
    async def login(self, userid: int) -> dict[str, Any]:
        """What a role node needs after Auth: the block list and the requests waiting."""
        view = await self._act(userid, "view")
        waiting = sorted(view["requests_in"].items(), key=lambda kv: kv[1].get("time_ms", 0))
        return {"blocked": view["blocked"],
                "requests_in": [{"userid": int(k), "name": v.get("name", ""),
                                 "time_ms": v.get("time_ms", 0)} for k, v in waiting]}

    @handler(name="list")
    async def friend_list(self, userid: int) -> dict[str, Any]:
        """The player's lists with names, regions, online flags and last-seen times."""
        view = await self._act(userid, "view")
        peers = {int(k) for part in ("friends", "requests_in", "requests_out")
                 for k in view[part]}
        by_node: dict[str, list[int]] = {}
        for peer in peers:
            by_node.setdefault(self.cluster.rolecity_node(peer), []).append(peer)

        async def ask(node: str, ids: list[int]) -> dict[str, Any]:
            try:
                return dict(await self.cluster.call(node, "friends", "info", ids,
                                                    timeout=INFO_TIMEOUT))
            except ClusterError as e:
                log.info("friends: no names from {node} ({e})", node=node, e=e)
                return {}

        infos: dict[int, dict[str, Any]] = {}
        answers = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(ask(n, ids)) for n, ids in by_node.items()])
        for answer in answers:
            infos.update({int(k): v for k, v in answer.items()})
        online = await reach.locate(self.cluster, peers) if peers else {}

        def rows(part: str, since: str) -> list[dict[str, Any]]:
            out = []
            for key, entry in view[part].items():
                peer = int(key)
                info = infos.get(peer, {})
                out.append({"userid": peer, "name": info.get("name") or entry.get("name", ""),
                            "region": birth_region(peer), "online": peer in online,
                            "last_seen_ms": info.get("last_seen_ms", 0),
                            "since_ms": entry.get(since, 0)})
            return sorted(out, key=lambda r: r["since_ms"])

        return {"friends": rows("friends", "since_ms"),
                "requests_in": rows("requests_in", "time_ms"),
                "requests_out": rows("requests_out", "time_ms"),
                "blocked": view["blocked"],
                "cap": friends.limits(_tables())["max_friends"]}

    # -- between rolecities ---------------------------------------------------------------

    @handler
    async def info(self, userids: list[int]) -> dict[int, dict[str, Any]]:
        """``{userid: {"name", "last_seen_ms"}}`` of this region's players *userids*."""
        found: dict[int, dict[str, Any]] = {}
        for userid in userids[:1000]:
            view = await self._act(int(userid), "view")
            found[int(userid)] = {"name": view["name"], "last_seen_ms": view["last_seen_ms"]}
        return found

    @handler
    async def deliver(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Another rolecity delivers *msg* of one of its players to one of ours; the
        answer goes back to be settled there. Pushes the event to our player."""
        to = int(msg["to"])
        if not await self.exists(to):
            return {"nosuch": True}
        vetoable = msg.get("kind") == "sync" and msg.get("state") != "none"
        if vetoable:  # our answer may queue a remove: index it first
            async with self.locks(to):
                await self._mark(to)
                got = await self._act(to, "receive", msg)
        else:
            got = await self._act(to, "receive", msg)
        await self._push(to, got["event"], int(msg["from"]), str(msg.get("name", "")),
                         sender=int(msg["from"]))
        if got["answer"].get("vetoed"):
            self.flush_soon(to)  # tell the other side at once
        return dict(got["answer"])

    @handler
    async def outbox(self, userid: int) -> list[dict[str, Any]]:
        """Undelivered messages of *userid* (GM, tests)."""
        return list(await self._act(userid, "pending"))

    @handler
    async def retry(self) -> int:
        """Run a retry round now (GM, tests); how many players it went through."""
        return await self.retry_round()

    def seen(self, userid: int) -> None:
        d = self.group.call(userid, "friends_seen", _now_ms())
        defer.ensureDeferred(d).addErrback(
            lambda f: log.warn("friends: last-seen of {userid} not recorded: {e}",
                               userid=userid, e=f.getErrorMessage()))


def install_rolecity(node: Node) -> FriendService:
    router = node.cluster.services["rolerouter"]
    if not isinstance(router, LRURouter):
        raise TypeError(f"{node.name}: rolerouter is not an LRU router")
    group = router.group
    group.add_action("friends", friends_action, creates=True, save=True)
    group.add_action("friends_seen", friends_seen)
    svc = FriendService(node, group)
    svc.fence = getattr(router, "fence", None)
    node.cluster.register(svc)
    cache = node.cluster.services.get("rolecache")
    if cache is not None and hasattr(cache, "on_clear"):
        cache.on_clear.append(svc.seen)
    node.add_ready_hook(svc.start_retries)
    group.on_stop.append(svc.stop_retries)
    return svc


def install(node: Node) -> None:
    """Wire friends onto *node*: the ``friends`` service on rolecity nodes (role nodes get
    the requests when this module is imported)."""
    if node.me.kind == "rolecity":
        install_rolecity(node)


# -- role nodes: the client requests ------------------------------------------------------

async def _rolecity(gw: Gateway, player: Player, method: str, *args: Any) -> Any:
    node = gw.cluster.rolecity_node(player.userid)
    if method in FENCED_OPS:  # a change: fenced by this instance's generation
        return await gw.cluster.call(node, "friends", "fenced", player.userid,
                                     player.generation, method, list(args),
                                     timeout=CALL_TIMEOUT)
    return await gw.cluster.call(node, "friends", method, player.userid, *args,
                                 timeout=CALL_TIMEOUT)


def _ec(code: Any) -> pb.ErrorCode:
    """An ErrorCode from an int that crossed the cluster (for the typed Responses)."""
    return cast(pb.ErrorCode, int(code))


def _failed(e: Exception, player: Player, what: str) -> pb.ErrorCode:
    if isinstance(e, RemoteError) and e.kind not in ("SaveFailed", "LoadFailed",
                                                     "StaleGeneration"):
        log.error("friends: {what} of {userid} failed: {e}", what=what,
                  userid=player.userid, e=e)
        return E.INTERNAL
    log.warn("friends: {what} of {userid}: {e}", what=what, userid=player.userid, e=e)
    return E.RETRY_LATER


@request(pb.FriendRequest)
async def friend_request(gw: Gateway, player: Player,
                         msg: pb.FriendRequest) -> pb.FriendRequest.Response:
    to = msg.to_userid
    if not to:
        if not msg.region or not msg.name:
            return pb.FriendRequest.Response(code=E.BAD_REQUEST)
        try:
            found = await userid_by_name(gw.cluster, msg.region, msg.name)
        except NoSuchRegion:
            return pb.FriendRequest.Response(code=E.NO_SUCH_PLAYER)
        except ClusterError as e:
            return pb.FriendRequest.Response(code=_failed(e, player, "name lookup"))
        if found is None:
            return pb.FriendRequest.Response(code=E.NO_SUCH_PLAYER)
        to = found
    try:
        r = await _rolecity(gw, player, "request", to)
    except ClusterError as e:
        return pb.FriendRequest.Response(code=_failed(e, player, "request"), userid=to)
    return pb.FriendRequest.Response(code=_ec(r["code"]), userid=to,
                                     state=STATES.get(r["state"], pb.FriendState.FRIENDSHIP_NONE))


@request(pb.FriendAccept)
async def friend_accept(gw: Gateway, player: Player,
                        msg: pb.FriendAccept) -> pb.FriendAccept.Response:
    if not msg.all and not msg.from_userid:
        return pb.FriendAccept.Response(code=E.BAD_REQUEST)
    try:
        r = await _rolecity(gw, player, "accept", msg.from_userid, msg.all)
    except ClusterError as e:
        return pb.FriendAccept.Response(code=_failed(e, player, "accept"))
    accepted = r.get("accepted", []) if r["code"] == E.OK else []
    return pb.FriendAccept.Response(code=_ec(r["code"]), accepted=accepted)


async def _simple_request(gw: Gateway, player: Player, method: str,
                          other: int) -> pb.ErrorCode:
    if not other:
        return E.BAD_REQUEST
    try:
        r = await _rolecity(gw, player, method, other)
    except ClusterError as e:
        return _failed(e, player, method)
    return _ec(r["code"])


@request(pb.FriendReject)
async def friend_reject(gw: Gateway, player: Player,
                        msg: pb.FriendReject) -> pb.FriendReject.Response:
    return pb.FriendReject.Response(
        code=await _simple_request(gw, player, "reject", msg.from_userid))


@request(pb.FriendRemove)
async def friend_remove(gw: Gateway, player: Player,
                        msg: pb.FriendRemove) -> pb.FriendRemove.Response:
    return pb.FriendRemove.Response(
        code=await _simple_request(gw, player, "remove", msg.userid))


@request(pb.FriendBlock)
async def friend_block(gw: Gateway, player: Player,
                       msg: pb.FriendBlock) -> pb.FriendBlock.Response:
    other = msg.userid
    if other and gw.cluster.rolecity_node(other) not in gw.cluster.addresses:
        return pb.FriendBlock.Response(code=E.NO_SUCH_PLAYER)
    code = await _simple_request(gw, player, "block", other)
    if code == E.OK:
        player.blocked.add(other)  # pushes on its behalf skip this player from now on
    return pb.FriendBlock.Response(code=code)


@request(pb.FriendUnblock)
async def friend_unblock(gw: Gateway, player: Player,
                         msg: pb.FriendUnblock) -> pb.FriendUnblock.Response:
    code = await _simple_request(gw, player, "unblock", msg.userid)
    if code == E.OK:
        player.blocked.discard(msg.userid)
    return pb.FriendUnblock.Response(code=code)


@request(pb.FriendList)
async def friend_list(gw: Gateway, player: Player,
                      msg: pb.FriendList) -> pb.FriendList.Response:
    try:
        r = await _rolecity(gw, player, "list")
    except ClusterError as e:
        return pb.FriendList.Response(code=_failed(e, player, "list"))
    return pb.FriendList.Response(
        code=E.OK, friends=[pb.FriendInfo(**row) for row in r["friends"]],
        requests_in=[pb.FriendInfo(**row) for row in r["requests_in"]],
        requests_out=[pb.FriendInfo(**row) for row in r["requests_out"]],
        blocked=r["blocked"], cap=r["cap"])


@after_auth
async def friends_after_auth(gw: Gateway, player: Player) -> None:
    """Load the block list into the instance and push the requests waiting for it."""
    try:
        r = await _rolecity(gw, player, "login")
    except ClusterError as e:
        log.warn("friends: block list of {userid} not loaded ({e})", userid=player.userid,
                 e=e)
        return
    player.blocked = {int(u) for u in r["blocked"]}
    msgid = REGISTRY.push_ids[pb.FriendNotify]
    for req in r["requests_in"]:
        peer = int(req["userid"])
        note = pb.FriendNotify(event=EV.FRIEND_EVENT_REQUEST, peer=pb.FriendInfo(
            userid=peer, name=req["name"], region=birth_region(peer), since_ms=req["time_ms"]))
        gw.push([player.userid], msgid, note.SerializeToString())
