"""Embedded backend: one SQLite file, shareable by the processes of a region.

The four processes of a region (map, guild, mail, rolecity) open the same
regiondb file, so every choice here is about several writers:

* WAL journal: readers never block the writer, and a crash of one process
  cannot corrupt the file for the others.
* Every write runs in ``BEGIN IMMEDIATE``: the write lock is taken up front, so
  two processes never both hold a read snapshot and then fail to upgrade it.
* SQLite's busy handler waits ``busy_timeout`` for the lock; beyond that the
  whole transaction is retried with jittered backoff until the operation's
  bound, then :class:`StorageTimeout` is raised.
* All SQLite calls run on one dedicated thread per database (a single-thread
  ``ThreadPool``), so the reactor thread never blocks on disk and the
  connection is only ever touched by one thread. Documents are packed on the
  caller's thread: what is saved is the document as it was at call time.

Documents are msgpack blobs in one ``documents`` table keyed by
``(collection, id)``; ``find`` uses the optional ``index_entries`` table for
fields registered with ``ensure_index`` and otherwise scans the collection.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

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

SCHEMA_VERSION = 1

_SCHEMA = (
    # ``id`` has no declared type on purpose: BLOB affinity keeps 1 and "1" apart
    # and never converts text that looks like a number.
    """CREATE TABLE IF NOT EXISTS documents (
        coll TEXT NOT NULL,
        id NOT NULL,
        gen INTEGER NOT NULL DEFAULT 0,
        doc BLOB NOT NULL,
        PRIMARY KEY (coll, id))""",
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS indexes (
        coll TEXT NOT NULL,
        field TEXT NOT NULL,
        PRIMARY KEY (coll, field))""",
    """CREATE TABLE IF NOT EXISTS index_entries (
        coll TEXT NOT NULL,
        field TEXT NOT NULL,
        key BLOB NOT NULL,
        id NOT NULL,
        PRIMARY KEY (coll, field, key, id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS index_entries_by_id ON index_entries (coll, id)",
)

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")

# Encoded batch operations, built on the reactor thread.
_EncodedOp = tuple[str, str, Key, bytes | None]


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(error) or "busy" in str(error)


class _Indexes:
    """Per-transaction cache of the indexed fields of each collection.

    Read inside the write transaction, so an index added by another process is
    maintained by this one from its next transaction on.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._cache: dict[str, list[tuple[str, list[str]]]] = {}

    def of(self, coll: str) -> list[tuple[str, list[str]]]:
        fields = self._cache.get(coll)
        if fields is None:
            rows = self._conn.execute("SELECT field FROM indexes WHERE coll = ?", (coll,))
            fields = self._cache[coll] = [(f, codec.split_path(f)) for (f,) in rows]
        return fields


def _reindex(
    conn: sqlite3.Connection, idx: _Indexes, coll: str, id: Key, doc: Document | None
) -> None:
    fields = idx.of(coll)
    if not fields:
        return
    conn.execute("DELETE FROM index_entries WHERE coll = ? AND id = ?", (coll, id))
    if doc is None:
        return
    rows = []
    for field, parts in fields:
        key = codec.index_key(codec.lookup(doc, parts))
        if key is not None:
            rows.append((coll, field, key, id))
    conn.executemany("INSERT OR IGNORE INTO index_entries VALUES (?, ?, ?, ?)", rows)


def _upsert(conn: sqlite3.Connection, idx: _Indexes, coll: str, id: Key, blob: bytes) -> None:
    conn.execute(
        "INSERT INTO documents (coll, id, gen, doc) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (coll, id) DO UPDATE SET doc = excluded.doc",
        (coll, id, blob),
    )
    if idx.of(coll):
        _reindex(conn, idx, coll, id, codec.decode(blob))


