"""Storage backends: the shared contract per backend, plus embedded-only and
MongoDB-only behaviour (multi-process safety, durability, timeouts)."""

from __future__ import annotations

import inspect
import os
import sqlite3
import sys
import textwrap
import uuid
from typing import Any

import bson
from pymongo import DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import DeleteResult, InsertOneResult, UpdateResult
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from rltwist.storage import (
    Backend,
    EmbeddedBackend,
    StorageSettings,
    StorageTimeout,
    codec,
    open_backend,
)
from rltwist.storage.mongodb import DUPLICATE_KEY
from tests.storage_contract import USERID, BackendContract

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MONGO_URI = os.environ.get("RL_TEST_MONGO_URI")


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


async def run_python(
    script: str, *args: str, timeout: float = 30
) -> tuple[bytes, bytes, int | None]:
    """Run ``python -c script args...`` as a separate OS process, without blocking.

    A process still running after ``timeout`` seconds is killed (exit code ``None``).
    """
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    collect = _Collect()
    argv = [sys.executable, "-c", textwrap.dedent(script), *args]
    process = reactor.spawnProcess(collect, sys.executable, argv, env=env, path=REPO)
    killer = reactor.callLater(timeout, process.signalProcess, "KILL")
    try:
        code = await collect.ended
    finally:
        if killer.active():
            killer.cancel()
    return b"".join(collect.out), b"".join(collect.err), code


class EmbeddedContractTests(BackendContract, unittest.TestCase):
    """The contract on the SQLite backend."""

    async def make_backend(self) -> Backend:
        backend = EmbeddedBackend(os.path.join(self.mktemp(), "region1.sqlite3"))
        self.addCleanup(backend.close)
        return backend


class MongoContractTests(BackendContract, unittest.TestCase):
    """The contract on MongoDB; each test gets its own database, dropped afterwards."""

    if not MONGO_URI:
        skip = "RL_TEST_MONGO_URI is not set: no MongoDB server to run the contract against"

    async def make_backend(self) -> Backend:
        from rltwist.storage.mongodb import MongoBackend

        assert MONGO_URI is not None
        backend = MongoBackend(MONGO_URI, f"rltwist_test_{uuid.uuid4().hex[:12]}", timeout=10)

        async def drop_and_close() -> None:
            try:
                await backend._conn.drop_database(backend.db_name)
            finally:
                await backend.close()

        self.addCleanup(lambda: defer.ensureDeferred(drop_and_close()))
        return backend


WORKER = """
    import sys
    from twisted.internet import defer, task
    from rltwist.storage import EmbeddedBackend, Upsert

    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    async def main(reactor):
        b = EmbeddedBackend(path, timeout=30)
        for i in range(n):
            await b.upsert("items", f"{worker}-{i}", {"worker": worker, "i": i})
            await b.incr("total")
        # Also race batches and fenced saves on shared ids against the other workers.
        await b.write_batch([Upsert("batch", f"{worker}-{i}", {"i": i}) for i in range(n)])
        await b.save_entities("shared", [(i, {"by": worker}, worker) for i in range(n)])
        await b.close()

    task.react(lambda r: defer.ensureDeferred(main(r)))
"""


