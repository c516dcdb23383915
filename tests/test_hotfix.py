"""Hot code reload: fix lists swap system code for every holder, once, all or nothing."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.ecs.hotfix import FixListError, HotFixer, hotfix_poller, parse_fix_list
from rltwist.ecs.registry import REGISTRY, Registry, import_system


def system_source(body: str, header: str = "") -> str:
    """Source of a system module whose class body is ``body``."""
    return (
        "from rltwist.ecs.system import System\n"
        + textwrap.dedent(header)
        + "\n\nclass S(System):\n"
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\n\nsystem = S()\n"
    )


GREET_V1 = system_source(
    """
    def greet(self, entity):
        return "v1 " + entity["name"]
    """
)
GREET_V2 = system_source(
    """
    def greet(self, entity):
        return "v2 " + entity["name"]
    """
)


class HotfixTestCase(unittest.TestCase):
    """Writes a throw-away package onto sys.path and a codefix dir for each test."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        self.pkg = "hfpkg_" + uuid.uuid4().hex[:12]
        self.pkg_dir = root / self.pkg
        self.pkg_dir.mkdir(parents=True)
        (self.pkg_dir / "__init__.py").write_text("")
        self.codefix = root / "codefix"
        self.codefix.mkdir()
        sys.path.insert(0, str(root))
        self.addCleanup(sys.path.remove, str(root))
        # Sources are rewritten within the same second; stale .pyc must not be used.
        self.patch(sys, "dont_write_bytecode", True)
        self.addCleanup(self._drop_modules)
        self.registry = Registry()
        self.hotfixer = HotFixer(self.codefix, self.registry, base_version="1.0")

    def _drop_modules(self) -> None:
        for name in [n for n in sys.modules if n == self.pkg or n.startswith(self.pkg + ".")]:
            del sys.modules[name]

    def mod(self, short: str) -> str:
        return f"{self.pkg}.{short}"

    def write_module(self, short: str, source: str) -> None:
        (self.pkg_dir / f"{short}.py").write_text(source)

    def write_list(self, fix_id: str, *modules: str, filename: str | None = None) -> Path:
        path = self.codefix / (filename or f"{fix_id}.toml")
        names = ", ".join(f'"{self.mod(m)}"' for m in modules)
        path.write_text(f'id = "{fix_id}"\nmodules = [{names}]\ndescription = "test"\n')
        return path


