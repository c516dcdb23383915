"""ECS core: entities, the registry, shared config tables, data fixes, first game systems."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import MappingProxyType, ModuleType

import msgpack
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs import sharedata as sharedata_module
from rltwist.ecs.datafix import DataFixer, DataFixError, datafix_poller
from rltwist.ecs.entity import Entity, plain_copy
from rltwist.ecs.registry import Registry, SystemProxy
from rltwist.ecs.sharedata import ConfigError, ShareData, freeze, shared, sharedata_poller
from rltwist.ecs.system import System
from rltwist.game.errcode import ErrCode
from rltwist.game.tables import VALIDATORS

REPO = Path(__file__).resolve().parent.parent
GAME_TABLES = REPO / "etc" / "game"


class EntityTests(unittest.TestCase):
    def test_new_entity_is_dirty_and_loaded_entity_is_clean(self) -> None:
        self.assertTrue(Entity(1).dirty)
        self.assertFalse(Entity.from_doc(Entity(1).to_doc()).dirty)

    def test_changes_mark_dirty_and_confirmed_save_clears(self) -> None:
        entity = Entity.from_doc({"_id": 1, "version": 2, "attrs": {"gold": 1}})
        entity.incr("gold", 4)
        self.assertTrue(entity.dirty)
        token, doc = entity.snapshot()
        entity.saved(token)
        self.assertFalse(entity.dirty)
        self.assertEqual(doc["attrs"], {"gold": 5})

    def test_failed_save_keeps_entity_dirty(self) -> None:
        entity = Entity.from_doc({"_id": 1})
        entity["name"] = "a"
        entity.snapshot()  # the save fails: nobody calls saved()
        self.assertTrue(entity.dirty)

    def test_change_during_in_flight_save_keeps_entity_dirty(self) -> None:
        entity = Entity.from_doc({"_id": 1})
        entity["name"] = "a"
        token, doc = entity.snapshot()
        entity.component("bag")["items"] = [1]
        entity.mark_dirty()
        entity.saved(token)
        self.assertTrue(entity.dirty)
        self.assertEqual(doc["components"], {})
        token2, _ = entity.snapshot()
        entity.saved(token2)
        entity.saved(token)  # a late confirmation of the older save changes nothing
        self.assertFalse(entity.dirty)

    def test_snapshot_is_detached_from_live_data(self) -> None:
        entity = Entity(1, attrs={"tags": ["a"]}, components={"bag": {"items": [1]}})
        _, doc = entity.snapshot()
        entity.component("bag")["items"].append(2)
        entity["tags"].append("b")
        self.assertEqual(doc["components"]["bag"]["items"], [1])
        self.assertEqual(doc["attrs"]["tags"], ["a"])

    def test_doc_round_trips_through_msgpack(self) -> None:
        entity = Entity(
            65537,
            version=3,
            attrs={"name": "张三", "gold": 10, "pos": (1, 2)},
            components={"building": {"castle": 2}, "bag": {"items": [{"id": 1, "n": 2}]}},
        )
        doc = msgpack.unpackb(msgpack.packb(entity.to_doc()))
        back = Entity.from_doc(doc)
        self.assertEqual(back.to_doc(), entity.to_doc())
        self.assertEqual(back.version, 3)
        self.assertEqual(back["pos"], [1, 2])

    def test_non_plain_data_is_refused_when_saving(self) -> None:
        entity = Entity(1, attrs={"when": object()})
        self.assertRaises(TypeError, entity.to_doc)
        self.assertEqual(plain_copy({"a": (1, {"b": None})}), {"a": [1, {"b": None}]})

    def test_copy_and_replace_data_commit_work_in_one_step(self) -> None:
        entity = Entity.from_doc({"_id": 1, "attrs": {"gold": 1}})
        work = entity.copy()
        work["gold"] = 99
        self.assertEqual(entity["gold"], 1)
        work.version = 5
        entity.replace_data(work)
        self.assertEqual((entity["gold"], entity.version), (99, 5))
        self.assertTrue(entity.dirty)


class CountSystem(System):
    def bump(self, entity: Entity) -> int:
        comp = self.component(entity)
        comp["n"] = comp.get("n", 0) + 1
        entity.mark_dirty()
        return comp["n"]


class RegistryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.registry = Registry()
        self.name = "_rltwist_test_countsystem"
        module = ModuleType(self.name)
        module.system = CountSystem()  # type: ignore[attr-defined]
        sys.modules[self.name] = module
        self.addCleanup(sys.modules.pop, self.name, None)

    def test_system_name_defaults_to_lowercase_class_name(self) -> None:
        self.assertEqual(CountSystem.name, "countsystem")

    def test_import_returns_one_stable_proxy_and_records_services(self) -> None:
        first = self.registry.import_system(self.name, service="agent")
        second = self.registry.import_system(self.name, service="world")
        self.assertIsInstance(first, SystemProxy)
        self.assertIs(first, second)
        entity = Entity(1)
        self.assertEqual(first.bump(entity), 1)
        self.assertEqual(entity.components["countsystem"], {"n": 1})
        self.assertEqual(self.registry.services(self.name), {"agent", "world"})
        self.assertEqual(self.registry.modules_of("agent"), (self.name,))
        self.assertEqual(self.registry.modules(), (self.name,))

    def test_module_without_system_instance_is_refused(self) -> None:
        module = ModuleType("_rltwist_test_nosystem")
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__, None)
        self.assertRaises(TypeError, self.registry.import_system, module.__name__)
        self.assertFalse(self.registry.is_loaded(module.__name__))

    def test_swap_checks_every_module_before_changing_any(self) -> None:
        proxy = self.registry.import_system(self.name)
        target = proxy._target
        bad = ModuleType(self.name)
        self.assertRaises(TypeError, self.registry.swap, {self.name: bad})
        self.assertIs(proxy._target, target)
        self.assertIs(sys.modules[self.name].system, target)


    def test_tracked_module_is_reached_without_a_system_and_checked_on_swap(self) -> None:
        # What an LRU group does with its actor's module: no system, a required class.
        name = "_rltwist_test_tracked"
        module = ModuleType(name)
        module.Thing = type("Thing", (dict,), {})  # type: ignore[attr-defined]
        sys.modules[name] = module
        self.addCleanup(sys.modules.pop, name, None)
        self.assertIs(self.registry.track(name, service="guildrouter",
                                          requires={"Thing": dict}), module)
        self.assertTrue(self.registry.is_loaded(name))
        self.assertFalse(self.registry.has_system(name))
        self.assertEqual(self.registry.services(name), {"guildrouter"})
        version = self.registry.version

        without = ModuleType(name)
        wrong = ModuleType(name)
        wrong.Thing = 42  # type: ignore[attr-defined]
        for bad, message in ((without, "must still define Thing"),
                             (wrong, "must be a subclass of dict")):
            with self.assertRaises(TypeError) as caught:
                self.registry.swap({name: bad})
            self.assertIn(message, str(caught.exception))
        self.assertEqual(self.registry.version, version)
        self.assertIs(self.registry.module(name), module)

        good = ModuleType(name)
        good.Thing = type("Thing", (dict,), {})  # type: ignore[attr-defined]
        self.registry.swap({name: good})
        self.assertEqual(self.registry.version, version + 1)
        self.assertIs(self.registry.module(name), good)
        self.assertIs(sys.modules[name], good)


def write_tables(directory: Path, marker: int) -> None:
    """Two tables that both carry ``marker``: a reader must always see equal markers."""
    (directory / "alpha.toml").write_text(f"marker = {marker}\nitems = [1, 2, 3]\n")
    (directory / "beta.json").write_text(f'{{"marker": {marker}, "nested": {{"x": [1]}}}}')


class ShareDataTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        write_tables(self.dir, 1)

    def test_tables_are_frozen(self) -> None:
        sd = ShareData(self.dir)
        alpha = sd.table("alpha")
        self.assertIsInstance(alpha, MappingProxyType)
        self.assertEqual(alpha["items"], (1, 2, 3))
        with self.assertRaises(TypeError):
            alpha["marker"] = 2  # type: ignore[index]
        with self.assertRaises(TypeError):
            sd.table("beta")["nested"]["x"] = 2
        self.assertEqual(freeze({"a": [{"b": 1}]})["a"][0]["b"], 1)

    def test_reload_swaps_all_tables_and_bumps_version(self) -> None:
        sd = ShareData(self.dir)
        old = sd.snapshot
        self.assertIs(sd.reload(), old)  # unchanged files: same snapshot, same version
        write_tables(self.dir, 2)
        new = sd.reload()
        self.assertEqual((new.version, new["alpha"]["marker"], new["beta"]["marker"]),
                         (2, 2, 2))
        self.assertNotEqual(new.digest, old.digest)
        self.assertEqual(old["alpha"]["marker"], 1)  # readers holding the old one are safe
        self.assertIs(sd.snapshot, new)

    def test_bad_file_fails_whole_reload_naming_file_and_key(self) -> None:
        sd = ShareData(GAME_TABLES, VALIDATORS)
        old = sd.snapshot
        bad = Path(self.mktemp())
        bad.mkdir()
        for path in GAME_TABLES.iterdir():
            (bad / path.name).write_bytes(path.read_bytes())
        sd = ShareData(bad, VALIDATORS)
        text = (bad / "building_costs.toml").read_text()
        (bad / "building_costs.toml").write_text(text.replace("gold = 500", "gold = -5", 1))
        (bad / "name_rules.toml").write_text("min_length = 5\nmax_length = 3\ncharsets=[]\n")
        with self.assertRaises(ConfigError) as caught:
            sd.reload()
        message = str(caught.exception)
        self.assertIn("building_costs.toml: castle[1].gold: must be a non-negative", message)
        self.assertIn("name_rules.toml: max_length", message)
        self.assertIn("name_rules.toml: charsets", message)
        self.assertEqual(sd.version, 1)
        self.assertEqual(sd.table("building_costs")["castle"][1]["gold"], 500)
        self.assertEqual(old.digest, sd.snapshot.digest)

    def test_unparsable_file_fails_reload_and_names_the_file(self) -> None:
        sd = ShareData(self.dir)
        (self.dir / "alpha.toml").write_text("marker = \n")
        with self.assertRaises(ConfigError) as caught:
            sd.reload()
        self.assertEqual(caught.exception.problems[0].file, "alpha.toml")
        self.assertEqual(sd.table("alpha")["marker"], 1)

    def test_same_table_in_two_formats_and_missing_required_table_are_errors(self) -> None:
        (self.dir / "alpha.json").write_text("{}")
        with self.assertRaises(ConfigError) as caught:
            ShareData(self.dir, {"gamma": lambda t: ()})
        message = str(caught.exception)
        self.assertIn("table 'alpha' also defined by", message)
        self.assertIn("gamma.toml: required table is missing", message)

    def test_readers_never_see_a_mix_of_versions_during_reloads(self) -> None:
        sd = ShareData(self.dir)
        mixed: list[tuple[int, int]] = []
        seen: set[int] = set()
        stop = threading.Event()

        def reader() -> None:
            while not stop.is_set():
                snap = sd.snapshot
                a, b = snap["alpha"]["marker"], snap["beta"]["marker"]
                seen.add(a)
                if a != b or snap.version != a:
                    mixed.append((a, b))

        # Switch threads often: many interleavings, and the reloading thread is not starved.
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        sys.setswitchinterval(1e-5)
        threads = [threading.Thread(target=reader) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for marker in range(2, 40):
                write_tables(self.dir, marker)
                self.assertEqual(sd.reload().version, marker)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        self.assertEqual(mixed, [])
        self.assertGreater(len(seen), 1)

    def test_reader_in_a_coroutine_keeps_its_snapshot_across_a_reload(self) -> None:
        sd = ShareData(self.dir)
        gate: defer.Deferred[None] = defer.Deferred()

        async def request() -> tuple[int, int]:
            snap = sd.snapshot
            first = snap["alpha"]["marker"]
            await gate
            return first, snap["beta"]["marker"]

        d = defer.ensureDeferred(request())
        write_tables(self.dir, 2)
        sd.reload()
        gate.callback(None)
        self.assertEqual(self.successResultOf(d), (1, 1))

    def test_one_instance_per_process_and_directory(self) -> None:
        self.addCleanup(sharedata_module._SHARED.clear)
        self.assertIs(shared(self.dir), shared(str(self.dir) + "/"))

    def test_poller_reloads_changed_files_and_reports_a_failure_once(self) -> None:
        sd = ShareData(self.dir)
        clock = task.Clock()
        reports: list = []
        poller = sharedata_poller(sd, interval=10, clock=clock, on_results=reports.extend)
        poller.startService()
        self.addCleanup(poller.stopService)
        self.assertEqual(reports, [])
        write_tables(self.dir, 2)
        clock.advance(10)
        self.assertEqual([r.version for r in reports], [2])
        (self.dir / "alpha.toml").write_text("broken = \n")
        clock.advance(10)
        clock.advance(10)
        self.assertEqual(len(reports), 2)
        self.assertIsInstance(reports[1], ConfigError)
        self.assertEqual(sd.version, 2)


FIX_TEMPLATE = """
TARGET_VERSION = {version}

