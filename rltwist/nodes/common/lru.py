"""LRU actor services (seed §5): rolecity agent/rolerouter, mail mail/mailrouter,
guild guildhandler/guildrouter.

A group is one router service plus ``n`` worker services (``agent0`` … ``agent<n-1>``).
The router sends each entity id to its fixed worker (``id mod n``; a str id by CRC32), so
one entity lives in exactly one worker of one process. A worker loads an entity on its
first message — concurrent first messages share one load — runs the message through the
group's :class:`Actor` (the business methods), keeps at most ``capacity`` entities and
evicts the least recently used one after saving it (an eviction whose save fails keeps the
entity). Messages to one entity run one at a time, in arrival order (an actor's mailbox).
Dirty entities are saved by the group's :class:`~rltwist.nodes.common.saver.Saver` every
``save_interval``, and all of them at shutdown.

Reaching an entity from any node::

    await cluster.call(cluster.rolecity_node(userid), "rolerouter", "call", userid,
                       "add_resources", {"gold": 5})
    await lru_call(cluster, cluster.rolecity_node(userid), "rolerouter", userid, "get")  # same

Errors come back as ``RemoteError`` kinds: ``UnknownAction`` (no such business method),
``EntityNotFound`` (an action on an id that does not exist and may not be created here,
e.g. a guild), ``LoadFailed`` (storage could not load it; the next message retries).

Saves are fenced: a group takes a fresh generation from the counter
``lru_generation:<collection>`` when it starts, so a stale process of an earlier start (a
paused or partitioned one) can never overwrite what the current one saved; its refused
entities are dropped and reloaded. Data fixes run on load through ``fixer`` (a
:class:`~rltwist.ecs.datafix.DataFixer` of the entity kind, or anything with
``apply_fixes(entity)`` and ``latest_version``); new entities start at its latest version.

Hot code reload: a group reaches its actor's business methods through the import registry
(``rltwist.ecs.registry``). It tracks the module of its ``Actor`` class there, and each
message looks its method up when it runs, on the class the registry's current module
defines — so a fix list naming that module changes what the next message does, in every
running group, and a rollback changes it back. The group keeps one actor state: the new
class's instance shares the original instance's attributes (``__init__`` is not run
again), so a fix must not rely on attributes a new ``__init__`` would set.
"""

from __future__ import annotations

import time
import weakref
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import Service, handler
from rltwist.config import Config, ConfigError
from rltwist.ecs.entity import Entity
from rltwist.ecs.registry import REGISTRY, resolve
from rltwist.ecs.registry import Registry as CodeRegistry
from rltwist.nodes.common.saver import DEFAULT_BATCH, SaveItem, Saver, SaveReport
from rltwist.storage import Backend, Key, StaleGeneration

if TYPE_CHECKING:
    from rltwist.cluster import Cluster
    from rltwist.nodes.common.node import Node

log = Logger()

F = TypeVar("F", bound=Callable[..., Any])

_ACTION = "_rl_lru_action"


# -- errors (their class names are the RemoteError kinds callers see) ------------------------


class UnknownAction(Exception):
    """The actor has no business method of that name."""


class EntityNotFound(Exception):
    """The id does not exist and this action may not create it."""


class LoadFailed(Exception):
    """Storage could not load the entity; nothing was changed and the next message retries."""


class WrongWorker(Exception):
    """A worker was called directly for an id that another worker owns."""


class SaveFailed(Exception):
    """An ``@action(save=True)`` ran but its save was not acknowledged by storage.

    The change stays applied in memory and dirty (the periodic save retries it); the
    caller must not take it as durable. Callers that retry need an idempotency key."""


# -- business classes -------------------------------------------------------------------


