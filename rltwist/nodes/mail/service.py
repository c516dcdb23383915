"""The mail node's services (seed §5, §10): per-player mailboxes in LRU ``mail<i>`` workers
behind ``mailrouter``, plus dbproxy and rolecache. The mailbox rules live in
:mod:`rltwist.game.mailsystem` (hot-fixable with ``POST /hotfix``); this module is wiring.

    mailrouter.deliver(userid, mail)           -> {"mailid": n, "duplicate": False}
    mailrouter.call(userid, "deliver", mail)   -> the same
    mailrouter.call(userid, "list")            -> [summary, ...] newest first
    mailrouter.call(userid, "read", mailid)    -> the mail (marked read), or None
    mailrouter.call(userid, "delete", mailid)  -> True if it existed
    mailrouter.claim(userid, generation, mailid)      -> {"code", "transfer_id", "attachments"}
    mailrouter.take_transfers(userid, generation)     -> [{"id", "kind", "items"}]
    mailrouter.confirm_transfers(userid, generation, ids) -> entries deleted

The mail dict of a delivery (every other key is refused, so a caller never thinks a field
it sends is honoured when it is not)::

    {"title": str (1-128 chars),          # required
     "body": str (<= 4096 chars),         # default ""
     "from": userid | name,               # default 0: system / GM
     "from_name": str,                    # shown to the player
     "attachments": {"gold": 10, ...},    # at most 16 item names -> positive ints; a
                                          # claim credits the resources (RESOURCES), other
                                          # names are kept and shown, never credited
     "key": str (<= 128 chars),           # idempotency key, see below
     "expire_ms": int}                    # when it is dropped (ms since the epoch);
                                          # default: now + mail.toml expire_days

``deliver`` saves the mailbox before it answers: an OK means the mail survives any crash
of the mail node; when storage does not acknowledge the save the caller gets
``SaveFailed`` (the mail stays in memory and the periodic save retries it), and should
retry with the same ``key``: a delivery whose key the mailbox has seen (remembered
``key_days`` of mail.toml, even after the mail was deleted) is not stored again and
answers ``duplicate: True``. Once saved, a new mail is pushed to the player's online
instance as a ``MailNotify`` (located through this node's rolecache, written by the role
node's ``gateway.push``).

Claims are transfers (:mod:`rltwist.nodes.common.transfer`, ledger ``mail``): ``claim``
records the attachments of a mail in the mailbox's ledger (once), the player's instance
takes them (``take_transfers``), credits and saves them, then confirms. Claim, take and
confirm carry the instance's generation and are refused (``StaleGeneration``) once a newer
instance owns the player (:class:`~rltwist.nodes.common.playerfence.PlayerFence`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from twisted.logger import Logger

from rltwist.cluster import handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common import reach, transfer
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import (
    Actor,
    Fixer,
    LRUGroup,
    LRURouter,
    action,
    install_lru,
)
from rltwist.nodes.common.node import Node
from rltwist.nodes.common.playerfence import PlayerFence
from rltwist.nodes.common.rolecache import RoleCache, install_rolecache
from rltwist.nodes.role.agent import ROLEDB
from rltwist.protocols import pb

log = Logger()

MAILBOX = "mailbox"
mail_system = import_system("rltwist.game.mailsystem", service="mailrouter")


def tables() -> Mapping[str, Any] | None:
    """This process's game tables, or None where none are loaded (unit tests)."""
    from rltwist.nodes.common.sharedatad import tables_or_none

    return tables_or_none()


def now_ms() -> int:
    return int(time.time() * 1000)


def summary_message(s: Mapping[str, Any]) -> pb.MailSummary:
    """A mailbox summary dict as the client sees it."""
    sender = s["from"]
    return pb.MailSummary(mail_id=s["id"], from_userid=sender if isinstance(sender, int) else 0,
                          from_name=s.get("from_name") or (
                              sender if isinstance(sender, str) else ""),
                          title=s["title"], time_ms=s["time_ms"], expire_ms=s["expire_ms"],
                          read=s["read"], has_attachments=s["attachments"],
                          claimed=s["claimed"])


