"""Global and region mail (issue 12, seed §5 logiccenter gmail): the wiring.

* logiccenter: the ``gmail`` service (``rltwist.nodes.logiccenter.gmail``) stores them.
* master: GM ``POST /mail/global``, ``POST /mail/region/<sid>``, ``GET /mail/global``.
* role nodes: ``gmailpull`` delivers to the players online here. After each Auth the
  player's node asks logiccenter for the gmails above the player's watermark (component
  ``gmail.seen`` of the player entity), delivers those that target the player into its
  mailbox (``mailrouter.deliver`` with key ``gmail-<id>``: stored once however often it is
  delivered), then raises the watermark and saves the player. After a send, logiccenter
  sends one ``gmailpull.check`` to each role node, which asks logiccenter once and runs
  the same catch-up for each of its online players. Every 30 s each role node also sweeps
  its online players the same way, so a check it missed (cut off from logiccenter at that
  moment) is made up for within that.

Who is targeted: ``rltwist.game.gmailsystem``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError, Service, handler
from rltwist.cluster.routing import MAX_SID
from rltwist.ecs import import_system
from rltwist.metrics import precreate
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.master.gm import GMApi, HTTPError, _cluster_error
from rltwist.nodes.role.requests import after_auth

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
gmail_system = import_system("rltwist.game.gmailsystem", service="gmailpull")

LOGICCENTER = "logiccenter"
CALL_TIMEOUT = 10.0
#: mailbox deliveries one role node runs at once (a send reaching thousands of online
#: players must not open thousands of calls to the mail nodes together)
DELIVERIES_AT_ONCE = 32
#: seconds between two sweeps of a role node's online players (one ``gmail.since`` call
#: to logiccenter per sweep)
SWEEP_INTERVAL = 30.0
#: ``rl_gmail_deliveries_total{result}``: stored (new in the mailbox), duplicate (the
#: mailbox had it: a racing delivery), failed (retried at the next sweep, send or login)
DELIVERY_RESULTS = ("stored", "duplicate", "failed")


def install(node: Node) -> None:
    """Register the gmail services on logiccenter and the role nodes."""
    kind = node.me.kind
    if kind == "logiccenter":
        from rltwist.nodes.logiccenter.account import Account
        from rltwist.nodes.logiccenter.gmail import GlobalMail

        account = node.cluster.services["account"]
        assert isinstance(account, Account)
        node.cluster.register(GlobalMail(node, account))
    elif kind == "role":
        pull = GmailPull(node)
        node.cluster.register(pull)
        node.add_ready_hook(pull.start)


# -- role nodes -------------------------------------------------------------------------


class GmailPull(Service):
    """``gmailpull`` on a role node: gives the players online here their global mails."""

    name = "gmailpull"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.locks = KeyedLock()
        self.slots = defer.DeferredSemaphore(DELIVERIES_AT_ONCE)
        self.sweeper = LoopingCall(self._sweep)
        self.sweeper.clock = node.reactor
        registry = getattr(node, "registry", None) or CollectorRegistry()
        self.deliveries = Counter("rl_gmail_deliveries", "Global mail deliveries into "
                                  "mailboxes by result", ["result"], registry=registry)
        precreate(self.deliveries, DELIVERY_RESULTS)

    @property
    def gateway(self) -> Gateway:
        gw: Gateway = self.node.cluster.services["gateway"]  # type: ignore[assignment]
        return gw

    async def _since(self, after: int, userid: int | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = await self.node.cluster.call(
            LOGICCENTER, "gmail", "since", after, userid, timeout=CALL_TIMEOUT)
        return answer

    def start(self) -> None:
        """Sweep every ``SWEEP_INTERVAL`` s (a ``check`` this node missed while cut off
        from logiccenter is caught up within that)."""
        if not self.sweeper.running:
            self.sweeper.start(SWEEP_INTERVAL, now=False)

    def _sweep(self) -> defer.Deferred[int]:
        def failed(f: Any) -> int:
            log.failure("gmail sweep failed", f)
            return 0
        return defer.Deferred.fromCoroutine(self.sweep()).addErrback(failed)

    @handler
    async def check(self, gmail_id: int) -> int:
        """Logiccenter stored gmail *gmail_id*: deliver it (and any other missed) to the
        players online here; how many mails were delivered."""
        return await self.sweep(gmail_id)

    async def sweep(self, gmail_id: int | None = None) -> int:
        """Catch up every player online here whose watermark is below *gmail_id* (below
        logiccenter's latest gmail when None), asking logiccenter once."""
        from rltwist.nodes.role.agent import ONLINE

        players = [p for p in list(self.gateway.players.values())
                   if p.state == ONLINE and (gmail_id is None
                                             or gmail_system.seen(p.entity) < gmail_id)]
        if not players:
            return 0
        try:
            answer = await self._since(min(gmail_system.seen(p.entity) for p in players))
        except ClusterError as e:
            log.warn("gmail {id}: cannot read global mail from logiccenter ({e}); tried "
                     "again at the next sweep, send or login", id=gmail_id, e=e)
            return 0
        latest = int(answer["latest"])
        behind = [p for p in players if gmail_system.seen(p.entity) < latest]
        counts = await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.catch_up(p, answer)) for p in behind])
        return sum(counts)

    async def pull(self, player: Player) -> int:
        """After *player*'s Auth: deliver the gmails it has not had yet."""
        try:
            answer = await self._since(gmail_system.seen(player.entity), player.userid)
        except ClusterError as e:
            log.warn("{userid}: cannot read global mail from logiccenter ({e}); tried "
                     "again at the next login or send", userid=player.userid, e=e)
            return 0
        return await self.catch_up(player, answer)

    async def catch_up(self, player: Player, answer: dict[str, Any]) -> int:
        """Deliver what *answer* (``gmail.since``) holds for *player*, in id order, then
        record the watermark and save. A delivery that fails stops there: the watermark
        stays below it, so the next login or send tries again (the key keeps it single)."""
        from rltwist.nodes.role.agent import ONLINE

        gw = self.gateway
        userid, entity = player.userid, player.entity
        delivered = 0
        async with self.locks(userid):
            if player.state != ONLINE or not gw.writes_allowed():
                return 0
            now_ms = int(time.time() * 1000)
            todo, watermark = gmail_system.due(entity, userid, answer["gmails"],
                                               int(answer["latest"]), now_ms,
                                               gw.cluster.routing.region)
            mail_node = gw.cluster.mail_node(userid)
            complete = True
            for gmail in todo:
                try:
                    async with self.slots:
                        result = await gw.cluster.call(
                            mail_node, "mailrouter", "deliver", userid,
                            gmail_system.mail(gmail), timeout=CALL_TIMEOUT)
                except ClusterError as e:
                    log.warn("{userid}: gmail {id} not delivered ({e}); tried again at the "
                             "next sweep, send or login", userid=userid, id=gmail["id"], e=e)
                    self.deliveries.labels("failed").inc()
                    complete = False
                    break
                if result.get("duplicate"):
                    self.deliveries.labels("duplicate").inc()
                else:
                    self.deliveries.labels("stored").inc()
                    delivered += 1
                gmail_system.set_seen(entity, int(gmail["id"]))
            if complete:
                gmail_system.set_seen(entity, watermark)
            if todo and entity.dirty and player.state == ONLINE:
                # saved now so that a mail the player deletes soon is not delivered again
                # after a crash; the key already keeps it single, so a refused save is just
                # logged. A watermark that only skipped mails not for this player waits for
                # the periodic save.
                outcome = await gw.saver.save([(entity, player.generation)])
                if not outcome.ok:
                    log.info("{userid}: gmail watermark not saved now; saved later",
                             userid=userid)
        return delivered


