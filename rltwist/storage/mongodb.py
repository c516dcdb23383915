"""MongoDB backend through txmongo.

Layout of a stored entity: ``{_id: <entity id>, gen: <generation>, doc: {...}}``.
``_id`` is the entity id, so a sharded role collection can be sharded on it;
the game document sits under ``doc`` so its keys can never clash with ours and
an upsert can replace it without touching ``gen``.

txmongo waits forever unless each call is given ``timeout=``; every call here
passes one, and an outer bound catches anything that slips past it. A timed
out call raises :class:`StorageTimeout` (its outcome on the server is unknown).
Documents are BSON-encoded on the caller's thread (``RawBSONDocument``), so a
save stores the document as it was at call time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, TypeVar

import bson
from bson.errors import BSONError
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteOne, UpdateOne
from pymongo.collection import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.logger import Logger
from txmongo import filter as qf
from txmongo.connection import ConnectionPool
from txmongo.errors import TimeExceeded

from rltwist.storage import codec
from rltwist.storage.errors import (
    BackendClosed,
    DuplicateKey,
    InvalidDocument,
    StaleGeneration,
    StorageError,
    StorageTimeout,
)
from rltwist.storage.interface import (
    Delete,
    Document,
    Key,
    Scalar,
    StoredEntity,
    Update,
    Upsert,
    WriteOp,
)

_T = TypeVar("_T")

COUNTERS = "_counters"
"""Collection of the atomic counters; user collections start with a letter."""

DUPLICATE_KEY = 11000
_FENCE_ATTEMPTS = 3


def _redact(uri: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", uri)


def _raw(doc: Mapping[str, Any], what: str) -> RawBSONDocument:
    """Encode now (snapshot + validation) rather than when txmongo gets to it."""
    try:
        return RawBSONDocument(bson.encode(doc))
    except (BSONError, TypeError, ValueError, OverflowError) as e:
        raise InvalidDocument(f"{what} cannot be stored in MongoDB: {e}") from e


class MongoBackend:
    """Backend on a MongoDB database (``uri`` as txmongo accepts it, ``db_name``).

    ``timeout`` bounds every operation, including waiting for the connection.
    ``connection`` lets tests or a node share an existing txmongo pool; the
    backend only disconnects a pool it created.
    """

    log = Logger()

    def __init__(
        self,
        uri: str,
        db_name: str,
        *,
        timeout: float = 10.0,
        pool_size: int = 1,
        connection: ConnectionPool | None = None,
    ) -> None:
        self._uri = uri
        self._timeout = timeout
        self._owns_connection = connection is None
        if connection is None:
            connection = ConnectionPool(uri, pool_size=pool_size, retry_delay=1.0, max_delay=30.0)
        self._conn = connection
        self._db = connection[db_name]
        self.db_name = db_name
        self._closed = False

    @property
    def description(self) -> str:
        return f"mongodb:{_redact(self._uri)}/{self.db_name}"

    def __repr__(self) -> str:
        return f"<MongoBackend {self.description}>"

    async def close(self) -> None:
        """Disconnect (if this backend opened the connection)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_connection:
            await self._conn.disconnect()

    async def _call(self, op: str, awaitable: Awaitable[_T]) -> _T:
        """Await a txmongo call (already given ``timeout=``) and translate its errors."""
        d: defer.Deferred[_T] = defer.ensureDeferred(_as_coroutine(awaitable))
        # Outer bound in case some path inside txmongo ignores its deadline.
        d.addTimeout(self._timeout + 1.0, _reactor())
        try:
            return await d
        except (TimeExceeded, defer.TimeoutError):
            raise StorageTimeout(
                f"{self.description}: {op} did not finish within {self._timeout}s"
            ) from None
        except (StorageError, DuplicateKeyError, BulkWriteError):
            raise
        except PyMongoError as e:
            raise StorageError(f"{self.description}: {op} failed: {e}") from e
        except (ConnectError, ConnectionLost) as e:
            raise StorageError(f"{self.description}: {op} lost the connection: {e}") from e

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise BackendClosed(f"{self.description}: {op} after close()")

    # -- Backend API -----------------------------------------------------------

    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        self._check_open("insert")
        codec.check_collection(collection)
        codec.check_key(id)
        record = {"_id": id, "gen": 0, "doc": _raw(codec.check_doc(doc), "document")}
        try:
            await self._call(
                "insert", self._db[collection].insert_one(record, timeout=self._timeout)
            )
        except DuplicateKeyError:
            raise DuplicateKey(collection, id) from None

    async def get(self, collection: str, id: Key) -> Document | None:
        entity = await self.get_entity(collection, id)
        return None if entity is None else entity.doc

    async def get_entity(self, collection: str, id: Key) -> StoredEntity | None:
        self._check_open("get")
        codec.check_collection(collection)
        codec.check_key(id)
        record = await self._call(
            "get", self._db[collection].find_one({"_id": id}, timeout=self._timeout)
        )
        if record is None:
            return None
        return StoredEntity(doc=record.get("doc", {}), generation=record.get("gen", 0))

    async def update(self, collection: str, id: Key, fields: Mapping[str, Any]) -> bool:
        self._check_open("update")
        codec.check_collection(collection)
        codec.check_key(id)
        fields = codec.check_fields(fields)
        if not fields:
            return await self.get(collection, id) is not None
        change = {"$set": _raw({f"doc.{k}": v for k, v in fields.items()}, "update")}
        result = await self._call(
            "update",
            self._db[collection].update_one({"_id": id}, change, timeout=self._timeout),
        )
        return bool(result.matched_count)

    async def upsert(self, collection: str, id: Key, doc: Document) -> None:
        self._check_open("upsert")
        codec.check_collection(collection)
        codec.check_key(id)
        change = {
            "$set": {"doc": _raw(codec.check_doc(doc), "document")},
            "$setOnInsert": {"gen": 0},
        }
        for attempt in range(2):
            try:
                await self._call(
                    "upsert",
                    self._db[collection].update_one(
                        {"_id": id}, change, upsert=True, timeout=self._timeout
                    ),
                )
                return
            except DuplicateKeyError as e:
                # Two upserts inserting the same new id at once: the loser retries
                # as an update.
                if attempt:
                    raise StorageError(f"{self.description}: upsert failed: {e}") from e

    async def delete(self, collection: str, id: Key) -> bool:
        self._check_open("delete")
        codec.check_collection(collection)
        codec.check_key(id)
        result = await self._call(
            "delete", self._db[collection].delete_one({"_id": id}, timeout=self._timeout)
        )
        return bool(result.deleted_count)

    async def find(
        self, collection: str, query: Mapping[str, Scalar], limit: int | None = None
    ) -> list[tuple[Key, Document]]:
        self._check_open("find")
        codec.check_collection(collection)
        spec = {f"doc.{k}": v for k, v in codec.check_query(query).items()}
        cursor = self._db[collection].find(
            spec, limit=codec.check_limit(limit) or 0, timeout=self._timeout
        )
        # A txmongo Cursor is only a Deferred through its callback methods
        # (``await cursor`` would never fire), hence addCallback.
        records = await self._call("find", cursor.addCallback(list))
        return [(r["_id"], r.get("doc", {})) for r in records]

    async def ensure_index(self, collection: str, field: str) -> None:
        self._check_open("ensure_index")
        codec.check_collection(collection)
        codec.split_path(field)
        await self._call(
            "ensure_index",
            self._db[collection].ensure_index(
                qf.sort(qf.ASCENDING(f"doc.{field}")), timeout=self._timeout
            ),
        )

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        """One ordered bulk write per run of ops on the same collection.

        Unlike the embedded backend this is not one transaction: MongoDB
        without a replica set has none, and a crash mid-batch leaves a prefix
        of the ops applied (each op is itself idempotent, so replaying is safe).
        """
        self._check_open("write_batch")
        runs: list[tuple[str, list[Any]]] = []
        for op in ops:
            codec.check_collection(op.collection)
            codec.check_key(op.id)
            if isinstance(op, Upsert):
                request: Any = UpdateOne(
                    {"_id": op.id},
                    {
                        "$set": {"doc": _raw(codec.check_doc(op.doc), "document")},
                        "$setOnInsert": {"gen": 0},
                    },
                    upsert=True,
                )
            elif isinstance(op, Update):
                fields = codec.check_fields(op.fields)
                if not fields:
                    continue
                change = _raw({f"doc.{k}": v for k, v in fields.items()}, "update")
                request = UpdateOne({"_id": op.id}, {"$set": change})
            elif isinstance(op, Delete):
                request = DeleteOne({"_id": op.id})
            else:
                raise TypeError(f"not a write op: {op!r}")
            if not runs or runs[-1][0] != op.collection:
                runs.append((op.collection, []))
            runs[-1][1].append(request)
        for collection, requests in runs:
            try:
                await self._call(
                    "write_batch",
                    self._db[collection].bulk_write(requests, ordered=True, timeout=self._timeout),
                )
            except BulkWriteError as e:
                raise StorageError(
                    f"{self.description}: write_batch on {collection} failed:"
                    f" {e.details.get('writeErrors')}"
                ) from e

    async def incr(self, counter: str, amount: int = 1) -> int:
        self._check_open("incr")
        if not isinstance(counter, str) or not counter:
            raise InvalidDocument(f"bad counter name {counter!r}")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidDocument(f"bad counter amount {amount!r}")
        for attempt in range(2):
            try:
                record = await self._call(
                    "incr",
                    self._db[COUNTERS].find_one_and_update(
                        {"_id": counter},
                        {"$inc": {"value": amount}},
                        upsert=True,
                        return_document=ReturnDocument.AFTER,
                        timeout=self._timeout,
                    ),
                )
                return int(record["value"])
            except DuplicateKeyError as e:
                # First increments of a new counter racing each other.
                if attempt:
                    raise StorageError(f"{self.description}: incr failed: {e}") from e
        raise AssertionError("unreachable")

    async def save_entity(self, collection: str, id: Key, doc: Document, generation: int) -> None:
        self._check_open("save_entity")
        codec.check_collection(collection)
        codec.check_key(id)
        codec.check_generation(generation)
        raw = _raw(codec.check_doc(doc), "document")
        refused = await self._save_one(collection, id, raw, generation)
        if refused is not None:
            raise refused

    @staticmethod
    def _fenced(id: Key, raw: RawBSONDocument, generation: int) -> tuple[Document, Document]:
        """Filter and update of a fenced save.

        The filter matches an existing doc whose gen is not newer (or one without
        gen); if a newer one exists it misses, the upsert tries to insert the same
        ``_id`` and fails with a duplicate key: that is the refusal.
        """
        return (
            {"_id": id, "gen": {"$not": {"$gt": generation}}},
            {"$set": {"doc": raw, "gen": generation}},
        )

    async def _stored_generations(self, collection: str, ids: list[Key]) -> dict[Key, int]:
        records = await self._call(
            "save_entities",
            self._db[collection]
            .find({"_id": {"$in": ids}}, projection={"gen": 1}, timeout=self._timeout)
            .addCallback(list),
        )
        return {r["_id"]: r.get("gen", 0) for r in records}

    async def _save_one(
        self, collection: str, id: Key, raw: RawBSONDocument, generation: int
    ) -> StaleGeneration | None:
        for _ in range(_FENCE_ATTEMPTS):
            spec, change = self._fenced(id, raw, generation)
            try:
                await self._call(
                    "save_entity",
                    self._db[collection].update_one(
                        spec, change, upsert=True, timeout=self._timeout
                    ),
                )
                return None
            except DuplicateKeyError:
                stored = (await self._stored_generations(collection, [id])).get(id)
                if stored is not None and stored > generation:
                    return StaleGeneration(collection, id, generation, stored)
                # Lost an insert race against an older or equal generation: retry.
        return StaleGeneration(collection, id, generation, None)

    async def save_entities(
        self, collection: str, items: Sequence[tuple[Key, Document, int]]
    ) -> list[StaleGeneration | None]:
        self._check_open("save_entities")
        codec.check_collection(collection)
        encoded = [
            (codec.check_key(id), _raw(codec.check_doc(doc), "document"), codec.check_generation(g))
            for id, doc, g in items
        ]
        if not encoded:
            return []
        results: list[StaleGeneration | None] = [None] * len(encoded)
        requests = [UpdateOne(*self._fenced(id, raw, g), upsert=True) for id, raw, g in encoded]
        try:
            await self._call(
                "save_entities",
                self._db[collection].bulk_write(requests, ordered=False, timeout=self._timeout),
            )
            return results
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            others = [err for err in errors if err.get("code") != DUPLICATE_KEY]
            if others or e.details.get("writeConcernErrors"):
                raise StorageError(
                    f"{self.description}: save_entities on {collection} failed: {others}"
                ) from e
            refused = sorted({err["index"] for err in errors})
        stored = await self._stored_generations(collection, [encoded[i][0] for i in refused])
        for i in refused:
            id, raw, g = encoded[i]
            s = stored.get(id)
            if s is not None and s > g:
                results[i] = StaleGeneration(collection, id, g, s)
            else:
                results[i] = await self._save_one(collection, id, raw, g)
        return results


async def _as_coroutine(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor
