"""Saver: the periodic, batched save of dirty entities (docs/architecture.md "Data", seed §15).

Any service that owns entities hands a Saver a *provider*, a callable returning the
``(entity, generation)`` pairs it holds right now. Every ``interval`` seconds (config
``[storage] save_interval``, 300 s by default) the saver snapshots the dirty ones and
writes them with ``backend.save_entities`` in batches; ``entity.saved(token)`` is called
only for the entities storage acknowledged, so a failed batch stays dirty and is retried
on the next round. A fenced refusal (:class:`StaleGeneration`: a newer instance owns the
entity) is logged, counted and handed to ``on_stale`` so the owner can drop its copy.

``flush()`` saves everything now (shutdown); ``save(items)`` saves given entities now
(logout, LRU eviction) and returns which ones landed; the saves asked for while one is
being written go to storage together as the next batch (group commit). Saves of one saver
never overlap, so an older snapshot can never overwrite a newer one in storage.

Used by the role gateway (online players, with each instance's fencing generation) and
by the LRU services of rolecity, mail and guild (one generation per service start).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.application import service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.ecs.entity import Entity
from rltwist.nodes.common.keylock import FifoLock
from rltwist.storage import Backend, InvalidDocument, Key, StaleGeneration

log = Logger()

SaveItem = tuple[Entity, int]
"""An entity and the fencing generation it is saved with (0 when unfenced)."""

DEFAULT_BATCH = 500


@attrs.define
class SaveReport:
    """What one save round did, by entity id."""

    saved: list[Key] = attrs.Factory(list)
    failed: list[Key] = attrs.Factory(list)
    stale: list[Key] = attrs.Factory(list)

    def merge(self, other: SaveReport) -> None:
        self.saved += other.saved
        self.failed += other.failed
        self.stale += other.stale

    @property
    def ok(self) -> bool:
        """True when every entity of the round was stored."""
        return not self.failed and not self.stale

    def to_dict(self) -> dict[str, int]:
        """Counts only (a report of 10k ids is not something to ship over the wire)."""
        return {"saved": len(self.saved), "failed": len(self.failed), "stale": len(self.stale)}


class SaverMetrics:
    """The saver metrics of one registry, labelled by saver name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.saved = Counter("rl_saver_saved", "Entities stored by periodic/flush saves",
                             ["saver"], registry=registry)
        self.failures = Counter("rl_saver_failures",
                                "Entities whose save failed (they stay dirty and are retried)",
                                ["saver"], registry=registry)
        self.stale = Counter("rl_saver_stale",
                             "Saves refused because a newer instance owns the entity",
                             ["saver"], registry=registry)
        self.batch_seconds = Histogram(
            "rl_saver_batch_seconds", "Latency of one save_entities batch", ["saver"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry)


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, SaverMetrics] = \
    weakref.WeakKeyDictionary()


def saver_metrics(registry: CollectorRegistry | None) -> SaverMetrics:
    """The shared SaverMetrics of *registry* (a private registry when None)."""
    if registry is None:
        return SaverMetrics(CollectorRegistry(auto_describe=True))
    m = _metrics.get(registry)
    if m is None:
        m = _metrics[registry] = SaverMetrics(registry)
    return m


