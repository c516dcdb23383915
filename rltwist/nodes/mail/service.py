"""The mail node's services (seed §5, §10): per-player mailboxes in LRU ``mail<i>`` workers
behind ``mailrouter``, plus dbproxy and rolecache.

    mailrouter.call(userid, "deliver", {"from": 0, "title": "...", "body": "...",
                                        "attachments": {"gold": 10}, "key": "gm-42"})
                                               -> {"mailid": n, "duplicate": False}
    mailrouter.deliver(userid, mail)           -> the same as call(userid, "deliver", mail)
    mailrouter.call(userid, "list")            -> [summary, ...] newest first
    mailrouter.call(userid, "read", mailid)    -> the mail (marked read), or None
    mailrouter.call(userid, "delete", mailid)  -> True if it existed

``deliver`` saves the mailbox before it answers: an OK means the mail survives any crash
of the mail node; when storage does not acknowledge the save the caller gets
``SaveFailed`` (the mail stays in memory and the periodic save retries it), and should
retry with the same ``key`` (optional, makes a delivery idempotent: a retried delivery with
the same key is not stored twice). Once saved, a new mail is pushed to the player's online
instance through this node's rolecache (``gateway.mail_notify(userid, summary)`` on the
player's role node).
"""

from __future__ import annotations

import time
from typing import Any

from rltwist.cluster import handler
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.dbproxy import install_dbproxy, region_db
from rltwist.nodes.common.lru import Actor, LRUGroup, LRURouter, action, install_lru
from rltwist.nodes.common.node import Node
from rltwist.nodes.common.rolecache import RoleCache, install_rolecache

MAILBOX = "mailbox"
MAX_MAILS = 200
MAX_TITLE = 128
MAX_BODY = 4096
NOTIFY = ("gateway", "mail_notify")


class BadMail(ValueError):
    """A mail to deliver is malformed (fields, types or sizes)."""


def _check_mail(mail: Any) -> dict[str, Any]:
    if not isinstance(mail, dict):
        raise BadMail("a mail is a dict with title, body and optionally from, attachments, key")
    title, body = mail.get("title", ""), mail.get("body", "")
    if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
        raise BadMail(f"title must be a string of 1-{MAX_TITLE} characters")
    if not isinstance(body, str) or len(body) > MAX_BODY:
        raise BadMail(f"body must be a string of at most {MAX_BODY} characters")
    sender = mail.get("from", 0)
    if isinstance(sender, bool) or not isinstance(sender, int | str):
        raise BadMail("from must be a userid or a name")
    attachments = mail.get("attachments") or {}
    if not isinstance(attachments, dict) or not all(
            isinstance(k, str) and type(v) is int and v > 0 for k, v in attachments.items()):
        raise BadMail("attachments must map item names to positive integers")
    key = mail.get("key")
    if key is not None and not isinstance(key, str):
        raise BadMail("key must be a string")
    return {"from": sender, "title": title, "body": body, "attachments": attachments,
            "key": key}


def summary(mail: dict[str, Any]) -> dict[str, Any]:
    return {"id": mail["id"], "from": mail["from"], "title": mail["title"],
            "time_ms": mail["time_ms"], "read": mail["read"],
            "attachments": bool(mail["attachments"])}


class MailActor(Actor):
    """A player's mailbox: component ``mail`` = {"next_id": n, "mails": [...]}."""

    kind = "mailbox"
    collection = MAILBOX

    def __init__(self, rolecache: RoleCache | None = None) -> None:
        self.rolecache = rolecache

    @staticmethod
    def _box(entity: Entity) -> dict[str, Any]:
        box = entity.component("mail")
        box.setdefault("next_id", 1)
        box.setdefault("mails", [])
        return box

    @staticmethod
    def _mails(entity: Entity) -> Any:
        """The stored mails, without creating a component (reads leave the entity clean)."""
        return entity.components.get("mail", {}).get("mails", ())

    @action(save=True)
    def deliver(self, entity: Entity, mail: dict[str, Any]) -> dict[str, Any]:
        """Store a mail (oldest read ones make room first); saved before the answer. The
        router pushes it to the online player once it is saved."""
        fields = _check_mail(mail)
        box = self._box(entity)
        mails: list[dict[str, Any]] = box["mails"]
        if fields["key"] is not None:
            for m in mails:
                if m.get("key") == fields["key"]:
                    return {"mailid": m["id"], "duplicate": True}
        stored = {**fields, "id": box["next_id"], "time_ms": int(time.time() * 1000),
                  "read": False}
        box["next_id"] += 1
        mails.append(stored)
        while len(mails) > MAX_MAILS:
            oldest_read = next((i for i, m in enumerate(mails) if m["read"]), 0)
            del mails[oldest_read]
        entity.mark_dirty()
        return {"mailid": stored["id"], "duplicate": False}

    @action
    def summary(self, entity: Entity, mailid: int) -> dict[str, Any] | None:
        """The list entry of one mail, or None."""
        for m in self._mails(entity):
            if m["id"] == mailid:
                return summary(m)
        return None

    def notify(self, userid: Any, mail_summary: dict[str, Any]) -> None:
        """Push a new mail's summary to the player's online instance, if any."""
        if self.rolecache is not None:
            self.rolecache.forward(userid, NOTIFY[0], NOTIFY[1], [mail_summary])

    @action
    def list(self, entity: Entity) -> list[dict[str, Any]]:
        return [summary(m) for m in reversed(self._mails(entity))]

    @action
    def read(self, entity: Entity, mailid: int) -> dict[str, Any] | None:
        for m in self._mails(entity):
            if m["id"] == mailid:
                if not m["read"]:
                    m["read"] = True
                    entity.mark_dirty()
                return dict(m)
        return None

    @action
    def delete(self, entity: Entity, mailid: int) -> bool:
        mails = self._mails(entity)
        for i, m in enumerate(mails):
            if m["id"] == mailid:
                del mails[i]
                entity.mark_dirty()
                return True
        return False


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
        if method == "deliver" and not result["duplicate"]:
            found = await self.group.call(id, "summary", result["mailid"])
            if found is not None:
                self.actor.notify(id, found)
        return result

    @handler
    async def deliver(self, userid: Any, mail: dict[str, Any]) -> dict[str, Any]:
        """Shorthand for ``call(userid, "deliver", mail)``."""
        result: dict[str, Any] = await self.call(userid, "deliver", mail)
        return result


def build(node: Node) -> None:
    install_dbproxy(node)
    rolecache = install_rolecache(node)
    install_lru(node, MailActor(rolecache), router="mailrouter", worker="mail",
                db=region_db(node.me.number or 0), router_cls=MailRouter)
