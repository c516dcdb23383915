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


def _clean(e: Entity) -> Entity:
    """*e* as it is right after a save: nothing unsaved."""
    token, _ = e.snapshot()
    e.saved(token)
    assert not e.dirty
    return e


class QueuedSaves(unittest.TestCase):
    def test_a_thousand_clean_saves_queued_behind_a_slow_one_all_finish(self) -> None:
        backend = SlowBackend()
        saver = Saver(backend, "player", lambda: [], clock=task.Clock(),  # type: ignore[arg-type]
                      registry=CollectorRegistry())
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
        saver = Saver(backend, "world", lambda: [], clock=task.Clock(),  # type: ignore[arg-type]
                      registry=CollectorRegistry())
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