class MailActor(Actor):
    """A player's mailbox (entity id: the userid): the rules are the mail system's."""

    kind = "mailbox"
    collection = MAILBOX

    def __init__(self, rolecache: RoleCache | None = None,
                 fence: PlayerFence | None = None) -> None:
        self.rolecache = rolecache
        self.fence = fence

    async def _fence(self, userid: Any, generation: Any, what: str) -> None:
        if self.fence is not None and isinstance(userid, int):
            await self.fence.check(userid, generation, what)

    @action(save=True)
    def deliver(self, entity: Entity, mail: dict[str, Any]) -> dict[str, Any]:
        """Store a mail; saved before the answer. The router pushes it to the online
        player once it is saved."""
        result: dict[str, Any] = mail_system.deliver(entity, mail, now_ms(), tables())
        return result

    @action
    def summary(self, entity: Entity, mailid: int) -> dict[str, Any] | None:
        """The list entry of one mail, or None."""
        m = mail_system.find(entity, mailid)
        return None if m is None else dict(mail_system.summary(m, transfer.entries(entity)))

    @action
    def read(self, entity: Entity, mailid: int) -> dict[str, Any] | None:
        """The mail, marked read; None if there is none."""
        found: dict[str, Any] | None = mail_system.read(entity, mailid, now_ms(), tables())
        return found

    @action
    def delete(self, entity: Entity, mailid: int) -> bool:
        return bool(mail_system.delete(entity, mailid))

    @action(save=True)
    async def claim(self, entity: Entity, generation: int, mailid: int) -> dict[str, Any]:
        """Record the claim of a mail's attachments for the instance *generation*
        (fenced); saved before the answer."""
        await self._fence(entity.id, generation, "mail_claim")
        result: dict[str, Any] = mail_system.claim(entity, mailid, now_ms(), tables())
        return result

    @action(save=True)
    async def take_transfers(self, entity: Entity, generation: int) -> list[dict[str, Any]]:
        """Step 1 of handing claimed attachments to the instance *generation* (fenced);
        the marks are saved before the answer."""
        if not transfer.entries(entity):
            return []
        await self._fence(entity.id, generation, "mail_take")
        return transfer.take(entity, entity.id, generation)

    @action(save=True)
    async def confirm_transfers(self, entity: Entity, generation: int,
                                ids: list[str]) -> int:
        """Step 3: the instance *generation* credited and saved *ids*: delete them."""
        ids = transfer.check_ids(ids)
        await self._fence(entity.id, generation, "mail_confirm")
        if transfer.confirmable(entity, entity.id, generation, ids):
            crashpoint("before_mail_confirm_clear")
        return transfer.confirm(entity, entity.id, generation, ids)

    # last: inside the class body after it, ``list`` would name this method
    @action
    def list(self, entity: Entity) -> list[dict[str, Any]]:
        """Summaries, newest first (expired mails are dropped)."""
        found: list[dict[str, Any]] = mail_system.listing(entity, now_ms(), tables())
        return found


class MailRouter(LRURouter):
    """``mailrouter``: routes to the mailboxes; pushes a delivered mail to its online
    player only after the delivery was saved (a push never announces a mail a crash could
    still take back)."""

    def __init__(self, group: LRUGroup) -> None:
        super().__init__(group)
        actor = group.actor
        assert isinstance(actor, MailActor)
        self.actor = actor

    @handler
    async def call(self, id: Any, method: str, *args: Any) -> Any:
        """Run business method *method* of mailbox *id* with *args*; return its result."""
        result = await self.group.call(id, method, *args)
        if method == "deliver":
            crashpoint("after_mail_deliver_save")  # saved, the answer not sent
            if not result["duplicate"]:
                found = await self.group.call(id, "summary", result["mailid"])
                if found is not None:
                    self.notify(id, found)
        return result

    def notify(self, userid: Any, summary: dict[str, Any]) -> bool:
        """Push a new mail's summary to the player's online instance, if any (located by
        this node's rolecache; written by the role node's ``gateway.push``)."""
        cache = self.actor.rolecache
        node = cache.where.get(userid) if cache is not None else None
        if node is None:
            return False
        return reach.send_located(self.cluster, {userid: node},
                                  pb.MailNotify(mail=summary_message(summary))) > 0

    @handler
    async def deliver(self, userid: Any, mail: dict[str, Any]) -> dict[str, Any]:
        """Shorthand for ``call(userid, "deliver", mail)``."""
        result: dict[str, Any] = await self.call(userid, "deliver", mail)
        return result

    @handler
    async def claim(self, userid: int, generation: int, mailid: int) -> dict[str, Any]:
        """Record the claim of mail *mailid* for the instance *generation* (fenced, saved
        before the answer): ``{"code", "transfer_id", "attachments"}``."""
        result: dict[str, Any] = await self.group.call(userid, "claim", generation, mailid)
        if result["code"] == 0:
            crashpoint("after_mail_claim_record")  # recorded and saved, not answered
        return result

    @handler
    async def take_transfers(self, userid: int, generation: int) -> list[dict[str, Any]]:
        """Claimed attachments for the instance *generation*, marked as taken and saved."""
        handed: list[dict[str, Any]] = await self.group.call(userid, "take_transfers",
                                                             generation)
        if handed:
            crashpoint("after_mail_take")  # marks saved, the answer not sent
        return handed

    @handler
    async def confirm_transfers(self, userid: int, generation: int, ids: list[str]) -> int:
        """The instance *generation* credited and saved *ids*; deleted before the answer."""
        n: int = await self.group.call(userid, "confirm_transfers", generation, ids)
        return n


class ExpireOnLoad:
    """The mailbox group's load hook: the data fixes of kind ``mailbox`` (if any), then the
    expired mails are dropped (saved with the next save), so a mailbox never comes back
    into memory with mails past their expiry."""

    def __init__(self, inner: Fixer | None) -> None:
        self.inner = inner

    @property
    def latest_version(self) -> int:
        return self.inner.latest_version if self.inner is not None else 0

    def apply_fixes(self, entity: Entity) -> Any:
        result = self.inner.apply_fixes(entity) if self.inner is not None else None
        mail_system.expire(entity, now_ms(), tables())
        return result


def build(node: Node) -> None:
    install_dbproxy(node)
    fence = PlayerFence(node.database(ROLEDB), registry=node.registry)
    rolecache = install_rolecache(node, RoleCache(on_generation=fence.observe))
    group = install_lru(node, MailActor(rolecache, fence), router="mailrouter", worker="mail",
                        db=region_db(node.me.number or 0), router_cls=MailRouter)
    group.set_fixer(ExpireOnLoad(group.fixer))
