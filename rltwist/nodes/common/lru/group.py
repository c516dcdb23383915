"""A group: the router service, its workers and their saver. It routes ids to workers,
binds the actor's business methods through the import registry (hot reload), and holds
the fencing generation its saves use."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import Service, handler
from rltwist.ecs.entity import Entity
from rltwist.ecs.registry import REGISTRY, resolve
from rltwist.ecs.registry import Registry as CodeRegistry
from rltwist.nodes.common.lru.actor import Actor, Fixer, UnknownAction
from rltwist.nodes.common.lru.metrics import lru_metrics
from rltwist.nodes.common.lru.worker import LRUWorker
from rltwist.nodes.common.saver import DEFAULT_BATCH, SaveItem, Saver, SaveReport
from rltwist.storage import Backend, Key, StaleGeneration

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from rltwist.cluster import Cluster

log = Logger()


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
        #: business methods a feature added from outside the actor class (add_action)
        self.extra_actions: dict[str, tuple[Callable[..., Any], bool, bool]] = {}

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

    def add_action(self, name: str, fn: Callable[..., Any], *, creates: bool = False,
                   save: bool = False) -> None:
        """Add business method *name* from outside the actor class: a feature wiring
        itself onto another group's entities (the friends feature on rolecity's).
        ``fn(entity, *args)`` runs in the entity's mailbox like an :func:`action` with the
        same *creates*/*save* flags; keep its rules in a game system reached through
        :func:`~rltwist.ecs.import_system`, so a hot fix reaches it (a fix of the actor's
        module does not drop it)."""
        if name in self.actions or name in self.extra_actions:
            raise ValueError(f"{self.router_name}: action {name!r} exists already")
        self.extra_actions[name] = (fn, creates, save)

    def action(self, method: str) -> tuple[Callable[..., Any], bool, bool]:
        """The bound business method *method* of the actor class in force now, with its
        (creates, save) flags; :class:`UnknownAction` if there is none."""
        if self._code_version != self.code_registry.version:
            self._rebind()
        found = self.actions.get(method) or self.extra_actions.get(method)
        if found is None:
            raise UnknownAction(f"{self.actor.kind} has no action {method!r}")
        return found

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
