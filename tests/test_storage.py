"""Storage backends: the shared contract per backend, plus embedded-only and
MongoDB-only behaviour (multi-process safety, durability, timeouts)."""

from __future__ import annotations

import inspect
import os
import re
import sqlite3
import sys
import textwrap
import uuid
from typing import Any

import bson
from pymongo import DeleteOne, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError
from pymongo.results import DeleteResult, InsertOneResult, UpdateResult
from pymongo.write_concern import WriteConcern
from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from rltwist.storage import (
    Backend,
    Delete,
    EmbeddedBackend,
    StaleGeneration,
    StorageError,
    StorageSettings,
    StorageTimeout,
    StoredEntity,
    Update,
    Upsert,
    codec,
    open_backend,
)
from rltwist.storage.mongodb import DUPLICATE_KEY
from tests.storage_contract import USERID, BackendContract
from tests.util import wait_for

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


class MongoServerWriteConcernTests(unittest.TestCase):
    """storage.write_concern against a real server (standalone or replica set)."""

    if not MONGO_URI:
        skip = "RL_TEST_MONGO_URI is not set: no MongoDB server to check write concerns on"

    async def backend(self, w: str) -> Any:
        from rltwist.storage.mongodb import MongoBackend

        assert MONGO_URI is not None
        backend = MongoBackend(MONGO_URI, f"rltwist_test_{uuid.uuid4().hex[:12]}", timeout=5,
                               write_concern=w)

        async def drop_and_close() -> None:
            try:
                await backend._conn.drop_database(backend.db_name)
            finally:
                await backend.close()

        self.addCleanup(lambda: defer.ensureDeferred(drop_and_close()))
        return backend

    async def test_majority_writes_are_acknowledged(self) -> None:
        b = await self.backend("majority")
        await b.save_entity("role", 1, {"gold": 1}, 1)
        self.assertEqual(await b.claim_generation("role", 1, 2), StoredEntity({"gold": 1}, 2))
        self.assertEqual(await b.incr("seq"), 1)

    async def test_a_write_concern_the_server_cannot_meet_is_never_reported_as_done(
        self,
    ) -> None:
        # 50 members exist nowhere: a standalone refuses w > 1, a replica set answers
        # UnsatisfiableWriteConcern. Either way every kind of write must raise.
        b = await self.backend("50")
        for op in (
            lambda: b.insert("role", 1, {}),
            lambda: b.upsert("role", 2, {}),
            lambda: b.save_entity("role", 3, {}, 1),
            lambda: b.save_entities("role", [(4, {}, 1)]),
            lambda: b.write_batch([Upsert("role", 5, {})]),
            lambda: b.claim_generation("role", 6, 1),
            lambda: b.incr("seq"),
        ):
            with self.assertRaises(StorageError):
                await op()


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


CLAIMER = """
    import sys
    from twisted.internet import defer, task
    from rltwist.storage import EmbeddedBackend, StaleGeneration

    path, id, generation, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    async def main(reactor):
        b = EmbeddedBackend(path, timeout=30)
        print("ready", flush=True)
        try:
            claimed = await b.claim_generation("role", id, generation, initial={"by": tag})
            print("won", claimed.generation, claimed.doc["by"], flush=True)
        except StaleGeneration as e:
            print("refused", e.stored, flush=True)
        await b.close()

    task.react(lambda r: defer.ensureDeferred(main(r)))
"""