def _update(
    conn: sqlite3.Connection, idx: _Indexes, coll: str, id: Key, fields_blob: bytes
) -> bool:
    row = conn.execute("SELECT doc FROM documents WHERE coll = ? AND id = ?", (coll, id)).fetchone()
    if row is None:
        return False
    doc = codec.decode(row[0])
    for field, value in codec.decode(fields_blob).items():
        codec.set_path(doc, field, value)
    conn.execute(
        "UPDATE documents SET doc = ? WHERE coll = ? AND id = ?", (codec.encode(doc), coll, id)
    )
    _reindex(conn, idx, coll, id, doc)
    return True


def _delete(conn: sqlite3.Connection, idx: _Indexes, coll: str, id: Key) -> bool:
    cur = conn.execute("DELETE FROM documents WHERE coll = ? AND id = ?", (coll, id))
    _reindex(conn, idx, coll, id, None)
    return cur.rowcount > 0


def _t_insert(conn: sqlite3.Connection, coll: str, id: Key, blob: bytes) -> None:
    try:
        conn.execute(
            "INSERT INTO documents (coll, id, gen, doc) VALUES (?, ?, 0, ?)", (coll, id, blob)
        )
    except sqlite3.IntegrityError:
        raise DuplicateKey(coll, id) from None
    idx = _Indexes(conn)
    if idx.of(coll):
        _reindex(conn, idx, coll, id, codec.decode(blob))


def _t_get(conn: sqlite3.Connection, coll: str, id: Key) -> StoredEntity | None:
    row = conn.execute(
        "SELECT doc, gen FROM documents WHERE coll = ? AND id = ?", (coll, id)
    ).fetchone()
    if row is None:
        return None
    return StoredEntity(doc=codec.decode(row[0]), generation=row[1])


def _t_upsert(conn: sqlite3.Connection, coll: str, id: Key, blob: bytes) -> None:
    _upsert(conn, _Indexes(conn), coll, id, blob)


def _t_update(conn: sqlite3.Connection, coll: str, id: Key, fields_blob: bytes) -> bool:
    return _update(conn, _Indexes(conn), coll, id, fields_blob)


def _t_delete(conn: sqlite3.Connection, coll: str, id: Key) -> bool:
    return _delete(conn, _Indexes(conn), coll, id)


def _t_write_batch(conn: sqlite3.Connection, ops: list[_EncodedOp]) -> None:
    idx = _Indexes(conn)
    for kind, coll, id, blob in ops:
        if kind == "upsert":
            assert blob is not None
            _upsert(conn, idx, coll, id, blob)
        elif kind == "update":
            assert blob is not None
            _update(conn, idx, coll, id, blob)
        else:
            _delete(conn, idx, coll, id)


def _t_save(
    conn: sqlite3.Connection, coll: str, items: list[tuple[Key, bytes, int]]
) -> list[int | None]:
    """Fenced upserts; per item ``None`` if saved, else the stored (newer) generation."""
    idx = _Indexes(conn)
    indexed = bool(idx.of(coll))
    refused: list[int | None] = []
    for id, blob, gen in items:
        cur = conn.execute(
            "INSERT INTO documents (coll, id, gen, doc) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (coll, id) DO UPDATE SET doc = excluded.doc, gen = excluded.gen"
            " WHERE documents.gen <= excluded.gen",
            (coll, id, gen, blob),
        )
        if cur.rowcount > 0:
            refused.append(None)
            if indexed:
                _reindex(conn, idx, coll, id, codec.decode(blob))
        else:
            (stored,) = conn.execute(
                "SELECT gen FROM documents WHERE coll = ? AND id = ?", (coll, id)
            ).fetchone()
            refused.append(stored)
    return refused


def _read_generation(conn: sqlite3.Connection, coll: str, id: Key) -> int | None:
    """The stored generation of ``id`` (None if absent); a seam for interleaving tests."""
    row = conn.execute("SELECT gen FROM documents WHERE coll = ? AND id = ?", (coll, id)).fetchone()
    return None if row is None else int(row[0])


