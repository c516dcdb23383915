"""Global mail (seed §5 logiccenter gmail): the rules of who receives a GM's global or
region mail, kept apart from the wiring so ``POST /hotfix`` can change them.

A global mail is one stored document (globaldb, collection ``gmail``)::

    {"id": 7, "title": ..., "body": ..., "attachments": {"gold": 10},
     "regions": [] (every region) or [sid, ...], "include_new": False,
     "time_ms": sent, "expire_ms": time_ms + expire_days, "max_seq": n}

Who it targets: a player born in one of ``regions`` (any region when empty; a region
merged into another counts as that one, both ways) whose account
existed when it was sent, and with ``include_new`` also the players created later, until
it expires. "Existed when it was sent" is read from the userid: its high bits are the
account counter (``user_seq``, one global counter on logiccenter), and ``max_seq`` is that
counter's value at the send, so ``userid >> 16 <= max_seq`` is "created before it" (a
player whose account was being made at that very instant may fall either side).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rltwist.cluster.routing import MAX_SID, birth_region
from rltwist.ecs.system import System

__all__ = ["BadGmail", "GmailSystem", "system"]

#: days a global mail stays deliverable when the GM gives no ``expire_days``
DEFAULT_EXPIRE_DAYS = 30
MAX_EXPIRE_DAYS = 365
MAX_TITLE = 128
MAX_BODY = 4096
MAX_ATTACHMENTS = 32
DAY_MS = 86_400_000
KEY_PREFIX = "gmail-"


class BadGmail(ValueError):
    """A GM's global mail is malformed; str() names the field."""


class GmailSystem(System):
    name = "gmail"

    def check(self, fields: Mapping[str, Any], regions: Iterable[int],
              known_regions: Iterable[int]) -> dict[str, Any]:
        """The GM's fields (title, body, attachments, expire_days, include_new) checked
        and normalised, with the target *regions* (empty: all); raises :class:`BadGmail`
        naming the bad field. The limits are the mailbox's, so every targeted mailbox
        takes it."""
        allowed = {"title", "body", "attachments", "expire_days", "include_new"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise BadGmail(f"unknown field {unknown[0]!r} (known: {sorted(allowed)})")
        title, body = fields.get("title"), fields.get("body", "")
        if not isinstance(title, str) or not 0 < len(title) <= MAX_TITLE:
            raise BadGmail(f"title must be a string of 1-{MAX_TITLE} characters")
        if not isinstance(body, str) or len(body) > MAX_BODY:
            raise BadGmail(f"body must be a string of at most {MAX_BODY} characters")
        attachments = fields.get("attachments") or {}
        if not isinstance(attachments, Mapping) or len(attachments) > MAX_ATTACHMENTS \
                or not all(isinstance(k, str) and k and type(v) is int and 0 < v < 2**62
                           for k, v in attachments.items()):
            raise BadGmail(f"attachments must map at most {MAX_ATTACHMENTS} item names to "
                           "positive integers")
        days = fields.get("expire_days", DEFAULT_EXPIRE_DAYS)
        if isinstance(days, bool) or not isinstance(days, int | float) \
                or not 0 < days <= MAX_EXPIRE_DAYS:
            raise BadGmail(f"expire_days must be a number of days, 0 < d <= {MAX_EXPIRE_DAYS}")
        include_new = fields.get("include_new", False)
        if not isinstance(include_new, bool):
            raise BadGmail("include_new must be true or false")
        targets = sorted(set(regions))
        known = set(known_regions)
        for sid in targets:
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= MAX_SID:
                raise BadGmail(f"region {sid!r} is not a region id (1..{MAX_SID})")
            if sid not in known:
                raise BadGmail(f"region {sid} does not exist")
        return {"title": title, "body": body, "attachments": dict(attachments),
                "expire_days": days, "include_new": include_new, "regions": targets}

    def make(self, gmail_id: int, checked: Mapping[str, Any], now_ms: int,
             max_seq: int) -> dict[str, Any]:
        """The document of global mail *gmail_id* sent at *now_ms*, when the account
        counter stood at *max_seq*."""
        return {"id": gmail_id, "title": checked["title"], "body": checked["body"],
                "attachments": dict(checked["attachments"]),
                "regions": list(checked["regions"]), "include_new": checked["include_new"],
                "time_ms": now_ms,
                "expire_ms": now_ms + int(checked["expire_days"] * DAY_MS),
                "max_seq": max_seq}

    def live(self, gmail: Mapping[str, Any], now_ms: int) -> bool:
        """Still deliverable at *now_ms* (not expired)."""
        return bool(now_ms < gmail["expire_ms"])

    def targets(self, gmail: Mapping[str, Any], userid: int, now_ms: int,
                region_of: Callable[[int], int] | None = None) -> bool:
        """Whether *userid* is to receive *gmail* (see the module docstring).
        *region_of* is the cluster's region aliases (``Routing.region``): after a merge of
        A into B, a region mail to B (or to A) reaches the players born in either."""
        if not self.live(gmail, now_ms):
            return False
        regions = gmail["regions"]
        if regions:
            home = birth_region(userid)
            if region_of is not None:
                home = region_of(home)
                regions = [region_of(r) for r in regions]
            if home not in regions:
                return False
        return bool(userid >> 16 <= gmail["max_seq"] or gmail["include_new"])

    def key(self, gmail: Mapping[str, Any]) -> str:
        """The mailbox's idempotency key: one gmail is stored once per mailbox."""
        return f"{KEY_PREFIX}{gmail['id']}"

    def mail(self, gmail: Mapping[str, Any]) -> dict[str, Any]:
        """What ``mailrouter.deliver`` stores for *gmail* (system mail: ``from`` 0)."""
        return {"from": 0, "title": gmail["title"], "body": gmail["body"],
                "attachments": dict(gmail["attachments"]), "key": self.key(gmail)}

    def seen(self, entity: Any) -> int:
        """The highest gmail id this player has been given (or skipped, not targeted)."""
        return int(entity.components.get(self.name, {}).get("seen", 0))

    def set_seen(self, entity: Any, gmail_id: int) -> bool:
        """Raise the player's watermark to *gmail_id*; True if it moved."""
        if gmail_id <= self.seen(entity):
            return False
        entity.set_component(self.name, {"seen": gmail_id})
        return True

    def due(self, entity: Any, userid: int, gmails: Iterable[Mapping[str, Any]],
            latest: int, now_ms: int, region_of: Callable[[int], int] | None = None
            ) -> tuple[list[Mapping[str, Any]], int]:
        """The gmails to deliver to this player now (id order) out of *gmails* (every
        live gmail above some id, complete up to *latest*), and the watermark to record
        once they are all delivered."""
        seen = self.seen(entity)
        todo = sorted((g for g in gmails if g["id"] > seen
                       and self.targets(g, userid, now_ms, region_of)),
                      key=lambda g: g["id"])
        return todo, max(seen, latest)


system = GmailSystem()