def action(fn: F | None = None, *, creates: bool = False, save: bool = False) -> Any:
    """Mark an :class:`Actor` method as a business method reachable through the router.

    The method is called as ``fn(entity, *args)`` (plain or ``async``) and its result goes
    back to the caller. ``creates``: on an id that does not exist yet the worker hands it
    a new entity (kept only if the method changed it and did not raise). ``save``: the
    entity is saved before the reply (if storage fails it stays dirty and the periodic
    save retries) and the caller gets :class:`SaveFailed` instead of the result: an OK
    from a ``save=True`` action means the change is durable.
    """

    def mark(f: F) -> F:
        setattr(f, _ACTION, (creates, save))
        return f

    return mark(fn) if fn is not None else mark


class Fixer(Protocol):
    """What the LRU needs of a data fixer (``rltwist.ecs.datafix.DataFixer`` fits)."""

    @property
    def latest_version(self) -> int: ...

    def apply_fixes(self, entity: Entity) -> Any: ...


class Actor:
    """Business methods of one entity kind; subclass, set the class attributes and mark
    methods with :func:`action`. Holds no per-entity state (that is the entity's)."""

    kind: str = ""
    """Entity kind, for logs (and the data-fix line of this kind)."""
    collection: str = ""
    """Collection of the node's database where the entities live."""
    auto_create: bool = True
    """An id never stored gets a new entity on its first message (False: EntityNotFound
    unless the action ``creates``)."""

    def new_entity(self, id: Key) -> Entity:
        """A new entity for *id* (stored only once an action changes it)."""
        return Entity(id)

    def actions(self) -> dict[str, tuple[Callable[..., Any], bool, bool]]:
        """Bound business methods by name, with their (creates, save) flags."""
        found: dict[str, tuple[Callable[..., Any], bool, bool]] = {}
        for attr in dir(type(self)):
            flags = getattr(getattr(type(self), attr, None), _ACTION, None)
            if flags is not None:
                found[attr] = (getattr(self, attr), *flags)
        return found


# -- metrics ------------------------------------------------------------------------------


