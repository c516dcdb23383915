"""Mail and gifts (issue 12): the client requests on role nodes, the after-Auth steps, the
gift retry sweeper and the GM route ``POST /players/<userid>/mail`` on master.

Wiring only: the rules are :mod:`rltwist.game.mailsystem` (hot-fixable); the mailboxes are
the mail nodes' (:mod:`rltwist.nodes.mail.service`, ``cluster.mail_node(userid)`` of the
recipient's birth region).

Claims (MailClaim) are transfers from the mailbox's ledger into the player: the mail node
records the claim (fenced by the instance's generation, saved), this node takes it, credits
the resources once (the player's inbox remembers applied transfer ids), saves the player,
then confirms. A crash or timeout at any step leaves the claim at the mail node; the next
claim or the next Auth resumes it.

Gifts (GiftSend): the debit and the gift record (ledger ``gift`` of the sender's entity)
are saved before the answer; the gift is then delivered as a mail whose key is the
transfer id (so a retry never stores it twice) and the record dropped. Records left by a
crash or an unreachable mail node are retried after the sender's next Auth and by a
sweeper every ``SWEEP_INTERVAL`` seconds.
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import RESOURCES
from rltwist.metrics import bounded, code_name, precreate
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.sharedatad import tables_or_none
from rltwist.nodes.common.transfer import BadTransfer, Receiver
from rltwist.nodes.master.gm import GMApi, HTTPError, _cluster_error, _parse_userid
from rltwist.nodes.role.agent import ONLINE, PLAYERS, ROLEDB
from rltwist.nodes.role.requests import after_auth, as_request, request
from rltwist.nodes.role.transfers import pull_from
from rltwist.protocols import pb
from rltwist.storage import StorageError

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode

mail_system = import_system("rltwist.game.mailsystem", service="gateway")
role_system = import_system("rltwist.game.rolesystem", service="gateway")

CALL_TIMEOUT = 10.0
SWEEP_INTERVAL = 30.0
"""Seconds between two passes of the gift sweeper over the online players of a role node."""
MAILROUTER = "mailrouter"
PENDING_FIELD = "components.gifts.pending"
"""Set on a sender's saved document while it holds gift records (the sweeper's query)."""
#: the answers each counted request can give (the ``code`` label values, created at 0)
SEND_CODES = ("OK", "MAIL_TEXT_INVALID", "NO_SUCH_PLAYER", "BAD_REQUEST", "RETRY_LATER")
CLAIM_CODES = ("OK", "MAIL_NOT_FOUND", "MAIL_NO_ATTACHMENTS", "MAIL_ALREADY_CLAIMED",
               "RETRY_LATER", "INTERNAL")
GIFT_CODES = ("OK", "GIFT_INVALID", "GIFT_NOT_ENOUGH", "GIFT_DAILY_LIMIT", "NO_SUCH_PLAYER",
              "BAD_REQUEST", "RETRY_LATER")
#: GM mail answers by HTTP status class, as ErrorCode names
GM_CODES = ("OK", "BAD_REQUEST", "NO_SUCH_PLAYER", "RETRY_LATER")


class MailMetrics:
    """``rl_mail_sent_total{kind, code}`` (kind ``player``: MailSend on role nodes;
    ``system``: GM mail on master), ``rl_mail_claims_total{code}`` and
    ``rl_mail_gifts_total{code}`` (role nodes), as ``rltwist/metrics.py`` lays out."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter("rl_mail_sent", "Mails sent by kind (player, system) and answer",
                            ["kind", "code"], registry=registry)
        self.claims = Counter("rl_mail_claims", "MailClaim answers", ["code"],
                              registry=registry)
        self.gifts = Counter("rl_mail_gifts", "GiftSend answers", ["code"], registry=registry)


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, MailMetrics] = \
    weakref.WeakKeyDictionary()


def mail_metrics(registry: CollectorRegistry) -> MailMetrics:
    """The mail metrics of *registry* (made once)."""
    m = _metrics.get(registry)
    if m is None:
        m = _metrics[registry] = MailMetrics(registry)
    return m


def _count(counter: Any, *labels: str) -> None:
    counter.labels(*labels).inc()


