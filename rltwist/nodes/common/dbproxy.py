"""dbproxy: a node's storage as a service (seed §5, §6, §15).

Every node that has a database serves it as ``dbproxy``: create/read/update/delete on named
collections, find by field equality, upsert, batched writes, fenced entity saves, generation
claims and the atomic counter, over ``node.database(db)``. Which database a node kind uses
(seed §6):

    role -> roledb   map/guild/mail/rolecity of region <sid> -> region<sid>
    logiccenter -> globaldb   master, login -> none (no dbproxy)

Storage errors reach callers as ``RemoteError`` whose ``kind`` is the storage error class
name (``DuplicateKey``, ``StaleGeneration``, ``InvalidDocument``, ``StorageTimeout``,
``BackendClosed``, ``StorageError``). :class:`DBClient` wraps the calls in the
:class:`~rltwist.storage.Backend` API and turns those kinds back into the storage errors,
so code written against a local backend runs unchanged against a remote dbproxy::

    db = DBClient(cluster, "rolecity1")
    await db.insert("names", key, {"userid": uid})     # raises DuplicateKey if taken

Write ops in ``write_batch`` travel as lists: ``["upsert", coll, id, doc]``,
``["update", coll, id, fields]``, ``["delete", coll, id]``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from twisted.logger import Logger

from rltwist.cluster import RemoteError, Service, handler
from rltwist.config import REGION_KINDS
from rltwist.storage import (
    Backend,
    BackendClosed,
    Delete,
    Document,
    DuplicateKey,
    InvalidDocument,
    Key,
    Scalar,
    StaleGeneration,
    StorageError,
    StorageTimeout,
    StoredEntity,
    Update,
    Upsert,
    WriteOp,
)

if TYPE_CHECKING:
    from rltwist.cluster import Cluster
    from rltwist.nodes.common.node import Node

log = Logger()

NAME = "dbproxy"
ROLEDB = "roledb"
GLOBALDB = "globaldb"


def database_for(kind: str, number: int | None) -> str | None:
    """The database a node of *kind* (region sid / pool index *number*) uses, or None."""
    if kind == "role":
        return ROLEDB
    if kind in REGION_KINDS:
        return f"region{number}"
    if kind == "logiccenter":
        return GLOBALDB
    return None


def region_db(sid: int) -> str:
    """The regiondb shared by map<sid>, guild<sid>, mail<sid> and rolecity<sid>."""
    return f"region{sid}"


def decode_op(op: Sequence[Any]) -> WriteOp:
    """A batched write op from its wire form (see the module docstring)."""
    if not isinstance(op, list | tuple) or not op:
        raise InvalidDocument(f"bad write op {op!r}")
    kind, *rest = op
    try:
        if kind == "upsert":
            coll, id, doc = rest
            return Upsert(coll, id, doc)
        if kind == "update":
            coll, id, fields = rest
            return Update(coll, id, fields)
        if kind == "delete":
            coll, id = rest
            return Delete(coll, id)
    except ValueError:
        raise InvalidDocument(f"bad {kind} op {op!r}") from None
    raise InvalidDocument(f"unknown write op {kind!r} (upsert, update or delete)")


def encode_op(op: WriteOp) -> list[Any]:
    """The wire form of a batched write op."""
    if isinstance(op, Upsert):
        return ["upsert", op.collection, op.id, op.doc]
    if isinstance(op, Update):
        return ["update", op.collection, op.id, dict(op.fields)]
    return ["delete", op.collection, op.id]


class DBProxy(Service):
    """The ``dbproxy`` service over one backend."""

    name = NAME

    def __init__(self, backend: Backend, db_name: str,
                 registry: CollectorRegistry | None = None) -> None:
        self.backend = backend
        self.db_name = db_name
        self._seconds = Histogram(
            "rl_dbproxy_seconds", "dbproxy operation latency", ["op", "outcome"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=registry if registry is not None else CollectorRegistry())

    async def _timed(self, op: str, coro: Any) -> Any:
        started = time.monotonic()
        outcome = "ok"
        try:
            return await coro
        except StorageError as e:
            outcome = type(e).__name__
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._seconds.labels(op, outcome).observe(time.monotonic() - started)

    @handler
    def info(self) -> dict[str, str]:
        """Which database this node serves, and on which backend."""
        return {"db": self.db_name, "backend": self.backend.description}

    @handler
    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        """Create a document; DuplicateKey if *id* exists."""
        await self._timed("insert", self.backend.insert(collection, id, doc))

    @handler
    async def get(self, collection: str, id: Key) -> Document | None:
        return await self._timed("get", self.backend.get(collection, id))

    @handler
    async def get_entity(self, collection: str, id: Key) -> dict[str, Any] | None:
        """``{"doc": ..., "generation": n}`` or None."""
        stored = await self._timed("get_entity", self.backend.get_entity(collection, id))
        return None if stored is None else {"doc": stored.doc, "generation": stored.generation}

    @handler
    async def update(self, collection: str, id: Key, fields: Mapping[str, Any]) -> bool:
        """Set some fields (dotted paths); False if the document does not exist."""
        return await self._timed("update", self.backend.update(collection, id, fields))

    @handler
    async def upsert(self, collection: str, id: Key, doc: Document) -> None:
        await self._timed("upsert", self.backend.upsert(collection, id, doc))

    @handler
    async def delete(self, collection: str, id: Key) -> bool:
        return await self._timed("delete", self.backend.delete(collection, id))

    @handler
    async def find(self, collection: str, query: Mapping[str, Scalar],
                   limit: int | None = None) -> list[list[Any]]:
        """``[[id, doc], ...]`` of the documents whose fields equal every value of *query*."""
        found = await self._timed("find", self.backend.find(collection, query, limit))
        return [[id, doc] for id, doc in found]

    @handler
    async def ensure_index(self, collection: str, field: str) -> None:
        await self._timed("ensure_index", self.backend.ensure_index(collection, field))

    @handler
    async def write_batch(self, ops: list[list[Any]]) -> int:
        """Apply the ops in order in one transaction; return how many."""
        decoded = [decode_op(op) for op in ops]
        await self._timed("write_batch", self.backend.write_batch(decoded))
        return len(decoded)

    @handler
    async def incr(self, counter: str, amount: int = 1) -> int:
        """Atomically add *amount* to *counter*; the new value."""
        return await self._timed("incr", self.backend.incr(counter, amount))

    @handler
    async def save_entity(self, collection: str, id: Key, doc: Document, generation: int) -> None:
        """Fenced save; StaleGeneration if a newer generation is stored."""
        await self._timed("save_entity",
                          self.backend.save_entity(collection, id, doc, generation))

    @handler
    async def save_entities(self, collection: str,
                            items: list[list[Any]]) -> list[int | None]:
        """Fenced save of ``[[id, doc, generation], ...]``; per item None (saved) or the
        stored generation that refused it."""
        refused = await self._timed("save_entities", self.backend.save_entities(
            collection, [(id, doc, gen) for id, doc, gen in items]))
        return [None if r is None else _stored_generation(r) for r in refused]


    @handler
    async def collections(self) -> list[str]:
        """The collections holding documents (sorted)."""
        return await self._timed("collections", self.backend.collections())

    @handler
    async def counters(self) -> dict[str, int]:
        """Every named counter with its value."""
        return await self._timed("counters", self.backend.counters())

    @handler
    async def claim_generation(self, collection: str, id: Key, generation: int,
                               initial: Document | None = None) -> dict[str, Any]:
        """Generation compare-and-set (see ``Backend.claim_generation``): ``{"doc": ...,
        "generation": n}`` when claimed, ``{"refused": stored generation}`` when a newer or
        equal generation is stored (an answer, not an error: the caller needs the number)."""
        try:
            stored = await self._timed("claim_generation", self.backend.claim_generation(
                collection, id, generation, initial))
        except StaleGeneration as e:
            return {"refused": _stored_generation(e)}
        return {"doc": stored.doc, "generation": stored.generation}


def _stored_generation(error: StaleGeneration) -> int:
    return error.stored if error.stored is not None else -1


def install_dbproxy(node: Node) -> DBProxy | None:
    """Register ``dbproxy`` on *node* over its kind's database; None for master/login.

    Idempotent: a node that already has a dbproxy gets it back.
    """
    existing = node.cluster.services.get(NAME)
    if isinstance(existing, DBProxy):
        return existing
    db = database_for(node.me.kind, node.me.number)
    if db is None:
        return None
    proxy = DBProxy(node.database(db), db, registry=node.registry)
    node.cluster.register(proxy)
    return proxy


# -- the caller's side ----------------------------------------------------------------------

_ERRORS: dict[str, type[StorageError]] = {
    "BackendClosed": BackendClosed,
    "InvalidDocument": InvalidDocument,
    "StorageTimeout": StorageTimeout,
    "StorageError": StorageError,
}


class DBClient:
    """The Backend API over a remote (or local) node's dbproxy.

    Storage errors come back as the storage classes; any other failure (node unreachable,
    call timeout) stays a ClusterError. ``close`` does nothing: the remote node owns the
    database.
    """

    def __init__(self, cluster: Cluster, node: str, timeout: float | None = None) -> None:
        self.cluster = cluster
        self.node = node
        self.timeout = timeout

    @property
    def description(self) -> str:
        return f"dbproxy@{self.node}"

    async def _call(self, method: str, *args: Any) -> Any:
        try:
            return await self.cluster.call(self.node, NAME, method, *args, timeout=self.timeout)
        except RemoteError as e:
            cls = _ERRORS.get(e.kind)
            if cls is not None:
                raise cls(f"{self.node}.{NAME}.{method}: {e.message}") from e
            raise

    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        try:
            await self._call("insert", collection, id, doc)
        except RemoteError as e:
            if e.kind == "DuplicateKey":
                raise DuplicateKey(collection, id) from e
            raise

    async def get(self, collection: str, id: Key) -> Document | None:
        result: Document | None = await self._call("get", collection, id)
        return result

    async def get_entity(self, collection: str, id: Key) -> StoredEntity | None:
        r = await self._call("get_entity", collection, id)
        return None if r is None else StoredEntity(r["doc"], r["generation"])

    async def update(self, collection: str, id: Key, fields: Mapping[str, Any]) -> bool:
        return bool(await self._call("update", collection, id, dict(fields)))

    async def upsert(self, collection: str, id: Key, doc: Document) -> None:
        await self._call("upsert", collection, id, doc)

    async def delete(self, collection: str, id: Key) -> bool:
        return bool(await self._call("delete", collection, id))

    async def find(self, collection: str, query: Mapping[str, Scalar],
                   limit: int | None = None) -> list[tuple[Key, Document]]:
        found = await self._call("find", collection, dict(query), limit)
        return [(id, doc) for id, doc in found]

    async def ensure_index(self, collection: str, field: str) -> None:
        await self._call("ensure_index", collection, field)

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        await self._call("write_batch", [encode_op(op) for op in ops])

    async def incr(self, counter: str, amount: int = 1) -> int:
        return int(await self._call("incr", counter, amount))

    async def save_entity(self, collection: str, id: Key, doc: Document, generation: int) -> None:
        (refused,) = await self.save_entities(collection, [(id, doc, generation)])
        if refused is not None:
            raise refused

    async def claim_generation(self, collection: str, id: Key, generation: int,
                               initial: Document | None = None) -> StoredEntity:
        r = await self._call("claim_generation", collection, id, generation, initial)
        if "refused" in r:
            stored = r["refused"]
            raise StaleGeneration(collection, id, generation, stored if stored >= 0 else None)
        return StoredEntity(r["doc"], r["generation"])

    async def save_entities(self, collection: str, items: Sequence[tuple[Key, Document, int]]
                            ) -> list[StaleGeneration | None]:
        stored = await self._call("save_entities", collection,
                                  [[id, doc, gen] for id, doc, gen in items])
        return [None if s is None else
                StaleGeneration(collection, id, gen, s if s >= 0 else None)
                for (id, _, gen), s in zip(items, stored, strict=True)]

    async def collections(self) -> list[str]:
        return list(await self._call("collections"))

    async def counters(self) -> dict[str, int]:
        return dict(await self._call("counters"))

    async def close(self) -> None:
        """Nothing to release: the serving node owns the database."""