class LRUMetrics:
    """The LRU metrics of one registry, labelled by worker service name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.resident = Gauge("rl_lru_resident", "Entities held in memory", ["service"],
                              registry=registry)
        self.loads = Counter("rl_lru_loads", "Entity loads by result (found, new, absent, "
                             "error)", ["service", "result"], registry=registry)
        self.load_seconds = Histogram(
            "rl_lru_load_seconds", "Latency of an entity load", ["service"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry)
        self.evictions = Counter("rl_lru_evictions", "Entities evicted (after their save)",
                                 ["service"], registry=registry)
        self.eviction_failures = Counter(
            "rl_lru_eviction_failures", "Evictions given up because the save failed",
            ["service"], registry=registry)


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, LRUMetrics] = weakref.WeakKeyDictionary()


def lru_metrics(registry: CollectorRegistry | None) -> LRUMetrics:
    if registry is None:
        return LRUMetrics(CollectorRegistry(auto_describe=True))
    m = _metrics.get(registry)
    if m is None:
        m = _metrics[registry] = LRUMetrics(registry)
    return m


# -- workers ------------------------------------------------------------------------------

NEW, READY, FAILED = "new", "ready", "failed"


# (method name, args, reply): the method is looked up when the message runs, so a hot fix
# of the actor module reaches messages already queued.
_Message = tuple[str, tuple[Any, ...], defer.Deferred[Any]]


class Slot:
    """One id in a worker: its entity (None: does not exist), load state, and its mailbox
    of messages waiting to run."""

    __slots__ = ("busy", "draining", "entity", "error", "id", "mailbox", "stale", "state",
                 "uses")

    def __init__(self, id: Key) -> None:
        self.id = id
        self.entity: Entity | None = None
        self.state = NEW
        self.error = ""
        self.mailbox: deque[_Message] = deque()
        self.draining = False
        self.busy = 0  # messages queued or running on this id
        self.uses = 0  # bumped per message: an eviction notices use during its save
        self.stale = False  # a newer instance owns it: drop once idle


class LRUWorker(Service):
    """One worker: the entities whose id maps to ``index``, least recently used first."""

    def __init__(self, group: LRUGroup, index: int, name: str) -> None:
        self.group = group
        self.index = index
        self.name = name
        self.slots: OrderedDict[Key, Slot] = OrderedDict()
        self.evicted = 0
        self._evicting = False
        m = group.metrics
        m.resident.labels(name).set_function(lambda: len(self.slots))
        self._loads = {r: m.loads.labels(name, r) for r in ("found", "new", "absent", "error")}
        self._load_seconds = m.load_seconds.labels(name)
        self._evictions = m.evictions.labels(name)
        self._eviction_failures = m.eviction_failures.labels(name)

    @handler(name="call")
    async def call_handler(self, id: Key, method: str, *args: Any) -> Any:
        """Direct call of this worker (the router is the usual way in)."""
        if self.group.worker_for(id) is not self:
            raise WrongWorker(f"{self.name} does not own {id!r}; call the router "
                              f"{self.group.router_name}")
        return await self.dispatch(id, method, args)

    @handler
    def stats(self) -> dict[str, Any]:
        return {"resident": len(self.slots), "capacity": self.group.capacity,
                "dirty": sum(1 for s in self.slots.values()
                             if s.entity is not None and s.entity.dirty)}

    def entities(self) -> Iterator[Entity]:
        for slot in self.slots.values():
            if slot.entity is not None:
                yield slot.entity

    async def dispatch(self, id: Key, method: str, args: tuple[Any, ...]) -> Any:
        group = self.group
        group.action(method)  # an unknown action fails before it queues behind others
        slot = self.slots.get(id)
        if slot is None:
            slot = self.slots[id] = Slot(id)
        else:
            self.slots.move_to_end(id)
        slot.busy += 1
        slot.uses += 1
        done: defer.Deferred[Any] = defer.Deferred()
        slot.mailbox.append((method, args, done))
        if not slot.draining:
            defer.Deferred.fromCoroutine(self._drain(slot))
        try:
            return await done
        finally:
            slot.busy -= 1
            if not slot.busy and slot.stale:
                self._drop(slot)
            if len(self.slots) > group.capacity:
                self._evict_soon()

    async def _drain(self, slot: Slot) -> None:
        # One loop per busy slot runs its messages one by one. A loop rather than a lock:
        # releasing a DeferredLock resumes the next waiter inside release(), so a queue of
        # a few hundred synchronous messages would nest that deep and overflow the stack.
        slot.draining = True
        try:
            while slot.mailbox:
                method, args, done = slot.mailbox.popleft()
                try:
                    fn, creates, save = self.group.action(method)
                    if slot.state == NEW:
                        await self._load(slot)
                    if slot.state == FAILED:
                        raise LoadFailed(slot.error)
                    result = await self._run(slot, fn, creates, save, args)
                except Exception:
                    done.errback(Failure())
                else:
                    done.callback(result)
        finally:
            slot.draining = False

    async def _run(self, slot: Slot, fn: Callable[..., Any], creates: bool, save: bool,
                   args: tuple[Any, ...]) -> Any:
        group = self.group
        entity = slot.entity
        fresh = False
        if entity is None:
            if not creates:
                raise EntityNotFound(f"{group.actor.kind} {slot.id!r} does not exist")
            entity = slot.entity = group.new_entity(slot.id)
            fresh = True
        try:
            result = fn(entity, *args)
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                result = await result
        except BaseException:
            if fresh:
                slot.entity = None
            raise
        if fresh and not entity.dirty:  # the action declined to create it
            slot.entity = None
        elif save and entity.dirty:
            report = await group.saver.save([(entity, group.current_generation)])
            if not report.saved:
                method = getattr(fn, "__name__", "?")
                log.warn("{worker}: {kind} {id} not saved after {method}; it stays dirty "
                         "and is retried; the caller gets SaveFailed", worker=self.name,
                         kind=group.actor.kind, id=slot.id, method=method)
                raise SaveFailed(f"{group.actor.kind} {slot.id!r}: {method} applied but its "
                                 f"save was not acknowledged ({report.to_dict()})")
        return result

    async def _load(self, slot: Slot) -> None:
        group = self.group
        started = time.monotonic()
        try:
            generation = await group.generation()
            stored = await group.backend.get_entity(group.actor.collection, slot.id)
            if stored is None:
                entity = group.new_entity(slot.id) if group.actor.auto_create else None
                result = "absent" if entity is None else "new"
            else:
                doc = stored.doc if "_id" in stored.doc else {**stored.doc, "_id": slot.id}
                entity = Entity.from_doc(doc)
                result = "found"
                if stored.generation > generation:
                    log.warn("{worker}: {kind} {id} was saved by a newer instance "
                             "(generation {stored} > ours {ours}); our saves will be refused",
                             worker=self.name, kind=group.actor.kind, id=slot.id,
                             stored=stored.generation, ours=generation)
                group.fix(entity)
        except Exception as e:
            self._loads["error"].inc()
            slot.state = FAILED
            slot.error = f"{group.actor.kind} {slot.id!r}: load failed: {type(e).__name__}: {e}"
            self._drop(slot)
            log.error("{worker}: {error}", worker=self.name, error=slot.error)
            return
        finally:
            self._load_seconds.observe(time.monotonic() - started)
        self._loads[result].inc()
        slot.entity = entity
        slot.state = READY

    def _drop(self, slot: Slot) -> None:
        if self.slots.get(slot.id) is slot:
            del self.slots[slot.id]

    def mark_stale(self, entity: Entity) -> None:
        """A newer instance owns *entity*: drop our copy (once no message is on it)."""
        slot = self.slots.get(entity.id)
        if slot is None or slot.entity is not entity:
            return
        if slot.busy:
            slot.stale = True
        else:
            self._drop(slot)

    # -- eviction ---------------------------------------------------------------------------

    def _evict_soon(self) -> None:
        if self._evicting or not self.group.running:
            return
        self._evicting = True
        d = defer.Deferred.fromCoroutine(self.evict())
        d.addErrback(lambda f: log.failure("{worker}: eviction failed", f, worker=self.name))

    async def evict(self) -> int:
        """Evict least recently used idle entities down to capacity; return how many.

        A dirty entity is saved first; if that save fails, or the entity is used again
        while it is being saved, it stays.
        """
        self._evicting = True
        evicted = 0
        kept: set[Key] = set()
        try:
            while len(self.slots) > self.group.capacity:
                victim = next((s for s in self.slots.values()
                               if not s.busy and s.state != NEW and s.id not in kept), None)
                if victim is None:
                    break
                if not await self._save_for_eviction(victim):
                    kept.add(victim.id)
                    continue
                self._drop(victim)
                self._evictions.inc()
                self.evicted += 1
                evicted += 1
        finally:
            self._evicting = False
        return evicted

    async def _save_for_eviction(self, slot: Slot) -> bool:
        entity = slot.entity
        if entity is None or not entity.dirty:
            return True
        uses = slot.uses
        report = await self.group.saver.save([(entity, self.group.current_generation)])
        if entity.id not in report.saved:
            self._eviction_failures.inc()
            log.warn("{worker}: {kind} {id} not evicted: its save failed (it stays resident "
                     "and dirty)", worker=self.name, kind=self.group.actor.kind, id=slot.id)
            return False
        # used again while saving: it is no longer the least recently used
        return not slot.busy and slot.uses == uses and not entity.dirty


# -- router and group -----------------------------------------------------------------------


class LRURouter(Service):
    """The router service: ``call(id, method, *args)`` reaches the id's worker."""

    def __init__(self, group: LRUGroup) -> None:
        self.group = group
        self.name = group.router_name

    @handler
    async def call(self, id: Key, method: str, *args: Any) -> Any:
        """Run business method *method* of the entity *id* with *args*; return its result."""
        return await self.group.call(id, method, *args)

    @handler
    def stats(self) -> dict[str, Any]:
        """Resident entities (in all and per worker), capacity, evictions so far,
        fencing generation, periodic save rounds."""
        return self.group.stats()

    @handler
    async def flush(self) -> dict[str, int]:
        """Save every dirty entity now (GM, tests); the counts of the round."""
        return (await self.group.flush()).to_dict()