class EmbeddedBackendTests(unittest.TestCase):
    """Behaviour specific to the SQLite file backend."""

    def path(self) -> str:
        return os.path.abspath(os.path.join(self.mktemp(), "data", "region1.sqlite3"))

    async def test_documents_survive_closing_and_reopening_the_database(self) -> None:
        path = self.path()
        b = EmbeddedBackend(path)
        await b.save_entity("role", 1, {"gold": 5}, 2)
        await b.incr("user_seq")
        await b.close()
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        entity = await b.get_entity("role", 1)
        assert entity is not None
        self.assertEqual((entity.doc, entity.generation), ({"gold": 5}, 2))
        self.assertEqual(await b.incr("user_seq"), 2)

    async def test_committed_writes_survive_the_writer_process_dying_without_close(self) -> None:
        path = self.path()
        script = """
            import os, sys
            from twisted.internet import defer, task
            from rltwist.storage import EmbeddedBackend

            async def main(reactor):
                b = EmbeddedBackend(sys.argv[1])
                await b.upsert("role", 1, {"gold": 42})
                await b.incr("user_seq")
                os._exit(0)  # crash: no close(), no reactor shutdown

            task.react(lambda r: defer.ensureDeferred(main(r)))
        """
        _, err, code = await run_python(script, path)
        self.assertEqual(code, 0, err.decode())
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        self.assertEqual(await b.get("role", 1), {"gold": 42})
        self.assertEqual(await b.incr("user_seq"), 2)

    async def test_reactor_shutdown_flushes_queued_writes_and_lets_the_process_exit(self) -> None:
        path = self.path()
        script = """
            import sys
            from twisted.internet import defer, task
            from rltwist.storage import EmbeddedBackend

            async def main(reactor):
                b = EmbeddedBackend(sys.argv[1])
                for i in range(500):  # still queued on the storage thread when main returns
                    defer.ensureDeferred(b.upsert("role", i, {"i": i}))

            task.react(lambda r: defer.ensureDeferred(main(r)))
        """
        _, err, code = await defer.ensureDeferred(run_python(script, path)).addTimeout(20, reactor)
        self.assertEqual(code, 0, err.decode())
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        self.assertEqual(len(await b.find("role", {})), 500)

    async def test_four_processes_sharing_one_file_lose_no_write_and_no_increment(self) -> None:
        path = self.path()
        workers, n = 4, 100
        b = EmbeddedBackend(path)  # creates the schema while the workers start
        self.addCleanup(b.close)
        await b.incr("total", 0)
        results = await defer.gatherResults(
            [
                defer.ensureDeferred(run_python(WORKER, path, str(w), str(n)))
                for w in range(1, workers + 1)
            ]
        )
        for _, err, code in results:
            self.assertEqual(code, 0, err.decode())
        items = await b.find("items", {})
        self.assertEqual(len(items), workers * n)
        self.assertEqual(
            sorted((d["worker"], d["i"]) for _, d in items),
            [(w, i) for w in range(1, workers + 1) for i in range(n)],
        )
        self.assertEqual(await b.incr("total", 0), workers * n)
        self.assertEqual(len(await b.find("batch", {})), workers * n)
        # Fenced saves from all workers: the highest generation (worker 4) won everywhere.
        shared = await b.find("shared", {})
        self.assertEqual({d["by"] for _, d in shared}, {workers})
        self.assertEqual(len(shared), n)
        with sqlite3.connect(path) as check:
            self.assertEqual(check.execute("PRAGMA integrity_check").fetchone(), ("ok",))

    async def test_write_gives_up_with_a_timeout_while_another_process_holds_the_lock(
        self,
    ) -> None:
        path = self.path()
        b = EmbeddedBackend(path, timeout=0.5, busy_timeout=0.05)
        self.addCleanup(b.close)
        await b.upsert("role", 1, {"v": 1})
        # A second connection stands for another process holding the write lock.
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        try:
            with self.assertRaises(StorageTimeout):
                await b.upsert("role", 1, {"v": 2})
            # WAL: readers are not blocked by the writer.
            self.assertEqual(await b.get("role", 1), {"v": 1})
        finally:
            other.execute("ROLLBACK")
        await b.upsert("role", 1, {"v": 3})
        self.assertEqual(await b.get("role", 1), {"v": 3})

    async def test_write_waits_for_a_briefly_held_lock_instead_of_failing(self) -> None:
        path = self.path()
        b = EmbeddedBackend(path, timeout=5, busy_timeout=0.05)
        self.addCleanup(b.close)
        await b.upsert("role", 1, {"v": 1})
        other = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        reactor.callLater(0.3, other.execute, "ROLLBACK")
        await b.upsert("role", 1, {"v": 2})
        self.assertEqual(await b.get("role", 1), {"v": 2})

    async def test_database_file_uses_wal_journaling(self) -> None:
        path = self.path()
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        await b.upsert("role", 1, {})
        with sqlite3.connect(path) as check:
            self.assertEqual(check.execute("PRAGMA journal_mode").fetchone(), ("wal",))

    async def test_sqlite_work_runs_on_the_backend_thread_not_the_reactor_thread(self) -> None:
        import threading

        b = EmbeddedBackend(self.path())
        self.addCleanup(b.close)
        seen: list[str] = []
        original = b._in_thread

        def spy(*args: Any) -> Any:
            seen.append(threading.current_thread().name)
            return original(*args)

        b._in_thread = spy  # type: ignore[method-assign]
        await b.upsert("role", 1, {})
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(seen[0], threading.current_thread().name)
        self.assertIn("storage:", seen[0])


class SettingsTests(unittest.TestCase):
    """Choosing and configuring a backend."""

    async def test_embedded_backend_is_the_default_and_file_is_named_after_the_db(self) -> None:
        settings = StorageSettings(data_dir=self.mktemp(), db_name="region3")
        b = open_backend(settings)
        self.addCleanup(b.close)
        self.assertIsInstance(b, EmbeddedBackend)
        await b.upsert("role", 1, {})
        self.assertTrue(os.path.exists(os.path.join(settings.data_dir, "region3.sqlite3")))

    def test_settings_from_a_config_table_reject_unknown_keys(self) -> None:
        s = StorageSettings.from_mapping({"backend": "mongodb", "db_name": "globaldb"})
        self.assertEqual((s.backend, s.db_name), ("mongodb", "globaldb"))
        with self.assertRaises(ValueError):
            StorageSettings.from_mapping({"backnd": "embedded"})
        with self.assertRaises(ValueError):
            StorageSettings(backend="redis")


