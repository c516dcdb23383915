"""The saver under a queue of logouts (found by ``rl-chaos soak``): while one save is in
flight, hundreds of final saves of players with nothing unsaved queue on the saver's lock.
Each of those finished without waiting for anything, so the lock's release ran the next
one inside itself, recursively, until Python's recursion limit broke the chain and left the
lock held for ever: every later logout (and the node's shutdown) hung."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.nodes.common.saver import Saver


class SlowBackend:
    """save_entities waits for the test to let it finish."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[list[Any]]] = []

    def save_entities(self, collection: str, items: list[Any]) -> defer.Deferred[list[Any]]:
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self.pending.append(d)
        d.addCallback(lambda _: [None] * len(items))
        return d


def _saver(backend: SlowBackend, collection: str = "player") -> Saver:
    """A saver over *backend* on a test clock (its periodic rounds never run)."""
    return Saver(backend, collection, lambda: [], clock=task.Clock(),  # type: ignore[arg-type]
                 registry=CollectorRegistry())


def _clean(e: Entity) -> Entity:
    """*e* as it is right after a save: nothing unsaved."""
    token, _ = e.snapshot()
    e.saved(token)
    assert not e.dirty
    return e


class QueuedSaves(unittest.TestCase):
    def test_a_thousand_clean_saves_queued_behind_a_slow_one_all_finish(self) -> None:
        backend = SlowBackend()
        saver = _saver(backend)
        dirty = Entity(1, attrs={"gold": 1})
        dirty.mark_dirty()
        first = defer.Deferred.fromCoroutine(saver.save([(dirty, 1)]))
        clean = [_clean(Entity(i + 2, attrs={})) for i in range(1000)]
        queued = [defer.Deferred.fromCoroutine(saver.save([(e, 1)])) for e in clean]
        backend.pending[0].callback(None)
        self.assertTrue(first.called)
        done = [d for d in queued if d.called]
        self.assertEqual(len(done), len(queued))
        for d in queued:
            self.assertTrue(self.successResultOf(d).ok)
        after = defer.Deferred.fromCoroutine(saver.save([(_clean(Entity(9999, attrs={})), 1)]))
        self.assertTrue(after.called)  # the lock is free again

    def test_saves_that_find_their_entity_saved_meanwhile_all_finish(self) -> None:
        # The map's world marks its meta dirty before every fenced save; 2,000 cities
        # placed at once queued 2,000 saves of it, the first stored it, and all the others
        # found nothing left to write when their turn came: the same recursion, on the
        # map's saver (seen as a map node whose shutdown never ended, after a soak's logins)
        backend = SlowBackend()
        saver = _saver(backend, "world")
        meta = Entity(1, attrs={"n": 0})
        meta.mark_dirty()
        queued = [defer.Deferred.fromCoroutine(saver.save([(meta, 1)])) for _ in range(2000)]
        backend.pending[0].callback(None)  # stores meta: the queued ones find it clean
        self.assertEqual(len(backend.pending), 1)
        self.assertEqual(sum(1 for d in queued if d.called), len(queued))
        for d in queued:
            self.assertTrue(self.successResultOf(d).ok)
        flushed = defer.Deferred.fromCoroutine(saver.flush())
        self.assertTrue(flushed.called)  # the lock is free again