class LRUGroup(service.MultiService):
    """A router, its workers and their saver; a child service of the node.

    ``generation``: None takes a fresh one from storage at start (fencing, see the module
    docstring); an int fixes it (0: unfenced). ``code_registry`` is the import registry
    the actor's module is tracked in (hot code reload, see the module docstring).
    """

    def __init__(self, actor: Actor, backend: Backend, *, router: str, worker: str,
                 workers: int = 4, capacity: int = 1000, interval: float = 300.0,
                 batch_size: int = DEFAULT_BATCH, clock: IReactorTime | None = None,
                 registry: CollectorRegistry | None = None, fixer: Fixer | None = None,
                 generation: int | None = None,
                 router_cls: Callable[[LRUGroup], LRURouter] = LRURouter,
                 code_registry: CodeRegistry = REGISTRY) -> None:
        super().__init__()
        if workers < 1 or capacity < 1:
            raise ValueError(f"{router}: workers and capacity must be >= 1")
        if not actor.collection:
            raise ValueError(f"{type(actor).__name__} has no collection")
        self.actor = actor
        self.actions = actor.actions()
        self.code_registry = code_registry
        self._base_actor = actor
        self._actor_module = type(actor).__module__
        self._actor_class = type(actor).__qualname__
        self._code_version = -1
        if "<locals>" not in self._actor_class:  # a class in a function cannot be re-found
            code_registry.track(self._actor_module, service=router,
                                requires={self._actor_class: Actor})
            self._code_version = code_registry.version
        self.backend = backend
        self.router_name = router
        self.capacity = capacity
        self.fixer = fixer
        self.metrics = lru_metrics(registry)
        self._generation = generation
        self._generation_waiters: list[defer.Deferred[int]] = []
        self.workers = [LRUWorker(self, i, f"{worker}{i}") for i in range(workers)]
        self.router = router_cls(self)
        self.saver = Saver(backend, actor.collection, self._resident, interval=interval,
                           batch_size=batch_size, clock=clock, registry=registry,
                           name=router, on_stale=self._on_stale)
        self.saver.setServiceParent(self)
        self.on_stop: list[Callable[[], Any]] = []  # run once the final save is done

    # -- wiring -----------------------------------------------------------------------------

    def register(self, cluster: Cluster) -> None:
        """Register the router and the workers as services of *cluster*."""
        cluster.register(self.router)
        for w in self.workers:
            cluster.register(w)

    def set_fixer(self, fixer: Fixer | None) -> None:
        """Install (or remove) the data-fix hook run on every load from now on."""
        self.fixer = fixer

    # -- business methods (through the import registry) --------------------------------

    def action(self, method: str) -> tuple[Callable[..., Any], bool, bool]:
        """The bound business method *method* of the actor class in force now, with its
        (creates, save) flags; :class:`UnknownAction` if there is none."""
        if self._code_version != self.code_registry.version:
            self._rebind()
        try:
            return self.actions[method]
        except KeyError:
            raise UnknownAction(f"{self.actor.kind} has no action {method!r}") from None

    def _rebind(self) -> None:
        # Called when the registry swapped some module; cheap when it was not ours.
        self._code_version = self.code_registry.version
        try:
            cls = resolve(self.code_registry.module(self._actor_module), self._actor_class)
        except (KeyError, AttributeError):
            return  # the registry checks a fix keeps the class; nothing else removes it
        if cls is type(self.actor):
            return
        base = self._base_actor
        if cls is type(base):
            actor = base
        else:
            actor = cls.__new__(cls)
            if hasattr(base, "__dict__"):
                # One state for old and new code: the new instance uses the same attribute
                # dict (a rollback goes back to the original instance, same dict).
                actor.__dict__ = base.__dict__
        self.actor, self.actions = actor, actor.actions()
        log.info("{router}: actor {cls} now runs the code of {module} (hot fix)",
                 router=self.router_name, cls=self._actor_class, module=self._actor_module)

    # -- routing ----------------------------------------------------------------------------

    def worker_for(self, id: Key) -> LRUWorker:
        if isinstance(id, bool) or not isinstance(id, int | str):
            raise TypeError(f"{self.router_name}: entity id must be an int or str, "
                            f"got {type(id).__name__}")
        n = id if isinstance(id, int) else zlib.crc32(id.encode())
        return self.workers[n % len(self.workers)]

    async def call(self, id: Key, method: str, *args: Any) -> Any:
        """Run *method* on entity *id* in this process (what the router handler does)."""
        return await self.worker_for(id).dispatch(id, method, args)

    # -- entities ---------------------------------------------------------------------------

    def new_entity(self, id: Key) -> Entity:
        entity = self.actor.new_entity(id)
        if self.fixer is not None:
            entity.version = self.fixer.latest_version
        entity.saved_revision = entity.revision  # nothing to store until an action changes it
        return entity

    def fix(self, entity: Entity) -> None:
        if self.fixer is None:
            return
        try:
            self.fixer.apply_fixes(entity)
        except Exception:
            log.failure("{router}: data fixes of {kind} {id} raised; loaded as it was",
                        router=self.router_name, kind=self.actor.kind, id=entity.id)

    def entities(self) -> list[Entity]:
        """Every entity held in memory now (for online data fixes, diagnostics)."""
        return [e for w in self.workers for e in w.entities()]

    def _resident(self) -> Iterator[SaveItem]:
        generation = self.current_generation
        for w in self.workers:
            for entity in w.entities():
                yield entity, generation

    def _on_stale(self, entity: Entity, error: StaleGeneration) -> None:
        self.worker_for(entity.id).mark_stale(entity)

    async def flush(self) -> SaveReport:
        """Save every dirty entity now."""
        return await self.saver.flush()

    def resident(self) -> int:
        return sum(len(w.slots) for w in self.workers)

    def stats(self) -> dict[str, Any]:
        return {"resident": self.resident(), "capacity": self.capacity,
                "workers": {w.name: len(w.slots) for w in self.workers},
                "evicted": sum(w.evicted for w in self.workers),
                "generation": self._generation, "save_rounds": self.saver.rounds}

    # -- fencing generation ---------------------------------------------------------------

    @property
    def current_generation(self) -> int:
        """The generation saves use (known once any entity was loaded)."""
        return self._generation or 0

    async def generation(self) -> int:
        """This group's fencing generation, taken from storage once (concurrent callers
        share one request; a failed request is retried by the next caller)."""
        if self._generation is not None:
            return self._generation
        waiter: defer.Deferred[int] = defer.Deferred()
        self._generation_waiters.append(waiter)
        if len(self._generation_waiters) == 1:
            defer.Deferred.fromCoroutine(self._fetch_generation())
        return await waiter

    async def _fetch_generation(self) -> None:
        try:
            value = await self.backend.incr(f"lru_generation:{self.actor.collection}")
        except Exception:
            failure = Failure()
            waiters, self._generation_waiters = self._generation_waiters, []
            for w in waiters:
                w.errback(failure)
            return
        self._generation = value
        log.info("{router}: fencing generation {g}", router=self.router_name, g=value)
        waiters, self._generation_waiters = self._generation_waiters, []
        for w in waiters:
            w.callback(value)

    def stopService(self) -> defer.Deferred[None]:
        d: defer.Deferred[None] = defer.maybeDeferred(super().stopService)

        def stopped(result: Any) -> Any:
            for fn in self.on_stop:
                try:
                    fn()
                except Exception:
                    log.failure("{router}: stop hook failed", router=self.router_name)
            return result

        return d.addBoth(stopped)

    def startService(self) -> None:
        super().startService()
        if self._generation is None:
            d = defer.Deferred.fromCoroutine(self.generation())
            d.addErrback(lambda f: log.warn("{router}: no generation yet ({e}); retried on "
                                            "the first load", router=self.router_name,
                                            e=f.getErrorMessage()))