class _Lines(protocol.ProcessProtocol):
    """A child's stdout line by line, with a Deferred for its first ``ready`` line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.err: list[bytes] = []
        self._buffer = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[int | None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\n")
        for line in complete:
            self.lines.append(line.decode())
            if line == b"ready" and not self.ready.called:
                self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class EmbeddedClaimTests(unittest.TestCase):
    """claim_generation is atomic across the connections (processes) sharing one file."""

    timeout = 120

    def path(self) -> str:
        return os.path.abspath(os.path.join(self.mktemp(), "data", "roledb.sqlite3"))

    async def test_a_claim_holds_the_write_lock_from_its_read_to_its_commit(self) -> None:
        # Two backends = two connections, exactly what two role processes are to SQLite.
        # A is stopped inside its claim right after reading the stored generation; B
        # claims the same generation and is shown to be held at the lock. If B could read
        # the old generation meanwhile (read outside the write lock), both would win.
        import threading

        from rltwist.storage import embedded

        path = self.path()
        a = EmbeddedBackend(path, timeout=20, busy_timeout=0.05)
        b = EmbeddedBackend(path, timeout=20, busy_timeout=0.05)
        self.addCleanup(b.close)
        self.addCleanup(a.close)
        await a.save_entity("role", 1, {"gold": 1}, 3)
        self.assertEqual(await b.get("role", 1), {"gold": 1})  # B is connected too
        a_read, release, b_blocked = threading.Event(), threading.Event(), threading.Event()
        b_threads: set[threading.Thread] = set()
        read_generation, is_busy, b_in_thread = embedded._read_generation, embedded._is_busy, \
            b._in_thread

        def read(conn: sqlite3.Connection, coll: str, id: Any) -> int | None:
            stored = read_generation(conn, coll, id)
            if conn is a._conn:
                a_read.set()
                if not release.wait(20):
                    raise RuntimeError("the test never let A's claim go on")
            return stored

        def busy(e: sqlite3.OperationalError) -> bool:
            if threading.current_thread() in b_threads:
                b_blocked.set()
            return is_busy(e)

        def spy(*args: Any) -> Any:
            b_threads.add(threading.current_thread())
            return b_in_thread(*args)

        self.patch(embedded, "_read_generation", read)
        self.patch(embedded, "_is_busy", busy)
        b._in_thread = spy  # type: ignore[method-assign]
        try:
            claim_a = defer.ensureDeferred(a.claim_generation("role", 1, 4))
            await wait_for(a_read.is_set, 10, "A's claim to read the stored generation")
            claim_b = defer.ensureDeferred(b.claim_generation("role", 1, 4))
            await wait_for(lambda: b_blocked.is_set() or claim_b.called, 10,
                           "B's claim to be held by A's write lock (or to finish)")
            self.assertFalse(claim_b.called,
                             "B's claim finished while A was inside its claim: not atomic")
        finally:
            release.set()
        self.assertEqual(await claim_a, StoredEntity({"gold": 1}, 4))
        with self.assertRaises(StaleGeneration) as refused:
            await claim_b
        self.assertEqual((refused.exception.given, refused.exception.stored), (4, 4))
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 1}, 4))

    async def test_a_timed_out_write_may_still_land_and_a_retry_lands_after_it(self) -> None:
        # StorageTimeout means "outcome unknown", not "not written": the operation may be
        # queued on (or running in) the storage thread when its bound expires. Writes run
        # in call order, so a saver that keeps the entity dirty and saves it again after a
        # timeout ends with its newer snapshot stored, never the older one.
        import threading

        from rltwist.storage import embedded

        # the bound must outlast the drain after release on a loaded machine
        b = EmbeddedBackend(self.path(), timeout=2.0)
        self.addCleanup(b.close)
        await b.save_entity("role", 1, {"v": 0}, 1)
        held, release = threading.Event(), threading.Event()
        read_generation = embedded._read_generation

        def read(conn: sqlite3.Connection, coll: str, id: Any) -> int | None:
            held.set()
            release.wait(20)  # a slow disk / long fsync holding the storage thread
            return read_generation(conn, coll, id)

        self.patch(embedded, "_read_generation", read)
        slow = defer.ensureDeferred(b.claim_generation("role", 2, 1))
        try:
            await wait_for(held.is_set, 10, "the storage thread to be held")
            with self.assertRaises(StorageTimeout):
                await b.save_entity("role", 1, {"v": 1}, 1)  # queued behind: times out
            retry = defer.ensureDeferred(b.save_entity("role", 1, {"v": 2}, 1))
        finally:
            release.set()
        with self.assertRaises(StorageTimeout):
            await slow
        await retry
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"v": 2}, 1))
        # both timed-out writes landed after all
        self.assertEqual(await b.get_entity("role", 2), StoredEntity({}, 1))

    async def claimers(self, path: str, id: int, *runs: tuple[int, str]) -> list[list[str]]:
        """Run one CLAIMER process per (generation, tag), all released at once."""
        # Hold the write lock until every child is up, so all claims queue on it together.
        gate = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(gate.close)
        gate.execute("BEGIN IMMEDIATE")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        children = []
        try:
            for generation, tag in runs:
                lines = _Lines()
                argv = [sys.executable, "-c", textwrap.dedent(CLAIMER), path, str(id),
                        str(generation), tag]
                proc = reactor.spawnProcess(lines, sys.executable, argv, env=env, path=REPO)
                children.append((proc, lines))
            for _, lines in children:
                await lines.ready.addTimeout(30, reactor)
        finally:
            gate.execute("ROLLBACK")
        for proc, lines in children:
            try:
                code = await lines.ended.addTimeout(60, reactor)
            except defer.TimeoutError:
                proc.signalProcess("KILL")
                raise
            self.assertEqual(code, 0, b"".join(lines.err).decode())
        return [lines.lines[1:] for _, lines in children]

    async def test_processes_claiming_one_generation_at_once_exactly_one_wins(self) -> None:
        path = self.path()
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        await b.save_entity("role", 1, {"by": "old"}, 2)
        outcomes = await self.claimers(path, 1, (7, "p1"), (7, "p2"), (7, "p3"))
        self.assertEqual(sorted(o[0].split()[0] for o in outcomes),
                         ["refused", "refused", "won"], outcomes)
        self.assertIn(["won 7 old"], outcomes)
        self.assertEqual(outcomes.count(["refused 7"]), 2, outcomes)
        # and the old instance's next save is refused
        with self.assertRaises(StaleGeneration):
            await b.save_entity("role", 1, {"by": "late old instance"}, 2)
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"by": "old"}, 7))

    async def test_processes_claiming_an_absent_id_insert_it_once(self) -> None:
        path = self.path()
        b = EmbeddedBackend(path)
        self.addCleanup(b.close)
        await b.incr("schema_ready")  # the file exists before the children open it
        outcomes = await self.claimers(path, 2, (5, "p1"), (5, "p2"), (9, "p9"))
        won = [o for o in outcomes if o[0].startswith("won")]
        # 9 always wins; a 5 wins too only if it ran before 9
        self.assertIn(outcomes[2][0].split()[:2], (["won", "9"],), outcomes)
        self.assertLessEqual(len(won), 2, outcomes)
        stored = await b.get_entity("role", 2)
        assert stored is not None
        self.assertEqual(stored.generation, 9)
        self.assertIn(stored.doc["by"], ("p1", "p2", "p9"))
        self.assertEqual(outcomes[2], [f"won 9 {stored.doc['by']}"])


class SynchronousTests(unittest.TestCase):
    """storage.synchronous reaches SQLite's ``PRAGMA synchronous`` of the connection."""

    async def pragma(self, backend: Backend) -> int:
        assert isinstance(backend, EmbeddedBackend)
        value: int = await backend._run(
            "pragma", False, lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
        return value

    async def test_the_backend_sets_the_mode_it_is_given(self) -> None:
        # PRAGMA synchronous values: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
        for mode, value in (("NORMAL", 1), ("FULL", 2), ("full", 2), ("EXTRA", 3)):
            b = EmbeddedBackend(os.path.join(self.mktemp(), "db.sqlite3"), synchronous=mode)
            self.addCleanup(b.close)
            self.assertEqual(await self.pragma(b), value, mode)
        b = EmbeddedBackend(os.path.join(self.mktemp(), "db.sqlite3"))
        self.addCleanup(b.close)
        self.assertEqual(await self.pragma(b), 1)  # NORMAL by default
        with self.assertRaises(ValueError):
            EmbeddedBackend(os.path.join(self.mktemp(), "db.sqlite3"), synchronous="SOMETIMES")

    async def test_open_backend_passes_the_setting(self) -> None:
        b = open_backend(StorageSettings(data_dir=self.mktemp(), synchronous="FULL"))
        self.addCleanup(b.close)
        self.assertEqual(await self.pragma(b), 2)
        with self.assertRaises(ValueError):
            StorageSettings(synchronous="SOMETIMES")

    def node_config(self, **storage: str) -> Any:
        """etc/cluster.toml with some [storage] keys replaced, loaded as a node would."""
        from rltwist.config import load_config

        with open(os.path.join(REPO, "etc", "cluster.toml")) as f:
            text = f.read()
        for key, value in storage.items():
            new, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value!r}".replace("'", '"'),
                             text, count=1)
            self.assertEqual(n, 1, f"no {key} in etc/cluster.toml [storage]")
            text = new
        path = os.path.join(self.mktemp() + ".toml")
        with open(path, "w") as f:
            f.write(text)
        return load_config(path)

    async def test_config_reaches_the_database_of_a_node(self) -> None:
        from rltwist.nodes.common.node import Node

        config = self.node_config(synchronous="FULL", path=os.path.abspath(self.mktemp()))
        self.assertEqual(config.storage.synchronous, "FULL")
        node = Node(config, config.node("rolecity1"))
        db = node.database("region1")
        self.addCleanup(db.close)
        self.assertEqual(await self.pragma(db), 2)
        default = Node(self.node_config(path=os.path.abspath(self.mktemp())),
                       config.node("rolecity1")).database("region1")
        self.addCleanup(default.close)
        self.assertEqual(await self.pragma(default), 1)

    async def test_config_write_concern_reaches_a_nodes_mongodb_backend(self) -> None:
        from rltwist.nodes.common.node import Node
        from rltwist.storage.mongodb import MongoBackend

        factory = protocol.Factory.forProtocol(_Silent)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        config = self.node_config(backend="mongodb", write_concern="2",
                                  mongo_uri=f"mongodb://127.0.0.1:{port.getHost().port}")
        db = Node(config, config.node("logiccenter")).database("globaldb")
        self.addCleanup(db.close)
        assert isinstance(db, MongoBackend)
        self.assertEqual(db.write_concern.document["w"], 2)
        self.assertEqual(db._coll("account").write_concern, db.write_concern)


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
        #: (method, write concern) of every call; None: called without with_options
        self.calls: list[tuple[str, WriteConcern | None]] = []
        #: the next bulk_write is applied but answered with this writeConcernError
        self.bulk_write_concern_error: dict[str, Any] | None = None

    def with_options(self, *, write_concern: WriteConcern) -> _FakeView:
        """txmongo's Collection.with_options: the collection with its own write concern."""
        return _FakeView(self, write_concern)

    def __getattribute__(self, name: str) -> Any:
        if name in _RECORDED:
            object.__getattribute__(self, "calls").append((name, None))
        return object.__getattribute__(self, name)

    @staticmethod
    def _matches(record: dict[str, Any], spec: dict[str, Any]) -> bool:
        for field, want in spec.items():
            have = codec.lookup(record, field.split("."))
            if isinstance(want, dict) and "$in" in want:
                if have not in want["$in"]:
                    return False
            elif isinstance(want, dict) and "$not" in want:
                (op, bound), = want["$not"].items()
                if have is not codec.MISSING and (have > bound if op == "$gt" else have >= bound):
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
                    # through the class: an internal step, not a call to record
                    FakeCollection.delete_one(self, request._filter, timeout=timeout)
            except DuplicateKeyError as e:
                errors.append({"index": index, "code": e.code, "errmsg": str(e)})
                if ordered:
                    break
        concern, self.bulk_write_concern_error = self.bulk_write_concern_error, None
        if errors or concern:
            return defer.fail(BulkWriteError(
                {"writeErrors": errors, "writeConcernErrors": [concern] if concern else []}))
        return defer.succeed(None)


