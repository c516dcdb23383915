"""The behaviour every storage backend must have, as a mixin of trial tests.

A backend's test case subclasses ``BackendContract`` and ``TestCase`` and
implements ``make_backend``; see tests/test_storage.py.
"""

from __future__ import annotations

from typing import Any

import msgpack
from twisted.internet import defer

from rltwist.storage import (
    Backend,
    BackendClosed,
    Delete,
    DuplicateKey,
    InvalidDocument,
    StaleGeneration,
    StoredEntity,
    Update,
    Upsert,
)

USERID = (123456 << 16) | 1001  # seq << 16 | server_id, well above 2**53


def player_doc(n: int, size: int = 2048) -> dict[str, Any]:
    """A player-like document of ``size`` bytes once msgpack-encoded (size >= ~1.5 KB)."""
    doc: dict[str, Any] = {
        "userid": (n << 16) | 7,
        "name": f"player{n}",
        "level": n % 60,
        "resources": {"food": n * 10, "wood": n * 7, "iron": n * 3, "gold": n},
        "buildings": [
            {"kind": i % 17, "level": (n + i) % 30, "x": i, "y": n % 500} for i in range(40)
        ],
        "flags": {"tutorial_done": True, "banned": False},
        "note": "",
    }
    # An empty str packs to 1 byte; a 256..65535-char one to len + 3.
    doc["note"] = "n" * max(size - len(msgpack.packb(doc)) - 2, 0)
    return doc


