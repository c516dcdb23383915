"""world: the region's map on ``map<sid>`` (seed §5 map/world; docs/world.md).

The one :class:`World` service of a map node holds the map's :class:`WorldState`; the
other map services (aoiscene, aoibroadcast, march, battle) reach it in-process with
:func:`world_of` (features install in name order, so whichever comes first creates it).
``world.ready`` fires once the stored world is loaded; handlers that read the state await
it first.

Persistence (docs/world.md "Saving"): every world entity — cities, resource points,
monsters and the march lines in ``state.marches`` — is one document of collection
``world`` in the region's database, saved by a :class:`Saver` every
``[storage] save_interval`` seconds, at the map's shutdown phase and when the node stops;
:meth:`World.save_now` writes given entities at once (durable-at-OK answers). The
document ``meta`` holds ``last_id`` (ids are never reused), the city cursor, the spawn
counter and the respawns waiting; it goes with every save, so a stored entity never has
an id above the stored ``last_id``. A removed entity leaves a tombstone that is saved in
the order of the saves, then deleted (a save of the live entity still in flight can
never bring it back); tombstones found at load are deleted too. The map claims a new
fencing generation on ``meta`` at every start and every save writes ``meta`` first with
it: an old instance still running has that write refused and writes nothing more.

Data fixes of kind ``world`` (``<root>/hotfix/datafix/world``) run on every entity at
load and, through ``POST /datafix``, on the entities online. A world fix must not change
``kind``, ``x``, ``y`` or ``owner`` (the map's tile and owner indexes do not follow).

Rules (placement, spawns, refresh) live in ``rltwist.game.worldsystem``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.config import MapSettings
from rltwist.ecs import import_system
from rltwist.ecs.entity import Entity
from rltwist.game.terrain import blocked
from rltwist.nodes.common.saver import Saver, SaveReport
from rltwist.nodes.map.state import APPEAR, DISAPPEAR, MARCH, MARCH_END, WorldState, entity_pb
from rltwist.protocols import pb
from rltwist.storage import Delete, StaleGeneration

if TYPE_CHECKING:
    from rltwist.ecs.datafix import DataFixer
    from rltwist.nodes.common.node import Node
    from rltwist.storage import Backend

log = Logger()
E = pb.ErrorCode

DEFAULT_WIDTH = DEFAULT_HEIGHT = 512
DEFAULT_BLOCK = 16
COLLECTION = "world"
META = "meta"
TOMBSTONE = "deleted"
FIX_KIND = "world"
LOAD_RETRY_MAX = 30.0
DEFAULT_SPACING = 3

world_system = import_system("rltwist.game.worldsystem", service="world")


def _shared_tables() -> Mapping[str, Any] | None:
    from rltwist.nodes.common.sharedatad import tables_or_none

    # None: no tables in this process (a test's stand-in node)
    table: Mapping[str, Any] | None = (tables_or_none() or {}).get("world")
    return table


class World(Service):
    """The ``world`` service: the map's state, loaded at start and saved periodically.

    Built from its node (``world_of``); a node without storage (a test's stand-in) gets an
    in-memory world that is ready at once. Tests pass *backend*, *clock*, *tables* and
    *fixer* to drive it without processes, and call :meth:`start` / :meth:`stop`.
    """

    name = "world"

    def __init__(self, node: Any, *, backend: Backend | bool | None = True,
                 clock: Any = None, settings: MapSettings | None = None,
                 tables: Callable[[], Mapping[str, Any] | None] | None = None,
                 fixer: DataFixer | bool | None = True,
                 save_interval: float | None = None) -> None:
        self.node = node
        self.map_id = int(node.me.number or 0)
        config = getattr(node, "config", None)
        map_config = getattr(config, "map", None)
        if settings is None:
            settings = (map_config.map_for(self.map_id) if map_config is not None
                        else MapSettings(DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_BLOCK,
                                         self.map_id))
        self.settings = settings
        self.seed = int(settings.seed or 0)
        self.state = WorldState(self.map_id, settings.width, settings.height, settings.block)
        if clock is None:
            clock = getattr(node, "reactor", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        if backend is True:
            backend = None
            if config is not None and hasattr(node, "database"):
                from rltwist.nodes.common.dbproxy import region_db

                backend = node.database(region_db(self.map_id))
        self.backend: Backend | None = backend if not isinstance(backend, bool) else None
        self.tables = tables or _shared_tables
        if fixer is True:
            fixer = _node_fixer(node)
        self.fixer: DataFixer | None = fixer if not isinstance(fixer, bool) else None
        self.meta = Entity(META, 0, {"last_id": 0, "city_cursor": 0, "spawns": 0,
                                     "pending": []})
        self.generation = 0
        self.tombstones: dict[int, Entity] = {}
        self.loaded = False
        self.stopping = False
        #: a save was refused: a newer instance of this map claimed the world
        self.fenced = False
        #: fires once the stored world is loaded (handlers reading the state await it)
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.saver: Saver | None = None
        if save_interval is None:
            save_interval = float(getattr(getattr(config, "storage", None), "save_interval",
                                          300.0))
        self.save_interval = save_interval
        if self.backend is not None:
            self.saver = Saver(self.backend, COLLECTION, self._items,
                               interval=save_interval, clock=self.clock,
                               registry=getattr(node, "registry", None), name="world",
                               on_stale=self._stale)
        self._save_loop = task.LoopingCall(self._save_round)
        self._save_loop.clock = self.clock
        self._refresh_call: Any = None
        #: ``fn(userid) -> code`` (0: none) asked before placing a new city: the move-city
        #: saga answers RETRY_LATER for a player whose city is leaving or has left this
        #: map and who has not taken the move yet (a second city must not appear here)
        self.placement_guard: Callable[[int], int] | None = None
        self.state.listeners.append(self._changed)
        if self.backend is None:
            self._loaded()
        if isinstance(node, service.MultiService) and hasattr(node, "add_shutdown_handler"):
            # a real node: run with it
            _Keeper(self).setServiceParent(node)
            node.add_shutdown_handler("world", self.save_all)
            from rltwist.nodes.common.hotfix import register_online_entities

            register_online_entities(FIX_KIND, self.online_entities)
            registry = getattr(node, "registry", None)
            if registry is not None:
                registry.register(WorldCollector(self))

    # -- what the march and AOI services call in-process (docs/world.md) ---------------------

    def now_ms(self) -> int:
        """The map's clock in ms (the reactor's: a task.Clock in tests)."""
        return int(self.clock.seconds() * 1000)

    def new_id(self) -> int:
        """A new entity id of this map (never reused: ``last_id`` goes with every save)."""
        return self.state.new_id()

    def save_now(self, entities: Iterable[Entity]) -> defer.Deferred[bool]:
        """Write *entities* (and the map's ``meta``) now; fires True once stored, False on
        failure (they stay dirty and the periodic save retries them)."""
        return defer.Deferred.fromCoroutine(self._save_now(list(entities)))

    def add_entity(self, entity: Entity) -> None:
        """Put *entity* on the map (a march line if its kind is ``march``); it is saved
        with the next save (or ``save_now``)."""
        if entity.get("kind") == "march":
            self.state.add_march(entity)
        else:
            self.state.add(entity)

    def remove_entity(self, eid: int) -> Entity | None:
        """Take entity or march *eid* off the map; storage forgets it with the next save."""
        removed = self.state.remove(eid)
        if removed is None:
            removed = self.state.remove_march(eid)
        return removed

    def city_of(self, userid: int) -> Entity | None:
        """The city of *userid* on this map, or None."""
        return self.state.city_of(userid)

    def take_resource(self, point: Entity, amount: int) -> int:
        """Take up to *amount* from resource *point*; return what was taken. An emptied
        point leaves the map and a new one appears elsewhere after the respawn delay."""
        if self.state.entities.get(int(point.id)) is not point:
            return 0
        taken, left = world_system.take(point.get("amount", 0), amount)
        if left <= 0:
            self._retire(point)
        elif taken:
            self.state.update(point, amount=left)
        return taken

    def defeat(self, monster: Entity) -> None:
        """Monster *monster* was defeated: it leaves the map and a new one appears
        elsewhere after the respawn delay."""
        if self.state.entities.get(int(monster.id)) is monster:
            self._retire(monster)

    def occupy(self, point: Entity, userid: int) -> None:
        """Mark resource *point* as gathered by *userid* (0: free again)."""
        if self.state.entities.get(int(point.id)) is point and point.get("owner") != userid:
            self.state.update(point, owner=int(userid))

    # -- client-facing handlers ------------------------------------------------------------

    def info_pb(self) -> Any:
        """This map's MapInfo."""
        s = self.state
        return pb.MapInfo(map_id=self.map_id, width=s.width, height=s.height,
                          seed=self.seed, block=s.block)

    @handler
    def info(self) -> bytes:
        """The map's MapInfo, serialized."""
        return bytes(self.info_pb().SerializeToString())

    @handler
    async def ensure_city(self, userid: int, name: str = "", guildid: int = 0
                          ) -> dict[str, Any]:
        """The city of *userid*, placed now if the player has none (idempotent). OK means
        the city is stored. ``{"code", "map_id", "info": MapInfo bytes, "city": MapEntity
        bytes}``; codes OK, RETRY_LATER (not stored yet: ask again), MAP_FULL."""
        _check_id(userid)
        await self.ready
        city = self.state.city_of(userid)
        if city is None and self.placement_guard is not None:
            refused = self.placement_guard(userid)
            if refused:
                return {"code": int(refused), "map_id": self.map_id}
        if city is None:
            spacing = DEFAULT_SPACING
            table = self.tables()
            if table is not None:
                spacing = int(table["cities"]["spacing"])
            placed = world_system.place_city(self.state, self.seed,
                                             int(self.meta.get("city_cursor", 0)), spacing,
                                             self.is_blocked)
            if placed is None:
                log.warn("map {map}: no free tile for the city of {userid}", map=self.map_id,
                         userid=userid)
                return {"code": int(E.MAP_FULL), "map_id": self.map_id}
            x, y, cursor = placed
            self.meta["city_cursor"] = cursor
            city = Entity(self.new_id(), self._fresh_version(),
                          {"kind": "city", "x": x, "y": y, "owner": int(userid),
                           "name": str(name), "level": 1, "guildid": int(guildid)})
            self.state.add(city)
            log.info("map {map}: city of {userid} placed at ({x}, {y})", map=self.map_id,
                     userid=userid, x=x, y=y)
        else:
            self._refresh_city(city, name, guildid)
        if city.dirty and not await self.save_now([city]):
            return {"code": int(E.RETRY_LATER), "map_id": self.map_id}
        return {"code": int(E.OK), "map_id": self.map_id,
                "info": bytes(self.info_pb().SerializeToString()),
                "city": bytes(entity_pb(city).SerializeToString())}

    @handler
    async def refresh_city(self, userid: int, name: str, guildid: int) -> bool:
        """Bring the name and guild shown on *userid*'s city up to date (best effort, at
        each login); False if the player has no city here."""
        _check_id(userid)
        await self.ready
        city = self.state.city_of(userid)
        if city is None:
            return False
        self._refresh_city(city, name, guildid)
        return True

    def _refresh_city(self, city: Entity, name: str, guildid: int) -> None:
        changes: dict[str, Any] = {}
        if name and city.get("name") != name:
            changes["name"] = str(name)
        if city.get("guildid", 0) != guildid:
            changes["guildid"] = int(guildid)
        if changes:
            self.state.update(city, **changes)

    @handler
    async def summary(self) -> dict[str, Any]:
        """Operator and test view: counts by kind, dirty entities, ids, generation."""
        await self.ready
        kinds = Counter(e.get("kind") for e in self.state.entities.values())
        dirty = sum(1 for e, _ in self._items() if e.dirty)
        return {"map_id": self.map_id, "cities": kinds.get("city", 0),
                "resources": kinds.get("resource", 0), "monsters": kinds.get("monster", 0),
                "marches": len(self.state.marches), "dirty": dirty,
                "last_id": self.state.last_id, "generation": self.generation,
                "pending_respawns": len(self.meta.get("pending") or []),
                "saves": self.saver.rounds if self.saver is not None else 0}

    @handler
    async def entities(self, kind: str | None = None) -> list[list[Any]]:
        """Operator and test view: ``[id, kind, x, y, owner, level, amount]`` of every
        entity (of *kind*), by id."""
        await self.ready
        return [[int(e.id), e.get("kind"), e.get("x"), e.get("y"), e.get("owner", 0),
                 e.get("level", 0), e.get("amount", 0)]
                for _, e in sorted(self.state.entities.items())
                if kind is None or e.get("kind") == kind]

    # -- terrain ----------------------------------------------------------------------------

    def is_blocked(self, x: int, y: int) -> bool:
        """Whether tile (x, y) of this map is water or mountain, or reserved for a city
        moving here (placement and spawns pass it over)."""
        reserved = self.meta.get("reserved")
        if reserved and any(r[0] == x and r[1] == y for r in reserved.values()):
            return True
        return blocked(self.seed, x, y)

    # -- moving a city here (the move-city saga; docs/world.md "Moving a city") -------------

    def reservations(self) -> dict[str, list[int]]:
        """``{saga id: [x, y, userid]}``: tiles reserved for cities moving here."""
        return {k: list(v) for k, v in (self.meta.get("reserved") or {}).items()}

    def check_tile(self, x: int, y: int) -> int:
        """0 if a moving city may be put on tile (x, y), else its refusal code."""
        if not self.state.inside(x, y):
            return int(E.MOVE_TILE_OUTSIDE)
        if blocked(self.seed, x, y):
            return int(E.MOVE_TILE_BLOCKED)
        if self.state.at(x, y) is not None or self.is_blocked(x, y):
            return int(E.MOVE_TILE_TAKEN)
        return 0

    async def reserve(self, key: str, userid: int, x: int, y: int) -> dict[str, Any]:
        """Reserve tile (x, y) (both 0: the next free tile of the city spiral) for the
        city of *userid* moving here in saga *key*; stored before OK. Idempotent by
        *key* (the same tile again; OK too once committed). ``{"code", "x", "y"}``."""
        _check_id(userid)
        await self.ready
        reserved = self.reservations()
        if key in reserved:
            rx, ry, _ = reserved[key]
        else:
            city = self.state.city_of(userid)
            if city is not None:
                if city.get("moved_by") == key:  # committed already
                    return {"code": int(E.OK), "x": city["x"], "y": city["y"]}
                return {"code": int(E.MOVE_BAD_REGION), "x": 0, "y": 0}
            if x == 0 and y == 0:
                spacing = DEFAULT_SPACING
                table = self.tables()
                if table is not None:
                    spacing = int(table["cities"]["spacing"])
                placed = world_system.place_city(
                    self.state, self.seed, int(self.meta.get("city_cursor", 0)), spacing,
                    self.is_blocked)
                if placed is None:
                    return {"code": int(E.MAP_FULL), "x": 0, "y": 0}
                rx, ry, cursor = placed
                self.meta["city_cursor"] = cursor
            else:
                code = self.check_tile(x, y)
                if code:
                    return {"code": code, "x": x, "y": y}
                rx, ry = x, y
            reserved[key] = [rx, ry, int(userid)]
            self.meta["reserved"] = reserved
        if not await self.save_now([]):  # meta (with the reservation) goes with every save
            return {"code": int(E.RETRY_LATER), "x": rx, "y": ry}
        return {"code": int(E.OK), "x": rx, "y": ry}

    async def commit(self, key: str, userid: int, attrs: Mapping[str, Any]
                     ) -> dict[str, Any]:
        """Turn reservation *key* into the city of *userid* (name, level... from
        *attrs*); stored before OK. Idempotent: OK with the city once it is here.
        Without the reservation (never the case in a saga) the city goes on the next
        free tile. ``{"code", "city": MapEntity bytes}``."""
        _check_id(userid)
        await self.ready
        city = self.state.city_of(userid)
        if city is None:
            reserved = self.reservations()
            spot = reserved.pop(key, None)
            if spot is None:
                placed = world_system.place_city(
                    self.state, self.seed, int(self.meta.get("city_cursor", 0)),
                    DEFAULT_SPACING, self.is_blocked)
                if placed is None:
                    return {"code": int(E.MAP_FULL)}
                spot = [placed[0], placed[1], userid]
                self.meta["city_cursor"] = placed[2]
            keep = {k: v for k, v in attrs.items()
                    if k not in ("kind", "x", "y", "owner", "moved_by")}
            self.meta["reserved"] = reserved
            city = Entity(self.new_id(), self._fresh_version(),
                          {**keep, "kind": "city", "x": int(spot[0]), "y": int(spot[1]),
                           "owner": int(userid), "moved_by": key})
            self.state.add(city)
            log.info("map {map}: city of {userid} moved here at ({x}, {y}) (move {key})",
                     map=self.map_id, userid=userid, x=spot[0], y=spot[1], key=key)
        elif key in (self.meta.get("reserved") or {}):
            reserved = self.reservations()
            reserved.pop(key)
            self.meta["reserved"] = reserved
        if not await self.save_now([city]):
            return {"code": int(E.RETRY_LATER)}
        return {"code": int(E.OK), "city": bytes(entity_pb(city).SerializeToString())}

    async def release(self, key: str) -> bool:
        """Drop reservation *key* (a move that will not come); True once stored."""
        await self.ready
        reserved = self.reservations()
        if reserved.pop(key, None) is None:
            return True
        self.meta["reserved"] = reserved
        return await self.save_now([])

    async def remove_city(self, userid: int) -> dict[str, Any] | None:
        """Take *userid*'s city off this map and store its removal (the tombstone);
        the city's attributes, or None if it had none here. Raises if the removal was
        not stored (the caller retries: the removal itself is idempotent)."""
        await self.ready
        city = self.state.city_of(userid)
        attrs = dict(city.attrs) if city is not None else None
        if city is not None:
            self.remove_entity(int(city.id))
            tomb = self.tombstones.get(int(city.id))
            if not await self.save_now([tomb] if tomb is not None else []):
                # put back: a removal in memory only would be undone by a crash anyway,
                # and the map must not show a city gone that storage still has
                self.add_entity(city)
                raise RuntimeError(f"map {self.map_id}: removal of city {city.id} not stored")
        return attrs

    # -- resource points and monsters: the one refresh timer -------------------------------

    def _retire(self, entity: Entity) -> None:
        what = world_system.spawn_key(entity)
        self.state.remove(int(entity.id))
        table = self.tables()
        if what is None or table is None:
            return
        due = self.now_ms() + 1000 * world_system.respawn_seconds(what, table)
        self.meta["pending"] = [*(self.meta.get("pending") or []),
                                {"what": what, "due_ms": due}]

    def refresh(self) -> int:
        """Place the respawns that fell due and top up the counts of the table; return
        how many entities appeared."""
        table = self.tables()
        if table is None or not self.loaded:
            return 0
        counts = Counter(k for e in self.state.entities.values()
                         if (k := world_system.spawn_key(e)) is not None)
        pending = [dict(p) for p in self.meta.get("pending") or []]
        now = self.now_ms()
        plan, waiting = world_system.refresh_plan(counts, pending, table, now)
        placed = 0
        for what in plan:
            if self._spawn(what, table):
                placed += 1
            else:  # no tile found this time: try again at the next refresh
                waiting.append({"what": what, "due_ms": now})
        if waiting != pending:
            self.meta["pending"] = waiting
        if placed:
            log.debug("map {map}: refresh placed {n}", map=self.map_id, n=placed)
        return placed

    def _spawn(self, what: str, table: Mapping[str, Any]) -> bool:
        serial = int(self.meta.get("spawns", 0))
        self.meta["spawns"] = serial + 1
        rng = world_system.rng(self.seed, serial)
        tile = world_system.spawn_tile(rng, self.state, self.seed, self.is_blocked)
        if tile is None:
            return False
        attrs = world_system.new_entity(rng, what, table)
        attrs["x"], attrs["y"] = tile
        self.state.add(Entity(self.new_id(), self._fresh_version(), attrs))
        return True

    def _schedule_refresh(self) -> None:
        if self.stopping:
            return
        table = self.tables()
        delay = float(table["refresh_seconds"]) if table is not None else 5.0
        self._refresh_call = self.clock.callLater(delay, self._refresh_tick)

    def _refresh_tick(self) -> None:
        self._refresh_call = None
        try:
            self.refresh()
        except Exception:
            log.failure("map {map}: refresh failed", map=self.map_id)
        self._schedule_refresh()

    # -- loading ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the stored world (retrying while storage fails), seed what is missing,
        fire ``ready``, then start the periodic save and the refresh timer."""
        if self.backend is None or self.loaded:
            return
        delay = 1.0
        while not self.stopping:
            try:
                await self._load()
                break
            except Exception as e:
                log.error("map {map}: loading the world failed, retrying in {delay:g}s: "
                          "{error}", map=self.map_id, delay=delay, error=e)
                await task.deferLater(self.clock, delay, lambda: None)
                delay = min(delay * 2, LOAD_RETRY_MAX)
        if self.stopping:
            return
        self._loaded()
        placed = self.refresh()
        log.info("map {map}: world loaded: {n} entities, {m} marches, generation {gen}; "
                 "{placed} placed", map=self.map_id, n=len(self.state.entities),
                 m=len(self.state.marches), gen=self.generation, placed=placed)
        self._save_loop.start(self.save_interval, now=False)
        self._schedule_refresh()

    def _loaded(self) -> None:
        self.loaded = True
        if not self.ready.called:
            self.ready.callback(None)

    async def _load(self) -> None:
        """Claim a new generation, read every document, then fill the state (nothing
        touches the state before every read succeeded, so a failed try leaves it empty
        and the state object the other services hold stays the same)."""
        assert self.backend is not None
        stored = await self.backend.get_entity(COLLECTION, META)
        generation = (stored.generation if stored is not None else 0) + 1
        claimed = await self.backend.claim_generation(COLLECTION, META, generation,
                                                      self.meta.to_doc())
        self.generation = generation
        if "attrs" in claimed.doc and stored is not None:
            self.meta = Entity.from_doc({**claimed.doc, "_id": META})
        rows = await self.backend.find(COLLECTION, {})
        tombstones: list[Any] = []
        skipped = 0
        for eid, doc in rows:
            if eid == META:
                continue
            kind = (doc.get("attrs") or {}).get("kind")
            if kind == TOMBSTONE:
                tombstones.append(eid)
                continue
            entity = Entity.from_doc({**doc, "_id": eid})
            if self.fixer is not None:
                self.fixer.apply_fixes(entity)  # a failure is logged; it stays as it was
            try:
                if kind == "march":
                    self.state.add_march(entity, quiet=True)
                else:
                    self.state.add(entity, quiet=True)
            except (ValueError, KeyError, TypeError) as e:
                skipped += 1
                log.error("map {map}: stored entity {id} not loaded: {error}",
                          map=self.map_id, id=eid, error=e)
        self.state.last_id = max(self.state.last_id, int(self.meta.get("last_id", 0)))
        if skipped:
            log.error("map {map}: {n} stored entities could not be loaded (see above)",
                      map=self.map_id, n=skipped)
        if tombstones:
            try:
                await self.backend.write_batch([Delete(COLLECTION, t) for t in tombstones])
            except Exception as e:  # they are skipped at every load until deleted
                log.warn("map {map}: deleting {n} tombstones failed: {error}",
                         map=self.map_id, n=len(tombstones), error=e)

    # -- saving -----------------------------------------------------------------------------

    def _sync_meta(self) -> None:
        if self.meta.get("last_id") != self.state.last_id:
            self.meta["last_id"] = self.state.last_id

    def _items(self) -> list[tuple[Entity, int]]:
        """What the saver saves: meta first, then entities, march lines, tombstones."""
        self._sync_meta()
        g = self.generation
        items = [(self.meta, g)]
        items.extend((e, g) for e in self.state.entities.values())
        items.extend((m, g) for m in self.state.marches.values())
        items.extend((t, g) for t in self.tombstones.values())
        return items

    def online_entities(self) -> list[Entity]:
        """The entities online data fixes (``POST /datafix``, kind ``world``) work on."""
        return [*self.state.entities.values(), *self.state.marches.values()]

    async def _save_now(self, entities: list[Entity]) -> bool:
        if self.saver is None:
            return True  # an in-memory world (a test's stand-in node)
        await self.ready
        if not await self._still_owner():
            return False
        g = self.generation
        report = await self.saver.save([(e, g) for e in entities])
        return report.ok

    async def _still_owner(self) -> bool:
        """Write ``meta`` (fenced) before anything else: refused means a newer instance
        claimed the world, and then nothing of this one may land (its entity documents
        not yet saved by the new instance would still take an old generation's write)."""
        assert self.saver is not None
        if self.fenced:
            return False
        self._sync_meta()
        self.meta.mark_dirty()
        report = await self.saver.save([(self.meta, self.generation)])
        return not self.fenced and report.ok

    async def save_all(self) -> SaveReport:
        """Save every dirty entity and tombstone now, then delete the stored tombstones
        (the shutdown phase; the periodic round). Raises if something was not stored."""
        report = await self._save_round()
        if not report.ok:
            raise RuntimeError(f"map {self.map_id}: world save {report.to_dict()}")
        return report

    async def _save_round(self) -> SaveReport:
        if self.saver is None or not self.loaded:
            return SaveReport()
        self.saver.rounds += 1
        if not await self._still_owner():
            if self.fenced:
                return SaveReport(stale=[META])
            return SaveReport(failed=[META])
        report = await self.saver.flush()
        if report.failed or report.stale:
            log.warn("map {map}: world save: {counts} (kept dirty, retried)",
                     map=self.map_id, counts=report.to_dict())
        await self._purge()
        return report

    async def _purge(self) -> None:
        """Delete the tombstones storage has (their save landed after any older save)."""
        assert self.backend is not None
        done = {eid: t for eid, t in self.tombstones.items() if not t.dirty}
        if not done:
            return
        try:
            await self.backend.write_batch([Delete(COLLECTION, eid) for eid in done])
        except Exception as e:
            log.warn("map {map}: deleting {n} removed entities failed, retried: {error}",
                     map=self.map_id, n=len(done), error=e)
            return
        for eid, t in done.items():
            if self.tombstones.get(eid) is t:
                del self.tombstones[eid]

    def _stale(self, entity: Entity, error: StaleGeneration) -> None:
        if not self.fenced:
            log.error("map {map}: a newer instance of this map owns the world ({error}); "
                      "this one writes nothing more", map=self.map_id, error=error)
        self.fenced = True

    def _changed(self, event: str, entity: Entity, blocks: frozenset[int]) -> None:
        """State listener: removals become tombstones; new entities get the fix version."""
        if event in (DISAPPEAR, MARCH_END):
            if self.saver is not None:
                self.tombstones[int(entity.id)] = Entity(int(entity.id), 0,
                                                         {"kind": TOMBSTONE})
        elif event in (APPEAR, MARCH):
            self.tombstones.pop(int(entity.id), None)
            if entity.saved_revision == 0 and entity.version == 0:
                entity.version = self._fresh_version()

    def _fresh_version(self) -> int:
        return self.fixer.latest_version if self.fixer is not None else 0

    async def stop(self) -> None:
        """Stop the timers and save everything (the node is stopping)."""
        self.stopping = True
        if self._refresh_call is not None and self._refresh_call.active():
            self._refresh_call.cancel()
        self._refresh_call = None
        if self._save_loop.running:
            self._save_loop.stop()
        if self.loaded and self.saver is not None:
            report = await self._save_round()
            log.info("map {map}: world saved at stop: {counts}", map=self.map_id,
                     counts=report.to_dict())


WORLD_KINDS = ("city", "resource", "monster", "march")


class WorldCollector:
    """Scrape-time gauges of a map: ``rl_world_entities{kind}`` (cities, resource points,
    monsters, marches on the map) and ``rl_world_unsaved`` (entities changed since their
    last save: what a kill -9 now would lose)."""

    def __init__(self, world: World) -> None:
        self.world = world

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        w = self.world
        counts = Counter(e.get("kind") for e in w.state.entities.values())
        counts["march"] = len(w.state.marches)
        entities = GaugeMetricFamily("rl_world_entities", "Entities on the map, by kind",
                                     labels=["kind"])
        for kind in WORLD_KINDS:
            entities.add_metric([kind], counts.get(kind, 0))
        yield entities
        unsaved = sum(1 for e, _ in w._items() if e.dirty) if w.loaded else 0
        yield GaugeMetricFamily("rl_world_unsaved",
                                "World entities changed since their last save",
                                value=unsaved)


class _Keeper(service.Service):
    """Runs a node's World with the node: load once the reactor runs, save at stop."""

    def __init__(self, world: World) -> None:
        self.world = world

    def startService(self) -> None:
        super().startService()
        self.world.clock.callWhenRunning(self._start)

    def _start(self) -> None:
        defer.Deferred.fromCoroutine(self.world.start()).addErrback(
            lambda f: log.failure("map {map}: world start failed", f,
                                  map=self.world.map_id))

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.Deferred.fromCoroutine(self.world.stop())


def _node_fixer(node: Any) -> DataFixer | None:
    """The node's data fixer of kind ``world``; broken scripts stop the start."""
    services = getattr(getattr(node, "cluster", None), "services", {})
    hotfix = services.get("hotfix")
    if hotfix is None or not hasattr(hotfix, "data_fixer"):
        return None
    from rltwist.ecs.datafix import DataFixError
    from rltwist.nodes.common.node import StartupError

    try:
        fixer: DataFixer = hotfix.data_fixer(FIX_KIND)
    except DataFixError as e:
        # loading entities without their fixes would save them unfixed: refuse to start
        raise StartupError(f"{getattr(node, 'name', 'map')}: {e}") from None
    return fixer


def _check_id(userid: Any) -> None:
    if isinstance(userid, bool) or not isinstance(userid, int) or userid <= 0:
        raise ValueError(f"bad userid {userid!r}")


def world_of(node: Node) -> World:
    """The map node's World service (created and registered at the first call)."""
    world = node.cluster.services.get(World.name)
    if world is None:
        world = World(node)
        node.cluster.register(world)
    return world  # type: ignore[return-value]