class _FakeView:
    """A FakeCollection seen through ``with_options``: every state is the collection's
    (so a test can set a knob on ``connection[db][coll]`` at any time); calls are recorded
    with the view's write concern."""

    def __init__(self, base: FakeCollection, write_concern: WriteConcern) -> None:
        self._base = base
        self.write_concern = write_concern

    def __getattr__(self, name: str) -> Any:
        base = self._base
        if name in _RECORDED:
            object.__getattribute__(base, "calls").append((name, self.write_concern))
        return object.__getattribute__(base, name)


_RECORDED = frozenset(
    ("insert_one", "find_one", "find", "update_one", "delete_one", "find_one_and_update",
     "ensure_index", "bulk_write"))


class FakeDatabase:
    """Stands for ``txmongo.database.Database``: collections by name and ``command``,
    of which only ``findAndModify`` is implemented (with MongoDB's reply layout)."""

    def __init__(self, colls: dict[str, FakeCollection]) -> None:
        self.colls = colls
        #: findAndModify commands received, as sent (their writeConcern included)
        self.commands: list[dict[str, Any]] = []
        #: the next N findAndModify replies carry this writeConcernError (write applied)
        self.write_concern_error: dict[str, Any] | None = None
        self.write_concern_errors = 0

    def __getitem__(self, coll: str) -> FakeCollection:
        return self.colls.setdefault(coll, FakeCollection())

    def collection_names(self, *, timeout: float) -> defer.Deferred[list[str]]:
        """txmongo's listCollections (every collection ever touched, empty ones too)."""
        return defer.succeed(sorted(self.colls))

    def command(self, command: dict[str, Any], *, timeout: float) -> defer.Deferred[Any]:
        assert next(iter(command)) == "findAndModify", command  # the verb must come first
        self.commands.append(command)
        coll = self[command["findAndModify"]]
        try:
            _, record = coll._upsert_one(command["query"], command["update"],
                                         command.get("upsert", False))
        except DuplicateKeyError as e:
            return defer.fail(e)
        assert command.get("new") is True
        reply: dict[str, Any] = {"ok": 1.0, "value": None if record is None else _wire(record)}
        if self.write_concern_errors:
            self.write_concern_errors -= 1
            reply["writeConcernError"] = self.write_concern_error
        return defer.succeed(reply)