def _t_claim(
    conn: sqlite3.Connection, coll: str, id: Key, gen: int, initial: bytes
) -> tuple[int | None, Document]:
    """Generation compare-and-set; ``(None, stored doc)`` if claimed, else ``(stored gen, {})``.

    Atomic across processes because ``_in_thread`` runs it in ``BEGIN IMMEDIATE``: the
    write lock is held from before the read until the commit, so no other connection can
    read the old generation in between and claim it too.
    """
    stored = _read_generation(conn, coll, id)
    if stored is None:
        conn.execute(
            "INSERT INTO documents (coll, id, gen, doc) VALUES (?, ?, ?, ?)",
            (coll, id, gen, initial),
        )
        doc = codec.decode(initial)
        idx = _Indexes(conn)
        if idx.of(coll):
            _reindex(conn, idx, coll, id, doc)
        return None, doc
    if stored >= gen:
        return stored, {}
    (blob,) = conn.execute(
        "UPDATE documents SET gen = ? WHERE coll = ? AND id = ? RETURNING doc", (gen, coll, id)
    ).fetchone()
    return None, codec.decode(blob)


def _t_find(
    conn: sqlite3.Connection, coll: str, query: dict[str, Scalar], limit: int | None
) -> list[tuple[Key, Document]]:
    indexed = {field for field, _ in _Indexes(conn).of(coll)}
    probe = None
    for field, value in query.items():
        key = codec.index_key(value)
        if field in indexed and key is not None:
            probe = (field, key)
            break
    if probe is not None:
        rows = conn.execute(
            "SELECT d.id, d.doc FROM index_entries e JOIN documents d"
            " ON d.coll = e.coll AND d.id = e.id"
            " WHERE e.coll = ? AND e.field = ? AND e.key = ?",
            (coll, probe[0], probe[1]),
        )
    else:
        rows = conn.execute("SELECT id, doc FROM documents WHERE coll = ?", (coll,))
    found: list[tuple[Key, Document]] = []
    for id, blob in rows:
        doc = codec.decode(blob)
        # The index only narrows the candidates; equality is always checked here.
        if codec.matches(doc, query):
            found.append((id, doc))
            if limit is not None and len(found) >= limit:
                break
    return found


def _t_ensure_index(conn: sqlite3.Connection, coll: str, field: str) -> None:
    cur = conn.execute("INSERT OR IGNORE INTO indexes (coll, field) VALUES (?, ?)", (coll, field))
    if cur.rowcount == 0:
        return
    parts = codec.split_path(field)
    rows = []
    for id, blob in conn.execute("SELECT id, doc FROM documents WHERE coll = ?", (coll,)):
        key = codec.index_key(codec.lookup(codec.decode(blob), parts))
        if key is not None:
            rows.append((coll, field, key, id))
    conn.executemany("INSERT OR IGNORE INTO index_entries VALUES (?, ?, ?, ?)", rows)


def _t_incr(conn: sqlite3.Connection, name: str, amount: int) -> int:
    (value,) = conn.execute(
        "INSERT INTO counters (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
        " RETURNING value",
        (name, amount),
    ).fetchone()
    return int(value)


def _t_collections(conn: sqlite3.Connection) -> list[str]:
    return [c for (c,) in conn.execute("SELECT DISTINCT coll FROM documents ORDER BY coll")]


def _t_counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {name: int(value) for name, value in conn.execute("SELECT name, value FROM counters")}


