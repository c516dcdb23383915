"""The worker runtime: one LRU worker holds the entities whose ids map to it, runs each
entity's messages one at a time in arrival order (its mailbox), loads on first use (one
load shared by concurrent first messages) and evicts the least recently used idle entity
after saving it."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import Service, handler
from rltwist.ecs.entity import Entity
from rltwist.nodes.common.lru.actor import EntityNotFound, LoadFailed, SaveFailed, WrongWorker
from rltwist.storage import Key

if TYPE_CHECKING:
    from rltwist.nodes.common.lru.group import LRUGroup

log = Logger()

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