class BackendContract:
    """Contract tests; mix into a ``twisted.trial.unittest.TestCase``."""

    # Provided by TestCase.
    assertEqual: Any
    assertIs: Any
    assertIsNone: Any
    assertTrue: Any
    assertFalse: Any
    assertIsInstance: Any
    assertRaises: Any
    assertCountEqual: Any
    fail: Any

    async def make_backend(self) -> Backend:
        """Return a fresh, empty backend that is closed when the test ends."""
        raise NotImplementedError

    async def assertFails(self, exc_type: type[BaseException], awaitable: Any) -> Any:
        try:
            await awaitable
        except exc_type as e:
            return e
        self.fail(f"{exc_type.__name__} not raised")

    # -- basic CRUD ----------------------------------------------------------------

    async def test_document_reads_back_equal_including_bytes_and_64_bit_ints(self) -> None:
        b = await self.make_backend()
        doc = {
            "userid": USERID,
            "max": 2**63 - 1,
            "min": -(2**63),
            "ratio": 0.25,
            "name": "玩家一",
            "blob": b"\x00\xff\x10binary",
            "ok": True,
            "nothing": None,
            "nested": {"list": [1, "two", {"three": [3.5, None]}], "empty": {}},
        }
        await b.insert("role", USERID, doc)
        self.assertEqual(await b.get("role", USERID), doc)

    async def test_missing_document_reads_as_none(self) -> None:
        b = await self.make_backend()
        self.assertIsNone(await b.get("role", 1))
        self.assertIsNone(await b.get_entity("role", "nobody"))

    async def test_insert_of_existing_id_raises_duplicate_key_and_keeps_the_original(self) -> None:
        b = await self.make_backend()
        await b.insert("account", "openid-1", {"userid": 1})
        err = await self.assertFails(DuplicateKey, b.insert("account", "openid-1", {"userid": 2}))
        self.assertEqual((err.collection, err.id), ("account", "openid-1"))
        self.assertEqual(await b.get("account", "openid-1"), {"userid": 1})

    async def test_int_and_str_ids_are_different_documents(self) -> None:
        b = await self.make_backend()
        await b.upsert("role", 1, {"v": "int"})
        await b.upsert("role", "1", {"v": "str"})
        self.assertEqual(await b.get("role", 1), {"v": "int"})
        self.assertEqual(await b.get("role", "1"), {"v": "str"})

    async def test_collections_do_not_share_ids(self) -> None:
        b = await self.make_backend()
        await b.upsert("role", 5, {"kind": "role"})
        await b.upsert("mail", 5, {"kind": "mail"})
        self.assertTrue(await b.delete("mail", 5))
        self.assertEqual(await b.get("role", 5), {"kind": "role"})

    async def test_upsert_replaces_the_whole_document(self) -> None:
        b = await self.make_backend()
        await b.upsert("role", 1, {"a": 1, "b": 2})
        await b.upsert("role", 1, {"b": 3})
        self.assertEqual(await b.get("role", 1), {"b": 3})

    async def test_update_sets_only_the_given_fields_including_nested_paths(self) -> None:
        b = await self.make_backend()
        await b.insert("role", 1, {"a": 1, "res": {"food": 5, "wood": 6}})
        self.assertTrue(await b.update("role", 1, {"a": 2, "res.food": 50, "new.deep": "x"}))
        self.assertEqual(
            await b.get("role", 1), {"a": 2, "res": {"food": 50, "wood": 6}, "new": {"deep": "x"}}
        )

    async def test_update_of_missing_document_reports_false_and_creates_nothing(self) -> None:
        b = await self.make_backend()
        self.assertFalse(await b.update("role", 404, {"a": 1}))
        self.assertIsNone(await b.get("role", 404))

    async def test_delete_reports_whether_the_document_existed(self) -> None:
        b = await self.make_backend()
        await b.upsert("role", 1, {})
        self.assertTrue(await b.delete("role", 1))
        self.assertFalse(await b.delete("role", 1))
        self.assertIsNone(await b.get("role", 1))

    async def test_saved_document_is_a_snapshot_taken_at_call_time(self) -> None:
        b = await self.make_backend()
        doc: dict[str, Any] = {"gold": 1, "items": [1]}
        saving = defer.ensureDeferred(b.upsert("role", 1, doc))
        doc["gold"] = 999  # game logic keeps running while the save is in flight
        doc["items"].append(2)
        await saving
        self.assertEqual(await b.get("role", 1), {"gold": 1, "items": [1]})

    async def test_unstorable_input_is_refused_before_anything_is_written(self) -> None:
        b = await self.make_backend()
        await self.assertFails(InvalidDocument, b.upsert("role", 1, {"s": {1, 2}}))
        await self.assertFails(InvalidDocument, b.upsert("role", 2, {"huge": 2**64}))
        await self.assertFails(InvalidDocument, b.upsert("bad$name", 3, {}))
        await self.assertFails(InvalidDocument, b.upsert("role", True, {}))  # type: ignore[arg-type]
        await self.assertFails(InvalidDocument, b.upsert("role", 2**63, {}))
        await self.assertFails(InvalidDocument, b.find("role", {"a": [1]}))  # type: ignore[dict-item]
        self.assertEqual(await b.find("role", {}), [])

    # -- find ------------------------------------------------------------------------

    async def _players(self, b: Backend) -> None:
        await b.write_batch(
            [
                Upsert("role", 1, {"name": "ann", "guild": 7, "vip": True, "pos": {"map": 1}}),
                Upsert("role", 2, {"name": "bob", "guild": 7, "vip": False, "pos": {"map": 2}}),
                Upsert("role", 3, {"name": "cat", "guild": 8, "vip": 1, "pos": {"map": 1}}),
                Upsert("role", 4, {"name": "dan", "guild": None}),
                Upsert("guild", 7, {"name": "ann"}),
            ]
        )

    async def _check_find(self, b: Backend) -> None:
        def ids(found: list[tuple[Any, Any]]) -> list[Any]:
            return sorted(i for i, _ in found)

        self.assertEqual(ids(await b.find("role", {"guild": 7})), [1, 2])
        self.assertEqual(ids(await b.find("role", {"guild": 7, "name": "bob"})), [2])
        self.assertEqual(ids(await b.find("role", {"guild": 7.0})), [1, 2])
        self.assertEqual(ids(await b.find("role", {"vip": True})), [1])  # 1 is not True
        self.assertEqual(ids(await b.find("role", {"pos.map": 1})), [1, 3])
        self.assertEqual(ids(await b.find("role", {"name": "ann"})), [1])
        self.assertEqual(ids(await b.find("role", {"name": "zed"})), [])
        self.assertEqual(ids(await b.find("role", {"pos": None})), [4])  # missing or null
        self.assertEqual(len(await b.find("role", {"guild": 7}, limit=1)), 1)
        found = await b.find("role", {"name": "cat"})
        self.assertEqual(found, [(3, {"name": "cat", "guild": 8, "vip": 1, "pos": {"map": 1}})])

    async def test_find_returns_documents_whose_fields_equal_every_query_value(self) -> None:
        b = await self.make_backend()
        await self._players(b)
        await self._check_find(b)

    async def test_find_gives_the_same_answers_through_an_index(self) -> None:
        b = await self.make_backend()
        await b.ensure_index("role", "name")  # before the documents exist
        await self._players(b)
        for field in ("guild", "vip", "pos.map", "name"):  # after; idempotent for name
            await b.ensure_index("role", field)
        await self._check_find(b)

    async def test_find_through_an_index_follows_updates_and_deletes(self) -> None:
        b = await self.make_backend()
        await b.ensure_index("role", "name")
        await b.insert("role", 1, {"name": "ann"})
        await b.update("role", 1, {"name": "anne"})
        await b.upsert("role", 2, {"name": "ann"})
        await b.save_entity("role", 3, {"name": "ann"}, 1)
        await b.delete("role", 3)
        await b.write_batch([Upsert("role", 4, {"name": "ann"}), Update("role", 2, {"x": 1})])
        self.assertEqual(sorted(i for i, _ in await b.find("role", {"name": "ann"})), [2, 4])
        self.assertEqual([i for i, _ in await b.find("role", {"name": "anne"})], [1])

    # -- batches --------------------------------------------------------------------

    async def test_write_batch_applies_upserts_updates_and_deletes_in_order(self) -> None:
        b = await self.make_backend()
        await b.upsert("mail", 9, {"gone": True})
        await b.write_batch(
            [
                Upsert("role", 1, {"v": 1}),
                Update("role", 1, {"v": 2}),
                Upsert("mail", 1, {"to": 1}),
                Delete("mail", 9),
                Upsert("role", 2, {"v": 1}),
                Delete("role", 2),
                Update("role", 3, {"v": 1}),  # absent: no-op
            ]
        )
        self.assertEqual(await b.get("role", 1), {"v": 2})
        self.assertEqual(await b.get("mail", 1), {"to": 1})
        self.assertIsNone(await b.get("mail", 9))
        self.assertIsNone(await b.get("role", 2))
        self.assertIsNone(await b.get("role", 3))

    # -- counters -------------------------------------------------------------------

    async def test_counter_starts_at_one_and_adds_the_given_amount(self) -> None:
        b = await self.make_backend()
        self.assertEqual(await b.incr("user_seq"), 1)
        self.assertEqual(await b.incr("user_seq"), 2)
        self.assertEqual(await b.incr("user_seq", 10), 12)
        self.assertEqual(await b.incr("other"), 1)

    async def test_collections_and_counters_list_what_the_database_holds(self) -> None:
        # rl-merge copies a whole region database: it must see every collection and counter
        b = await self.make_backend()
        self.assertEqual(await b.collections(), [])
        self.assertEqual(await b.counters(), {})
        await b.insert("mailbox", 1, {"a": 1})
        await b.upsert("names", "alice", {"owner": 1})
        await b.insert("names", "bob", {"owner": 2})
        await b.incr("guild_seq", 3)
        await b.incr("lru_generation:guild")
        self.assertEqual(await b.collections(), ["mailbox", "names"])
        self.assertEqual(await b.counters(), {"guild_seq": 3, "lru_generation:guild": 1})
        await b.delete("mailbox", 1)
        self.assertEqual(await b.collections(), ["names"])

    async def test_concurrent_increments_each_get_a_distinct_value(self) -> None:
        b = await self.make_backend()
        values = await defer.gatherResults(
            [defer.ensureDeferred(b.incr("user_seq")) for _ in range(50)]
        )
        self.assertEqual(sorted(values), list(range(1, 51)))

    # -- fenced entity saves --------------------------------------------------------

    async def test_fenced_save_refuses_an_older_generation_and_keeps_the_newer_data(self) -> None:
        b = await self.make_backend()
        await b.save_entity("role", USERID, {"gold": 200}, 5)
        err = await self.assertFails(
            StaleGeneration, b.save_entity("role", USERID, {"gold": 100}, 4)
        )
        self.assertEqual((err.collection, err.id, err.given, err.stored), ("role", USERID, 4, 5))
        self.assertEqual(await b.get_entity("role", USERID), StoredEntity({"gold": 200}, 5))

    async def test_fenced_save_accepts_the_same_or_a_newer_generation(self) -> None:
        b = await self.make_backend()
        await b.save_entity("role", 1, {"gold": 1}, 3)
        await b.save_entity("role", 1, {"gold": 2}, 3)
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 2}, 3))
        await b.save_entity("role", 1, {"gold": 3}, 9)
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 3}, 9))

    async def test_plain_writes_keep_the_generation_and_start_it_at_zero(self) -> None:
        b = await self.make_backend()
        await b.insert("role", 1, {"a": 1})
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"a": 1}, 0))
        await b.save_entity("role", 1, {"a": 2}, 4)
        await b.upsert("role", 1, {"a": 3})
        await b.update("role", 1, {"b": 1})
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"a": 3, "b": 1}, 4))
        await self.assertFails(StaleGeneration, b.save_entity("role", 1, {"a": 0}, 3))

    async def test_batched_fenced_save_reports_each_refused_entity(self) -> None:
        b = await self.make_backend()
        await b.save_entities("role", [(1, {"v": "new"}, 10), (2, {"v": "new"}, 10)])
        results = await b.save_entities(
            "role",
            [(1, {"v": "old"}, 9), (2, {"v": "newer"}, 11), (3, {"v": "first"}, 0)],
        )
        self.assertIsInstance(results[0], StaleGeneration)
        self.assertEqual((results[0].id, results[0].given, results[0].stored), (1, 9, 10))
        self.assertEqual(results[1:], [None, None])
        self.assertEqual(await b.get("role", 1), {"v": "new"})
        self.assertEqual(await b.get_entity("role", 2), StoredEntity({"v": "newer"}, 11))
        self.assertEqual(await b.get("role", 3), {"v": "first"})
        self.assertEqual(await b.save_entities("role", []), [])

    # -- generation claims ----------------------------------------------------------

    async def test_claim_raises_the_stored_generation_and_leaves_the_document_alone(self) -> None:
        b = await self.make_backend()
        await b.save_entity("role", USERID, {"gold": 7, "name": "ann"}, 3)
        claimed = await b.claim_generation("role", USERID, 4, initial={"ignored": True})
        # The claim hands back the document it fenced: what the old instance saved last.
        self.assertEqual(claimed, StoredEntity({"gold": 7, "name": "ann"}, 4))
        self.assertEqual(await b.get_entity("role", USERID), StoredEntity(
            {"gold": 7, "name": "ann"}, 4))
        self.assertEqual(await b.claim_generation("role", USERID, 10), StoredEntity(
            {"gold": 7, "name": "ann"}, 10))  # gaps are fine: only "strictly higher" counts

    async def test_claim_then_a_lower_generation_save_is_refused(self) -> None:
        b = await self.make_backend()
        await b.save_entity("role", 1, {"gold": 1}, 3)
        await b.claim_generation("role", 1, 4)
        # The old instance (generation 3) has not saved since: its next save must not land.
        err = await self.assertFails(StaleGeneration, b.save_entity("role", 1, {"gold": 99}, 3))
        self.assertEqual((err.given, err.stored), (3, 4))
        [refused] = await b.save_entities("role", [(1, {"gold": 98}, 3)])
        self.assertIsInstance(refused, StaleGeneration)
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 1}, 4))
        # The claimant itself saves at its own generation.
        await b.save_entity("role", 1, {"gold": 2}, 4)
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 2}, 4))

    async def test_claim_of_an_absent_id_inserts_the_initial_document(self) -> None:
        b = await self.make_backend()
        initial = {"userid": USERID, "gold": 100, "blob": b"\x00"}
        self.assertEqual(await b.claim_generation("role", USERID, 1, initial=initial),
                         StoredEntity(initial, 1))
        self.assertEqual(await b.get_entity("role", USERID), StoredEntity(initial, 1))
        self.assertEqual(await b.claim_generation("role", "no-initial", 2),
                         StoredEntity({}, 2))
        self.assertEqual(await b.get_entity("role", "no-initial"), StoredEntity({}, 2))
        await self.assertFails(StaleGeneration, b.save_entity("role", USERID, {}, 0))

    async def test_claim_of_an_absent_id_keeps_indexes_up_to_date(self) -> None:
        b = await self.make_backend()
        await b.ensure_index("role", "name")
        await b.claim_generation("role", 1, 1, initial={"name": "ann"})
        self.assertEqual(await b.find("role", {"name": "ann"}), [(1, {"name": "ann"})])

    async def test_claim_of_the_same_or_a_lower_generation_is_refused_and_changes_nothing(
        self,
    ) -> None:
        b = await self.make_backend()
        await b.save_entity("role", 1, {"gold": 1}, 5)
        for generation in (5, 4, 0):
            err = await self.assertFails(
                StaleGeneration, b.claim_generation("role", 1, generation, initial={"x": 1}))
            self.assertEqual((err.collection, err.id, err.given, err.stored),
                             ("role", 1, generation, 5))
        self.assertEqual(await b.get_entity("role", 1), StoredEntity({"gold": 1}, 5))
        # A plain insert leaves generation 0 stored; a claim of 0 on it is "equal".
        await b.insert("role", 2, {"a": 1})
        await self.assertFails(StaleGeneration, b.claim_generation("role", 2, 0))
        self.assertEqual(await b.claim_generation("role", 2, 1), StoredEntity({"a": 1}, 1))

    async def test_two_concurrent_claims_of_one_generation_exactly_one_wins(self) -> None:
        b = await self.make_backend()
        for id, existing in ((1, None), (2, {"gold": 5})):
            if existing is not None:
                await b.save_entity("role", id, existing, 1)
            outcomes = await defer.DeferredList(
                [defer.ensureDeferred(b.claim_generation("role", id, 7, initial={"by": n}))
                 for n in range(2)], consumeErrors=True)
            won = [r for ok, r in outcomes if ok]
            lost = [r.value for ok, r in outcomes if not ok]
            self.assertEqual(len(won), 1, outcomes)
            self.assertEqual(len(lost), 1, outcomes)
            self.assertIsInstance(lost[0], StaleGeneration)
            self.assertEqual((lost[0].given, lost[0].stored), (7, 7))
            self.assertEqual(await b.get_entity("role", id), won[0])
            self.assertEqual(won[0].generation, 7)

    async def test_concurrent_claims_of_different_generations_leave_the_highest(self) -> None:
        b = await self.make_backend()
        outcomes = await defer.DeferredList(
            [defer.ensureDeferred(b.claim_generation("role", 1, g, initial={"by": g}))
             for g in (3, 9, 5)], consumeErrors=True)
        self.assertTrue(outcomes[1][0], outcomes)  # the highest always wins
        for ok, r in outcomes:
            if not ok:
                self.assertIsInstance(r.value, StaleGeneration)
        stored = await b.get_entity("role", 1)
        assert stored is not None
        self.assertEqual(stored.generation, 9)
        self.assertIn(stored.doc, [{"by": 3}, {"by": 9}, {"by": 5}])

    async def test_claim_rejects_unstorable_input_before_writing(self) -> None:
        b = await self.make_backend()
        await self.assertFails(InvalidDocument, b.claim_generation("role", 1, -1))
        await self.assertFails(InvalidDocument, b.claim_generation("role", 1, True))  # type: ignore[arg-type]
        await self.assertFails(InvalidDocument, b.claim_generation("bad$", 1, 1))
        await self.assertFails(InvalidDocument, b.claim_generation("role", 1, 1, initial=[]))  # type: ignore[arg-type]
        self.assertIsNone(await b.get_entity("role", 1))

    async def test_ten_thousand_2kb_entities_are_saved_in_one_call(self) -> None:
        b = await self.make_backend()
        items = [(USERID + n, player_doc(n), 1) for n in range(10_000)]
        self.assertEqual(await b.save_entities("role", items), [None] * 10_000)
        for n in (0, 4_999, 9_999):
            self.assertEqual(await b.get_entity("role", USERID + n), StoredEntity(items[n][1], 1))
        self.assertEqual(len(await b.find("role", {"level": 0})), 167)

    # -- lifecycle ------------------------------------------------------------------

    async def test_closed_backend_refuses_further_operations(self) -> None:
        b = await self.make_backend()
        await b.upsert("role", 1, {})
        await b.close()
        await b.close()  # idempotent
        await self.assertFails(BackendClosed, b.get("role", 1))