class _Silent(protocol.Protocol):
    """Accepts a connection and never answers: a hung MongoDB."""


class MongoTimeoutTests(unittest.TestCase):
    """MongoDB calls are bounded even when the server never answers (no MongoDB needed)."""

    async def test_mongodb_operations_time_out_when_the_server_never_answers(self) -> None:
        from rltwist.storage.mongodb import MongoBackend

        factory = protocol.Factory.forProtocol(_Silent)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        uri = f"mongodb://127.0.0.1:{port.getHost().port}"
        b = MongoBackend(uri, "rltwist_test", timeout=0.3)
        self.addCleanup(b.close)
        for call in (
            b.get("role", 1),
            b.upsert("role", 1, {}),
            b.find("role", {"name": "x"}),
            b.incr("user_seq"),
            b.save_entities("role", [(1, {}, 1)]),
        ):
            with self.assertRaises(StorageTimeout):
                await call


# -- MongoBackend logic against an in-memory stand-in for txmongo ----------------------


def _wire(value: Any) -> Any:
    """What MongoDB would receive: BSON-encode and decode (validates, snapshots)."""
    return bson.decode(bson.encode({"v": value}))["v"]


class _FakeCursor:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def addCallback(self, f: Any) -> defer.Deferred[Any]:
        return defer.succeed(self._records).addCallback(f)


class FakeCollection:
    """The txmongo ``Collection`` methods MongoBackend uses, with MongoDB's behaviour
    for the operators it sends. Every call must carry ``timeout=``."""

    def __init__(self) -> None:
        self.records: dict[Any, dict[str, Any]] = {}
        self.indexes: list[Any] = []
        self.lose_insert_races = 0  # next N upserts fail as if a concurrent insert won

    @staticmethod
    def _matches(record: dict[str, Any], spec: dict[str, Any]) -> bool:
        for field, want in spec.items():
            have = codec.lookup(record, field.split("."))
            if isinstance(want, dict) and "$in" in want:
                if have not in want["$in"]:
                    return False
            elif isinstance(want, dict) and "$not" in want:
                if have is not codec.MISSING and have > want["$not"]["$gt"]:
                    return False
            elif not codec.scalar_equal(have, want):
                return False
        return True

    def _find(self, spec: dict[str, Any]) -> list[dict[str, Any]]:
        _id = spec.get("_id")
        if isinstance(_id, (int, str)):  # the _id index
            candidates = [self.records[_id]] if _id in self.records else []
        else:
            candidates = list(self.records.values())
        return [r for r in candidates if self._matches(r, spec)]

    @staticmethod
    def _apply(record: dict[str, Any], change: dict[str, Any], inserting: bool) -> None:
        for field, value in change.get("$set", {}).items():
            codec.set_path(record, field, value)
        for field, value in change.get("$setOnInsert", {}).items() if inserting else ():
            codec.set_path(record, field, value)
        for field, value in change.get("$inc", {}).items():
            record[field] = record.get(field, 0) + value

    def _upsert_one(self, spec: dict[str, Any], change: dict[str, Any], upsert: bool) -> Any:
        spec, change = _wire(spec), _wire(change)
        found = self._find(spec)
        if found:
            self._apply(found[0], change, inserting=False)
            return {"n": 1, "nModified": 1}, found[0]
        if not upsert:
            return {"n": 0, "nModified": 0}, None
        _id = spec["_id"]
        if _id in self.records or self.lose_insert_races:
            self.lose_insert_races = max(self.lose_insert_races - 1, 0)
            raise DuplicateKeyError("E11000 duplicate key error", DUPLICATE_KEY)
        record = self.records[_id] = {"_id": _id}
        self._apply(record, change, inserting=True)
        return {"n": 1, "nModified": 0, "upserted": _id}, record

    def insert_one(self, document: dict[str, Any], *, timeout: float) -> defer.Deferred[Any]:
        document = _wire(document)
        if document["_id"] in self.records:
            return defer.fail(DuplicateKeyError("E11000 duplicate key error", DUPLICATE_KEY))
        self.records[document["_id"]] = document
        return defer.succeed(InsertOneResult(document["_id"], True))

    def find_one(self, filter: dict[str, Any], *, timeout: float) -> defer.Deferred[Any]:
        found = self._find(_wire(filter))
        return defer.succeed(_wire(found[0]) if found else None)

    def find(
        self,
        filter: dict[str, Any],
        projection: dict[str, Any] | None = None,
        limit: int = 0,
        *,
        timeout: float,
    ) -> _FakeCursor:
        found = [_wire(r) for r in self._find(_wire(filter))]
        if projection:
            found = [{k: v for k, v in r.items() if k == "_id" or k in projection} for r in found]
        return _FakeCursor(found[:limit] if limit else found)

    def update_one(
        self,
        filter: dict[str, Any],
        update: dict[str, Any],
        upsert: bool = False,
        *,
        timeout: float,
    ) -> defer.Deferred[Any]:
        try:
            raw, _ = self._upsert_one(filter, update, upsert)
        except DuplicateKeyError as e:
            return defer.fail(e)
        return defer.succeed(UpdateResult(raw, True))

    def delete_one(self, filter: dict[str, Any], *, timeout: float) -> defer.Deferred[Any]:
        found = self._find(_wire(filter))
        for record in found[:1]:
            del self.records[record["_id"]]
        return defer.succeed(DeleteResult({"n": len(found[:1])}, True))

    def find_one_and_update(
        self,
        filter: dict[str, Any],
        update: dict[str, Any],
        upsert: bool = False,
        return_document: bool = False,
        *,
        timeout: float,
    ) -> defer.Deferred[Any]:
        assert return_document is True  # ReturnDocument.AFTER
        try:
            _, record = self._upsert_one(filter, update, upsert)
        except DuplicateKeyError as e:
            return defer.fail(e)
        return defer.succeed(_wire(record))

    def ensure_index(self, sort_fields: Any, *, timeout: float) -> defer.Deferred[Any]:
        self.indexes.append(sort_fields)
        return defer.succeed("index")

    def bulk_write(self, requests: list[Any], ordered: bool = True, *, timeout: float) -> Any:
        errors = []
        for index, request in enumerate(requests):
            try:
                if isinstance(request, UpdateOne):
                    self._upsert_one(request._filter, request._doc, request._upsert)
                else:
                    assert isinstance(request, DeleteOne)
                    self.delete_one(request._filter, timeout=timeout)
            except DuplicateKeyError as e:
                errors.append({"index": index, "code": e.code, "errmsg": str(e)})
                if ordered:
                    break
        if errors:
            return defer.fail(BulkWriteError({"writeErrors": errors, "writeConcernErrors": []}))
        return defer.succeed(None)