_gift_locks = KeyedLock()
"""userid -> lock: one gift delivery pass per sender at a time (request, Auth, sweeper)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def summary_message(s: Mapping[str, Any]) -> pb.MailSummary:
    from rltwist.nodes.mail.service import summary_message as convert

    return convert(s)


async def _player_exists(gw: Gateway, userid: int) -> bool | None:
    """True/False, or None when storage cannot tell."""
    if userid <= 0 or userid >= 2**63:
        return False
    try:
        return await gw.node.database(ROLEDB).get_entity(PLAYERS, userid) is not None
    except StorageError as e:
        log.warn("cannot tell whether player {userid} exists: {e}", userid=userid, e=e)
        return None


async def _mailbox(gw: Gateway, userid: int, method: str, *args: Any) -> Any:
    node = gw.cluster.mail_node(userid)
    return await gw.cluster.call(node, MAILROUTER, "call", userid, method, *args,
                                 timeout=CALL_TIMEOUT)


async def _recipient_code(gw: Gateway, player: Player, to: int) -> int:
    """OK if *to* is another existing player whose mail node this node knows."""
    if to == player.userid:
        return int(E.BAD_REQUEST)
    exists = await _player_exists(gw, to)
    if exists is None:
        return int(E.RETRY_LATER)
    if not exists:
        return int(E.NO_SUCH_PLAYER)
    if gw.cluster.mail_node(to) not in gw.cluster.addresses:
        return int(E.RETRY_LATER)
    return int(E.OK)


# -- the mailbox ------------------------------------------------------------------------


@request(pb.MailList)
async def mail_list(gw: Gateway, player: Player, msg: pb.MailList) -> pb.MailList.Response:
    try:
        found = await _mailbox(gw, player.userid, "list")
    except ClusterError as e:
        log.warn("MailList of {userid}: {e}", userid=player.userid, e=e)
        return pb.MailList.Response(code=E.RETRY_LATER)
    return pb.MailList.Response(code=E.OK, mails=[summary_message(s) for s in found])


@request(pb.MailRead)
async def mail_read(gw: Gateway, player: Player, msg: pb.MailRead) -> pb.MailRead.Response:
    try:
        found = await _mailbox(gw, player.userid, "read", msg.mail_id)
    except ClusterError as e:
        log.warn("MailRead of {userid}: {e}", userid=player.userid, e=e)
        return pb.MailRead.Response(code=E.RETRY_LATER)
    if found is None:
        return pb.MailRead.Response(code=E.MAIL_NOT_FOUND)
    return pb.MailRead.Response(code=E.OK, mail=pb.Mail(
        summary=summary_message(found["summary"]), body=found["body"],
        attachments=found["attachments"]))


@request(pb.MailDelete)
async def mail_delete(gw: Gateway, player: Player,
                      msg: pb.MailDelete) -> pb.MailDelete.Response:
    try:
        gone = await _mailbox(gw, player.userid, "delete", msg.mail_id)
    except ClusterError as e:
        log.warn("MailDelete of {userid}: {e}", userid=player.userid, e=e)
        return pb.MailDelete.Response(code=E.RETRY_LATER)
    return pb.MailDelete.Response(code=E.OK if gone else E.MAIL_NOT_FOUND)


@request(pb.MailSend)
async def mail_send(gw: Gateway, player: Player, msg: pb.MailSend) -> pb.MailSend.Response:
    answer = await _mail_send(gw, player, msg)
    _count(mail_metrics(gw.node.registry).sent, "player",
           bounded(code_name(answer.code), SEND_CODES))
    return answer


async def _mail_send(gw: Gateway, player: Player, msg: pb.MailSend) -> pb.MailSend.Response:
    code = mail_system.check_send(msg.title, msg.body, tables_or_none())
    if code == E.OK:
        code = await _recipient_code(gw, player, msg.to_userid)
    if code != E.OK:
        return pb.MailSend.Response(code=code)
    mail = mail_system.player_mail(player.userid, player.entity.get("name") or "",
                                   msg.title, msg.body)
    try:
        await gw.cluster.call(gw.cluster.mail_node(msg.to_userid), MAILROUTER, "deliver",
                              msg.to_userid, mail, timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("MailSend {userid} -> {to}: {e}", userid=player.userid, to=msg.to_userid,
                 e=e)
        return pb.MailSend.Response(code=E.RETRY_LATER)
    return pb.MailSend.Response(code=E.OK)


# -- claims: transfers from the mailbox into the player -------------------------------


def _apply_claim(entity: Entity, entry: dict[str, Any]) -> None:
    """Credit one claimed mail's attachments, all or nothing (raising leaves it at the
    mail node)."""
    if entry.get("kind") != "mail":
        raise BadTransfer(f"transfer {entry.get('id')}: unknown kind {entry.get('kind')!r}")
    code = role_system.add_resources(entity, entry.get("items") or {})
    if code != ErrCode.OK:
        raise BadTransfer(f"transfer {entry.get('id')}: {ErrCode(code).name}")


receiver = Receiver("mail", _apply_claim, step="mailclaim")


async def take_claims(gw: Gateway, player: Player) -> Any:
    """Pull the player's claimed attachments from its mail node into the entity: the
    :class:`~rltwist.nodes.common.transfer.Pulled` result, or None when the mail node
    could not be reached (they stay there for the next pull)."""
    userid = player.userid
    pulled = await pull_from(gw, player, receiver, gw.cluster.mail_node(userid),
                             MAILROUTER, "mail claims")
    if pulled is None:
        return None
    for entry in pulled.applied:
        log.info("{userid}: credited mail attachments {id} {items}", userid=userid,
                 id=entry["id"], items=entry["items"])
    return pulled


@request(pb.MailClaim)
async def mail_claim(gw: Gateway, player: Player, msg: pb.MailClaim) -> pb.MailClaim.Response:
    answer = await _mail_claim(gw, player, msg)
    _count(mail_metrics(gw.node.registry).claims, bounded(code_name(answer.code), CLAIM_CODES))
    return answer


async def _mail_claim(gw: Gateway, player: Player,
                      msg: pb.MailClaim) -> pb.MailClaim.Response:
    node = gw.cluster.mail_node(player.userid)
    try:
        recorded = await gw.cluster.call(node, MAILROUTER, "claim", player.userid,
                                         player.generation, msg.mail_id,
                                         timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("MailClaim of {userid}: {e}", userid=player.userid, e=e)
        return pb.MailClaim.Response(code=E.RETRY_LATER)
    if recorded["code"] != E.OK:
        return pb.MailClaim.Response(code=recorded["code"])
    pulled = await take_claims(gw, player)
    ids = recorded.get("transfer_ids") or [recorded["transfer_id"]]
    if pulled is None or not pulled.saved:
        return pb.MailClaim.Response(code=E.RETRY_LATER)
    if any(tid in pulled.failed for tid in ids):
        return pb.MailClaim.Response(code=E.INTERNAL)
    # applied now, applied before a crash (skipped), or by an overlapping pull
    return pb.MailClaim.Response(code=E.OK, attachments=recorded["attachments"],
                                 basics=player.basics())


# -- gifts ----------------------------------------------------------------------------


async def deliver_gifts(gw: Gateway, player: Player) -> int:
    """Deliver the sender's recorded gifts (each as a mail keyed by its transfer id) and
    drop the records of those stored; how many were delivered now. Failures keep the
    records for the next pass."""
    entity = player.entity
    sender_name = entity.get("name") or ""
    delivered = 0
    tables = tables_or_none()
    async with _gift_locks(player.userid):
        for gift in mail_system.pending_gifts(entity):
            if mail_system.gift_too_old(gift, _now_ms(), tables):
                log.critical("gift {id} of {userid} to {to} is older than the mailboxes' "
                             "key memory: not delivered again (the sweeper delivered it, or "
                             "the mail nodes were down for that long)", id=gift["id"],
                             userid=player.userid, to=gift["to"])
                mail_system.gift_delivered(entity, gift["id"])
                continue
            to = gift["to"]
            mail = mail_system.gift_mail(player.userid, sender_name, gift["id"],
                                         gift["items"])
            try:
                await gw.cluster.call(gw.cluster.mail_node(to), MAILROUTER, "deliver", to,
                                      mail, timeout=CALL_TIMEOUT)
            except ClusterError as e:
                log.warn("gift {id} of {userid} to {to}: {e}; retried later", id=gift["id"],
                         userid=player.userid, to=to, e=e)
                continue
            crashpoint("after_gift_deliver")
            if mail_system.gift_delivered(entity, gift["id"]):
                delivered += 1
                log.info("gift {id} of {userid} delivered to {to}: {items}", id=gift["id"],
                         userid=player.userid, to=to, items=gift["items"])
    return delivered


@request(pb.GiftSend)
async def gift_send(gw: Gateway, player: Player, msg: pb.GiftSend) -> pb.GiftSend.Response:
    answer = await _gift_send(gw, player, msg)
    _count(mail_metrics(gw.node.registry).gifts, bounded(code_name(answer.code), GIFT_CODES))
    return answer


async def _gift_send(gw: Gateway, player: Player, msg: pb.GiftSend) -> pb.GiftSend.Response:
    items = dict(msg.items)
    tables = tables_or_none()
    entity = player.entity
    code = mail_system.check_gift(entity, items, _now_ms(), tables)
    if code == E.OK:
        code = await _recipient_code(gw, player, msg.to_userid)
    if code != E.OK:
        return pb.GiftSend.Response(code=code)
    code, tid = mail_system.take_gift(entity, msg.to_userid, items, _now_ms(), tables)
    if code != E.OK:  # the resources changed while we looked the recipient up
        return pb.GiftSend.Response(code=code)
    crashpoint("before_gift_save")
    if not (await gw.saver.save([(entity, player.generation)])).ok:
        mail_system.undo_gift(entity, tid)
        return pb.GiftSend.Response(code=E.RETRY_LATER)
    crashpoint("after_gift_save")
    await deliver_gifts(gw, player)
    return pb.GiftSend.Response(code=E.OK, basics=player.basics())


# -- after Auth, the sweeper -------------------------------------------------------------


@after_auth
async def resume_mail(gw: Gateway, player: Player) -> None:
    """Credit claims a crash left at the mail node, deliver gifts a crash left here: in
    the background (counted in flight, so a logout waits for it), so the after-Auth steps
    of other features do not wait behind a mail node round trip."""

    async def resume() -> None:
        await take_claims(gw, player)
        if mail_system.pending_gifts(player.entity):
            await deliver_gifts(gw, player)

    defer.Deferred.fromCoroutine(as_request(player, resume())).addErrback(
        lambda f: log.failure("mail resume of {userid} failed", f, userid=player.userid))


class RoleGiftRetry:
    """Every SWEEP_INTERVAL seconds, retry the undelivered gifts of the online players of
    one role node (a mail node that was down when they were sent)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.loop = LoopingCall(self.sweep)
        self.loop.clock = gw.node.reactor

    async def _sweep(self) -> int:
        n = 0
        for player in list(self.gw.players.values()):
            if player.state == ONLINE and mail_system.pending_gifts(player.entity):
                n += await as_request(player, deliver_gifts(self.gw, player))
        return n

    def sweep(self) -> defer.Deferred[int]:
        d = defer.Deferred.fromCoroutine(self._sweep())
        d.addErrback(lambda f: log.failure("gift sweep failed", f))
        return d


