"""Mail system: the rules of a player's mailbox and of gifts (seed §1 送礼物, §5 mail).

Reached through ``import_system("rltwist.game.mailsystem", service=...)`` by the mail node's
mailbox actor (``rltwist.nodes.mail.service``) and by the role node's mail requests
(``rltwist.features.mail``), so ``POST /hotfix`` of this module changes mail behaviour in
running processes. Nothing here does I/O: callers pass the entity, the time and the game
tables (``etc/game/mail.toml``, ``etc/game/gifts.toml``) and save what changed.

A mailbox entity (collection ``mailbox`` of the region database) holds component ``mail``::

    {"next_id": n,
     "mails": [{"id", "from", "from_name", "title", "body", "attachments", "key",
                "time_ms", "expire_ms", "read", "claim": None | transfer id}, ...],
     "keys": {delivery key: time_ms}}   # remembered key_days after the mail is gone

and the ledger of attachment claims (``rltwist.nodes.common.transfer``, ledger ``mail``).
A sender's role entity holds component ``gifts`` = ``{"day": n, "count": n, "sent":
{res: n}}`` (today's totals) and its gifts not yet delivered in its own ledger (kind
``gift``, ledger ``gift``).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from typing import Any

from rltwist.ecs.entity import Entity, plain_copy
from rltwist.ecs.system import System
from rltwist.game.tables import RESOURCES
from rltwist.nodes.common import transfer
from rltwist.protocols import pb

__all__ = ["BadMail", "MailSystem", "system"]

E = pb.ErrorCode
DAY_MS = 86_400_000
MAX_TITLE = 128
"""Longest title any delivery may carry (GM, system mail); MailSend has its own limit."""
MAX_BODY = 4096
MAX_KEY = 128
MAX_ATTACHMENTS = 16
MAX_ITEM_NAME = 64
MAIL_FIELDS = frozenset({"title", "body", "from", "from_name", "attachments", "key",
                         "expire_ms"})
"""The fields a delivery may carry (documented in ``rltwist.nodes.mail.service``)."""
CLAIM_LEDGER = "mail"
"""Ledger of the mailbox entity: claimed attachments waiting for the player's instance."""
GIFT_LEDGER = "gift"
"""Ledger of the sender's role entity: gifts taken from the sender, not yet delivered."""

#: what the tables say when a process has none loaded (unit tests)
MAIL_DEFAULTS: dict[str, int] = {"expire_days": 30, "max_mails": 200, "max_title": 64,
                                 "max_body": 1000, "key_days": 365}
GIFT_DEFAULTS: dict[str, Any] = {"max_per_day": 10, "max_amount_per_day": {
    "gold": 100000, "food": 100000, "oil": 50000}}


class BadMail(ValueError):
    """A mail to deliver is malformed (fields, types or sizes)."""