class HotSwapTests(HotfixTestCase):
    def test_callers_holding_old_references_run_new_code(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"), service="agent")
        entity = Entity(7, attrs={"name": "ann"})
        self.assertEqual(held.greet(entity), "v1 ann")

        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        [result] = self.hotfixer.apply_pending()

        self.assertTrue(result.applied, result)
        self.assertEqual(result.swapped, (self.mod("greeter"),))
        self.assertEqual(result.services, ("agent",))
        self.assertEqual(held.greet(entity), "v2 ann")
        self.assertIs(self.registry.import_system(self.mod("greeter")), held)
        self.assertIs(sys.modules[self.mod("greeter")], self.registry.module(self.mod("greeter")))

    def test_systems_importing_systems_at_module_level_see_new_code(self) -> None:
        # Game modules use the process-wide registry, so this test does too.
        hotfixer = HotFixer(self.codefix, REGISTRY, base_version="1.0")
        self.addCleanup(REGISTRY.forget, [self.mod("greeter"), self.mod("caller")])
        self.write_module("greeter", GREET_V1)
        self.write_module(
            "caller",
            system_source(
                """
                def hello(self, entity):
                    return greeter.greet(entity) + "!"
                """,
                header=f"""
                from rltwist.ecs import import_system
                greeter = import_system("{self.mod("greeter")}")
                """,
            ),
        )
        caller = import_system(self.mod("caller"), service="agent")
        entity = Entity(1, attrs={"name": "bo"})
        self.assertEqual(caller.hello(entity), "v1 bo!")
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        [result] = hotfixer.apply_pending()
        self.assertTrue(result.applied, result)
        self.assertEqual(caller.hello(entity), "v2 bo!")

    def test_entity_data_is_untouched_by_a_swap(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        entity = Entity(7, version=4, attrs={"name": "ann", "gold": 10})
        comp = entity.component("greeter")
        comp["visits"] = [1, 2]
        token, before = entity.snapshot()
        entity.saved(token)

        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        self.hotfixer.apply_pending()

        self.assertEqual(held.greet(entity), "v2 ann")
        self.assertEqual(entity.to_doc(), before)
        self.assertIs(entity.component("greeter"), comp)
        self.assertFalse(entity.dirty)

    def test_fix_list_applies_once_though_file_stays_and_poller_runs_again(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        clock = task.Clock()
        reported: list = []
        poller = hotfix_poller(self.hotfixer, interval=5, clock=clock,
                               on_results=reported.extend)
        poller.startService()
        self.addCleanup(poller.stopService)
        self.assertEqual([r.fix_id for r in reported], ["fix1"])
        module_after_fix = self.registry.module(self.mod("greeter"))

        # The file stays; a later edit of the source without a new list changes nothing.
        self.write_module("greeter", GREET_V1)
        clock.advance(5)
        clock.advance(5)
        self.assertEqual(len(reported), 1)
        self.assertIs(self.registry.module(self.mod("greeter")), module_after_fix)
        self.assertEqual(held.greet(Entity(1, attrs={"name": "x"})), "v2 x")
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix1")
        self.assertEqual(self.hotfixer.apply_pending(), [])

    def test_new_list_is_noticed_by_the_poller(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        clock = task.Clock()
        poller = hotfix_poller(self.hotfixer, interval=5, clock=clock)
        poller.startService()
        self.addCleanup(poller.stopService)
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        self.assertEqual(held.greet(Entity(1, attrs={"name": "x"})), "v1 x")
        clock.advance(5)
        self.assertEqual(held.greet(Entity(1, attrs={"name": "x"})), "v2 x")

    def test_lists_apply_in_file_name_order_and_versions_accumulate(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        self.write_module("greeter", GREET_V2)
        self.write_list("b", "greeter", filename="002-b.toml")
        self.write_list("a", "greeter", filename="001-a.json")
        (self.codefix / "001-a.json").write_text(
            json.dumps({"id": "a", "modules": [self.mod("greeter")]})
        )
        results = self.hotfixer.apply_pending()
        self.assertEqual([r.fix_id for r in results], ["a", "b"])
        self.assertEqual(self.hotfixer.code_version(), "1.0+a+b")
        self.assertEqual(held.greet(Entity(1, attrs={"name": "x"})), "v2 x")


class RejectionTests(HotfixTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.write_module("alpha", GREET_V1)
        self.write_module("beta", GREET_V1)
        self.alpha = self.registry.import_system(self.mod("alpha"))
        self.beta = self.registry.import_system(self.mod("beta"))
        self.entity = Entity(1, attrs={"name": "x"})
        self.old_alpha_module = sys.modules[self.mod("alpha")]

    def assertOldCodeServes(self) -> None:
        self.assertEqual(self.alpha.greet(self.entity), "v1 x")
        self.assertEqual(self.beta.greet(self.entity), "v1 x")
        self.assertIs(sys.modules[self.mod("alpha")], self.old_alpha_module)
        self.assertEqual(self.hotfixer.code_version(), "1.0")

    def test_syntax_error_in_one_of_two_modules_rejects_the_whole_list(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", "def broken(:\n")
        self.write_list("fix1", "alpha", "beta")
        [result] = self.hotfixer.apply_pending()

        self.assertFalse(result.applied)
        self.assertEqual([e.module for e in result.errors], [self.mod("beta")])
        self.assertIn("SyntaxError", result.errors[0].message)
        self.assertIn("beta.py", result.errors[0].message)
        self.assertOldCodeServes()
        self.assertEqual(result.to_dict()["errors"][0]["module"], self.mod("beta"))

    def test_error_while_running_a_module_rejects_the_whole_list(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", GREET_V2 + "\nraise RuntimeError('boom at import')\n")
        self.write_list("fix1", "alpha", "beta")
        [result] = self.hotfixer.apply_pending()
        self.assertFalse(result.applied)
        self.assertIn("boom at import", result.errors[0].message)
        self.assertOldCodeServes()

    def test_module_without_a_system_is_rejected(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", "x = 1\n")
        self.write_list("fix1", "alpha", "beta")
        [result] = self.hotfixer.apply_pending()
        self.assertFalse(result.applied)
        self.assertIn("must define 'system'", result.errors[0].message)
        self.assertOldCodeServes()

    def test_missing_module_is_rejected(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_list("fix1", "alpha", "nosuchmodule")
        [result] = self.hotfixer.apply_pending()
        self.assertFalse(result.applied)
        self.assertEqual(result.errors[0].module, self.mod("nosuchmodule"))
        self.assertOldCodeServes()

    def test_rejected_list_is_reported_once_and_retried_when_sources_change(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", "def broken(:\n")
        self.write_list("fix1", "alpha", "beta")
        self.assertEqual(len(self.hotfixer.apply_pending()), 1)
        self.assertEqual(self.hotfixer.apply_pending(), [])

        self.write_module("beta", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertTrue(result.applied)
        self.assertEqual(self.alpha.greet(self.entity), "v2 x")
        self.assertEqual(self.beta.greet(self.entity), "v2 x")

    def test_framework_modules_cannot_be_swapped(self) -> None:
        (self.codefix / "f.toml").write_text('id = "f"\nmodules = ["rltwist.ecs.system"]\n')
        [result] = self.hotfixer.apply_pending()
        self.assertFalse(result.applied)
        self.assertIn("framework", result.errors[0].message)

    def test_bad_list_file_is_reported_once(self) -> None:
        (self.codefix / "bad.toml").write_text('id = "x"\nmodule = ["a"]\n')
        [result] = self.hotfixer.apply_pending()
        self.assertFalse(result.applied)
        self.assertIn("unknown key(s) module", result.errors[0].message)
        self.assertEqual(self.hotfixer.apply_pending(), [])

    def test_duplicate_id_in_a_second_file_is_rejected(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_list("fix1", "alpha", filename="1.toml")
        self.write_list("fix1", "beta", filename="2.toml")
        first, second = self.hotfixer.apply_pending()
        self.assertTrue(first.applied)
        self.assertFalse(second.applied)
        self.assertIn("duplicate fix id", second.errors[0].message)
        self.assertEqual(self.beta.greet(self.entity), "v1 x")


class RollbackTests(HotfixTestCase):
    def test_rollback_restores_old_behaviour_and_does_not_reapply(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        old_module = sys.modules[self.mod("greeter")]
        entity = Entity(1, attrs={"name": "x"})
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        self.hotfixer.apply_pending()
        self.assertEqual(held.greet(entity), "v2 x")

        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(held.greet(entity), "v1 x")
        self.assertIs(sys.modules[self.mod("greeter")], old_module)
        self.assertEqual(self.hotfixer.code_version(), "1.0")
        self.assertEqual(self.hotfixer.apply_pending(), [])
        self.assertEqual(held.greet(entity), "v1 x")
        self.assertIsNone(self.hotfixer.rollback())

    def test_rollback_undoes_only_the_last_list(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        entity = Entity(1, attrs={"name": "x"})
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        self.hotfixer.apply_pending()
        self.write_module("greeter", GREET_V2.replace("v2", "v3"))
        self.write_list("fix2", "greeter")
        self.hotfixer.apply_pending()
        self.assertEqual(held.greet(entity), "v3 x")
        self.assertEqual(self.hotfixer.rollback(), "fix2")
        self.assertEqual(held.greet(entity), "v2 x")
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix1")


class InFlightTests(HotfixTestCase):
    def test_coroutine_started_on_old_code_finishes_while_new_calls_use_new_code(
        self,
    ) -> None:
        self.write_module(
            "worker",
            system_source(
                """
                async def work(self, entity, wait):
                    value = await wait
                    return helper(entity, value)
                """,
                header="""
                def helper(entity, value):
                    return ("old", entity["name"], value)
                """,
            ),
        )
        worker = self.registry.import_system(self.mod("worker"))
        entity = Entity(1, attrs={"name": "x"})
        wait: defer.Deferred[int] = defer.Deferred()
        in_flight = defer.ensureDeferred(worker.work(entity, wait))

        # The new helper takes other arguments: the old coroutine must keep calling the
        # helper of the module it started in.
        self.write_module(
            "worker",
            system_source(
                """
                async def work(self, entity, wait):
                    value = await wait
                    return helper(value)
                """,
                header="""
                def helper(value):
                    return ("new", value)
                """,
            ),
        )
        self.write_list("fix1", "worker")
        [result] = self.hotfixer.apply_pending()
        self.assertTrue(result.applied)

        new_wait: defer.Deferred[int] = defer.Deferred()
        new_call = defer.ensureDeferred(worker.work(entity, new_wait))
        wait.callback(1)
        new_wait.callback(2)
        self.assertEqual(self.successResultOf(in_flight), ("old", "x", 1))
        self.assertEqual(self.successResultOf(new_call), ("new", 2))


class HelperModuleTests(HotfixTestCase):
    def test_helper_module_in_the_list_is_swapped_before_the_systems_using_it(self) -> None:
        self.write_module("helper", "def tag():\n    return 'old'\n")
        self.write_module(
            "user",
            system_source(
                """
                def tag(self):
                    return helper.tag()
                """,
                header=f"from {self.pkg} import helper\n",
            ),
        )
        user = self.registry.import_system(self.mod("user"))
        self.assertEqual(user.tag(), "old")
        self.write_module("helper", "def tag():\n    return 'new'\n")
        # System listed first on purpose: the helper still has to go first.
        self.write_list("fix1", "user", "helper")
        [result] = self.hotfixer.apply_pending()
        self.assertTrue(result.applied, result)
        self.assertEqual(result.swapped, (self.mod("helper"), self.mod("user")))
        self.assertEqual(user.tag(), "new")
        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(user.tag(), "old")
        self.assertEqual(sys.modules[self.mod("helper")].tag(), "old")

    def test_module_not_loaded_here_is_only_compiled(self) -> None:
        self.write_module("later", GREET_V2)
        self.write_list("fix1", "later")
        [result] = self.hotfixer.apply_pending()
        self.assertTrue(result.applied)
        self.assertEqual(result.swapped, ())
        self.assertEqual(result.compiled_only, (self.mod("later"),))
        self.assertNotIn(self.mod("later"), sys.modules)
        later = self.registry.import_system(self.mod("later"))
        self.assertEqual(later.greet(Entity(1, attrs={"name": "x"})), "v2 x")

    def test_lists_present_at_start_are_adopted_without_running(self) -> None:
        self.write_list("fix0", "nosuchmodule")
        self.assertEqual(self.hotfixer.adopt_existing(), ("fix0",))
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix0")
        self.assertEqual(self.hotfixer.apply_pending(), [])
        self.assertIsNone(self.hotfixer.rollback())


class FixListParsingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def parse(self, name: str, text: str):
        path = self.dir / name
        path.write_text(text)
        return parse_fix_list(path)

    def test_toml_and_json_lists_parse_alike(self) -> None:
        toml = self.parse("a.toml", 'id = "a"\nmodules = ["m.x", "m.y"]\n')
        js = self.parse("a.json", '{"id": "a", "modules": ["m.x", "m.y"]}')
        self.assertEqual((toml.id, toml.modules), (js.id, js.modules))
        self.assertEqual(toml.description, "")

    def test_malformed_lists_are_refused(self) -> None:
        for text in [
            "modules = ['m']",
            "id = 'a'",
            "id = 'a'\nmodules = []",
            "id = 'a'\nmodules = ['m', 'm']",
            "id = 'a+b'\nmodules = ['m']",
            "id = 'a'\nmodules = 'm'",
            "id = [",
        ]:
            with self.assertRaises(FixListError, msg=text):
                self.parse("x.toml", text)


class GameModuleTests(unittest.TestCase):
    def test_real_game_systems_and_their_helpers_can_be_swapped_and_rolled_back(self) -> None:
        from rltwist.ecs.sharedata import ShareData
        from rltwist.game.tables import VALIDATORS

        tables = ShareData(Path(__file__).parent.parent / "etc" / "game", VALIDATORS).snapshot
        building = import_system("rltwist.game.buildingsystem", service="agent")
        role = import_system("rltwist.game.rolesystem", service="agent")
        old_role_module = REGISTRY.module("rltwist.game.rolesystem")
        codefix = Path(self.mktemp())
        codefix.mkdir()
        (codefix / "g.toml").write_text(
            'id = "g"\nmodules = ["rltwist.game.rolesystem", "rltwist.game.errcode"]\n'
        )
        hotfixer = HotFixer(codefix, REGISTRY)
        [result] = hotfixer.apply_pending()
        self.addCleanup(hotfixer.rollback)

        self.assertTrue(result.applied, result)
        self.assertEqual(result.swapped, ("rltwist.game.errcode", "rltwist.game.rolesystem"))
        self.assertIsNot(REGISTRY.module("rltwist.game.rolesystem"), old_role_module)
        # The building system still holds its module-level proxy and the old ErrCode class;
        # codes from the new role system must still compare equal.
        entity = Entity(1)
        self.assertEqual(role.add_resources(entity, {"gold": 10**4, "food": 10**4}), 0)
        self.assertEqual(building.upgrade(entity, "castle", tables), 0)
        self.assertEqual(building.upgrade(entity, "castle", tables), 0)
        self.assertEqual(building.level(entity, "castle"), 2)


class PackageTests(HotfixTestCase):
    def test_swapped_package_keeps_its_submodules(self) -> None:
        self.write_module("greeter", GREET_V1)
        greeter = self.registry.import_system(self.mod("greeter"))
        (self.pkg_dir / "__init__.py").write_text("VERSION = 2\n")
        (self.codefix / "fix1.toml").write_text(f'id = "fix1"\nmodules = ["{self.pkg}"]\n')
        [result] = self.hotfixer.apply_pending()
        self.assertTrue(result.applied, result)
        package = sys.modules[self.pkg]
        self.assertEqual(package.VERSION, 2)
        self.assertIs(package.greeter, self.registry.module(self.mod("greeter")))
        self.assertEqual(greeter.greet(Entity(1, attrs={"name": "x"})), "v1 x")