# -- GM --------------------------------------------------------------------------------

GM_FIELDS = ("title", "body", "attachments", "key", "expire_ms", "from_name")


@GMApi.app.route("/players/<userid>/mail", methods=["POST"])
async def gm_player_mail(self: GMApi, request: IRequest, userid: str) -> bytes:
    """``POST /players/<userid>/mail {"title", "body", "attachments": {"gold": 10}, "key",
    "expire_ms", "from_name"}``: store a system mail in the player's mailbox (durable when
    this answers 200; the online player gets a MailNotify). Retry with the same ``key``
    after a failure: it is stored once."""

    async def send() -> dict[str, Any]:
        uid = _parse_userid(userid)
        body = self._body(request, required=("title",))
        unknown = sorted(set(body) - {*GM_FIELDS, "timeout"})
        if unknown:
            raise HTTPError(400, "bad_field", f"unknown fields {unknown}; use "
                            f"{list(GM_FIELDS)}", field=unknown[0])
        timeout = self._timeout(body, default=CALL_TIMEOUT)
        mail = {k: body[k] for k in GM_FIELDS if k in body}
        mail.setdefault("from_name", "GM")
        try:
            checked = mail_system.check_mail(mail)
        except ValueError as e:  # BadMail (whatever version of the system raised it)
            raise HTTPError(400, "bad_mail", str(e)) from None
        attached = checked["attachments"]
        if mail_system.creditable(attached) != attached:
            raise HTTPError(400, "bad_mail", f"attachments must be resources "
                            f"{list(RESOURCES)}: a player could never claim the others",
                            field="attachments")
        node = self.node
        try:
            known = await node.database(ROLEDB).get_entity(PLAYERS, uid)
        except StorageError as e:
            raise HTTPError(503, "unavailable", f"cannot read the role database: {e}") from None
        if known is None:
            raise HTTPError(404, "unknown_player", f"no player {uid}", userid=uid)
        target = node.cluster.mail_node(uid)
        try:
            result = await node.cluster.call(target, MAILROUTER, "deliver", uid, mail,
                                             timeout=timeout)
        except ClusterError as e:
            status, payload = _cluster_error(e)
            raise HTTPError(status, payload.pop("error"), payload.pop("message"),
                            **payload) from None
        log.info("GM mail to {userid} on {node}: {result}", userid=uid, node=target,
                 result=result)
        return {"userid": uid, "node": target, **result}

    try:
        return await self._guard(request, send)
    finally:
        status = request.code  # type: ignore[attr-defined]
        code = ("OK" if status == 200 else "BAD_REQUEST" if status == 400 else
                "NO_SUCH_PLAYER" if status == 404 else "RETRY_LATER")
        _count(mail_metrics(self.node.registry).sent, "system", code)