class Saver(service.Service):
    """Periodic batched saver of the dirty entities *provider* returns.

    ``collection`` is where the entities live in ``backend``; ``name`` labels logs and
    metrics. ``on_stale(entity, error)`` is called for each fenced refusal. As a Twisted
    service it starts its loop in ``startService`` and flushes in ``stopService``.
    """

    def __init__(self, backend: Backend, collection: str,
                 provider: Callable[[], Iterable[SaveItem]], *,
                 interval: float = 300.0, batch_size: int = DEFAULT_BATCH,
                 clock: IReactorTime | None = None, registry: CollectorRegistry | None = None,
                 name: str | None = None,
                 on_stale: Callable[[Entity, StaleGeneration], Any] | None = None) -> None:
        if interval <= 0:
            raise ValueError(f"save interval must be > 0, got {interval!r}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size!r}")
        if clock is None:
            from twisted.internet import reactor as default_reactor
            clock = default_reactor
        self.backend = backend
        self.collection = collection
        self.provider = provider
        self.interval = interval
        self.batch_size = batch_size
        self.clock = clock
        self.label = name or collection
        self.on_stale = on_stale
        m = saver_metrics(registry)
        self._saved = m.saved.labels(self.label)
        self._failures = m.failures.labels(self.label)
        self._stale = m.stale.labels(self.label)
        self._batch_seconds = m.batch_seconds.labels(self.label)
        self._lock = FifoLock()
        #: the saves waiting for the next turn, each with its caller's Deferred
        self._group: list[tuple[list[SaveItem], defer.Deferred[SaveReport]]] = []
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self.rounds = 0

    # -- the public API ------------------------------------------------------------------

    async def flush(self) -> SaveReport:
        """Save every dirty entity of the provider now; wait for the round in flight."""
        async with self._lock:
            return await self._save(self._dirty(self.provider()))

    async def save(self, items: Iterable[SaveItem]) -> SaveReport:
        """Save these entities now (those not dirty are skipped) and report the outcome
        for them (only them: a group's other callers have their own reports).

        Group commit: the saves asked for while the saver is busy wait together and go
        to storage as one batch when it is free (a login storm of new players used to
        queue one storage commit per player)."""
        dirty = self._dirty(items)
        if not dirty:
            # Nothing to write: do not queue on the lock (a mass logout behind one slow
            # save would wait its turn for nothing).
            return SaveReport()
        d: defer.Deferred[SaveReport] = defer.Deferred()
        self._group.append((dirty, d))
        if len(self._group) == 1:  # the first of a group starts its turn
            defer.Deferred.fromCoroutine(self._save_group())
        return await d

    async def _save_group(self) -> None:
        """Wait for the saver's turn, then write everything asked for by then."""
        async with self._lock:
            group, self._group = self._group, []
            try:
                outcome = await self._save_distinct([i for items, _ in group for i in items])
            except BaseException:
                failure = Failure()
                results: list[Any] = [failure] * len(group)
            else:
                results = [_report_of(items, outcome) for items, _ in group]
        # the callers resume after the lock is free: a save they ask for next joins the
        # next group instead of finding this turn still held
        for (_, d), result in zip(group, results, strict=True):
            if d.called:  # the caller gave up (cancelled): its entities were written anyway
                continue
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)

    async def _save_distinct(self, items: list[SaveItem]) -> dict[int, str]:
        """Save *items* (each entity once; those no longer dirty skipped); the outcome of
        each, by ``id(entity)``. Two entities with one key (instances of one player) are
        never in one batch: they go in the order asked, so storage's fence decides."""
        seen: set[int] = set()
        rounds: list[tuple[set[Key], list[SaveItem]]] = []
        for entity, generation in items:
            if id(entity) in seen or not entity.dirty:
                continue
            seen.add(id(entity))
            slot = next((r for r in rounds if entity.id not in r[0]), None)
            if slot is None:
                slot = (set(), [])
                rounds.append(slot)
            slot[0].add(entity.id)
            slot[1].append((entity, generation))
        outcome: dict[int, str] = {}
        for _, batch in rounds:
            for i in range(0, len(batch), self.batch_size):
                await self._save_batch(batch[i:i + self.batch_size], outcome)
        return outcome

    # -- the loop ------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> defer.Deferred[SaveReport]:
        """Stop the loop and save everything, dispatching every batch at once.

        This runs inside the process's "before shutdown" phase, where the storage backend
        closes itself right after the service tree was told to stop: a save that is not
        handed to the backend synchronously here could meet a closed backend. So the final
        flush does not wait for the saver's lock (an older round in flight was queued
        first and lands first).
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        d = defer.Deferred.fromCoroutine(self._final_flush())
        return d

    async def _final_flush(self) -> SaveReport:
        items = self._dirty(self.provider())
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(self._save_batch(b)) for b in batches])
        report = SaveReport()
        for r in results:
            report.merge(r)
        if items:
            log.info("saver {name}: final flush saved {saved}, failed {failed}, stale {stale}",
                     name=self.label, **report.to_dict())
        return report

    def _tick(self) -> defer.Deferred[None]:
        # LoopingCall waits for this Deferred, so rounds never pile up; errors are caught
        # here because a failing LoopingCall would stop for good.
        return defer.Deferred.fromCoroutine(self._round())

    async def _round(self) -> None:
        self.rounds += 1
        try:
            report = await self.flush()
        except Exception:
            log.failure("saver {name}: periodic round failed", name=self.label)
            return
        if report.failed or report.stale:
            log.warn("saver {name}: round saved {saved}, failed {failed} (kept dirty), "
                     "stale {stale}", name=self.label, **report.to_dict())

    # -- saving --------------------------------------------------------------------------

    @staticmethod
    def _dirty(items: Iterable[SaveItem]) -> list[SaveItem]:
        return [(e, g) for e, g in items if e.dirty]

    async def _save(self, items: list[SaveItem]) -> SaveReport:
        report = SaveReport()
        for i in range(0, len(items), self.batch_size):
            report.merge(await self._save_batch(items[i:i + self.batch_size]))
        return report

    async def _save_batch(self, items: list[SaveItem],
                          outcome: dict[int, str] | None = None) -> SaveReport:
        """Write one batch; *outcome*, when given, gets each entity's result by
        ``id(entity)``: "saved", "failed" or "stale"."""
        report = SaveReport()
        if outcome is None:
            outcome = {}

        def note(entity: Entity, what: str) -> None:
            getattr(report, what).append(entity.id)
            outcome[id(entity)] = what

        batch: list[tuple[Entity, int, tuple[Key, dict[str, Any], int]]] = []
        for entity, generation in items:
            try:
                token, doc = entity.snapshot()
            except Exception:  # data that cannot be serialized: this entity only
                log.failure("saver {name}: cannot snapshot {id}", name=self.label, id=entity.id)
                self._failures.inc()
                note(entity, "failed")
                continue
            batch.append((entity, token, (entity.id, doc, generation)))
        if not batch:
            return report
        started = time.monotonic()
        try:
            outcomes = await self.backend.save_entities(self.collection,
                                                        [b[2] for b in batch])
        except InvalidDocument:
            # One bad document must not hold back the whole batch forever: save one by one.
            if len(batch) > 1:
                for entity, _, (_, _, generation) in batch:
                    report.merge(await self._save_batch([(entity, generation)], outcome))
                return report
            log.failure("saver {name}: {id} cannot be stored; it stays dirty",
                        name=self.label, id=batch[0][0].id)
            self._failures.inc()
            note(batch[0][0], "failed")
            return report
        except Exception as e:
            self._batch_seconds.observe(time.monotonic() - started)
            self._failures.inc(len(batch))
            for b in batch:
                note(b[0], "failed")
            log.error("saver {name}: saving {n} entities to {collection} failed, they stay "
                      "dirty: {error}", name=self.label, n=len(batch),
                      collection=self.collection, error=e)
            return report
        self._batch_seconds.observe(time.monotonic() - started)
        for (entity, token, _), refused in zip(batch, outcomes, strict=True):
            if refused is None:
                entity.saved(token)
                note(entity, "saved")
                continue
            self._stale.inc()
            note(entity, "stale")
            log.warn("saver {name}: {error}; a newer instance owns it", name=self.label,
                     error=refused)
            if self.on_stale is not None:
                try:
                    self.on_stale(entity, refused)
                except Exception:
                    log.failure("saver {name}: on_stale for {id} failed", name=self.label,
                                id=entity.id)
        if report.saved:
            self._saved.inc(len(report.saved))
        return report


def _report_of(items: list[SaveItem], outcome: dict[int, str]) -> SaveReport:
    """The part of a group's outcome that concerns *items* (one caller's entities); an
    entity no longer dirty at the group's turn (saved meanwhile) is in none of the lists."""
    report = SaveReport()
    for entity, _ in items:
        what = outcome.get(id(entity))
        if what is not None:
            getattr(report, what).append(entity.id)
    return report

