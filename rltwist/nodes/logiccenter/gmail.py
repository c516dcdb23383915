"""gmail: GM global and region mail on logiccenter (seed §5 logiccenter gmail).

    gmail.send(fields, regions)  -> {"ok": True, "gmail": doc} | {"ok": False, "error"}
    gmail.since(after[, userid]) -> {"latest": n, "gmails": [live docs with id > after]}
    gmail.list()                 -> [doc, ...] every stored one, oldest first

``send`` stores the mail in globaldb (collection ``gmail``) before it answers: an OK
means it is durable. Ids come from a globaldb counter and sends are serialized, so the
stored ids a node knows always form a complete prefix (every id up to ``latest`` that
exists is known): a player's watermark "highest gmail id seen" can never skip one.

Delivery is pulled by the role nodes (``rltwist.features.gmail``): a player's node asks
``since(watermark)`` after each Auth, and after a send logiccenter tells every role node
once (``gmailpull.check``, one cluster message per role node, never one per player), which
then asks ``since`` once for all its online players. Each mailbox stores a gmail once
(``key`` ``gmail-<id>``), so races between a login and a check only cost a duplicate
delivery that the mailbox drops.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.ecs import import_system
from rltwist.nodes.common import reach
from rltwist.nodes.common.keylock import FifoLock
from rltwist.nodes.logiccenter.account import GLOBALDB, USER_SEQ, Account
from rltwist.storage import DuplicateKey, StorageError

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
gmail_system = import_system("rltwist.game.gmailsystem", service="gmail")

COLLECTION = "gmail"
SEQ = "gmail_seq"
#: tries of one insert when storage does not acknowledge it (the id is kept, so a try
#: that did land is found as DuplicateKey)
INSERT_TRIES = 3
PULL = ("gmailpull", "check")


class GlobalMail(Service):
    """The ``gmail`` service (see the module docstring)."""

    name = "gmail"

    def __init__(self, node: Node, account: Account) -> None:
        self.node = node
        self.account = account
        self.db = node.database(GLOBALDB)
        self.mails: dict[int, dict[str, Any]] = {}
        self._send_lock = FifoLock()
        registry = getattr(node, "registry", None) or CollectorRegistry()
        self.sent = Counter("rl_gmail_sent", "Global and region mails stored (GM sends)",
                            registry=registry)
        self._load_lock = FifoLock()
        self._is_loaded = False

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    async def loaded(self) -> None:
        """Read every stored gmail once (requests wait for it; a failed read is tried
        again by the next request)."""
        if self._is_loaded:
            return
        async with self._load_lock:
            if not self._is_loaded:
                await self._load()
                self._is_loaded = True

    async def _load(self) -> None:
        for _, doc in await self.db.find(COLLECTION, {}):
            self.mails[int(doc["id"])] = doc
        log.info("gmail: {n} global mails loaded", n=len(self.mails))

    @handler
    async def send(self, fields: dict[str, Any], regions: list[int]) -> dict[str, Any]:
        """Store a GM's global mail (regions empty: every region) and tell the role
        nodes. ``{"ok": True, "gmail": doc}`` once it is durable; ``{"ok": False,
        "error"}`` for a bad field (nothing stored)."""
        await self.loaded()
        try:
            checked = gmail_system.check(fields, regions, self.account.regions())
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        async with self._send_lock:
            gmail_id = await self.db.incr(SEQ)
            # the account counter as it stands: accounts up to it exist (amount 0 reads)
            max_seq = await self.db.incr(USER_SEQ, 0)
            doc = gmail_system.make(gmail_id, checked, self.now_ms(), max_seq)
            await self._insert(doc)
            self.mails[gmail_id] = doc
            self.sent.inc()
        log.info("gmail {id} stored: {title!r} to regions {regions} (include_new "
                 "{include_new}, accounts up to seq {max_seq})", id=gmail_id,
                 title=doc["title"], regions=doc["regions"] or "all",
                 include_new=doc["include_new"], max_seq=max_seq)
        self.tell_role_nodes(gmail_id)
        return {"ok": True, "gmail": doc}

    async def _insert(self, doc: dict[str, Any]) -> None:
        for attempt in range(1, INSERT_TRIES + 1):
            try:
                await self.db.insert(COLLECTION, doc["id"], doc)
                return
            except DuplicateKey:
                return  # an earlier try landed although storage did not say so
            except StorageError as e:
                if attempt == INSERT_TRIES:
                    raise
                log.warn("gmail {id}: insert not acknowledged ({e}); trying again",
                         id=doc["id"], e=e)

    def tell_role_nodes(self, gmail_id: int) -> int:
        """One ``gmailpull.check`` per role node: its online players pull the new mail.
        How many role nodes were told (players of the others get it at their next
        login)."""
        told = 0
        for node in reach.role_nodes(self.cluster):
            try:
                self.cluster.send(node, *PULL, gmail_id)
                told += 1
            except ClusterError as e:
                log.warn("gmail {id}: cannot tell {node} ({e}); its players get it at "
                         "their next login", id=gmail_id, node=node, e=e)
        return told

    @handler
    async def since(self, after: int, userid: int | None = None) -> dict[str, Any]:
        """The live gmails with an id above *after* (only those targeting *userid*, when
        given: a login's pull carries no mail the player will not get), and the highest
        stored id."""
        await self.loaded()
        now = self.now_ms()
        latest = max(self.mails, default=0)
        found = [g for i, g in sorted(self.mails.items())
                 if i > after and gmail_system.live(g, now)
                 and (userid is None or gmail_system.targets(g, userid, now,
                                                             self.cluster.routing.region))]
        return {"latest": latest, "gmails": found}

    @handler
    async def list(self) -> list[dict[str, Any]]:
        """Every stored gmail, oldest first (GM ``GET /mail/global``)."""
        await self.loaded()
        return [g for _, g in sorted(self.mails.items())]

