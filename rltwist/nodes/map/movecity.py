"""movecity: the move-city saga of a map node (issue 14 "Move city"; docs/world.md
"Moving a city").

A move of a city from this map (A) to map B is a **saga owned by A**: the ``movecity``
service keeps one document per player who moved from here (collection ``movecity`` of
A's region database, id = userid; attribute ``saga``, component ``ledger``) and saves it
before each step's effect, so a restarted A resumes every unfinished saga
(:meth:`MoveCity.resume_all`). Steps, each one idempotent by the saga id (the role
node's request id):

1. ``reserve`` — ask B (``movecity.reserve``) to reserve the tile: B stores the
   reservation in its world's ``meta`` (placement and spawns pass the tile over).
   A refusal (taken, blocked, outside, map full) ends the saga ``failed`` with that code:
   nothing moved.
2. ``remove`` — take the city off A and store its removal (``World.remove_city``).
3. ``commit`` — ask B (``movecity.commit``) to turn the reservation into the city (stored
   before it answers).
4. ``done`` — the same save records a transfer in the player's ledger here (kind
   ``movecity``: ``mapid`` = B, the cost), pulled by the player's role node like march
   returns (ledger ``movecity<A>``; ``take_transfers``/``confirm_transfers``, fenced by
   the player's generation):
   online at once (A tells the role node to pull), offline at the next Auth.

B unreachable (or answering RETRY_LATER): the step is tried again after a backoff (0.5 s
doubling to 30 s, for as long as it takes); the client's MoveCity is answered
RETRY_LATER after ``WAIT_SECONDS`` while the saga goes on. Crash points
``movecity_after_<step>`` (after the step's effect, before its record is saved) and, on
the target, ``movecity_reserved_here`` / ``movecity_committed_here`` (stored, not
answered) let tests kill either map at each step.

While a player's saga runs or its transfer is not taken yet, the world of A refuses to
place a new city for it (``World.placement_guard``): the city must be on one map only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.crashpoint import crashpoint
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.nodes.common import transfer
from rltwist.nodes.common.keylock import KeyedLock
from rltwist.nodes.common.saver import Saver
from rltwist.nodes.map.world import World
from rltwist.protocols import pb

log = Logger()
E = pb.ErrorCode

COLLECTION = "movecity"
LEDGER = "movecity"
RESERVE, REMOVE, COMMIT, DONE, FAILED = "reserve", "remove", "commit", "done", "failed"
ENDED = (DONE, FAILED)
WAIT_SECONDS = 2.0
"""How long ``start`` waits for the saga's end before it answers RETRY_LATER."""
CALL_TIMEOUT = 5.0

move_system = import_system("rltwist.game.movecitysystem", service="movecity")


