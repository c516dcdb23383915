"""MongoDB backend through txmongo.

Layout of a stored entity: ``{_id: <entity id>, gen: <generation>, doc: {...}}``.
``_id`` is the entity id, so a sharded role collection can be sharded on it;
the game document sits under ``doc`` so its keys can never clash with ours and
an upsert can replace it without touching ``gen``.

txmongo waits forever unless each call is given ``timeout=``; every call here
passes one, and an outer bound catches anything that slips past it. A timed
out call raises :class:`StorageTimeout` (its outcome on the server is unknown).

Every write carries the write concern from ``storage.write_concern``
(``majority`` by default, journaled): a write is acknowledged only once it
cannot be rolled back by a primary failover. A write the server applied but
could not get confirmed in time (``writeConcernError``) is an unknown outcome,
raised as :class:`StorageTimeout`, never reported as success.
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
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteConcernError
from pymongo.write_concern import WriteConcern
from twisted.internet import defer
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.logger import Logger
from txmongo import filter as qf
from txmongo.collection import Collection
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
WRITE_CONCERN_FAILED = 64
_FENCE_ATTEMPTS = 3


def write_concern_for(w: str, timeout: float) -> WriteConcern:
    """The write concern of every write: ``w`` is ``"majority"`` or a member count ("2").

    Writes are also journaled (``j``), so an acknowledged write survives a crash of the
    members that confirmed it. ``wtimeout`` is 80% of the operation bound: the server
    stops waiting for replication (and says so) before the client gives up on the reply.
    """
    value: str | int
    if w == "majority":
        value = w
    elif w.isdigit() and int(w) >= 1:
        value = int(w)
    else:
        raise ValueError(f'write_concern must be "majority" or a member count >= 1, not {w!r}')
    return WriteConcern(w=value, wtimeout=max(1, int(timeout * 800)), j=True)


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
    ``write_concern`` is ``"majority"`` (default) or a member count as a string
    (see :func:`write_concern_for`). ``connection`` lets tests or a node share an
    existing txmongo pool; the backend only disconnects a pool it created.
    """

    log = Logger()

    def __init__(
        self,
        uri: str,
        db_name: str,
        *,
        timeout: float = 10.0,
        pool_size: int = 1,
        write_concern: str = "majority",
        connection: ConnectionPool | None = None,
    ) -> None:
        self._uri = uri
        self._timeout = timeout
        self.write_concern = write_concern_for(write_concern, timeout)
        self._colls: dict[str, Collection] = {}
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
        except WriteConcernError as e:
            raise self._concern_failed(op, e.details or {}) from e
        except PyMongoError as e:
            raise StorageError(f"{self.description}: {op} failed: {e}") from e
        except (ConnectError, ConnectionLost) as e:
            raise StorageError(f"{self.description}: {op} lost the connection: {e}") from e

    def _check_open(self, op: str) -> None:
        if self._closed:
            raise BackendClosed(f"{self.description}: {op} after close()")

    def _coll(self, name: str) -> Collection:
        """Collection ``name`` writing with this backend's write concern."""
        coll = self._colls.get(name)
        if coll is None:
            coll = self._colls[name] = self._db[name].with_options(
                write_concern=self.write_concern
            )
        return coll

    def _concern_failed(self, op: str, error: Mapping[str, Any]) -> StorageError:
        """The error for a write the server applied but could not confirm as asked.

        Its outcome is unknown: the write may survive or be rolled back by a failover.
        A replication wait that ran out is a :class:`StorageTimeout`.
        """
        message = (
            f"{self.description}: {op} was not confirmed with w={self.write_concern.document['w']}"
            f" (outcome unknown): {error.get('errmsg', error)}"
        )
        timed_out = error.get("code") == WRITE_CONCERN_FAILED or bool(
            (error.get("errInfo") or {}).get("wtimeout")
        )
        return StorageTimeout(message) if timed_out else StorageError(message)

    async def _find_and_modify(
        self, op: str, collection: str, spec: Document, change: Document, upsert: bool
    ) -> Document | None:
        """``findAndModify`` returning the document after the change (None if none matched).

        Sent as a command because txmongo's ``find_one_and_update`` drops the reply's
        ``writeConcernError``: a write not confirmed by the write concern would pass as done.
        """
        command = {
            "findAndModify": collection,
            "query": spec,
            "update": change,
            "new": True,
            "upsert": upsert,
            "writeConcern": self.write_concern.document,
        }
        reply = await self._call(op, self._db.command(command, timeout=self._timeout))
        concern = reply.get("writeConcernError")
        if concern:
            raise self._concern_failed(op, concern)
        value: Document | None = reply.get("value")
        return value

    # -- Backend API -----------------------------------------------------------

    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        self._check_open("insert")
        codec.check_collection(collection)
        codec.check_key(id)
        record = {"_id": id, "gen": 0, "doc": _raw(codec.check_doc(doc), "document")}
        try:
            await self._call(
                "insert", self._coll(collection).insert_one(record, timeout=self._timeout)
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
            "get", self._coll(collection).find_one({"_id": id}, timeout=self._timeout)
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
            self._coll(collection).update_one({"_id": id}, change, timeout=self._timeout),
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
                    self._coll(collection).update_one(
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
            "delete", self._coll(collection).delete_one({"_id": id}, timeout=self._timeout)
        )
        return bool(result.deleted_count)

    async def find(
        self, collection: str, query: Mapping[str, Scalar], limit: int | None = None
    ) -> list[tuple[Key, Document]]:
        self._check_open("find")
        codec.check_collection(collection)
        spec = {f"doc.{k}": v for k, v in codec.check_query(query).items()}
        cursor = self._coll(collection).find(
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
            self._coll(collection).ensure_index(
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
                    self._coll(collection).bulk_write(
                        requests, ordered=True, timeout=self._timeout
                    ),
                )
            except BulkWriteError as e:
                concerns = e.details.get("writeConcernErrors")
                if concerns and not e.details.get("writeErrors"):
                    raise self._concern_failed("write_batch", concerns[0]) from e
                raise StorageError(
                    f"{self.description}: write_batch on {collection} failed:"
                    f" {e.details.get('writeErrors')}"
                ) from e

    async def collections(self) -> list[str]:
        self._check_open("collections")
        names = await self._call("collections",
                                 self._db.collection_names(timeout=self._timeout))
        found = []
        for name in sorted(names):
            if name == COUNTERS or name.startswith("system."):
                continue
            # a collection whose documents were all deleted still exists in MongoDB
            one = await self._call("collections", self._coll(name).find_one(
                {}, timeout=self._timeout))
            if one:
                found.append(name)
        return found

    async def counters(self) -> dict[str, int]:
        self._check_open("counters")
        cursor = self._coll(COUNTERS).find({}, timeout=self._timeout)
        records = await self._call("counters", cursor.addCallback(list))
        return {str(r["_id"]): int(r["value"]) for r in records}

    async def incr(self, counter: str, amount: int = 1) -> int:
        self._check_open("incr")
        if not isinstance(counter, str) or not counter:
            raise InvalidDocument(f"bad counter name {counter!r}")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidDocument(f"bad counter amount {amount!r}")
        for attempt in range(2):
            try:
                record = await self._find_and_modify(
                    "incr", COUNTERS, {"_id": counter}, {"$inc": {"value": amount}}, upsert=True
                )
                assert record is not None  # an upsert always leaves a document
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

    async def _stored_generations(
        self, collection: str, ids: list[Key], op: str = "save_entities"
    ) -> dict[Key, int]:
        records = await self._call(
            op,
            self._coll(collection)
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
                    self._coll(collection).update_one(
                        spec, change, upsert=True, timeout=self._timeout
                    ),
                )
                return None
            except DuplicateKeyError:
                stored = (await self._stored_generations(collection, [id])).get(id)
                if stored is not None and stored > generation:
                    return StaleGeneration(collection, id, generation, stored)
                # Lost an insert race against an older or equal generation: retry.
        # Not a refusal: nothing newer was seen, so the caller must keep the data and retry
        # (a StaleGeneration would tell it a newer instance owns the entity).
        raise StorageError(
            f"{self.description}: save of {collection}/{id!r} lost {_FENCE_ATTEMPTS} insert"
            " races in a row; not saved"
        )

    async def claim_generation(
        self, collection: str, id: Key, generation: int, initial: Document | None = None
    ) -> StoredEntity:
        """Compare-and-set of the stored generation in one ``findAndModify``.

        The filter matches only a stored generation lower than ``generation`` (or none
        stored); if a document with a newer or equal one exists the upsert collides on
        ``_id``: that duplicate key is the refusal. A collision with a lower generation
        (a concurrent insert of the same id) is retried.
        """
        self._check_open("claim_generation")
        codec.check_collection(collection)
        codec.check_key(id)
        codec.check_generation(generation)
        raw = _raw(codec.check_doc({} if initial is None else initial), "initial document")
        for _ in range(_FENCE_ATTEMPTS):
            try:
                record = await self._find_and_modify(
                    "claim_generation",
                    collection,
                    {"_id": id, "gen": {"$not": {"$gte": generation}}},
                    {"$set": {"gen": generation}, "$setOnInsert": {"doc": raw}},
                    upsert=True,
                )
            except DuplicateKeyError:
                stored = (
                    await self._stored_generations(collection, [id], "claim_generation")
                ).get(id)
                if stored is not None and stored >= generation:
                    raise StaleGeneration(collection, id, generation, stored) from None
                continue
            assert record is not None  # an upsert always leaves a document
            return StoredEntity(doc=record.get("doc", {}), generation=generation)
        raise StorageError(
            f"{self.description}: claim of {collection}/{id!r} lost {_FENCE_ATTEMPTS} insert"
            " races in a row; not claimed"
        )

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
                self._coll(collection).bulk_write(requests, ordered=False, timeout=self._timeout),
            )
            return results
        except BulkWriteError as e:
            errors = e.details.get("writeErrors", [])
            others = [err for err in errors if err.get("code") != DUPLICATE_KEY]
            concerns = e.details.get("writeConcernErrors")
            if concerns and not others:
                # Refusals cannot be told apart from unconfirmed saves: retry them all.
                raise self._concern_failed("save_entities", concerns[0]) from e
            if others:
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
