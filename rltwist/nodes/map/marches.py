"""march: the marches of one map node (issue 13 "Marches and battle").

A march is a world entity in ``world.state.marches`` (saved with the world, attributes in
:mod:`rltwist.game.marchsystem`); its next timed event (``arrive``, ``gathered``,
``home``) is kept in the march itself (``event``, ``due_ms``) and run by the node's one
:class:`~rltwist.nodes.map.scheduler.Scheduler`. At start every loaded march schedules its
event again; those that fell due while the node was down run first, in time order.

Handlers (role nodes call them; every write on a player's behalf is fenced by the
instance's generation, :mod:`rltwist.nodes.common.playerfence`)::

    march.start(userid, generation, tid, request)   -> {"code", "march"}
    march.recall(userid, generation, march_id)      -> {"code", "march"}
    march.list(userid)                              -> {"marches", "city"}
    march.targets(x, y, radius, around_of)          -> [MapEntity bytes] | None
    march.take_transfers(userid, generation)        -> [{"id", "kind", "items"}]
    march.confirm_transfers(userid, generation, ids) -> n
    march.grant_troops(userid, troops, key)         -> {"code", "transfer_id"}   (GM)

Durable start: ``start`` is idempotent by the start's transfer id ``tid`` (a march carries
its ``tid``; once home, the player's book remembers it for ``RETURNED_DAYS``) and saves
the new march and its target (``world.save_now``) before it answers OK.

What comes home (troops, load) is a transfer in the owner's **book** on this node (one
entity per player in collection ``marchbooks`` of the region database: ``ledger`` of
:mod:`rltwist.nodes.common.transfer`, ``returned``: start tid -> ms, and ``granted``: the
transfer ids of keyed GM grants -> ms, both kept ``RETURNED_DAYS``). At ``home`` the
entry is added and the book saved *before* the march leaves the world, and only if the
book does not already list the march's tid as returned: an arrival that runs again after a
crash credits nothing twice. The owner's role node is told to pull (``marchpull.pull``)
when the owner is online here (the map's rolecache), else the next Auth pulls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common import transfer
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.common.sharedatad import tables_or_none
from rltwist.nodes.map.scheduler import Scheduler
from rltwist.nodes.map.state import entity_pb, march_pb
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.playerfence import PlayerFence
    from rltwist.nodes.map.world import World

log = Logger()
E = pb.ErrorCode

marches = import_system("rltwist.game.marchsystem", service="march")
battles = import_system("rltwist.game.battlesystem", service="battle")

BOOKS = "marchbooks"
LEDGER = "march"
"""Ledger name of the transfers home: ids are ``march-...``."""
RETURNED_DAYS = 7
"""How long a book remembers the start tid of a march that came home (a role node that
crashed between the map's OK and its own confirm resends it at the next login)."""
DAY_MS = 86_400_000
HOME_RETRY_MS = 5000
"""A homecoming whose book could not be stored is tried again this much later."""
MAX_TARGETS = 50
MAX_RADIUS = 64

ARRIVE, GATHERED, HOME = "arrive", "gathered", "home"
NOTIFY_EVENT = {"gathering": pb.MarchEvent.MARCH_GATHERING,
                "returning": pb.MarchEvent.MARCH_RETURNING_HOME,
                "home": pb.MarchEvent.MARCH_HOME}


EVENTS = ("started", "arrived", "gathered", "battle", "recalled", "home")
"""The values of ``rl_march_events_total{event}`` (created at 0)."""


class MarchMetrics:
    """``rl_march_events_total{event}`` and ``rl_marches_in_flight`` of one map node."""

    def __init__(self, registry: CollectorRegistry, service: MarchService) -> None:
        self.events = Counter("rl_march_events", "March events on this map node: started, "
                              "arrived (at the target), gathered, battle, recalled, home "
                              "(credited)", ["event"], registry=registry)
        for event in EVENTS:
            self.events.labels(event)
        self.in_flight = Gauge("rl_marches_in_flight", "Marches on this map (out, gathering "
                               "or on the way home)", registry=registry)
        self.in_flight.set_function(lambda: len(service.state.marches))

    def count(self, event: str) -> None:
        self.events.labels(event).inc()


def return_tid(map_id: int, march_id: int) -> str:
    """The transfer id of march *march_id*'s way home (one per march, for all time)."""
    return f"{LEDGER}-m{map_id}n{march_id}"


def troops_pb(army: Mapping[str, int]) -> list[Any]:
    return [pb.TroopCount(type=t, count=int(n)) for t, n in sorted(army.items()) if n > 0]


def march_info(march: Entity) -> Any:
    """The owner's MarchInfo of a march."""
    return pb.MarchInfo(line=march_pb(march), troops=troops_pb(march.get("army") or {}),
                        load={k: int(v) for k, v in (march.get("load") or {}).items()},
                        target_id=int(march.get("target") or 0))


def march_view(march: Entity) -> dict[str, Any]:
    """A march as plain data for the wire (the role node builds MarchInfo from it)."""
    return {"id": int(march.id), **{k: march.attrs[k] for k in march.attrs}}


def info_of_view(view: Mapping[str, Any]) -> Any:
    """MarchInfo from :func:`march_view` data."""
    return march_info(Entity(view["id"], attrs={k: v for k, v in view.items() if k != "id"}))


class Books:
    """The players' march books of this map (module docstring), loaded on first use and
    saved by a Saver: periodically, and at once (coalesced: every save asked for in one
    reactor turn is one storage batch) when a caller must know it is stored."""

    def __init__(self, backend: Any, clock: Any, *, interval: float = 60.0,
                 registry: Any = None) -> None:
        self.backend = backend
        self.clock = clock
        self.cache: dict[int, Entity] = {}
        self.saver = Saver(backend, BOOKS, self._all, interval=interval, clock=clock,
                           registry=registry, name=BOOKS)
        self._pending: dict[int, Entity] = {}
        self._waiters: list[defer.Deferred[bool]] = []
        self._flush_call: Any = None

    def _all(self) -> list[tuple[Entity, int]]:
        return [(e, 0) for e in self.cache.values()]

    async def get(self, userid: int) -> Entity:
        """The book of *userid* (read from storage the first time; a new one if none)."""
        book = self.cache.get(userid)
        if book is not None:
            return book
        stored = await self.backend.get_entity(BOOKS, userid)
        book = self.cache.get(userid)  # another caller loaded it meanwhile: that one
        if book is None:
            book = Entity.from_doc(stored.doc) if stored is not None else Entity(userid)
            self.cache[userid] = book
        return book

    def save(self, books: Iterable[Entity]) -> defer.Deferred[bool]:
        """Store *books* (with every other save asked for in this reactor turn); fires
        True once storage acknowledged them all."""
        for b in books:
            self._pending[int(b.id)] = b
        d: defer.Deferred[bool] = defer.Deferred()
        self._waiters.append(d)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self._flush)
        return d

    def _flush(self) -> None:
        self._flush_call = None
        pending, self._pending = list(self._pending.values()), {}
        waiters, self._waiters = self._waiters, []

        async def run() -> bool:
            report = await self.saver.save([(b, 0) for b in pending])
            return report.ok

        def done(result: Any) -> None:
            ok = result is True
            if not ok:
                log.warn("march books: save of {n} failed: {r}", n=len(pending), r=result)
            for w in waiters:
                w.callback(ok)

        defer.Deferred.fromCoroutine(run()).addBoth(done)


