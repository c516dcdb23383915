"""FifoLock: first come first served, and flat however long the queue of waiters that
release at once (Twisted's DeferredLock nests one call per such waiter and breaks at
Python's recursion limit with the lock held for ever)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from rltwist.nodes.common.keylock import FifoLock, KeyedLock


class Fifo(unittest.TestCase):
    def test_waiters_get_the_lock_in_order_one_at_a_time(self) -> None:
        lock = FifoLock()
        order: list[int] = []
        gates = [defer.Deferred() for _ in range(3)]

        async def hold(i: int) -> None:
            async with lock:
                order.append(i)
                await gates[i]

        runs = [defer.Deferred.fromCoroutine(hold(i)) for i in range(3)]
        self.assertEqual(order, [0])
        self.assertEqual(len(lock.waiting), 2)
        gates[0].callback(None)
        self.assertEqual(order, [0, 1])
        gates[1].callback(None)
        gates[2].callback(None)
        self.assertEqual(order, [0, 1, 2])
        self.assertTrue(all(r.called for r in runs))
        self.assertFalse(lock.locked)

    def test_twenty_thousand_waiters_that_release_at_once_all_run(self) -> None:
        lock = FifoLock()
        gate: defer.Deferred[None] = defer.Deferred()
        ran = []

        async def first() -> None:
            async with lock:
                await gate

        async def quick(i: int) -> None:
            async with lock:
                ran.append(i)

        d0 = defer.Deferred.fromCoroutine(first())
        runs = [defer.Deferred.fromCoroutine(quick(i)) for i in range(20_000)]
        gate.callback(None)
        self.assertTrue(d0.called)
        self.assertEqual(ran, list(range(20_000)))
        self.assertTrue(all(r.called for r in runs))
        self.assertFalse(lock.locked)
        self.assertTrue(lock.acquire().called)  # free again

    def test_a_waiter_that_takes_the_lock_again_queues_behind_the_others(self) -> None:
        lock = FifoLock()
        gate: defer.Deferred[None] = defer.Deferred()
        order: list[str] = []

        async def first() -> None:
            async with lock:
                await gate

        async def twice() -> None:
            async with lock:
                order.append("a1")
            async with lock:
                order.append("a2")

        async def other() -> None:
            async with lock:
                order.append("b")

        defer.Deferred.fromCoroutine(first())
        runs = [defer.Deferred.fromCoroutine(twice()), defer.Deferred.fromCoroutine(other())]
        gate.callback(None)
        self.assertEqual(order, ["a1", "b", "a2"])
        self.assertTrue(all(r.called for r in runs))
        self.assertFalse(lock.locked)

    def test_a_cancelled_wait_leaves_the_queue(self) -> None:
        lock = FifoLock()
        lock.acquire()
        waiting = lock.acquire()
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertEqual(len(lock.waiting), 0)
        lock.release()
        self.assertFalse(lock.locked)

    def test_releasing_a_free_lock_is_an_error(self) -> None:
        with self.assertRaises(RuntimeError):
            FifoLock().release()

    def test_keyed_lock_waiters_of_one_key_stay_flat_too(self) -> None:
        locks = KeyedLock()
        gate: defer.Deferred[None] = defer.Deferred()

        async def first() -> None:
            async with locks("k"):
                await gate

        async def quick() -> None:
            async with locks("k"):
                pass

        defer.Deferred.fromCoroutine(first())
        runs = [defer.Deferred.fromCoroutine(quick()) for _ in range(5_000)]
        gate.callback(None)
        self.assertTrue(all(r.called for r in runs))
        self.assertEqual(len(locks), 0)