def fix(entity):
    entity["log"] = entity.get("log", []) + [{version}]
{extra}
"""


class DataFixTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def write_fix(self, version: int, extra: str = "", name: str | None = None) -> None:
        path = self.dir / (name or f"{version:04d}_fix.py")
        path.write_text(FIX_TEMPLATE.format(version=version, extra=extra))

    def test_fixes_run_in_version_order_exactly_once(self) -> None:
        for version in (3, 1, 2):
            self.write_fix(version)
        fixer = DataFixer(self.dir)
        entity = Entity.from_doc({"_id": 5, "version": 0})
        report = fixer.apply_fixes(entity)
        self.assertEqual(report.applied, (1, 2, 3))
        self.assertEqual((report.from_version, report.to_version), (0, 3))
        self.assertEqual(entity["log"], [1, 2, 3])
        self.assertTrue(entity.dirty)
        again = fixer.apply_fixes(entity)
        self.assertEqual(again.applied, ())
        self.assertEqual(entity["log"], [1, 2, 3])
        # Also after a save and reload of the entity.
        loaded = Entity.from_doc(entity.to_doc())
        fixer.apply_fixes(loaded)
        self.assertEqual(loaded["log"], [1, 2, 3])

    def test_entity_already_at_a_version_runs_only_later_fixes(self) -> None:
        for version in (1, 2, 3):
            self.write_fix(version)
        entity = Entity.from_doc({"_id": 5, "version": 2})
        self.assertEqual(DataFixer(self.dir).apply_fixes(entity).applied, (3,))
        self.assertEqual(entity["log"], [3])

    def test_failing_fix_leaves_entity_at_old_version_without_partial_change(self) -> None:
        self.write_fix(1)
        self.write_fix(2, extra="    entity.component('bag')['x'] = 1\n    raise KeyError('k')")
        self.write_fix(3)
        fixer = DataFixer(self.dir)
        entity = Entity.from_doc({"_id": 5, "version": 0})
        report = fixer.apply_fixes(entity)
        self.assertFalse(report.ok)
        self.assertEqual(report.applied, (1,))
        self.assertEqual(report.failed.version, 2)
        self.assertIn("0002_fix.py", report.failed.path)
        self.assertIn("KeyError", report.failed.message)
        self.assertEqual(entity.version, 1)
        self.assertEqual(entity["log"], [1])
        self.assertEqual(entity.components, {})
        self.assertEqual(report.to_dict()["failed"]["version"], 2)

        self.write_fix(2)  # the repaired script ships; the next attempt continues
        fixer.load()
        self.assertEqual(fixer.apply_fixes(entity).applied, (2, 3))
        self.assertEqual(entity["log"], [1, 2, 3])

    def test_broken_or_duplicate_scripts_keep_the_old_set(self) -> None:
        self.write_fix(1)
        fixer = DataFixer(self.dir)
        self.write_fix(2)
        self.write_fix(2, name="0002_again.py")
        (self.dir / "0003_bad.py").write_text("def fix(entity:\n")
        with self.assertRaises(DataFixError) as caught:
            fixer.load()
        message = str(caught.exception)
        self.assertIn("TARGET_VERSION 2 also used by", message)
        self.assertIn("0003_bad.py: SyntaxError", message)
        self.assertEqual([f.version for f in fixer.fixes], [1])

    def test_scripts_must_declare_version_and_plain_fix(self) -> None:
        (self.dir / "a.py").write_text("def fix(entity): pass\n")
        self.assertRaises(DataFixError, DataFixer, self.dir)
        (self.dir / "a.py").write_text("TARGET_VERSION = 1\nasync def fix(entity): pass\n")
        self.assertRaises(DataFixError, DataFixer, self.dir)
        (self.dir / "a.py").write_text("TARGET_VERSION = 1\n")
        self.assertRaises(DataFixError, DataFixer, self.dir)
        (self.dir / "_helper.py").write_text("raise SystemExit\n")
        (self.dir / "a.py").write_text("TARGET_VERSION = 1\ndef fix(entity): pass\n")
        self.assertEqual(DataFixer(self.dir).latest_version, 1)

    def test_poller_picks_up_new_scripts(self) -> None:
        fixer = DataFixer(self.dir)
        self.assertEqual(fixer.latest_version, 0)
        clock = task.Clock()
        reports: list = []
        poller = datafix_poller(fixer, interval=5, clock=clock, on_results=reports.extend)
        poller.startService()
        self.addCleanup(poller.stopService)
        self.write_fix(1)
        clock.advance(5)
        clock.advance(5)
        self.assertEqual(len(reports), 1)
        self.assertEqual(fixer.latest_version, 1)


class GameSystemTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tables = ShareData(GAME_TABLES, VALIDATORS).snapshot
        self.registry = Registry()
        self.role = self.registry.import_system("rltwist.game.rolesystem", service="agent")
        self.building = self.registry.import_system("rltwist.game.buildingsystem")

    def test_shipped_tables_pass_their_validators(self) -> None:
        self.assertIn("name_rules", self.tables)
        self.assertIn("castle", self.tables["building_costs"])

    def test_rename_checks_the_name_rules(self) -> None:
        entity = Entity(1)
        cases = {
            "a": ErrCode.NAME_TOO_SHORT,
            "abcdefghijklmno": ErrCode.NAME_TOO_LONG,
            "张三李四王五赵六": ErrCode.NAME_TOO_LONG,  # 8 wide characters = 16
            "bad name": ErrCode.NAME_BAD_CHAR,
            "_lead": ErrCode.NAME_BAD_CHAR,
            "TheAdmin": ErrCode.NAME_FORBIDDEN,
            "我是官方": ErrCode.NAME_FORBIDDEN,
        }
        for name, code in cases.items():
            self.assertEqual(self.role.rename(entity, name, self.tables), code, name)
        self.assertNotIn("name", entity)
        self.assertEqual(self.role.rename(entity, "张三_01", self.tables), ErrCode.OK)
        self.assertEqual(entity["name"], "张三_01")
        self.assertEqual(self.role.rename(entity, "张三_01", self.tables),
                         ErrCode.NAME_UNCHANGED)
        full_width_abc = "\uff21\uff22c"
        self.assertEqual(self.role.name_key(full_width_abc), self.role.name_key("abC"))

    def test_add_resources_is_all_or_nothing(self) -> None:
        entity = Entity(1)
        self.assertEqual(self.role.add_resources(entity, {"gold": 5, "gems": 1}),
                         ErrCode.RES_UNKNOWN)
        self.assertEqual(self.role.add_resources(entity, {"gold": 5, "food": -1}),
                         ErrCode.RES_BAD_AMOUNT)
        self.assertEqual(self.role.add_resources(entity, {"gold": 5, "food": 1.5}),
                         ErrCode.RES_BAD_AMOUNT)
        self.assertEqual(self.role.resources(entity), {"gold": 0, "food": 0, "oil": 0})
        self.assertEqual(self.role.add_resources(entity, {"gold": 5, "oil": 2}), ErrCode.OK)
        self.assertEqual(self.role.resources(entity), {"gold": 5, "food": 0, "oil": 2})

    def test_building_upgrade_pays_from_the_cost_table(self) -> None:
        entity = Entity(1)
        self.assertEqual(self.building.upgrade(entity, "castle", self.tables), ErrCode.OK)
        self.assertEqual(self.building.level(entity, "castle"), 1)
        self.assertEqual(self.building.upgrade(entity, "castle", self.tables),
                         ErrCode.RES_NOT_ENOUGH)
        self.role.add_resources(entity, {"gold": 600, "food": 500})
        self.assertEqual(self.building.upgrade(entity, "castle", self.tables), ErrCode.OK)
        self.assertEqual(self.role.resources(entity), {"gold": 100, "food": 0, "oil": 0})
        self.assertEqual(entity.components["building"], {"castle": 2})
        self.assertEqual(self.building.upgrade(entity, "moat", self.tables),
                         ErrCode.BUILDING_UNKNOWN)
        self.role.add_resources(entity, {"gold": 10**6, "food": 10**6, "oil": 10**6})
        for _ in range(2):
            self.assertEqual(self.building.upgrade(entity, "castle", self.tables), ErrCode.OK)
        self.assertEqual(self.building.upgrade(entity, "castle", self.tables),
                         ErrCode.BUILDING_MAX_LEVEL)