class MoveCity(Service):
    """The ``movecity`` service of a map node: source side (``start``, the saga, the
    player's ledger) and target side (``reserve``, ``commit``, ``release``)."""

    name = "movecity"

    def __init__(self, node: Any, world: World, backend: Any, *, fence: Any = None,
                 clock: Any = None, registry: Any = None) -> None:
        self.node = node
        self.world = world
        self.backend = backend
        self.fence = fence
        self.clock = clock if clock is not None else node.reactor
        self.books: dict[int, Entity] = {}
        self.locks = KeyedLock()
        self.driving: set[int] = set()
        self.waiters: dict[int, list[defer.Deferred[None]]] = {}
        self.loaded = False
        self.stopping = False
        self.saver = Saver(backend, COLLECTION, self._all, interval=60.0, clock=self.clock,
                           registry=registry, name=COLLECTION)
        world.placement_guard = self._guard

    # -- storage ----------------------------------------------------------------------------

    def _all(self) -> list[tuple[Entity, int]]:
        g = self.world.generation
        return [(b, g) for b in self.books.values()]

    async def load(self) -> int:
        """Read every player's document (after the world loaded); how many sagas are
        unfinished. Documents are few: one per player who ever moved away from here."""
        await self.world.ready
        for eid, doc in await self.backend.find(COLLECTION, {}):
            book = Entity.from_doc({**doc, "_id": eid})
            self.books[int(book.id)] = book
        self.loaded = True
        return sum(1 for b in self.books.values() if _live(b))

    def resume_all(self) -> int:
        """Drive every unfinished saga (at start); how many."""
        live = [u for u, b in self.books.items() if _live(b)]
        for userid in live:
            self._drive(userid)
        if live:
            log.info("map {map}: resuming {n} city moves", map=self.world.map_id, n=len(live))
        return len(live)

    def _book(self, userid: int) -> Entity:
        book = self.books.get(userid)
        if book is None:
            book = self.books[userid] = Entity(userid, attrs={"saga": None})
        return book

    async def _store(self, book: Entity) -> bool:
        book.mark_dirty()
        if self.world.fenced:
            return False
        report = await self.saver.save([(book, self.world.generation)])
        return bool(report.ok)

    def _guard(self, userid: int) -> int:
        """World.placement_guard: no new city here while the player's city is moving
        away or has moved and the player has not taken the move yet."""
        book = self.books.get(userid)
        if book is None:
            return 0
        saga = book.get("saga")
        if (saga and saga["step"] not in (FAILED,)
                and (saga["step"] != DONE or transfer.entries(book))):
            return int(E.RETRY_LATER)
        return 0

    # -- source side: the client's move -----------------------------------------------------

    @handler
    async def start(self, userid: int, generation: int, req: str, target: int, x: int,
                    y: int, cost: Mapping[str, int]) -> dict[str, Any]:
        """Start (or ask about) the move *req* of *userid*'s city to map *target*, tile
        (x, y) (0, 0: any). Idempotent by *req*. ``{"code", "map_id"}``: OK once the city
        is on *target*; RETRY_LATER while the saga goes on; a refusal code otherwise.
        A player whose last move is still under way gets that move's answer."""
        await self.world.ready
        if not self.loaded:
            return {"code": int(E.RETRY_LATER), "map_id": self.world.map_id}
        if self.fence is not None:
            await self.fence.check(userid, generation, "movecity")
        async with self.locks(userid):
            book = self._book(userid)
            saga = book.get("saga")
            if not (saga and (saga["id"] == req or saga["step"] not in ENDED)):
                code = self._refusal(userid, target) or await self._returns_waiting(userid)
                if code:
                    return {"code": code, "map_id": self.world.map_id}
                city = self.world.city_of(userid)
                assert city is not None
                saga = {"id": req, "userid": userid, "src": self.world.map_id,
                        "dst": int(target), "x": int(x), "y": int(y),
                        "cost": {k: int(v) for k, v in cost.items()}, "step": RESERVE,
                        "code": 0, "tid": transfer.new_transfer_id(ledger_name(
                            self.world.map_id)),
                        "started_ms": self.world.now_ms()}
                old = book.get("saga")
                book["saga"] = saga
                if not await self._store(book):
                    book["saga"] = old
                    return {"code": int(E.RETRY_LATER), "map_id": self.world.map_id}
                log.info("map {map}: move {req} of the city of {userid} to map {dst} "
                         "started", map=self.world.map_id, req=req, userid=userid,
                         dst=target)
        self._drive(userid)
        return await self._answer(userid, saga["id"])

    def _refusal(self, userid: int, target: int) -> int:
        if int(target) == self.world.map_id:
            return int(E.MOVE_BAD_REGION)
        cluster = self.node.cluster
        if cluster.map_node(int(target)) not in cluster.addresses:
            return int(E.MOVE_BAD_REGION)
        if self.world.city_of(userid) is None:
            book = self.books.get(userid)
            if book is not None and transfer.entries(book):
                # moved away already and not taken yet: the role node pulls, then asks
                return int(E.RETRY_LATER)
            # not on this map (the player's mapid was out of date, or no city yet)
            return int(E.BAD_REQUEST)
        marches = cluster.services.get("march")
        if marches is not None and hasattr(marches, "marches_of") \
                and marches.marches_of(userid):
            return int(E.MOVE_MARCHES_OUT)
        return 0

    async def _returns_waiting(self, userid: int) -> int:
        """RETRY_LATER while the player's march book here holds what its role node has
        not pulled (the role node pulls before it asks; a march home or a GM grant landed
        in between): after the move its pulls go to the new map, and these would wait."""
        marches = self.node.cluster.services.get("march")
        if marches is not None and await marches.unpulled(userid):
            return int(E.RETRY_LATER)
        return 0

    def moved_to(self, userid: int) -> int:
        """The map *userid*'s city moved to from here by its last move (0: none)."""
        book = self.books.get(userid)
        saga = book.get("saga") if book is not None else None
        if saga and saga["step"] == DONE and int(saga["src"]) == self.world.map_id:
            return int(saga["dst"])
        return 0

    async def _answer(self, userid: int, req: str) -> dict[str, Any]:
        """Wait up to WAIT_SECONDS for the end of saga *req*; its answer."""
        saga = self._book(userid).get("saga")
        if saga is not None and saga["id"] == req and saga["step"] not in ENDED:
            d: defer.Deferred[None] = defer.Deferred()
            self.waiters.setdefault(userid, []).append(d)
            d.addTimeout(WAIT_SECONDS, self.clock, onTimeoutCancel=lambda *_: None)
            await d
            saga = self._book(userid).get("saga")
        if saga is None or saga["id"] != req:
            return {"code": int(E.RETRY_LATER), "map_id": self.world.map_id}
        if saga["step"] == DONE:
            return {"code": int(E.OK), "map_id": saga["dst"]}
        if saga["step"] == FAILED:
            return {"code": int(saga["code"]), "map_id": self.world.map_id}
        return {"code": int(E.RETRY_LATER), "map_id": self.world.map_id}

    # -- the saga -----------------------------------------------------------------------------

    def _drive(self, userid: int) -> None:
        if userid in self.driving:
            return
        self.driving.add(userid)

        def done(result: Any) -> None:
            self.driving.discard(userid)
            for w in self.waiters.pop(userid, []):
                if not w.called:
                    w.callback(None)
            if isinstance(result, Exception) or hasattr(result, "getTraceback"):
                log.failure("map {map}: move of {userid} stopped", result,
                            map=self.world.map_id, userid=userid)

        defer.Deferred.fromCoroutine(self._run(userid)).addBoth(done)

    async def _run(self, userid: int) -> None:
        book = self._book(userid)
        attempt = 0
        while not self.stopping:
            saga = book["saga"]
            step = saga["step"]
            if step in ENDED:
                break
            try:
                moved_on = await self._step(book, saga)
            except (ClusterError, RuntimeError) as e:
                log.warn("map {map}: move {req} of {userid}, step {step}: {e}; retried",
                         map=self.world.map_id, req=saga["id"], userid=userid, step=step,
                         e=e)
                moved_on = False
            if moved_on:
                attempt = 0
                continue
            attempt += 1
            await task.deferLater(self.clock, move_system.backoff(attempt), lambda: None)
        saga = book["saga"]
        if saga["step"] == DONE:
            self._tell_to_pull(userid)

    async def _save_step(self, book: Entity, saga: dict[str, Any], **changes: Any) -> bool:
        new = {**saga, **changes}
        book["saga"] = new
        if await self._store(book):
            return True
        book["saga"] = saga  # not stored: the step runs again
        return False

    async def _step(self, book: Entity, saga: dict[str, Any]) -> bool:
        """Run the saga's current step; True when it moved on (stored)."""
        cluster = self.node.cluster
        userid, key, step = saga["userid"], saga["id"], saga["step"]
        target = cluster.map_node(saga["dst"])
        if step == RESERVE:
            ans = await cluster.call(target, "movecity", "reserve", key, userid,
                                     saga["x"], saga["y"], timeout=CALL_TIMEOUT)
            crashpoint("movecity_after_reserve")
            code = int(ans["code"])
            if code == E.RETRY_LATER:
                return False
            if code != E.OK:
                log.info("map {map}: move {req} of {userid} refused by map {dst}: {code}",
                         map=self.world.map_id, req=key, userid=userid, dst=saga["dst"],
                         code=E.Name(code))
                return await self._save_step(book, saga, step=FAILED, code=code)
            return await self._save_step(book, saga, step=REMOVE, x=ans["x"], y=ans["y"])
        if step == REMOVE:
            attrs = await self.world.remove_city(userid)
            crashpoint("movecity_after_remove")
            keep = saga.get("city") or {}
            if attrs is not None:
                keep = {k: v for k, v in attrs.items()
                        if k in ("name", "level", "guildid")}
            return await self._save_step(book, saga, step=COMMIT, city=keep)
        if step == COMMIT:
            ans = await cluster.call(target, "movecity", "commit", key, userid,
                                     saga.get("city") or {}, timeout=CALL_TIMEOUT)
            crashpoint("movecity_after_commit")
            if int(ans["code"]) != E.OK:
                return False
            transfer.add(book, ledger_name(saga["src"]), "movecity",
                         {"mapid": saga["dst"], "from": saga["src"], "cost": saga["cost"],
                          "req": key}, transfer_id=saga["tid"], now_ms=self.world.now_ms())
            ok = await self._save_step(book, saga, step=DONE, code=int(E.OK),
                                       done_ms=self.world.now_ms())
            if ok:
                crashpoint("movecity_after_done")
                log.info("map {map}: city of {userid} moved to map {dst} (move {req})",
                         map=self.world.map_id, userid=userid, dst=saga["dst"], req=key)
            return ok
        raise RuntimeError(f"unknown step {step!r}")

    def _tell_to_pull(self, userid: int) -> None:
        cache = self.node.cluster.services.get("rolecache")
        where: Mapping[int, str] = getattr(cache, "where", {})
        node = where.get(userid)
        if node is None:
            return  # offline: the next Auth pulls
        try:
            self.node.cluster.send(node, "movecitypull", "pull", userid)
        except ClusterError as e:
            log.warn("cannot tell {node} to pull the move of {userid}: {e}", node=node,
                     userid=userid, e=e)

    # -- source side: the player's ledger -------------------------------------------------

    @handler
    async def take_transfers(self, userid: int, generation: int) -> list[dict[str, Any]]:
        """Step 1 of the pull of the player's move (saved before the answer)."""
        await self.world.ready
        async with self.locks(userid):
            book = self.books.get(userid)
            if book is None or not transfer.entries(book):
                return []
            if self.fence is not None:
                await self.fence.check(userid, generation, "take_transfers")
            handed = transfer.take(book, userid, generation)
            if book.dirty and not await self._store(book):
                raise RuntimeError(f"move book of {userid} not saved")
            return handed

    @handler
    async def confirm_transfers(self, userid: int, generation: int, ids: list[str]) -> int:
        """Step 3: delete the entries the player's instance applied and saved."""
        ids = transfer.check_ids(ids)
        async with self.locks(userid):
            book = self.books.get(userid)
            if book is None:
                return 0
            if self.fence is not None:
                await self.fence.check(userid, generation, "confirm_transfers")
            n = transfer.confirm(book, userid, generation, ids)
            if n and not await self._store(book):
                raise RuntimeError(f"move book of {userid} not saved")
            return n

    @handler
    async def status(self, userid: int) -> dict[str, Any] | None:
        """Operator and test view: the player's last saga here and its ledger ids."""
        await self.world.ready
        book = self.books.get(userid)
        if book is None:
            return None
        return {"saga": book.get("saga"), "ledger": sorted(transfer.entries(book))}

    # -- target side ---------------------------------------------------------------------------

    @handler
    async def reserve(self, key: str, userid: int, x: int, y: int) -> dict[str, Any]:
        """Reserve the tile for saga *key* on this map (``World.reserve``)."""
        ans = await self.world.reserve(key, userid, x, y)
        crashpoint("movecity_reserved_here")  # stored, not answered
        return ans

    @handler
    async def commit(self, key: str, userid: int, attrs: dict[str, Any]) -> dict[str, Any]:
        """Put the city of saga *key* on its reserved tile (``World.commit``)."""
        ans = await self.world.commit(key, userid, attrs)
        crashpoint("movecity_committed_here")  # stored, not answered
        return ans

    @handler
    async def release(self, key: str) -> bool:
        """Drop saga *key*'s reservation (``World.release``)."""
        return await self.world.release(key)

    @handler
    async def reservations(self) -> dict[str, list[int]]:
        """Operator and test view: ``{saga id: [x, y, userid]}`` reserved here."""
        await self.world.ready
        return self.world.reservations()


def ledger_name(map_id: int) -> str:
    """The move ledger's name on map *map_id* (``movecity<id>``): one name per source
    map, so a player's inbox tells apart what it applied from each map (a pull from one
    map forgets only that map's applied ids)."""
    return f"{LEDGER}{int(map_id)}"


def _live(book: Entity) -> bool:
    saga = book.get("saga")
    return bool(saga) and saga["step"] not in ENDED


def new_request_id() -> str:
    """A fresh move request id (the saga id)."""
    return uuid.uuid4().hex