class EmbeddedBackend:
    """SQLite-file backend (see the module docstring for the concurrency design).

    ``path`` is the database file (its directory is created). ``timeout`` bounds
    every operation, including time spent queued behind earlier ones and
    retrying on a lock held by another process. ``synchronous`` is SQLite's
    durability level: ``NORMAL`` (default) keeps every committed write across a
    process crash; ``FULL`` also across power loss, at one fsync per commit.
    """

    log = Logger()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        busy_timeout: float = 2.0,
        synchronous: str = "NORMAL",
        reactor: Any = None,
        close_at_shutdown: bool = True,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        if synchronous.upper() not in _SYNC_MODES:
            raise ValueError(f"synchronous must be one of {_SYNC_MODES}, not {synchronous!r}")
        self.path = os.fspath(path)
        self._timeout = timeout
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous.upper()
        self._reactor: Any = reactor
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._closing: defer.Deferred[None] | None = None
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=f"storage:{self.path}")
        # An owner that closes the backend itself after its own services stopped (a node:
        # its players' final saves run while its services stop) turns this off.
        self._close_at_shutdown = close_at_shutdown
        self._start_id: Any = reactor.callWhenRunning(self._start)
        self._shutdown_id: Any = None

    @property
    def description(self) -> str:
        return f"embedded:{self.path}"

    def __repr__(self) -> str:
        return f"<EmbeddedBackend {self.path!r}>"

    # -- lifecycle -----------------------------------------------------------

    def _start(self) -> None:
        self._start_id = None
        if self._closed:
            return
        self._pool.start()
        if self._close_at_shutdown:
            self._shutdown_id = self._reactor.addSystemEventTrigger(
                "before", "shutdown", self._on_shutdown
            )

    def _on_shutdown(self) -> defer.Deferred[None]:
        self._shutdown_id = None
        return defer.ensureDeferred(self.close())

    async def close(self) -> None:
        """Run every queued operation, close the connection and stop the thread."""
        if self._closing is None:
            self._closed = True
            self._closing = defer.ensureDeferred(self._close())
        await self._closing

    async def _close(self) -> None:
        if self._start_id is not None:
            # The reactor never ran, so the thread never started: just drop the start.
            self._reactor.removeSystemEventTrigger(self._start_id)
            self._start_id = None
            return
        if self._shutdown_id is not None:
            try:
                self._reactor.removeSystemEventTrigger(self._shutdown_id)
            except (KeyError, ValueError):
                pass
            self._shutdown_id = None
        try:
            await deferToThreadPool(self._reactor, self._pool, self._close_connection)
        finally:
            self._pool.stop()
        self.log.info("storage {path} closed", path=self.path)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- worker-thread plumbing -----------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                raise StorageError(f"{self.description}: cannot enable WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            # Bound the WAL file after a checkpoint; a 10k-player save is ~20 MB.
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version > SCHEMA_VERSION:
                    raise StorageError(
                        f"{self.description}: schema version {version} is newer than"
                        f" this code ({SCHEMA_VERSION})"
                    )
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _in_thread(
        self, op: str, write: bool, fn: Callable[..., _T], args: tuple[Any, ...]
    ) -> tuple[_T, int]:
        """Run ``fn(conn, *args)`` in one transaction, retrying while the file is locked.

        Returns the result and how many times the transaction was retried.
        """
        deadline = time.monotonic() + self._timeout
        retries = 0
        while True:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = fn(conn, *args)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result, retries
            except sqlite3.OperationalError as e:
                if not _is_busy(e):
                    raise
                retries += 1
                if time.monotonic() >= deadline:
                    raise StorageTimeout(
                        f"{self.description}: {op} gave up after {retries} attempts,"
                        f" database locked: {e}"
                    ) from e
                time.sleep(random.uniform(0.001, min(0.05, 0.002 * 2**retries)))

    async def _run(self, op: str, write: bool, fn: Callable[..., _T], *args: Any) -> _T:
        if self._closed:
            raise BackendClosed(f"{self.description}: {op} after close()")
        d: defer.Deferred[tuple[_T, int]] = deferToThreadPool(
            self._reactor, self._pool, self._in_thread, op, write, fn, args
        )
        clock: IReactorTime = self._reactor
        d.addTimeout(self._timeout, clock)
        try:
            result, retries = await d
        except defer.TimeoutError:
            raise StorageTimeout(
                f"{self.description}: {op} did not finish within {self._timeout}s"
            ) from None
        except StorageError:
            raise
        except sqlite3.Error as e:
            raise StorageError(f"{self.description}: {op} failed: {e}") from e
        if retries:
            self.log.info(
                "storage {path}: {op} retried {retries} times on a locked database",
                path=self.path,
                op=op,
                retries=retries,
            )
        return result

    # -- Backend API -----------------------------------------------------------

    async def insert(self, collection: str, id: Key, doc: Document) -> None:
        codec.check_collection(collection)
        codec.check_key(id)
        await self._run("insert", True, _t_insert, collection, id, codec.encode(doc))

    async def get(self, collection: str, id: Key) -> Document | None:
        entity = await self.get_entity(collection, id)
        return None if entity is None else entity.doc

    async def get_entity(self, collection: str, id: Key) -> StoredEntity | None:
        codec.check_collection(collection)
        codec.check_key(id)
        return await self._run("get", False, _t_get, collection, id)

    async def update(self, collection: str, id: Key, fields: Mapping[str, Any]) -> bool:
        codec.check_collection(collection)
        codec.check_key(id)
        blob = codec.encode(codec.check_fields(fields))
        return await self._run("update", True, _t_update, collection, id, blob)

    async def upsert(self, collection: str, id: Key, doc: Document) -> None:
        codec.check_collection(collection)
        codec.check_key(id)
        await self._run("upsert", True, _t_upsert, collection, id, codec.encode(doc))

    async def delete(self, collection: str, id: Key) -> bool:
        codec.check_collection(collection)
        codec.check_key(id)
        return await self._run("delete", True, _t_delete, collection, id)

    async def find(
        self, collection: str, query: Mapping[str, Scalar], limit: int | None = None
    ) -> list[tuple[Key, Document]]:
        codec.check_collection(collection)
        q = codec.check_query(query)
        return await self._run("find", False, _t_find, collection, q, codec.check_limit(limit))

    async def ensure_index(self, collection: str, field: str) -> None:
        codec.check_collection(collection)
        codec.split_path(field)
        await self._run("ensure_index", True, _t_ensure_index, collection, field)

    async def write_batch(self, ops: Sequence[WriteOp]) -> None:
        encoded: list[_EncodedOp] = []
        for op in ops:
            codec.check_collection(op.collection)
            codec.check_key(op.id)
            if isinstance(op, Upsert):
                encoded.append(("upsert", op.collection, op.id, codec.encode(op.doc)))
            elif isinstance(op, Update):
                blob = codec.encode(codec.check_fields(op.fields))
                encoded.append(("update", op.collection, op.id, blob))
            elif isinstance(op, Delete):
                encoded.append(("delete", op.collection, op.id, None))
            else:
                raise TypeError(f"not a write op: {op!r}")
        if encoded:
            await self._run("write_batch", True, _t_write_batch, encoded)

    async def incr(self, counter: str, amount: int = 1) -> int:
        if not isinstance(counter, str) or not counter:
            raise InvalidDocument(f"bad counter name {counter!r}")
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise InvalidDocument(f"bad counter amount {amount!r}")
        return await self._run("incr", True, _t_incr, counter, amount)

    async def collections(self) -> list[str]:
        return await self._run("collections", False, _t_collections)

    async def counters(self) -> dict[str, int]:
        return await self._run("counters", False, _t_counters)

    async def claim_generation(
        self, collection: str, id: Key, generation: int, initial: Document | None = None
    ) -> StoredEntity:
        codec.check_collection(collection)
        codec.check_key(id)
        codec.check_generation(generation)
        blob = codec.encode(codec.check_doc({} if initial is None else initial))
        stored, doc = await self._run(
            "claim_generation", True, _t_claim, collection, id, generation, blob
        )
        if stored is not None:
            raise StaleGeneration(collection, id, generation, stored)
        return StoredEntity(doc=doc, generation=generation)

    async def save_entity(self, collection: str, id: Key, doc: Document, generation: int) -> None:
        (refused,) = await self.save_entities(collection, [(id, doc, generation)])
        if refused is not None:
            raise refused

    async def save_entities(
        self, collection: str, items: Sequence[tuple[Key, Document, int]]
    ) -> list[StaleGeneration | None]:
        codec.check_collection(collection)
        encoded = [
            (codec.check_key(id), codec.encode(doc), codec.check_generation(gen))
            for id, doc, gen in items
        ]
        if not encoded:
            return []
        stored = await self._run("save_entities", True, _t_save, collection, encoded)
        return [
            None if s is None else StaleGeneration(collection, id, gen, s)
            for (id, _, gen), s in zip(encoded, stored, strict=True)
        ]