class FakeConnection:
    """Stands for ``txmongo.connection.ConnectionPool``: databases of FakeCollections."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, FakeCollection]] = {}
        self.databases: dict[str, FakeDatabase] = {}

    def __getitem__(self, name: str) -> Any:
        db = self.databases.get(name)
        if db is None:
            db = self.databases[name] = FakeDatabase(self.dbs.setdefault(name, {}))
        return db

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

    async def test_fenced_save_that_keeps_losing_insert_races_fails_instead_of_refusing(
        self,
    ) -> None:
        # A refusal (StaleGeneration) makes the saver drop the entity as owned elsewhere;
        # insert races lost against an older generation are no such proof: they must
        # fail (the entity stays dirty and is saved again), never refuse.
        b = await self.make_backend()
        role = self.connection["test"]["role"]
        role.lose_insert_races = 100
        with self.assertRaises(StorageError) as e:
            await b.save_entity("role", 1, {"v": 1}, 1)
        self.assertNotIsInstance(e.exception, StaleGeneration)
        with self.assertRaises(StorageError) as e:
            await b.save_entities("role", [(2, {"v": 2}, 1)])
        self.assertNotIsInstance(e.exception, StaleGeneration)

    async def test_claim_that_keeps_losing_insert_races_fails_and_claims_nothing(self) -> None:
        b = await self.make_backend()
        self.connection["test"]["role"].lose_insert_races = 100
        with self.assertRaises(StorageError) as e:
            await b.claim_generation("role", 1, 5)
        self.assertNotIsInstance(e.exception, StaleGeneration)
        self.assertEqual(self.connection.dbs["test"]["role"].records, {})

    async def test_claim_that_loses_one_insert_race_to_a_lower_generation_retries(self) -> None:
        b = await self.make_backend()
        self.connection["test"]["role"].lose_insert_races = 1
        self.assertEqual(await b.claim_generation("role", 1, 5, initial={"a": 1}),
                         StoredEntity({"a": 1}, 5))

    async def test_every_write_uses_write_concern_majority_journaled_by_default(self) -> None:
        b = await self.make_backend()
        await b.insert("role", 1, {})
        await b.upsert("role", 2, {})
        await b.update("role", 2, {"a": 1})
        await b.write_batch([Upsert("role", 3, {}), Update("role", 3, {"a": 1}),
                             Delete("role", 3)])
        await b.save_entity("role", 4, {}, 1)
        await b.save_entities("role", [(5, {}, 1)])
        await b.delete("role", 1)
        await b.incr("seq")
        await b.claim_generation("role", 6, 1)
        await b.claim_generation("role", 4, 2)
        writes = [(m, wc) for m, wc in self.connection["test"]["role"].calls
                  if m in ("insert_one", "update_one", "delete_one", "bulk_write")]
        self.assertEqual({m for m, _ in writes},
                         {"insert_one", "update_one", "delete_one", "bulk_write"})
        for method, wc in writes:
            self.assertIsNotNone(wc, method)
            assert wc is not None
            self.assertEqual((wc.document["w"], wc.document["j"]), ("majority", True), method)
        commands = self.connection["test"].commands
        self.assertEqual(len(commands), 3)  # incr and the two claims
        for command in commands:
            self.assertEqual((command["writeConcern"]["w"], command["writeConcern"]["j"]),
                             ("majority", True), command)

    async def test_write_concern_error_in_a_claim_or_incr_reply_is_not_a_success(self) -> None:
        # txmongo's find_one_and_update drops a reply's writeConcernError: the write was
        # applied on the primary but not confirmed by a majority (it may be rolled back),
        # so it must reach the caller as an unknown outcome, not as success.
        b = await self.make_backend()
        db = self.connection["test"]
        db.write_concern_error = {"code": 64, "codeName": "WriteConcernFailed",
                                  "errmsg": "waiting for replication timed out",
                                  "errInfo": {"wtimeout": True}}
        db.write_concern_errors = 2
        with self.assertRaises(StorageTimeout):
            await b.claim_generation("role", 1, 5)
        with self.assertRaises(StorageTimeout):
            await b.incr("seq")
        db.write_concern_error = {"code": 100, "codeName": "UnsatisfiableWriteConcern",
                                  "errmsg": "Not enough data-bearing nodes"}
        db.write_concern_errors = 1
        with self.assertRaises(StorageError):
            await b.claim_generation("role", 2, 5)


    async def test_write_concern_error_in_a_bulk_write_is_an_unknown_outcome(self) -> None:
        b = await self.make_backend()
        role = self.connection["test"]["role"]
        wtimeout = {"code": 64, "errmsg": "waiting for replication timed out",
                    "errInfo": {"wtimeout": True}}
        role.bulk_write_concern_error = wtimeout
        with self.assertRaises(StorageTimeout):
            await b.save_entities("role", [(1, {}, 1)])
        role.bulk_write_concern_error = wtimeout
        with self.assertRaises(StorageTimeout):
            await b.write_batch([Upsert("role", 2, {})])
        role.bulk_write_concern_error = {"code": 100, "errmsg": "not enough nodes"}
        with self.assertRaises(StorageError) as e:
            await b.write_batch([Upsert("role", 3, {})])
        self.assertIn("not enough nodes", str(e.exception))


class WriteConcernTests(unittest.TestCase):
    """storage.write_concern -> the WriteConcern of every MongoDB write (no server)."""

    def test_majority_is_the_default_and_a_member_count_is_an_int(self) -> None:
        from rltwist.storage.mongodb import write_concern_for

        self.assertEqual(StorageSettings().write_concern, "majority")
        wc = write_concern_for("majority", timeout=5.0)
        self.assertEqual(wc.document["w"], "majority")
        self.assertIs(wc.document["j"], True)
        # the server gives up on replication before the client's own bound does
        self.assertEqual(wc.document["wtimeout"], 4000)
        self.assertEqual(write_concern_for("2", timeout=5.0).document["w"], 2)
        for bad in ("two", "0", "-1", "", "Majority"):
            with self.assertRaises(ValueError):
                write_concern_for(bad, timeout=5.0)
            with self.assertRaises(ValueError):
                StorageSettings(write_concern=bad)

    def test_settings_reach_the_backend_collections(self) -> None:
        from rltwist.storage.mongodb import MongoBackend

        conn = FakeConnection()
        for setting, w in (("majority", "majority"), ("3", 3)):
            b = MongoBackend("mongodb://fake", "test", timeout=2.0, write_concern=setting,
                             connection=conn)  # type: ignore[arg-type]
            self.assertEqual(b.write_concern.document, {"w": w, "j": True, "wtimeout": 1600})
            self.assertEqual(b._coll("role").write_concern, b.write_concern)

    async def test_open_backend_passes_write_concern_and_a_real_collection_uses_it(self) -> None:
        # A real txmongo pool against a port that never answers: no server needed to see
        # which write concern the collections the backend writes through carry.
        factory = protocol.Factory.forProtocol(_Silent)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        settings = StorageSettings(backend="mongodb", write_concern="2", timeout=1.0,
                                   mongo_uri=f"mongodb://127.0.0.1:{port.getHost().port}")
        b = open_backend(settings)
        self.addCleanup(b.close)
        from txmongo.collection import Collection

        coll = b._coll("role")  # type: ignore[attr-defined]
        self.assertIsInstance(coll, Collection)
        self.assertEqual(coll.write_concern.document, {"w": 2, "j": True, "wtimeout": 800})
