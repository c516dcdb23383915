"""The backend contract that dbproxy programs against.

Every method is a coroutine (``await backend.get(...)``; wrap with
``defer.ensureDeferred`` where a Deferred is needed). A document is a dict of
msgpack/BSON-able values: str keys, nested dicts and lists, str, bytes, bool,
None, float and ints in the signed 64-bit range (tuples come back as lists).
The embedded backend does not re-check every key and int: it also stores
non-str keys and ints up to 2**64-1, which MongoDB refuses, so keep to the
portable subset. The entity id is kept next to
the document, not inside it: ``get`` returns exactly the dict that was stored.

Each stored document also carries a *generation* (0 unless written by
``save_entity`` or ``claim_generation``). A fenced save only lands when its
generation is at least the stored one, so a stale player instance (an old role
node, a late timer) can never overwrite what a newer instance saved; a new
instance fences the old one eagerly with ``claim_generation`` before it starts.

Outcome of a failed write: ``DuplicateKey``, ``StaleGeneration``,
``InvalidDocument`` and ``BackendClosed`` mean nothing was written. Any other
``StorageError`` (``StorageTimeout`` included) means the outcome is unknown: the
write may have landed or may still land. A caller that must not lose data keeps
it (the entity stays dirty) and writes it again: upsert, update, delete,
write_batch and fenced saves are idempotent. The others are not: a repeated
``insert`` whose first try landed raises ``DuplicateKey``; a repeated ``incr``
adds twice (a gap in a sequence, never a duplicate); a repeated
``claim_generation`` of the same generation raises ``StaleGeneration`` with
``stored == given`` (claim a higher generation instead).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import attrs

from rltwist.storage.errors import StaleGeneration

Key: TypeAlias = int | str
"""An entity id: a signed 64-bit int (userid = seq << 16 | server_id) or a str."""

Document: TypeAlias = dict[str, Any]
Scalar: TypeAlias = bool | int | float | str | bytes | None
"""Values ``find`` can match on (equality; ``None`` also matches a missing field)."""


@attrs.frozen
class StoredEntity:
    """A document together with the generation it was saved with."""

    doc: Document
    generation: int


@attrs.frozen
class Upsert:
    """Batched write: store ``doc`` as the whole document of ``id``."""

    collection: str
    id: Key
    doc: Document


@attrs.frozen
class Update:
    """Batched write: set some fields of an existing document (no-op if absent)."""

    collection: str
    id: Key
    fields: Mapping[str, Any]


@attrs.frozen
class Delete:
    """Batched write: remove ``id`` (no-op if absent)."""

    collection: str
    id: Key


WriteOp: TypeAlias = Upsert | Update | Delete


@runtime_checkable
class Backend(Protocol):
    """Async document store used by one node's dbproxy.

    Backends: :class:`~rltwist.storage.embedded.EmbeddedBackend` (SQLite file,
    safe for several processes) and :class:`~rltwist.storage.mongodb.MongoBackend`.
    Every operation is bounded; a bound that is exceeded raises
    :class:`~rltwist.storage.errors.StorageTimeout`.
    """

    @property
    def description(self) -> str:
        """Human-readable name for logs and errors, e.g. ``embedded:run/data/r1.sqlite3``."""
        ...

    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        """Create a document; raise ``DuplicateKey`` if ``id`` already exists."""
        ...

    async def get(self, collection: str, id: Key) -> Document | None:
        """Return the document of ``id``, or ``None``."""
        ...

    async def get_entity(self, collection: str, id: Key) -> StoredEntity | None:
        """Return the document of ``id`` with its stored generation, or ``None``."""
        ...

    async def update(self, collection: str, id: Key, fields: Mapping[str, Any]) -> bool:
        """Set some fields (dotted paths reach into nested dicts); False if absent."""
        ...

    async def upsert(self, collection: str, id: Key, doc: Document) -> None:
        """Store ``doc`` as the whole document of ``id`` (generation unchanged)."""
        ...

    async def delete(self, collection: str, id: Key) -> bool:
        """Remove ``id``; return whether it existed."""
        ...

    async def find(
        self, collection: str, query: Mapping[str, Scalar], limit: int | None = None
    ) -> list[tuple[Key, Document]]:
        """Return ``(id, doc)`` pairs whose fields equal every value of ``query``.

        Keys are dotted paths; values are scalars compared MongoDB-style (numbers
        by value, bools only with bools, ``None`` also matches a missing field).
        ``{}`` matches every document. Order is unspecified; ``limit`` None or 0
        means no limit. Without ``ensure_index`` on a queried field the embedded
        backend scans the collection.
        """
        ...

    async def ensure_index(self, collection: str, field: str) -> None:
        """Make ``find`` on ``field`` use an index (idempotent)."""
        ...

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        """Apply many upserts/updates/deletes in order in one transaction/bulk op."""
        ...

    async def incr(self, counter: str, amount: int = 1) -> int:
        """Atomically add ``amount`` to a named counter (starting at 0); return the new value."""
        ...

    async def save_entity(self, collection: str, id: Key, doc: Document, generation: int) -> None:
        """Store ``doc`` only if ``generation >= stored generation``; else ``StaleGeneration``."""
        ...

    async def save_entities(
        self, collection: str, items: Sequence[tuple[Key, Document, int]]
    ) -> list[StaleGeneration | None]:
        """Fenced save of many entities; per item ``None`` (saved) or the refusal."""
        ...

    async def claim_generation(
        self, collection: str, id: Key, generation: int, initial: Document | None = None
    ) -> StoredEntity:
        """Take ownership of entity ``id`` for ``generation``: an atomic compare-and-set.

        If the document exists, its stored generation becomes ``generation`` only if it
        was strictly lower, else ``StaleGeneration`` (``stored`` = the stored one) is
        raised and nothing changes; the document itself is never modified. If it does
        not exist, ``initial`` (or ``{}``) is inserted with ``generation``; a concurrent
        insert of the same id is resolved as the "exists" case. Returns the document
        as stored at the moment of the claim: read after the fence, so it holds every
        save the previous owner made and no later save of it can land (every
        ``save_entity`` below ``generation`` is refused from now on). Atomic across
        processes. A ``StorageTimeout`` (or other ``StorageError``) leaves the outcome
        unknown: the claim may have landed; do not assume either way.
        """
        ...

    async def collections(self) -> list[str]:
        """The names of the collections holding at least one document, sorted (tools
        that work on a whole database: ``rl-merge``)."""
        ...

    async def counters(self) -> dict[str, int]:
        """Every named counter (``incr``) with its value."""
        ...

    async def close(self) -> None:
        """Finish queued work and release the database; later calls raise ``BackendClosed``."""
        ...
