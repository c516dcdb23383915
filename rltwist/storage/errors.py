"""Typed storage errors shared by every backend.

Callers (dbproxy, LRU services, the saver) branch on the class, never on the
message, so each error carries the fields a caller needs to decide what to do.
The constructor arguments are kept in ``args`` so the errors survive pickling
and can be rebuilt on the other side of an inter-node call.
"""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base class of every error raised by a storage backend."""


class StorageTimeout(StorageError):
    """An operation did not finish within its bound, or a write was not confirmed.

    The outcome of a write that timed out is unknown: it may still be applied
    (the embedded backend may have it queued or running on its thread; MongoDB
    may have applied it without the write concern's confirmation). Keep the data
    and write it again: on the embedded backend writes run in call order, so the
    retry lands after the original.
    """


class BackendClosed(StorageError):
    """The backend was closed; no further operation is accepted."""


class InvalidDocument(StorageError, ValueError):
    """A document, id, collection name, query or field path cannot be stored.

    Raised before anything is written (for example an int outside 64 bits,
    a set, a non-str key at the top level, a collection name with a ``$``).
    """


class DuplicateKey(StorageError):
    """``insert`` of an id that already exists in the collection."""

    def __init__(self, collection: str, id: Any) -> None:
        super().__init__(collection, id)
        self.collection = collection
        self.id = id

    def __str__(self) -> str:
        return f"duplicate key {self.id!r} in collection {self.collection!r}"


class StaleGeneration(StorageError):
    """A fenced write was refused: a newer instance owns the entity.

    A fenced save is refused when the stored generation is higher than the
    caller's; a generation claim when it is higher or equal. ``given`` is the
    generation the caller wrote with; ``stored`` is the one found in the
    database (``None`` if it could not be read back). The stored document was
    left untouched.
    """

    def __init__(self, collection: str, id: Any, given: int, stored: int | None) -> None:
        super().__init__(collection, id, given, stored)
        self.collection = collection
        self.id = id
        self.given = given
        self.stored = stored

    def __str__(self) -> str:
        return (
            f"stale write of {self.collection}/{self.id!r} refused: generation {self.given},"
            f" stored generation {self.stored}"
        )