# -- configuration and installation ---------------------------------------------------------

DEFAULTS: dict[str, dict[str, int]] = {
    "agent": {"workers": 8, "capacity": 1000},
    "mail": {"workers": 4, "capacity": 1000},
    "guildhandler": {"workers": 2, "capacity": 1000},
}


def lru_settings(config: Config, worker: str) -> tuple[int, int]:
    """``(workers, capacity)`` of the LRU service *worker* from ``[lru.<worker>]``.

    Example::

        [lru.agent]          # rolecity: agent0..agent7 behind rolerouter
        workers = 8
        capacity = 1000      # entities per worker
    """
    section = config.raw.get("lru", {})
    table = section.get(worker, {}) if isinstance(section, Mapping) else {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{config.path}: lru.{worker} must be a table")
    unknown = sorted(set(table) - {"workers", "capacity"})
    if unknown:
        raise ConfigError(f"{config.path}: lru.{worker}.{unknown[0]}: unknown key "
                          f"(workers, capacity)")
    values = dict(DEFAULTS.get(worker, {"workers": 4, "capacity": 1000}))
    for key in ("workers", "capacity"):
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
                raise ConfigError(f"{config.path}: lru.{worker}.{key} must be an integer "
                                  f"1-1000000, got {v!r}")
            values[key] = v
    return values["workers"], values["capacity"]


def install_lru(node: Node, actor: Actor, *, router: str, worker: str, db: str,
                router_cls: Callable[[LRUGroup], LRURouter] = LRURouter) -> LRUGroup:
    """Build an LRU group on *node*: services registered, saver running with the node, a
    shutdown handler that saves everything, and the data fixes of ``actor.kind`` from the
    node's hotfix service (``<root>/hotfix/datafix/<kind>``): run on every load (seed §14),
    and on the resident entities by GM's ``POST /datafix`` (which also reloads the scripts
    later loads use).
    """
    from rltwist.ecs.datafix import DataFixError
    from rltwist.nodes.common.hotfix import HotfixService, register_online_entities
    from rltwist.nodes.common.node import StartupError

    workers, capacity = lru_settings(node.config, worker)
    group = LRUGroup(actor, node.database(db), router=router, worker=worker, workers=workers,
                     capacity=capacity, interval=node.config.storage.save_interval,
                     clock=node.reactor, registry=node.registry, router_cls=router_cls)
    hotfix = node.cluster.services.get("hotfix")
    if isinstance(hotfix, HotfixService):
        try:
            group.set_fixer(hotfix.data_fixer(actor.kind))
        except DataFixError as e:
            # loading entities without their fixes would save them unfixed: refuse to start
            raise StartupError(f"{node.name}: {e}") from None
        group.on_stop.append(register_online_entities(actor.kind, group.entities))
    group.setServiceParent(node)
    group.register(node.cluster)

    async def save_all() -> None:
        report = await group.flush()
        if not report.ok:
            raise RuntimeError(f"{router}: {report.to_dict()} at shutdown")

    node.add_shutdown_handler(router, save_all)
    return group


def lru_call(cluster: Cluster, node: str, router: str, id: Key, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
    """Call business method *method* of entity *id* behind *router* on *node*."""
    return cluster.call(node, router, "call", id, method, *args, timeout=timeout)