def _int_ms(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMail(f"{what} must be a non-negative int (ms since the epoch)")
    return value


class MailSystem(System):
    name = "mail"

    # -- tables ---------------------------------------------------------------------------

    def mail_table(self, tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """``etc/game/mail.toml`` (its defaults when *tables* has none)."""
        found = tables.get("mail") if tables is not None else None
        return found if found is not None else MAIL_DEFAULTS

    def gift_table(self, tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """``etc/game/gifts.toml`` (its defaults when *tables* has none)."""
        found = tables.get("gifts") if tables is not None else None
        return found if found is not None else GIFT_DEFAULTS

    # -- delivery -------------------------------------------------------------------------

    def check_mail(self, mail: Any) -> dict[str, Any]:
        """The fields of a delivery, validated (see ``rltwist.nodes.mail.service`` for the
        format); raises BadMail."""
        if not isinstance(mail, dict):
            raise BadMail("a mail is a dict with title, body and optionally from, from_name, "
                          "attachments, key, expire_ms")
        unknown = set(mail) - MAIL_FIELDS
        if unknown:
            raise BadMail(f"unknown mail fields {sorted(map(str, unknown))}; a mail has "
                          f"{sorted(MAIL_FIELDS)}")
        title, body = mail.get("title", ""), mail.get("body", "")
        if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
            raise BadMail(f"title must be a string of 1-{MAX_TITLE} characters")
        if not isinstance(body, str) or len(body) > MAX_BODY:
            raise BadMail(f"body must be a string of at most {MAX_BODY} characters")
        sender = mail.get("from", 0)
        if isinstance(sender, bool) or not isinstance(sender, int | str):
            raise BadMail("from must be a userid or a name")
        from_name = mail.get("from_name", "")
        if not isinstance(from_name, str) or len(from_name) > MAX_TITLE:
            raise BadMail(f"from_name must be a string of at most {MAX_TITLE} characters")
        attachments = mail.get("attachments") or {}
        if not isinstance(attachments, dict) or len(attachments) > MAX_ATTACHMENTS \
                or not all(isinstance(k, str) and 0 < len(k) <= MAX_ITEM_NAME
                           and type(v) is int and 0 < v < 2**62
                           for k, v in attachments.items()):
            raise BadMail(f"attachments must map at most {MAX_ATTACHMENTS} item names to "
                          "positive integers")
        key = mail.get("key")
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_KEY):
            raise BadMail(f"key must be a string of 1-{MAX_KEY} characters")
        expire_ms = mail.get("expire_ms")
        if expire_ms is not None:
            _int_ms(expire_ms, "expire_ms")
        return {"from": sender, "from_name": from_name, "title": title, "body": body,
                "attachments": dict(attachments), "key": key, "expire_ms": expire_ms}

    def box(self, entity: Entity) -> dict[str, Any]:
        """The live mailbox component (created)."""
        box = self.component(entity)
        box.setdefault("next_id", 1)
        box.setdefault("mails", [])
        if "keys" not in box:  # a mailbox of the previous version: its mails hold the keys
            box["keys"] = {m["key"]: m.get("time_ms", 0) for m in box["mails"]
                           if m.get("key") is not None}
        return box

    def mails(self, entity: Entity) -> Any:
        """The stored mails, oldest first, without creating the component."""
        return entity.components.get(self.name, {}).get("mails", ())

    def deliver(self, entity: Entity, mail: Any, now_ms: int,
                tables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Store *mail* (raises BadMail); ``{"mailid", "duplicate"}``. A delivery whose
        ``key`` this mailbox has seen (within ``key_days``, mail deleted or not) is not
        stored again. The mailbox cap drops the oldest read mail first."""
        fields = self.check_mail(mail)
        cfg = self.mail_table(tables)
        self.expire(entity, now_ms, tables)
        box = self.box(entity)
        key = fields["key"]
        if key is not None and key in box["keys"]:
            found = next((m["id"] for m in box["mails"] if m.get("key") == key), 0)
            return {"mailid": found, "duplicate": True}
        expire_ms = fields["expire_ms"]
        if expire_ms is None:
            expire_ms = now_ms + cfg["expire_days"] * DAY_MS
        stored = {**fields, "id": box["next_id"], "time_ms": now_ms, "expire_ms": expire_ms,
                  "read": False, "claim": None}
        box["next_id"] += 1
        box["mails"].append(stored)
        if key is not None:
            box["keys"][key] = now_ms
        self._cap(box["mails"], cfg["max_mails"])
        entity.mark_dirty()
        return {"mailid": stored["id"], "duplicate": False}

    @staticmethod
    def _cap(mails: list[dict[str, Any]], cap: int) -> None:
        while len(mails) > cap:
            oldest_read = next((i for i, m in enumerate(mails) if m["read"]), 0)
            del mails[oldest_read]

    def expire(self, entity: Entity, now_ms: int,
               tables: Mapping[str, Any] | None = None) -> int:
        """Drop the mails past their ``expire_ms`` and the delivery keys older than
        ``key_days``; how many mails went (the entity is marked dirty if anything did)."""
        box = entity.components.get(self.name)
        if not box:
            return 0
        mails = box.get("mails", [])
        # mails of the previous version have no expire_ms: time_ms + expire_days
        default_ms = self.mail_table(tables)["expire_days"] * DAY_MS
        keep = [m for m in mails
                if (m.get("expire_ms") or m.get("time_ms", now_ms) + default_ms) > now_ms]
        dropped = len(mails) - len(keep)
        keys = box.get("keys", {})
        horizon = now_ms - self.mail_table(tables)["key_days"] * DAY_MS
        old = [k for k, t in keys.items() if t <= horizon]
        if dropped:
            box["mails"] = keep
        for k in old:
            del keys[k]
        if dropped or old:
            entity.mark_dirty()
        return dropped

    # -- the player's view ----------------------------------------------------------------

    def summary(self, mail: Mapping[str, Any],
                pending: Container[str] = ()) -> dict[str, Any]:
        """A mail's list entry (what MailList and MailNotify carry). *pending*: the claims
        recorded but not credited yet (the mailbox's ledger): such a mail is not shown as
        claimed, so a player whose claim was cut off claims again (and gets it once)."""
        sender = mail["from"]
        return {"id": mail["id"], "from": sender, "from_name": mail.get("from_name", ""),
                "title": mail["title"], "time_ms": mail["time_ms"],
                "expire_ms": mail.get("expire_ms") or 0, "read": mail["read"],
                "attachments": bool(self.creditable(mail["attachments"])),
                "claimed": mail.get("claim") is not None and mail["claim"] not in pending}

    def find(self, entity: Entity, mailid: Any) -> dict[str, Any] | None:
        """The stored mail *mailid* (live), or None."""
        for m in self.mails(entity):
            if m["id"] == mailid:
                return m
        return None

    def listing(self, entity: Entity, now_ms: int,
             tables: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Summaries, newest first (expired mails dropped first)."""
        self.expire(entity, now_ms, tables)
        pending = transfer.entries(entity)
        return [self.summary(m, pending) for m in reversed(self.mails(entity))]

    def read(self, entity: Entity, mailid: Any, now_ms: int,
             tables: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """The mail (a copy, marked read), or None if there is none (or it expired)."""
        self.expire(entity, now_ms, tables)
        m = self.find(entity, mailid)
        if m is None:
            return None
        if not m["read"]:
            m["read"] = True
            entity.mark_dirty()
        return {**plain_copy(m), "summary": self.summary(m, transfer.entries(entity))}

    def delete(self, entity: Entity, mailid: Any) -> bool:
        """Remove mail *mailid*; False if there is none. A claim recorded in the ledger
        stays there (the player still gets it)."""
        mails = self.mails(entity)
        for i, m in enumerate(mails):
            if m["id"] == mailid:
                del mails[i]
                entity.mark_dirty()
                return True
        return False

    # -- claims ---------------------------------------------------------------------------

    def creditable(self, attachments: Mapping[str, int]) -> dict[str, int]:
        """The part of *attachments* a claim credits: the resources. A delivery may name
        items the game does not have yet (a GM typo in a global mail must not block its
        delivery to every mailbox): they are stored and shown, never credited."""
        return {k: v for k, v in attachments.items() if k in RESOURCES}

    def claim(self, entity: Entity, mailid: Any, now_ms: int,
              tables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record the claim of mail *mailid*'s attachments as a transfer of the mailbox's
        ledger (once: a repeat answers the same transfer while it is pending, and
        MAIL_ALREADY_CLAIMED once it was confirmed). ``{"code", "transfer_id",
        "attachments"}``; the caller saves before it hands the transfer out. *mailid* 0
        claims every mail with attachments not claimed yet (:meth:`_claim_all`)."""
        self.expire(entity, now_ms, tables)
        if mailid == 0:
            return self._claim_all(entity, now_ms)
        m = self.find(entity, mailid)
        if m is None:
            return {"code": int(E.MAIL_NOT_FOUND), "transfer_id": None, "attachments": {}}
        items = self.creditable(m["attachments"])
        if not items:
            return {"code": int(E.MAIL_NO_ATTACHMENTS), "transfer_id": None, "attachments": {}}
        tid = m.get("claim")
        if tid is None:
            tid = transfer.add(entity, CLAIM_LEDGER, "mail", items, now_ms=now_ms)
            m["claim"] = tid
            if not m["read"]:
                m["read"] = True
            entity.mark_dirty()
        elif tid not in transfer.entries(entity):
            return {"code": int(E.MAIL_ALREADY_CLAIMED), "transfer_id": tid,
                    "attachments": items}
        return {"code": int(E.OK), "transfer_id": tid, "attachments": items}

    def _claim_all(self, entity: Entity, now_ms: int) -> dict[str, Any]:
        """``claim(0)``: record every mail whose attachments are not claimed yet (and
        answer those recorded but not yet handed over too); MAIL_NO_ATTACHMENTS if there
        are none. ``attachments`` is their total, ``transfer_ids`` their transfers."""
        pending = transfer.entries(entity)
        total: dict[str, int] = {}
        ids: list[str] = []
        for m in self.mails(entity):
            items = self.creditable(m["attachments"])
            if not items:
                continue
            tid = m.get("claim")
            if tid is None:
                tid = transfer.add(entity, CLAIM_LEDGER, "mail", items, now_ms=now_ms)
                m["claim"] = tid
                m["read"] = True
                entity.mark_dirty()
            elif tid not in pending:
                continue
            ids.append(tid)
            for res, n in items.items():
                total[res] = total.get(res, 0) + n
        if not ids:
            return {"code": int(E.MAIL_NO_ATTACHMENTS), "transfer_id": None,
                    "transfer_ids": [], "attachments": {}}
        return {"code": int(E.OK), "transfer_id": None, "transfer_ids": ids,
                "attachments": total}

    # -- player mail and gifts (role node side) -------------------------------------------

    def check_send(self, title: str, body: str,
                   tables: Mapping[str, Any] | None = None) -> int:
        """MailSend's text limits: OK or MAIL_TEXT_INVALID."""
        cfg = self.mail_table(tables)
        if not title.strip() or len(title) > cfg["max_title"] or len(body) > cfg["max_body"]:
            return int(E.MAIL_TEXT_INVALID)
        if any(ord(ch) < 32 and ch not in "\n\t" for ch in title + body):
            return int(E.MAIL_TEXT_INVALID)
        return int(E.OK)

    def player_mail(self, sender: int, sender_name: str, title: str,
                    body: str) -> dict[str, Any]:
        """The delivery of a player's MailSend."""
        return {"from": sender, "from_name": sender_name, "title": title, "body": body}

    def _today(self, entity: Entity, now_ms: int) -> dict[str, Any]:
        day = now_ms // DAY_MS
        gifts = entity.component("gifts")
        if gifts.get("day") != day:
            gifts.update({"day": day, "count": 0, "sent": {}})
        return gifts

    def _mark_pending(self, entity: Entity) -> None:
        # ``gifts.pending`` is what the mail nodes' sweeper finds offline senders by
        # (an indexed query on the stored documents)
        pending = bool(self.pending_gifts(entity))
        gifts = entity.component("gifts")
        if gifts.get("pending", False) != pending:
            gifts["pending"] = pending
            entity.mark_dirty()

    def check_gift(self, entity: Entity, items: Mapping[str, Any], now_ms: int,
                   tables: Mapping[str, Any] | None = None) -> int:
        """OK if the sender *entity* may give *items* now: GIFT_INVALID, GIFT_NOT_ENOUGH or
        GIFT_DAILY_LIMIT otherwise. Changes nothing."""
        cfg = self.gift_table(tables)
        limits = cfg["max_amount_per_day"]
        if not items or not all(res in RESOURCES and type(n) is int and n > 0
                                for res, n in items.items()):
            return int(E.GIFT_INVALID)
        if any(res not in limits for res in items):
            return int(E.GIFT_INVALID)
        if any(entity.get(res, 0) < n for res, n in items.items()):
            return int(E.GIFT_NOT_ENOUGH)
        day = now_ms // DAY_MS
        today = entity.components.get("gifts") or {}
        if today.get("day") != day:
            today = {"count": 0, "sent": {}}
        if today["count"] >= cfg["max_per_day"]:
            return int(E.GIFT_DAILY_LIMIT)
        if any(today["sent"].get(res, 0) + n > limits[res] for res, n in items.items()):
            return int(E.GIFT_DAILY_LIMIT)
        return int(E.OK)

    def take_gift(self, entity: Entity, to_userid: int, items: Mapping[str, int],
                  now_ms: int, tables: Mapping[str, Any] | None = None) -> tuple[int, str]:
        """Debit *items* from the sender *entity* and record the gift in its ledger, all
        or nothing: ``(code, transfer id)``. The caller saves before it answers or
        delivers."""
        code = self.check_gift(entity, items, now_ms, tables)
        if code != E.OK:
            return code, ""
        for res, n in items.items():
            entity.incr(res, -n)
        today = self._today(entity, now_ms)
        today["count"] += 1
        for res, n in items.items():
            today["sent"][res] = today["sent"].get(res, 0) + n
        tid = transfer.add(entity, GIFT_LEDGER, "gift", {"to": to_userid, "items": dict(items)},
                           now_ms=now_ms)
        self._mark_pending(entity)
        entity.mark_dirty()
        return int(E.OK), tid

    def undo_gift(self, entity: Entity, transfer_id: str) -> bool:
        """Undo :meth:`take_gift` (its save was not acknowledged): give the items back,
        take the gift off today's totals and drop the record. False if there is none."""
        entry = transfer.entries(entity).pop(transfer_id, None)
        if entry is None:
            return False
        items = entry["items"]["items"]
        for res, n in items.items():
            entity.incr(res, n)
        today = entity.components.get("gifts") or {}
        if today.get("day") == entry.get("created_ms", 0) // DAY_MS:
            today["count"] = max(0, today.get("count", 0) - 1)
            for res, n in items.items():
                today["sent"][res] = max(0, today["sent"].get(res, 0) - n)
        self._mark_pending(entity)
        entity.mark_dirty()
        return True

    def pending_gifts(self, entity: Entity) -> list[dict[str, Any]]:
        """The sender's gifts not yet delivered, oldest first: ``[{"id", "to", "items",
        "created_ms"}]``."""
        return self.gifts_in(transfer.entries(entity))

    def gifts_in(self, ledger: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The gift records of a sender's ledger (live or from a stored document)."""
        found = [{"id": tid, "to": e["items"]["to"], "items": dict(e["items"]["items"]),
                  "created_ms": e.get("created_ms", 0)}
                 for tid, e in ledger.items() if e.get("kind") == "gift"]
        return sorted(found, key=lambda g: (g["created_ms"], g["id"]))

    def stored_gifts(self, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The gift records of a sender's stored document (the mail nodes' sweeper)."""
        return self.gifts_in((doc.get("components") or {}).get(transfer.LEDGER) or {})

    def gift_too_old(self, gift: Mapping[str, Any], now_ms: int,
                     tables: Mapping[str, Any] | None = None) -> bool:
        """A record older than the recipients' key memory (``key_days`` less a day) is
        never delivered again: the sweeper delivered it long ago, and a delivery after the
        mailbox forgot its key would store it twice."""
        limit = (self.mail_table(tables)["key_days"] - 1) * DAY_MS
        return bool(now_ms - gift["created_ms"] > limit)

    def gift_delivered(self, entity: Entity, transfer_id: str) -> bool:
        """The gift *transfer_id* is stored in the recipient's mailbox (or too old to
        deliver again): forget it here."""
        book = transfer.entries(entity)
        if book.pop(transfer_id, None) is None:
            return False
        self._mark_pending(entity)
        entity.mark_dirty()
        return True

    def gift_mail(self, sender: int, sender_name: str, transfer_id: str,
                  items: Mapping[str, int]) -> dict[str, Any]:
        """The delivery carrying a gift (its key is the transfer id: idempotent)."""
        listed = ", ".join(f"{n} {res}" for res, n in sorted(items.items()))
        return {"from": sender, "from_name": sender_name, "title": "A gift",
                "body": f"{sender_name or sender} sent you {listed}.",
                "attachments": dict(items), "key": transfer_id}


system = MailSystem()
