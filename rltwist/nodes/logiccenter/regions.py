"""regions: which regions the cluster has and which of them take new players (issue 14).

    regions.list()            -> {"regions": [view, ...], "recommended": sid | 0}
    regions.open(sid)         -> {"ok": True, "region": view, "changed"} | {"ok": False, ...}
    regions.close(sid)        -> the same
    regions.recommend(sid)    -> the same (0: back to "the newest open region")
    regions.public()          -> {"regions": [{"sid", "opened_ms"}], "recommended": sid | 0}

A region is *known* once logiccenter has seen a node of it (``map<sid>``, ``guild<sid>``,
``mail<sid>``, ``rolecity<sid>``) in its name table — from its config file or from
master's broadcast of a node that registered at run time — and it stays known (stored)
after its nodes go. Each known region is ``open`` or ``closed`` to **new** players;
players already born there log in whatever the state. The state lives in globaldb
(collection ``region``, one document per sid; collection ``region_meta``, document
``meta``) and every change is saved before it is answered.

Which regions start open: at the very first start of logiccenter on a globaldb (no
``meta`` document yet) the regions of its config file are open, so a cluster set up from
a config file works as before. Every region seen after that — a region added to the
config later, or one whose nodes register at run time (``rl-cluster region add``) —
starts closed until an operator opens it (``POST /regions/<sid>/open``).

A new player may be born in *sid* only if the region is open **and** logiccenter's name
table has a node of it now (``check_new_player``). The region list clients show before
Login (``RegionList``) is the open regions with nodes and the recommended one: the region
an operator set with ``regions.recommend`` while it is open, else the open region opened
first most recently (ties: the highest sid).

``players`` per region counts the accounts born there: at the first start the existing
accounts are counted once (``meta.players_base``), then each new account adds one to the
storage counter ``region_players_<sid>``. The counter is increased just after the account
is stored, so a logiccenter crash (or a storage failure) between the two leaves the count
one short (the account itself is kept).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.cluster.routing import MAX_SID
from rltwist.config import REGION_KINDS, parse_node_name
from rltwist.nodes.common.keylock import FifoLock

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

GLOBALDB = "globaldb"
ACCOUNTS = "account"
COLLECTION = "region"
META = "region_meta"
META_ID = "meta"
OPEN = "open"
CLOSED = "closed"
#: seconds between two looks at the name table for regions that registered meanwhile
SYNC_INTERVAL = 2.0


class BadServerId(ValueError):
    """A new player asked for a region that does not take new players."""


def counter_name(sid: int) -> str:
    """The storage counter of the accounts born in *sid* since the first start."""
    return f"region_players_{sid}"


def region_sids(names: Any) -> set[int]:
    """The sids of the region nodes among node *names* (other names are ignored)."""
    found = set()
    for name in names:
        try:
            kind, number = parse_node_name(name)
        except ValueError:
            continue
        if kind in REGION_KINDS and number is not None:
            found.add(number)
    return found


def valid_sid(sid: object) -> bool:
    return not isinstance(sid, bool) and isinstance(sid, int) and 0 < sid <= MAX_SID


class Regions(Service):
    """The ``regions`` service of logiccenter (see the module docstring)."""

    name = "regions"

    def __init__(self, node: Node, clock: Any = None) -> None:
        self.node = node
        self.db = node.database(GLOBALDB)
        self.clock = clock if clock is not None else node.reactor
        self.docs: dict[int, dict[str, Any]] = {}
        self.meta: dict[str, Any] = {}
        #: accounts born per region (``players_base`` + the storage counter)
        self.players: dict[int, int] = {}
        self.lock = FifoLock()
        self._is_loaded = False
        self._sync: LoopingCall | None = None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- what the name table says ---------------------------------------------------------

    def configured(self) -> set[int]:
        """The regions of logiccenter's config file."""
        return region_sids(self.node.config.nodes)

    def present(self) -> set[int]:
        """The regions with a node in the name table now (config or registered)."""
        return region_sids(self.node.cluster.addresses)

    # -- loading ----------------------------------------------------------------------------

    async def loaded(self) -> None:
        """Read the stored state once (the first start on a globaldb initialises it);
        every handler awaits this first."""
        if self._is_loaded:
            return
        async with self.lock:
            if self._is_loaded:
                return
            meta = await self.db.get(META, META_ID)
            if meta is None:
                meta = await self._initialise()
            docs = {int(doc["sid"]): doc for _, doc in await self.db.find(COLLECTION, {})}
            base = {int(k): int(v) for k, v in meta.get("players_base", {}).items()}
            players = {}
            for sid in sorted(set(docs) | set(base)):
                players[sid] = base.get(sid, 0) + await self.db.incr(counter_name(sid), 0)
            self.meta, self.docs, self.players = meta, docs, players
            self._is_loaded = True
            log.info("regions: {n} known, open: {open}", n=len(docs),
                     open=sorted(s for s, d in docs.items() if d["state"] == OPEN))
        await self.sync()

    async def _initialise(self) -> dict[str, Any]:
        """First start on this globaldb: the config file's regions are open; the accounts
        already there are counted once. The meta document is written last, so a crash
        midway repeats the whole (idempotent) initialisation."""
        now = self.now_ms()
        born: Counter[int] = Counter()
        for _, account in await self.db.find(ACCOUNTS, {}):
            born[int(account.get("server_id") or 0)] += 1
        for sid in sorted(self.configured()):
            await self.db.upsert(COLLECTION, sid, self._new_doc(sid, OPEN, "config", now))
        meta = {"initialized_ms": now, "recommended": 0,
                "players_base": {str(sid): n for sid, n in sorted(born.items()) if sid}}
        await self.db.upsert(META, META_ID, meta)
        log.info("regions: first start on this globaldb: regions {sids} of the config file "
                 "are open; {n} existing accounts counted", sids=sorted(self.configured()),
                 n=sum(born.values()))
        return meta

    @staticmethod
    def _new_doc(sid: int, state: str, source: str, now: int) -> dict[str, Any]:
        opened = now if state == OPEN else 0
        return {"sid": sid, "state": state, "source": source, "added_ms": now,
                "opened_ms": opened, "first_opened_ms": opened, "closed_ms": 0}

    def start(self) -> None:
        """Load, then record every SYNC_INTERVAL the regions that registered meanwhile
        (as closed), so ``GET /regions`` lists them with the time they appeared."""
        if self._sync is None:
            self._sync = LoopingCall(self._tick)
            self._sync.clock = self.clock
            self._sync.start(SYNC_INTERVAL, now=True)

    def stop(self) -> None:
        if self._sync is not None and self._sync.running:
            self._sync.stop()
        self._sync = None

    def _tick(self) -> defer.Deferred[None]:
        def failed(f: Any) -> None:
            log.warn("regions: cannot load or record regions now ({e}); trying again",
                     e=f.getErrorMessage())
        return defer.Deferred.fromCoroutine(self.loaded_and_synced()).addErrback(failed)

    async def loaded_and_synced(self) -> None:
        await self.loaded()
        await self.sync()

    async def sync(self) -> list[int]:
        """Store every region present in the name table but not stored yet, closed. The
        sids added."""
        added = []
        async with self.lock:
            now = self.now_ms()
            for sid in sorted(self.present() - set(self.docs)):
                doc = self._new_doc(sid, CLOSED, "registered", now)
                await self.db.upsert(COLLECTION, sid, doc)
                self.docs[sid] = doc
                self.players.setdefault(sid, 0)
                added.append(sid)
                log.info("regions: region {sid} appeared (a node of it registered); closed "
                         "to new players until opened", sid=sid)
        return added

    # -- new players ------------------------------------------------------------------------

    async def check_new_player(self, server_id: object) -> None:
        """Raise :class:`BadServerId` unless a new player may be born in *server_id*: an
        open region with a node in the name table. The one place that decides it."""
        if not valid_sid(server_id):
            raise BadServerId(f"server_id must be 1..{MAX_SID}, got {server_id!r}")
        await self.loaded()
        assert isinstance(server_id, int)
        present = server_id in self.present()
        doc = self.docs.get(server_id)
        if doc is None and not present:
            raise BadServerId(f"region {server_id} does not exist (no map, guild, mail or "
                              f"rolecity node of sid {server_id} in the name table)")
        if doc is None or doc["state"] != OPEN:
            raise BadServerId(f"region {server_id} is closed to new players")
        if not present:
            raise BadServerId(f"region {server_id} has no node in the name table now")

    async def born(self, sid: int) -> None:
        """Count an account just stored in *sid* (see the module docstring). A storage
        failure here is logged, never raised: the account exists and the login goes on;
        only the count stays one short."""
        base = int(self.meta.get("players_base", {}).get(str(sid), 0))
        try:
            self.players[sid] = base + await self.db.incr(counter_name(sid))
        except Exception as e:
            log.warn("regions: a new player of region {sid} not counted: {e}", sid=sid, e=e)

    # -- views --------------------------------------------------------------------------------

    def recommended(self) -> int:
        """The region new players are pointed at: the operator's choice while it is open
        and has nodes, else the open region opened first most recently; 0 if none."""
        candidates = self._listable()
        chosen = int(self.meta.get("recommended") or 0)
        if chosen in candidates:
            return chosen
        if not candidates:
            return 0
        return max(candidates, key=lambda s: (self.docs[s]["first_opened_ms"], s))

    def _listable(self) -> set[int]:
        present = self.present()
        return {s for s, d in self.docs.items() if d["state"] == OPEN and s in present}

    def view(self, sid: int) -> dict[str, Any]:
        doc = self.docs[sid]
        return {**doc, "players": self.players.get(sid, 0),
                "in_name_table": sid in self.present(),
                "recommended": sid == self.recommended()}

    @handler
    async def list(self) -> dict[str, Any]:
        """Every known region with its state and players; the recommended one."""
        await self.loaded()
        await self.sync()
        return {"regions": [self.view(s) for s in sorted(self.docs)],
                "recommended": self.recommended()}

    @handler
    async def public(self) -> dict[str, Any]:
        """What a client's region list shows: the open regions new players may choose
        (with nodes now) and the recommended one."""
        await self.loaded()
        listable = self._listable()
        return {"regions": [{"sid": s, "opened_ms": self.docs[s]["opened_ms"]}
                            for s in sorted(listable)],
                "recommended": self.recommended()}

    # -- operator changes -------------------------------------------------------------------

    @staticmethod
    def _refused(error: str, message: str) -> dict[str, Any]:
        return {"ok": False, "error": error, "message": message}

    async def _set_state(self, sid: Any, state: str) -> dict[str, Any]:
        if not valid_sid(sid):
            return self._refused("bad_region", f"{sid!r} is not a region id (1..{MAX_SID})")
        await self.loaded()
        await self.sync()
        async with self.lock:
            doc = self.docs.get(sid)
            if doc is None:
                return self._refused("unknown_region", f"region {sid} is unknown: no node of "
                                     "it has been in the name table")
            if state == OPEN and sid not in self.present():
                return self._refused("no_nodes", f"region {sid} has no node in the name "
                                     "table (decommissioned?): start its nodes first")
            if doc["state"] == state:
                return {"ok": True, "changed": False, "region": self.view(sid)}
            now = self.now_ms()
            new = dict(doc, state=state)
            if state == OPEN:
                new["opened_ms"] = now
                new["first_opened_ms"] = doc["first_opened_ms"] or now
            else:
                new["closed_ms"] = now
            await self.db.upsert(COLLECTION, sid, new)  # durable before the answer
            self.docs[sid] = new
        log.info("regions: region {sid} {state} to new players", sid=sid, state=state)
        return {"ok": True, "changed": True, "region": self.view(sid)}

    @handler
    async def open(self, sid: Any) -> dict[str, Any]:
        """Open region *sid* to new players (it must have a node in the name table)."""
        return await self._set_state(sid, OPEN)

    @handler
    async def close(self, sid: Any) -> dict[str, Any]:
        """Close region *sid* to new players; its players keep playing."""
        return await self._set_state(sid, CLOSED)

    @handler
    async def recommend(self, sid: Any) -> dict[str, Any]:
        """Make *sid* the recommended region while it is open (0: the newest open)."""
        if sid != 0 and not valid_sid(sid):
            return self._refused("bad_region", f"{sid!r} is not a region id (1..{MAX_SID}) "
                                 "or 0")
        await self.loaded()
        await self.sync()
        async with self.lock:
            if sid and sid not in self.docs:
                return self._refused("unknown_region", f"region {sid} is unknown")
            meta = dict(self.meta, recommended=sid)
            await self.db.upsert(META, META_ID, meta)
            self.meta = meta
        log.info("regions: recommended region set to {sid}", sid=sid or "the newest open")
        return {"ok": True, "recommended": self.recommended(), "chosen": sid}