class RecordingBackend(SlowBackend):
    """SlowBackend that keeps each batch and can refuse chosen (id, generation) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[Any, int]]] = []
        self.refuse: set[tuple[Any, int]] = set()

    def save_entities(self, collection: str, items: list[Any]) -> defer.Deferred[list[Any]]:
        from rltwist.storage import StaleGeneration

        batch = [(key, generation) for key, _, generation in items]
        self.batches.append(batch)
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self.pending.append(d)
        d.addCallback(lambda _: [StaleGeneration(collection, k, g, g + 1) if (k, g) in self.refuse
                                 else None for k, g in batch])
        return d


def _dirty(i: int, **values: Any) -> Entity:
    e = Entity(i, attrs=dict(values) or {"gold": i})
    e.mark_dirty()
    return e


class GroupCommit(unittest.TestCase):
    """Saves asked for while one is being written go to storage together, as one batch,
    when it is done (a login storm of new players queued one SQLite commit per player:
    200 bots' first request after Auth waited ~0.7 s), each caller told only about its own
    entities; saves still never overlap."""

    def setUp(self) -> None:
        self.backend = RecordingBackend()
        self.saver = _saver(self.backend)

    def save(self, *items: tuple[Entity, int]) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self.saver.save(list(items)))

    def test_saves_queued_behind_one_in_flight_are_written_in_one_batch(self) -> None:
        players = [_dirty(i) for i in range(1, 201)]
        calls = [self.save((p, 7)) for p in players]
        self.assertEqual(len(self.backend.batches), 1)  # the first one alone, at once
        self.backend.pending[0].callback(None)
        self.assertEqual(len(self.backend.batches), 2)  # the other 199 together
        self.assertEqual(sorted(k for k, _ in self.backend.batches[1]), list(range(2, 201)))
        self.assertFalse(any(d.called for d in calls[1:]))  # not before storage answered
        self.backend.pending[1].callback(None)
        for p, d in zip(players, calls, strict=True):
            report = self.successResultOf(d)
            self.assertEqual((report.saved, report.failed, report.stale), ([p.id], [], []))
            self.assertFalse(p.dirty)

    def test_each_caller_hears_only_of_its_own_entities(self) -> None:
        first = self.save((_dirty(1), 1))
        a, b, c = _dirty(2), _dirty(3), _dirty(4)
        both = self.save((a, 5), (b, 5))
        refused = self.save((c, 5))
        self.backend.refuse.add((4, 5))
        self.backend.pending[0].callback(None)
        self.backend.pending[1].callback(None)
        self.assertTrue(self.successResultOf(first).ok)
        r = self.successResultOf(both)
        self.assertEqual((sorted(r.saved), r.failed, r.stale), ([2, 3], [], []))
        r = self.successResultOf(refused)
        self.assertEqual((r.saved, r.failed, r.stale), ([], [], [4]))
        self.assertTrue(c.dirty)

    def test_a_failed_group_write_fails_every_caller_and_keeps_everything_dirty(self) -> None:
        self.save((_dirty(1), 1))
        a, b = _dirty(2), _dirty(3)
        calls = [self.save((a, 1)), self.save((b, 1))]
        self.backend.pending[0].callback(None)
        self.backend.pending[1].errback(ConnectionError("storage went away"))
        for e, d in zip((a, b), calls, strict=True):
            report = self.successResultOf(d)
            self.assertEqual((report.saved, report.failed), ([], [e.id]))
            self.assertTrue(e.dirty)

    def test_two_instances_of_one_entity_are_not_written_in_one_batch(self) -> None:
        # a logging-out instance and the new one (same id, older and newer generation)
        # asked to save in the same turn: written in the order asked, never side by side
        self.save((_dirty(1), 1))
        old, new = _dirty(9, gold=1), _dirty(9, gold=2)
        other = _dirty(10)
        calls = [self.save((old, 3)), self.save((new, 4)), self.save((other, 4))]
        self.backend.refuse.add((9, 3))
        self.backend.pending[0].callback(None)
        self.assertEqual(self.backend.batches[1], [(9, 3), (10, 4)])
        self.backend.pending[1].callback(None)
        self.assertEqual(self.backend.batches[2], [(9, 4)])
        self.backend.pending[2].callback(None)
        reports = [self.successResultOf(d) for d in calls]
        self.assertEqual([(r.saved, r.stale) for r in reports],
                         [([], [9]), ([9], []), ([10], [])])

    def test_one_entity_asked_for_twice_is_written_once(self) -> None:
        self.save((_dirty(1), 1))
        e = _dirty(2)
        calls = [self.save((e, 1)) for _ in range(3)]
        self.backend.pending[0].callback(None)
        self.assertEqual(self.backend.batches[1], [(2, 1)])
        self.backend.pending[1].callback(None)
        for d in calls:
            self.assertEqual(self.successResultOf(d).saved, [2])

    def test_a_caller_that_gives_up_does_not_break_its_group(self) -> None:
        self.save((_dirty(1), 1))
        a, b = _dirty(2), _dirty(3)
        gave_up, waits = self.save((a, 1)), self.save((b, 1))
        gave_up.cancel()
        self.failureResultOf(gave_up, defer.CancelledError)
        self.backend.pending[0].callback(None)
        self.backend.pending[1].callback(None)
        self.assertEqual(self.successResultOf(waits).saved, [3])
        self.assertFalse(a.dirty)  # written with its group all the same
