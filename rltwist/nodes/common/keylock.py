"""Per-key critical sections inside one process (one login per openid, one instance per
player): ``async with locks(key): ...``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from twisted.internet import defer


class KeyedLock:
    """A DeferredLock per key, dropped again when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Any, defer.DeferredLock] = {}
        self._users: dict[Any, int] = {}

    def locked(self, key: Any) -> bool:
        lock = self._locks.get(key)
        return lock is not None and lock.locked

    @asynccontextmanager
    async def __call__(self, key: Any) -> AsyncIterator[None]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = defer.DeferredLock()
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