@after_auth
async def deliver_global_mail(gw: Gateway, player: Player) -> None:
    """Each Auth: the player's gmails it has not received yet go into its mailbox. Runs
    beside the later after-Auth steps, not before them: a slow or unreachable
    logiccenter must not hold up other features' deliveries to this player."""
    pull = gw.node.cluster.services.get("gmailpull")
    if isinstance(pull, GmailPull):
        defer.Deferred.fromCoroutine(pull.pull(player)).addErrback(
            lambda f: log.failure("{userid}: global mail pull failed", f,
                                  userid=player.userid))


# -- GM routes on master ----------------------------------------------------------------


async def call_logiccenter(gm: GMApi, service: str, method: str, *args: Any,
                           timeout: float = CALL_TIMEOUT) -> Any:
    """Call logiccenter's *service* for a GM route; a cluster failure becomes the
    HTTPError naming node, service and method (503 unreachable, 504 timeout, ...)."""
    try:
        return await gm.node.cluster.call(LOGICCENTER, service, method, *args,
                                          timeout=timeout)
    except ClusterError as e:
        status, payload = _cluster_error(e)
        raise HTTPError(status, payload.pop("error"), payload.pop("message"),
                        **payload) from None


def parse_sid(text: str) -> int:
    """A region id from a URL segment, or HTTP 400."""
    if not text.isdigit() or not 0 < int(text) <= MAX_SID:
        raise HTTPError(400, "bad_region", f"{text!r} is not a region id (1..{MAX_SID})")
    return int(text)


async def _send(gm: GMApi, request: IRequest, regions: list[int]) -> dict[str, Any]:
    body = gm._body(request, ("title",))
    answer = await call_logiccenter(gm, "gmail", "send", body, regions)
    if not answer.get("ok"):
        raise HTTPError(400, "bad_field", str(answer.get("error")))
    return {"gmail": answer["gmail"]}


@GMApi.app.route("/mail/global", methods=["POST"])
async def gm_global_mail(self: GMApi, request: IRequest) -> bytes:
    """Store a mail for every player of every region (body: title, body, attachments,
    expire_days, include_new); 200 once it is durable, then delivered."""
    return await self._guard(request, lambda: _send(self, request, []))


@GMApi.app.route("/mail/region/<sid>", methods=["POST"])
async def gm_region_mail(self: GMApi, request: IRequest, sid: str) -> bytes:
    """Like ``POST /mail/global`` for the players born in region *sid*."""
    async def send() -> dict[str, Any]:
        return await _send(self, request, [parse_sid(sid)])
    return await self._guard(request, send)


@GMApi.app.route("/mail/global", methods=["GET"])
async def gm_list_global_mail(self: GMApi, request: IRequest) -> bytes:
    """Every global and region mail stored, oldest first."""
    async def listing() -> dict[str, Any]:
        return {"gmails": await call_logiccenter(self, "gmail", "list")}
    return await self._guard(request, listing)