class FakeConnection:
    """Stands for ``txmongo.connection.ConnectionPool``: databases of FakeCollections."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, FakeCollection]] = {}

    def __getitem__(self, name: str) -> Any:
        db = self.dbs.setdefault(name, {})

        class _Db:
            def __getitem__(self, coll: str) -> FakeCollection:
                return db.setdefault(coll, FakeCollection())

        return _Db()

    def disconnect(self) -> defer.Deferred[None]:
        return defer.succeed(None)


class MongoBackendOnFakeTests(BackendContract, unittest.TestCase):
    """The contract on MongoBackend's own logic (document layout, fencing through
    duplicate keys, error mapping), with txmongo replaced by FakeCollection. Not
    a substitute for MongoContractTests against a real server."""

    async def make_backend(self) -> Backend:
        from rltwist.storage.mongodb import MongoBackend

        self.connection = FakeConnection()
        backend = MongoBackend("mongodb://fake", "test", connection=self.connection)  # type: ignore[arg-type]
        self.addCleanup(backend.close)
        return backend

    def test_fake_collection_accepts_only_arguments_txmongo_accepts(self) -> None:
        from txmongo.collection import Collection

        for name in (
            "insert_one",
            "find_one",
            "find",
            "update_one",
            "delete_one",
            "find_one_and_update",
            "ensure_index",
            "bulk_write",
        ):
            real = inspect.signature(getattr(Collection, name)).parameters
            fake = inspect.signature(getattr(FakeCollection, name)).parameters
            for param in fake:
                self.assertTrue(param == "timeout" or param in real, f"{name}({param}=)")

    async def test_entities_are_stored_under_doc_with_the_entity_id_as_mongo_id(self) -> None:
        b = await self.make_backend()
        await b.save_entity("role", USERID, {"gold": 1}, 3)
        record = self.connection.dbs["test"]["role"].records[USERID]
        self.assertEqual(record, {"_id": USERID, "gen": 3, "doc": {"gold": 1}})

    async def test_fenced_save_that_loses_an_insert_race_retries_and_lands(self) -> None:
        b = await self.make_backend()
        self.connection["test"]["role"].lose_insert_races = 1
        await b.save_entity("role", 1, {"v": 1}, 1)
        self.connection["test"]["role"].lose_insert_races = 1
        self.assertEqual(await b.save_entities("role", [(2, {"v": 2}, 1)]), [None])
        self.assertEqual(await b.get("role", 1), {"v": 1})
        self.assertEqual(await b.get("role", 2), {"v": 2})
