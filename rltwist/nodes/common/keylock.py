"""Critical sections inside one process: :class:`FifoLock` (``async with lock: ...``) and
per-key ones (one login per openid, one instance per player): ``async with locks(key): ...``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from twisted.internet import defer


class FifoLock:
    """A first-come first-served lock for coroutines that stays flat under long queues.

    Twisted's ``DeferredLock.release`` runs the next waiter inside itself; a waiter that
    finishes without waiting for anything releases again from there, so a queue of N such
    waiters nests N deep, and past Python's recursion limit the chain breaks with the lock
    held for ever (the savers of a map placing 2,000 cities, of a role node in a mass
    logout). Here the outermost ``release`` hands the lock over in a loop instead: a waiter
    that releases while being handed the lock only tells that loop to go on."""

    __slots__ = ("_handing", "_released", "locked", "waiting")

    def __init__(self) -> None:
        self.locked = False
        self.waiting: deque[defer.Deferred[None]] = deque()
        self._handing = False
        self._released = False

    def acquire(self) -> defer.Deferred[None]:
        """Fires (at once if free) when the caller holds the lock."""
        if not self.locked:
            self.locked = True
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(self._cancel_wait)
        self.waiting.append(d)
        return d

    def _cancel_wait(self, d: defer.Deferred[None]) -> None:
        self.waiting.remove(d)

    def release(self) -> None:
        """Give the lock to the next waiter, or free it."""
        if not self.locked:
            raise RuntimeError("FifoLock released while not held")
        if self._handing:  # a waiter being handed the lock released it at once
            self._released = True
            return
        self._handing = True
        try:
            while self.waiting:
                self._released = False
                self.waiting.popleft().callback(None)  # the lock passes to it, held
                if not self._released:
                    return  # it holds the lock and will release later
            self.locked = False
        finally:
            self._handing = False

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.release()


class KeyedLock:
    """A :class:`FifoLock` per key, dropped again when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, FifoLock] = {}
        self._users: dict[Any, int] = {}

    def locked(self, key: Any) -> bool:
        lock = self._locks.get(key)
        return lock is not None and lock.locked

    @asynccontextmanager
    async def __call__(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = FifoLock()
        self._users[key] = self._users.get(key, 0) + 1
        try:
            await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