class GiftSweeper(Service):
    """``giftsweeper`` on each mail node: delivers the recorded gifts of *offline* senders
    whose mailbox is on this node (their saved documents, found by the indexed
    ``components.gifts.pending`` flag of the role database) every SWEEP_INTERVAL seconds,
    so a gift whose sender's role node died after the debit was saved is delivered even if
    the sender never logs in again. It only reads the sender's document (the sender's next
    instance drops the record, its redelivery being a duplicate); online senders are left
    to their role node. ``sweep()`` runs one pass now (operators, tests)."""

    name = "giftsweeper"
    PAGE = 500
    REMEMBERED = 100_000

    def __init__(self, node: Any) -> None:
        self.node = node
        self.delivered: OrderedDict[str, None] = OrderedDict()
        self._indexed = False
        self.loop = LoopingCall(self._tick)
        self.loop.clock = node.reactor

    def _tick(self) -> defer.Deferred[int]:
        d = defer.Deferred.fromCoroutine(self.sweep())
        d.addErrback(lambda f: log.failure("gift sweep failed", f))
        return d

    @handler
    async def sweep(self) -> int:
        """One pass; how many gifts were delivered now."""
        db = self.node.database(ROLEDB)
        if not self._indexed:
            await db.ensure_index(PLAYERS, PENDING_FIELD)
            self._indexed = True
        cluster = self.node.cluster
        online = getattr(cluster.services.get("rolecache"), "where", {})
        tables = tables_or_none()
        n = 0
        for userid, doc in await db.find(PLAYERS, {PENDING_FIELD: True}, limit=self.PAGE):
            if not isinstance(userid, int) or userid in online \
                    or cluster.mail_node(userid) != self.node.name:
                continue
            name = (doc.get("attrs") or {}).get("name") or ""
            for gift in mail_system.stored_gifts(doc):
                if gift["id"] in self.delivered \
                        or mail_system.gift_too_old(gift, _now_ms(), tables):
                    continue
                to = gift["to"]
                mail = mail_system.gift_mail(userid, name, gift["id"], gift["items"])
                try:
                    await cluster.call(cluster.mail_node(to), MAILROUTER, "deliver", to, mail,
                                       timeout=CALL_TIMEOUT)
                except ClusterError as e:
                    log.warn("sweeper: gift {id} of offline {userid} to {to}: {e}",
                             id=gift["id"], userid=userid, to=to, e=e)
                    continue
                self.delivered[gift["id"]] = None
                while len(self.delivered) > self.REMEMBERED:
                    self.delivered.popitem(last=False)
                n += 1
                log.info("sweeper: gift {id} of offline {userid} delivered to {to}",
                         id=gift["id"], userid=userid, to=to)
        return n


def install(node: Any) -> None:
    """Role nodes: the gift retry of online senders (the requests register at import, the
    GM route on master too). Mail nodes: the sweeper of offline senders' gifts."""
    if node.me.kind in ("role", "master"):
        m = mail_metrics(node.registry)
        if node.me.kind == "role":
            precreate(m.sent, ["player"], SEND_CODES)
            precreate(m.claims, CLAIM_CODES)
            precreate(m.gifts, GIFT_CODES)
        else:
            precreate(m.sent, ["system"], GM_CODES)
    if node.me.kind == "role":
        gw = node.cluster.services.get("gateway")
        if gw is None:
            return
        retry = RoleGiftRetry(gw)
        _start_on_ready(node, retry.loop, "gift retry")
    elif node.me.kind == "mail":
        sweeper = GiftSweeper(node)
        node.cluster.register(sweeper)
        _start_on_ready(node, sweeper.loop, "gift sweeper")


def _start_on_ready(node: Any, loop: LoopingCall, what: str) -> None:
    def start() -> None:  # not returning the loop's Deferred: it fires at its stop
        loop.start(SWEEP_INTERVAL, now=False).addErrback(
            lambda f: log.failure("{what} stopped", f, what=what))

    node.add_ready_hook(start)