class MarchService(Service):
    """The ``march`` service of a map node (module docstring)."""

    name = "march"

    def __init__(self, node: Any, world: World, *, fence: PlayerFence | None = None,
                 books: Books | None = None, scheduler: Scheduler | None = None) -> None:
        self.node = node
        self.world = world
        self.state = world.state
        self.fence = fence
        self.clock = node.reactor
        self.scheduler = scheduler or Scheduler(self.clock, now_ms=self.now_ms)
        self.scheduler.on(ARRIVE, self._arrive)
        self.scheduler.on(GATHERED, self._gathered)
        self.scheduler.on(HOME, self._home)
        self.books = books
        self.locks = KeyedLock()
        self.by_tid: dict[str, int] = {}
        self.owned: dict[int, set[int]] = {}
        self.loaded = False
        #: an ordered shutdown began: the scheduler stays paused until the restart
        self.stopping = False
        #: counters: arrivals at a target, homecomings credited, battles
        self.arrivals = 0
        self.homecomings = 0
        self.battles = 0
        registry = getattr(node, "registry", None)
        self.metrics = MarchMetrics(registry if registry is not None
                                    else CollectorRegistry(), self)

    # -- time, setup ----------------------------------------------------------------------

    def now_ms(self) -> int:
        now = getattr(self.world, "now_ms", None)
        if now is not None:
            return int(now())
        return int(self.clock.seconds() * 1000)

    def load(self) -> int:
        """Index and schedule every march of the loaded world (once, before the scheduler
        starts); how many."""
        for march in list(self.state.marches.values()):
            self._index(march)
            event, due = march.get("event"), march.get("due_ms")
            if event in (ARRIVE, GATHERED, HOME) and due is not None:
                self.scheduler.schedule(int(march.id), int(due), event)
            else:
                log.warn("march {id} has no event; sent home", id=march.id)
                self._turn_home(march)
        self.loaded = True
        return len(self.state.marches)

    def _index(self, march: Entity) -> None:
        mid = int(march.id)
        tid = march.get("tid")
        if tid:
            self.by_tid[tid] = mid
        self.owned.setdefault(march["owner"], set()).add(mid)

    def _unindex(self, march: Entity) -> None:
        mid = int(march.id)
        tid = march.get("tid")
        if tid and self.by_tid.get(tid) == mid:
            del self.by_tid[tid]
        mine = self.owned.get(march["owner"])
        if mine is not None:
            mine.discard(mid)
            if not mine:
                del self.owned[march["owner"]]

    def marches_of(self, userid: int) -> list[Entity]:
        return [self.state.marches[m] for m in sorted(self.owned.get(userid, ()))
                if m in self.state.marches]

    def _moved_to(self, userid: int) -> int:
        """The map *userid*'s city moved to from here: 0 if it is here or never moved
        away, -1 if that is not known yet (the map's moves are still loading)."""
        if self.world.city_of(userid) is not None:
            return 0
        movecity = self.node.cluster.services.get("movecity")
        if movecity is None:
            return 0
        if not movecity.loaded:
            return -1
        return int(movecity.moved_to(userid))

    async def unpulled(self, userid: int) -> bool:
        """Whether *userid*'s book here holds transfers its role node has not pulled yet
        (a city must not leave the map with them: pulls go to the city's map)."""
        if self.books is None:
            return False
        async with self.locks(userid):
            return bool(transfer.entries(await self.books.get(userid)))

    async def _fenced(self, userid: int, generation: Any, what: str) -> None:
        if self.fence is not None:
            await self.fence.check(userid, generation, what)

    def _book_store(self) -> Books:
        if self.books is None:
            raise RuntimeError("march books are not set up on this node")
        return self.books

    # -- client requests (from role nodes) ------------------------------------------------

    @handler
    async def start(self, userid: int, generation: int, tid: str,
                    request: dict[str, Any]) -> dict[str, Any]:
        """Start the march of transfer *tid*: ``request`` = ``{"type", "x", "y",
        "troops"}``. Idempotent by *tid*; saved before OK. Codes of MarchStart."""
        await self.world.ready
        transfer.check_ids([tid])
        await self._fenced(userid, generation, "march_start")
        async with self.locks(userid):
            mid = self.by_tid.get(tid)
            if mid is not None and mid in self.state.marches:
                return {"code": int(E.OK), "march": march_view(self.state.marches[mid])}
            book = await self._book_store().get(userid)
            if tid in book.components.get("returned", {}):
                return {"code": int(E.OK), "march": None}  # it came home already
            return await self._start(userid, tid, request)

    async def _start(self, userid: int, tid: str, request: dict[str, Any]) -> dict[str, Any]:
        tables = tables_or_none()
        city = self.state.city_of(userid)
        if city is None:
            return {"code": int(E.MARCH_NO_CITY), "march": None}
        army = {str(t): int(n) for t, n in (request.get("troops") or {}).items() if n}
        types = _troop_types(tables)
        if not army or any(t not in types or n <= 0 for t, n in army.items()):
            return {"code": int(E.BAD_REQUEST), "march": None}
        x, y = int(request.get("x", -1)), int(request.get("y", -1))
        target = self.state.at(x, y) if self.state.inside(x, y) else None
        dist = ((x - city["x"]) ** 2 + (y - city["y"]) ** 2) ** 0.5
        code = marches.check_target(str(request.get("type")), target, userid, dist,
                                    len(self.owned.get(userid, ())), tables)
        if code != E.OK:
            return {"code": int(code), "march": None}
        assert target is not None
        now = self.now_ms()
        attrs = marches.new_march(userid, str(request["type"]), army, city, target, tid, now,
                                  tables)
        march = Entity(self.state.new_id(), attrs=attrs)
        self._add(march)
        crashpoint("before_march_save")
        # the target too: a point or monster placed since the world's last save must not
        # vanish under an acknowledged march if the node dies now
        saved = await self._save_now([march, target])
        if not saved:
            self._drop(march)
            log.warn("march {tid} of {userid}: not saved; refused", tid=tid, userid=userid)
            return {"code": int(E.RETRY_LATER), "march": None}
        crashpoint("after_march_save")
        self.metrics.count("started")
        log.info("march {id} of {userid} ({type}) to ({x}, {y}) arrives at {arrive}",
                 id=march.id, userid=userid, type=attrs["type"], x=x, y=y,
                 arrive=attrs["arrive_ms"])
        return {"code": int(E.OK), "march": march_view(march)}

    @handler
    async def recall(self, userid: int, generation: int, march_id: int) -> dict[str, Any]:
        """Turn march *march_id* home from where it is now (a gathering march keeps what
        it loaded so far). Codes of MarchRecall."""
        await self.world.ready
        await self._fenced(userid, generation, "march_recall")
        async with self.locks(userid):
            march = self.state.marches.get(int(march_id))
            if march is None or march["owner"] != userid:
                return {"code": int(E.MARCH_NOT_FOUND), "march": None}
            if march["state"] == "returning":
                return {"code": int(E.MARCH_ALREADY_RETURNING), "march": march_view(march)}
            if march["state"] == "staying":
                self._take_gathered(march)
            self._turn_home(march)
            self.metrics.count("recalled")
            saved = await self._save_now([march])
            if not saved:  # still turned: the periodic save keeps it; tell the client
                return {"code": int(E.RETRY_LATER), "march": march_view(march)}
            return {"code": int(E.OK), "march": march_view(march)}

    @handler(name="list")
    async def list_marches(self, userid: int) -> dict[str, Any]:
        """The player's marches in flight and city (plain data)."""
        await self.world.ready
        city = self.state.city_of(userid)
        return {"marches": [march_view(m) for m in self.marches_of(userid)],
                "city": None if city is None else entity_pb(city).SerializeToString()}

    @handler
    async def targets(self, x: int, y: int, radius: int,
                      around_of: int = 0) -> list[bytes] | None:
        """Resource points and monsters within *radius* tiles of (x, y) — of the city of
        *around_of* when given (None if it has none) — nearest first (MapEntity bytes, at
        most MAX_TARGETS)."""
        await self.world.ready
        if around_of:
            city = self.state.city_of(around_of)
            if city is None:
                return None
            x, y = city["x"], city["y"]
        radius = max(1, min(MAX_RADIUS, int(radius)))
        blocks = self.state.blocks_of_rect(x - radius, y - radius, 2 * radius + 1,
                                           2 * radius + 1)
        entities, _ = self.state.in_blocks(blocks)
        found = sorted((e for e in entities if e["kind"] in ("resource", "monster")
                        and (e["x"] - x) ** 2 + (e["y"] - y) ** 2 <= radius * radius),
                       key=lambda e: ((e["x"] - x) ** 2 + (e["y"] - y) ** 2, int(e.id)))
        return [entity_pb(e).SerializeToString() for e in found[:MAX_TARGETS]]

    # -- the ledger home (source side of the transfers to the player) ------------------------

    @handler
    async def take_transfers(self, userid: int, generation: int) -> list[dict[str, Any]]:
        """Step 1 of the pull of what came home: mark and hand the entries (saved)."""
        await self.world.ready
        async with self.locks(userid):
            book = await self._book_store().get(userid)
            if not transfer.entries(book):
                return []
            await self._fenced(userid, generation, "take_transfers")
            handed = transfer.take(book, userid, generation)
            if book.dirty and not await self._book_store().save([book]):
                raise RuntimeError(f"march book of {userid} not saved")
            return handed

    @handler
    async def confirm_transfers(self, userid: int, generation: int, ids: list[str]) -> int:
        """Step 3: delete the entries the instance applied and saved (saved)."""
        ids = transfer.check_ids(ids)
        async with self.locks(userid):
            book = await self._book_store().get(userid)
            await self._fenced(userid, generation, "confirm_transfers")
            n = transfer.confirm(book, userid, generation, ids)
            if n and not await self._book_store().save([book]):
                raise RuntimeError(f"march book of {userid} not saved")
            return n

    @handler
    async def grant_troops(self, userid: int, troops: dict[str, int],
                           key: str | None = None) -> dict[str, Any]:
        """GM: give *userid* troops, online or offline (a ``troops`` transfer in the
        player's book, saved before the answer; *key* makes a retry idempotent)."""
        types = _troop_types(tables_or_none())
        if not troops or any(t not in types or type(n) is not int or n <= 0
                             for t, n in troops.items()):
            return {"code": int(E.BAD_REQUEST), "transfer_id": None}
        tid = f"{LEDGER}-gm{key}" if key else None
        if tid is not None:
            transfer.check_ids([tid])
        moved = self._moved_to(userid)
        if moved:
            # the city left this map (-1: the moves here are not loaded yet, so not known):
            # a grant here would wait in a book nobody pulls
            return {"code": int(E.RETRY_LATER), "transfer_id": None, "moved_to": max(moved, 0)}
        async with self.locks(userid):
            book = await self._book_store().get(userid)
            # a keyed grant is remembered after it was credited (its ledger entry is gone
            # then): a retry with the key gives nothing twice
            granted = book.component("granted")
            if tid is None or tid not in granted:
                tid = transfer.add(book, LEDGER, "troops", {"troops": dict(troops)},
                                   transfer_id=tid)
                if key:
                    granted[tid] = self.now_ms()
                    _prune(granted, self.now_ms())
                book.mark_dirty()
            if book.dirty and not await self._book_store().save([book]):
                return {"code": int(E.RETRY_LATER), "transfer_id": tid}
        self._tell_owner_to_pull(userid)
        return {"code": int(E.OK), "transfer_id": tid}

    # -- the events ---------------------------------------------------------------------

    def _arrive(self, mid: int) -> None:
        self._guarded(mid, self._arrive_now)

    def _gathered(self, mid: int) -> None:
        self._guarded(mid, self._gathered_now)

    def _guarded(self, mid: int, step: Any) -> None:
        """Run an event's step; if it fails (a bug, a bad hot fix) the march is sent home
        rather than left out with no event."""
        try:
            step(mid)
        except Exception:
            log.failure("march {mid}: event failed; sent home", mid=mid)
            march = self.state.marches.get(mid)
            if march is not None and self.scheduler.pending(mid) is None:
                try:
                    self._turn_home(march)
                except Exception:
                    log.failure("march {mid}: cannot send it home; retried", mid=mid)
                    self.scheduler.schedule(mid, self.now_ms() + HOME_RETRY_MS, HOME)

    def _arrive_now(self, mid: int) -> None:
        march = self.state.marches.get(mid)
        if march is None:
            return
        self.arrivals += 1
        self.metrics.count("arrived")
        now = self.now_ms()
        target = self.state.entities.get(int(march.get("target") or 0))
        if march["type"] == "gather":
            if (target is not None and target["kind"] == "resource"
                    and target.get("owner", 0) in (0, march["owner"])
                    and int(target.get("amount", 0) or 0) > 0
                    and marches.room(march, tables_or_none()) > 0):
                self._occupy(target, march["owner"])
                self._update(march, marches.stay(march, target, now, tables_or_none()))
                self.scheduler.schedule(mid, march["due_ms"], GATHERED)
                self._notify(march, "gathering")
                return
        elif target is not None and target["kind"] == "monster":
            self._fight(march, target, now)
        self._turn_home(march)

    def _gathered_now(self, mid: int) -> None:
        march = self.state.marches.get(mid)
        if march is None:
            return
        self._take_gathered(march, full=True)
        self.metrics.count("gathered")
        self._turn_home(march)

    def _take_gathered(self, march: Entity, *, full: bool = False) -> None:
        """Load what the staying march gathered (all it planned when *full*), free the
        point."""
        point = self.state.entities.get(int(march.get("target") or 0))
        if point is None or point["kind"] != "resource":
            return
        tables = tables_or_none()
        want = marches.room(march, tables) if full else \
            marches.gathered_so_far(march, self.now_ms(), tables)
        got = self._take_resource(point, want) if want > 0 else 0
        if got:
            marches.add_load(march, {point["resource"]: got})
        if int(point.id) in self.state.entities and point.get("owner", 0) == march["owner"]:
            self._occupy(point, 0)

    def _fight(self, march: Entity, monster: Entity, now: int) -> None:
        tables = tables_or_none()
        report = battles.fight(march["army"], int(monster.get("level", 1) or 1),
                               int(march.id), int(monster.id), _troop_types(tables), tables)
        self.battles += 1
        self.metrics.count("battle")
        report.update({"monster_id": int(monster.id), "monster_level":
                       int(monster.get("level", 1) or 1), "x": monster["x"], "y": monster["y"],
                       "time_ms": now})
        march["army"] = report["army_after"]
        march["troops"] = sum(report["army_after"].values())
        if report["won"]:
            self._defeat(monster)
            marches.add_load(march, report["rewards"])
        march["report"] = report
        self._send_report(march["owner"], int(march.id), report)

    def _turn_home(self, march: Entity) -> None:
        self._update(march, marches.go_home(march, self.now_ms()))
        self.scheduler.schedule(int(march.id), march["due_ms"], HOME)
        self._notify(march, "returning")

    async def _home(self, mid: int) -> None:
        try:
            await self._home_now(mid)
        except Exception:
            # storage or a bug: the march stays out and comes home again shortly
            log.failure("march {mid} home failed; retried in {s} s", mid=mid,
                        s=HOME_RETRY_MS // 1000)
            if mid in self.state.marches and self.scheduler.pending(mid) is None:
                self.scheduler.schedule(mid, self.now_ms() + HOME_RETRY_MS, HOME)

    async def _home_now(self, mid: int) -> None:
        march = self.state.marches.get(mid)
        if march is None:
            return
        owner = march["owner"]
        async with self.locks(owner):
            books = self._book_store()
            book = await books.get(owner)
            returned = book.component("returned")
            tid = march.get("tid") or return_tid(self.state.map_id, mid)
            if tid not in returned:
                items = marches.return_items(march)
                transfer.add(book, LEDGER, "return", items,
                             transfer_id=return_tid(self.state.map_id, mid),
                             now_ms=self.now_ms())
                returned[tid] = self.now_ms()
                _prune(returned, self.now_ms())
                book.mark_dirty()
            if book.dirty and not await books.save([book]):
                # not stored: the march stays out and comes home again shortly
                log.warn("march {mid} home: book of {owner} not saved; retried", mid=mid,
                         owner=owner)
                self.scheduler.schedule(mid, self.now_ms() + HOME_RETRY_MS, HOME)
                return
            crashpoint("after_march_home_book")
            self.homecomings += 1
            self.metrics.count("home")
            self._drop(march)
        self._notify(march, "home")
        self._tell_owner_to_pull(owner)

    # -- the world ----------------------------------------------------------------------

    def _add(self, march: Entity) -> None:
        self.state.add_march(march)
        self._index(march)
        self.scheduler.schedule(int(march.id), march["due_ms"], march["event"])

    def _drop(self, march: Entity) -> None:
        self.scheduler.cancel(int(march.id))
        self._unindex(march)
        # the world's listener turns the removal into a tombstone: storage forgets it
        self.state.remove_march(int(march.id))

    def _update(self, march: Entity, changes: Mapping[str, Any]) -> None:
        for k, v in changes.items():
            march[k] = v
        self.state.add_march(march)  # the line turns: watchers see the new one

    async def _save_now(self, entities: list[Entity]) -> bool:
        save = getattr(self.world, "save_now", None)
        if save is None:  # a world without persistence (unit tests)
            return True
        try:
            return bool(await save(entities))
        except Exception as error:  # answered as a failed save (RETRY_LATER), never OK
            log.warn("world save of {ids} failed: {error}", ids=[x.id for x in entities],
                     error=error)
            return False

    def _occupy(self, point: Entity, userid: int) -> None:
        occupy = getattr(self.world, "occupy", None)
        if occupy is not None:
            occupy(point, userid)
        else:
            self.state.update(point, owner=userid)

    def _take_resource(self, point: Entity, amount: int) -> int:
        take = getattr(self.world, "take_resource", None)
        if take is not None:
            return int(take(point, amount))
        got = min(amount, int(point.get("amount", 0) or 0))
        self.state.update(point, amount=int(point["amount"]) - got)
        return got

    def _defeat(self, monster: Entity) -> None:
        defeat = getattr(self.world, "defeat", None)
        if defeat is not None:
            defeat(monster)
        else:
            self.state.remove(int(monster.id))

    # -- telling the owner ----------------------------------------------------------------

    def _online_node(self, userid: int) -> str | None:
        cache = self.node.cluster.services.get("rolecache")
        where: Mapping[int, str] = getattr(cache, "where", {})
        return where.get(userid)

    def _notify(self, march: Entity, what: str) -> None:
        node = self._online_node(march["owner"])
        if node is None:
            return
        from rltwist.nodes.common.reach import send_located

        send_located(self.node.cluster, {march["owner"]: node},
                     pb.MarchNotify(event=NOTIFY_EVENT[what], march=march_info(march)))

    def _tell_owner_to_pull(self, userid: int) -> None:
        node = self._online_node(userid)
        if node is None:
            return  # the next Auth pulls
        try:
            self.node.cluster.send(node, "marchpull", "pull", userid)
        except ClusterError as e:
            log.warn("cannot tell {node} to pull the marches of {userid}: {e}", node=node,
                     userid=userid, e=e)

    def _send_report(self, owner: int, mid: int, report: dict[str, Any]) -> None:
        battle = self.node.cluster.services.get("battle")
        if battle is not None:
            battle.report(owner, mid, report)


def _troop_types(tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
    from rltwist.game.marchsystem import troop_table

    types: Mapping[str, Any] = troop_table(tables)["types"]
    return types


def _prune(returned: dict[str, int], now_ms: int) -> None:
    old = [t for t, ms in returned.items() if now_ms - int(ms) > RETURNED_DAYS * DAY_MS]
    for t in old:
        del returned[t]
