"""Hot code reload: fix lists swap system code for every holder, once, all or nothing —
only game code, only complete packages, dependents included, results that say what changed,
rollbacks that survive a restart, and LRU actors that take the fix (issue 17)."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.ecs.hotfix import (
    FixListError,
    HotFixer,
    check_game_package,
    hotfix_poller,
    parse_fix_list,
    write_fix_list,
)
from rltwist.ecs.registry import REGISTRY, Registry, import_system
from rltwist.ecs.sources import GAME_CODE, sha256_hex
from rltwist.nodes.common.hotfix import game_packages_setting
from rltwist.nodes.common.lru import LRUGroup
from rltwist.storage import EmbeddedBackend


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
    """Writes a throw-away game package onto sys.path and a codefix dir for each test."""

    def setUp(self) -> None:
        self.root = root = Path(self.mktemp())
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
        self.hotfixer = self.make_hotfixer()

    def make_hotfixer(self, registry: Registry | None = None, **kw: Any) -> HotFixer:
        return HotFixer(self.codefix, self.registry if registry is None else registry,
                        base_version="1.0", game_packages=(self.pkg,), **kw)

    def _drop_modules(self) -> None:
        names = [n for n in sys.modules if n == self.pkg or n.startswith(self.pkg + ".")]
        for name in names:
            del sys.modules[name]
        GAME_CODE.forget(names)

    def mod(self, short: str) -> str:
        return f"{self.pkg}.{short}"

    def write_module(self, short: str, source: str) -> None:
        (self.pkg_dir / f"{short}.py").write_text(source)

    def write_list(self, fix_id: str, *modules: str, filename: str | None = None,
                   versions: dict[str, str] | None = None) -> Path:
        """A fix list with the checksums of the modules' files as they are now, or of
        *versions* (short name -> the source the list ships, written or not)."""
        sources = {self.mod(k): v.encode() for k, v in (versions or {}).items()}
        return write_fix_list(self.codefix, fix_id, [self.mod(m) for m in modules], "test",
                              sources=sources, filename=filename)


class HotSwapTests(HotfixTestCase):
    def test_callers_holding_old_references_run_new_code(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"), service="agent")
        entity = Entity(7, attrs={"name": "ann"})
        self.assertEqual(held.greet(entity), "v1 ann")

        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        [result] = self.hotfixer.apply_pending()

        self.assertEqual(result.state, "applied", result)
        self.assertEqual(result.swapped, (self.mod("greeter"),))
        self.assertEqual(result.changed, (self.mod("greeter"),))
        self.assertEqual(result.services, ("agent",))
        self.assertEqual(held.greet(entity), "v2 ann")
        self.assertIs(self.registry.import_system(self.mod("greeter")), held)
        self.assertIs(sys.modules[self.mod("greeter")], self.registry.module(self.mod("greeter")))

    def test_systems_importing_systems_at_module_level_see_new_code(self) -> None:
        # Game modules use the process-wide registry, so this test does too.
        hotfixer = self.make_hotfixer(REGISTRY)
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
        self.assertEqual(result.state, "applied", result)
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
        (self.codefix / "001-a.json").write_text(json.dumps({
            "id": "a", "modules": [self.mod("greeter")],
            "sha256": {self.mod("greeter"): sha256_hex(GREET_V2.encode())}}))
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

        self.assertEqual(result.state, "rejected")
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
        self.assertEqual(result.state, "rejected")
        self.assertIn("boom at import", result.errors[0].message)
        self.assertOldCodeServes()

    def test_module_without_a_system_is_rejected(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", "x = 1\n")
        self.write_list("fix1", "alpha", "beta")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "rejected")
        self.assertIn("must define 'system'", result.errors[0].message)
        self.assertOldCodeServes()

    def test_rejected_list_is_reported_once_and_retried_when_rewritten(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_module("beta", "def broken(:\n")
        self.write_list("fix1", "alpha", "beta")
        self.assertEqual(len(self.hotfixer.apply_pending()), 1)
        self.assertEqual(self.hotfixer.apply_pending(), [])

        # repaired sources need a list vouching for them (same id, new checksums)
        self.write_module("beta", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "pending")
        self.write_list("fix1", "alpha", "beta")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "applied")
        self.assertEqual(self.alpha.greet(self.entity), "v2 x")
        self.assertEqual(self.beta.greet(self.entity), "v2 x")

    def test_bad_list_file_is_reported_once(self) -> None:
        (self.codefix / "bad.toml").write_text('id = "x"\nmodule = ["a"]\n')
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "rejected")
        self.assertIn("unknown key(s) module", result.errors[0].message)
        self.assertEqual(self.hotfixer.apply_pending(), [])

    def test_duplicate_id_in_a_second_file_is_rejected(self) -> None:
        self.write_module("alpha", GREET_V2)
        self.write_list("fix1", "alpha", filename="1.toml")
        self.write_list("fix1", "beta", filename="2.toml")
        first, second = self.hotfixer.apply_pending()
        self.assertEqual(first.state, "applied")
        self.assertEqual(second.state, "rejected")
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
        self.assertEqual(result.state, "applied")

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
        self.assertEqual(result.state, "applied", result)
        self.assertEqual(result.swapped, (self.mod("helper"), self.mod("user")))
        self.assertEqual(user.tag(), "new")
        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(user.tag(), "old")
        self.assertEqual(sys.modules[self.mod("helper")].tag(), "old")

    def test_lists_present_at_start_are_adopted_without_running(self) -> None:
        self.write_module("never", "raise RuntimeError('adopting must not run modules')\n")
        self.write_list("fix0", "never")
        self.assertEqual(self.hotfixer.adopt_existing(), ("fix0",))
        self.assertNotIn(self.mod("never"), sys.modules)
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
        x, y = "a" * 64, "B" * 64
        toml = self.parse("a.toml", f'id = "a"\nmodules = ["m.x", "m.y"]\n'
                                    f'[sha256]\n"m.x" = "{x}"\n"m.y" = "{y}"\n')
        js = self.parse("a.json", json.dumps({"id": "a", "modules": ["m.x", "m.y"],
                                              "sha256": {"m.x": x, "m.y": y}}))
        self.assertEqual((toml.id, toml.modules, toml.sha256),
                         (js.id, js.modules, js.sha256))
        self.assertEqual(toml.sha256, {"m.x": x, "m.y": y.lower()})
        self.assertEqual(toml.description, "")

    def test_malformed_lists_are_refused(self) -> None:
        sha = "[sha256]\nm = '" + "0" * 64 + "'\n"
        for text in [
            "modules = ['m']\n" + sha,
            "id = 'a'\n" + sha,
            "id = 'a'\nmodules = []\n" + sha,
            "id = 'a'\nmodules = ['m', 'm']\n" + sha,
            "id = 'a+b'\nmodules = ['m']\n" + sha,
            "id = 'a/b'\nmodules = ['m']\n" + sha,
            "id = 'a'\nmodules = 'm'\n" + sha,
            "id = [",
            # item 4: the checksums are what makes a package complete; none, some or bad
            "id = 'a'\nmodules = ['m']\n",
            "id = 'a'\nmodules = ['m', 'n']\n" + sha,
            "id = 'a'\nmodules = ['m']\n[sha256]\nm = 'abc'\n",
            "id = 'a'\nmodules = ['m']\n" + sha + "n = '" + "0" * 64 + "'\n",
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
        write_fix_list(codefix, "g", ["rltwist.game.rolesystem", "rltwist.game.errcode"])
        hotfixer = HotFixer(codefix, REGISTRY)
        [result] = hotfixer.apply_pending()
        self.addCleanup(hotfixer.rollback)

        self.assertEqual(result.state, "applied", result)
        # errcode first (a helper), then the systems that import it by name: the listed
        # role system and, as a dependent, the building system
        self.assertEqual(result.swapped, ("rltwist.game.errcode", "rltwist.game.rolesystem",
                                          "rltwist.game.buildingsystem"))
        self.assertEqual(result.dependents, ("rltwist.game.buildingsystem",))
        self.assertIsNot(REGISTRY.module("rltwist.game.rolesystem"), old_role_module)
        # Codes from the new systems must compare equal to the old ErrCode's (framework
        # code that imported it keeps the old class).
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
        write_fix_list(self.codefix, "fix1", [self.pkg])
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "unchanged", result)  # the registry reaches no package
        package = sys.modules[self.pkg]
        self.assertEqual(package.VERSION, 2)
        self.assertIs(package.greeter, self.registry.module(self.mod("greeter")))
        self.assertEqual(greeter.greet(Entity(1, attrs={"name": "x"})), "v1 x")


# -- issue 17 -------------------------------------------------------------------------------


class ScopeTests(HotfixTestCase):
    """Item 1: a fix list may name only game code."""

    def test_stdlib_twisted_and_framework_modules_are_refused_naming_the_module(self) -> None:
        from twisted.internet import defer as defer_before

        deferred_class = defer_before.Deferred
        before = {n: sys.modules[n] for n in ("json", "twisted.internet.defer",
                                              "rltwist.nodes.common.lru",
                                              "rltwist.ecs.system")}
        for i, name in enumerate(before):
            write_fix_list(self.codefix, f"f{i}", [name])  # checksums of the real files
        results = self.hotfixer.apply_pending()

        self.assertEqual([r.state for r in results], ["rejected"] * 4)
        for result, name in zip(results, before, strict=True):
            [error] = result.errors
            self.assertEqual(error.module, name)
            self.assertIn(f"{name} is not game code", error.message)
            self.assertIn(self.pkg, error.message)  # says what may be named instead
        for name, module in before.items():
            self.assertIs(sys.modules[name], module, name)
        from twisted.internet import defer as defer_after

        self.assertIs(defer_after.Deferred, deferred_class)
        self.assertEqual(self.hotfixer.code_version(), "1.0")
        self.assertEqual(self.hotfixer.apply_pending(), [])  # reported once

    def test_a_list_with_one_module_out_of_scope_changes_nothing(self) -> None:
        self.write_module("greeter", GREET_V1)
        held = self.registry.import_system(self.mod("greeter"))
        json_module = sys.modules["json"]
        self.write_module("greeter", GREET_V2)
        write_fix_list(self.codefix, "fix1", [self.mod("greeter"), "json"])
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "rejected")
        self.assertEqual([e.module for e in result.errors], ["json"])
        self.assertEqual(held.greet(Entity(1, attrs={"name": "x"})), "v1 x")
        self.assertIs(sys.modules["json"], json_module)

    def test_only_game_packages_can_be_configured(self) -> None:
        for name in ("json", "json.decoder", "twisted", "twisted.internet.defer", "rltwist",
                     "rltwist.nodes", "rltwist.ecs", "__main__", "not a name", ""):
            self.assertRaises(ValueError, check_game_package, name)
        check_game_package("mygame")
        check_game_package("mygame.systems")
        self.assertEqual(game_packages_setting({"hotfix": {"game_packages": ["mygame"]}}),
                         ("mygame",))
        self.assertEqual(game_packages_setting({}), ())
        for bad in ({"game_packages": ["json"]}, {"game_packages": "mygame"},
                    {"game_pkgs": ["mygame"]}):
            with self.assertRaises(ValueError) as caught:
                game_packages_setting({"hotfix": bad}, "etc/cluster.toml")
            self.assertIn("etc/cluster.toml: hotfix.", str(caught.exception))


class TruthfulResultTests(HotfixTestCase):
    """Item 2: a list nothing here reaches through the registry is 'unchanged'."""

    def test_a_list_of_modules_nothing_here_imported_changes_nothing(self) -> None:
        self.write_module("later", GREET_V2)
        self.write_list("fix1", "later")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "unchanged")
        self.assertTrue(result.accepted)
        self.assertEqual((result.changed, result.swapped), ((), ()))
        self.assertEqual(result.not_loaded, (self.mod("later"),))
        self.assertNotIn(self.mod("later"), sys.modules)
        self.assertEqual([(s["fix_id"], s["state"], s["changed"])
                          for s in self.hotfixer.list_states()], [("fix1", "unchanged", [])])
        # accepted: a later import loads the fixed file, so the version says so
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix1")
        later = self.registry.import_system(self.mod("later"))
        self.assertEqual(later.greet(Entity(1, attrs={"name": "x"})), "v2 x")

    def test_a_module_imported_but_not_through_the_registry_changes_nothing(self) -> None:
        self.write_module("plain", GREET_V1)
        importlib.import_module(self.mod("plain"))
        self.write_module("plain", GREET_V2)
        self.write_list("fix1", "plain")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "unchanged")
        self.assertEqual((result.changed, result.swapped), ((), (self.mod("plain"),)))

    def test_an_applied_list_names_what_changed_and_what_is_not_loaded(self) -> None:
        self.write_module("greeter", GREET_V1)
        self.registry.import_system(self.mod("greeter"), service="agent")
        self.write_module("greeter", GREET_V2)
        self.write_module("later", GREET_V2)
        self.write_list("fix1", "greeter", "later")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual((result.state, result.changed, result.not_loaded, result.services),
                         ("applied", (self.mod("greeter"),), (self.mod("later"),), ("agent",)))
        self.assertEqual(result.to_dict()["changed"], [self.mod("greeter")])
        self.assertEqual(self.hotfixer.list_states()[-1]["changed"], [self.mod("greeter")])


USER = system_source(
    """
    def describe(self):
        return "u1:" + label()
    """,
    header="from {pkg}.helper import label\n",
)


class DependentTests(HotfixTestCase):
    """Item 3: modules that imported a fixed helper by name see the fixed helper."""

    def test_a_system_that_imported_a_helper_function_runs_the_fixed_one(self) -> None:
        self.write_module("helper", "def label():\n    return 'old'\n")
        self.write_module("user", USER.format(pkg=self.pkg))
        user = self.registry.import_system(self.mod("user"), service="agent")
        self.assertEqual(user.describe(), "u1:old")

        self.write_module("helper", "def label():\n    return 'new'\n")
        self.write_list("fix1", "helper")  # the system is not in the list
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "applied", result)
        self.assertEqual(result.dependents, (self.mod("user"),))
        self.assertEqual(result.swapped, (self.mod("helper"), self.mod("user")))
        self.assertEqual(result.changed, (self.mod("user"),))
        self.assertEqual(user.describe(), "u1:new")

        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(user.describe(), "u1:old")

    def test_dependents_are_found_through_helpers_and_relative_imports(self) -> None:
        self.write_module("base", "def label():\n    return 'old'\n")
        self.write_module("helper", "from .base import label as _base\n\n\n"
                                    "def label():\n    return '[' + _base() + ']'\n")
        self.write_module("user", USER.format(pkg=self.pkg))
        user = self.registry.import_system(self.mod("user"))
        self.assertEqual(user.describe(), "u1:[old]")
        self.write_module("base", "def label():\n    return 'new'\n")
        self.write_list("fix1", "base")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.swapped, (self.mod("base"), self.mod("helper"),
                                          self.mod("user")))
        self.assertEqual(user.describe(), "u1:[new]")

    def test_a_dependent_is_re_run_from_the_source_it_runs_not_a_newer_file(self) -> None:
        self.write_module("helper", "def label():\n    return 'old'\n")
        self.write_module("user", USER.format(pkg=self.pkg))
        user = self.registry.import_system(self.mod("user"))
        # a file changed on disk but shipped in no list must not go live with the helper
        self.write_module("user", USER.format(pkg=self.pkg).replace("u1:", "u2:"))
        self.write_module("helper", "def label():\n    return 'new'\n")
        self.write_list("fix1", "helper")
        self.hotfixer.apply_pending()
        self.assertEqual(user.describe(), "u1:new")


class CompletePackageTests(HotfixTestCase):
    """Item 4: a list applies only when every file it names holds the listed bytes."""

    def setUp(self) -> None:
        super().setUp()
        self.write_module("greeter", GREET_V1)
        self.greeter = self.registry.import_system(self.mod("greeter"))
        self.entity = Entity(1, attrs={"name": "x"})

    def greets(self) -> str:
        return str(self.greeter.greet(self.entity))

    def test_a_half_unpacked_package_waits_and_is_applied_once_complete(self) -> None:
        self.write_list("fix1", "greeter", versions={"greeter": GREET_V2})
        [result] = self.hotfixer.apply_pending()  # the list came first, no module yet
        self.assertEqual(result.state, "pending")
        self.assertEqual([w.module for w in result.waiting], [self.mod("greeter")])
        self.assertEqual(self.greets(), "v1 x")
        self.assertEqual(self.hotfixer.apply_pending(), [])  # same wait: reported once

        self.write_module("greeter", GREET_V2[: len(GREET_V2) // 2])  # being written
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "pending")
        self.assertEqual(self.greets(), "v1 x")
        self.assertEqual([p["fix_id"] for p in self.hotfixer.pending()], ["fix1"])
        self.assertEqual((self.hotfixer.code_version(), self.hotfixer.list_states()),
                         ("1.0", []))

        self.write_module("greeter", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "applied")
        self.assertEqual(self.greets(), "v2 x")
        self.assertEqual(self.hotfixer.pending(), [])
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix1")

    def test_a_module_file_not_there_yet_keeps_the_list_pending(self) -> None:
        self.write_list("fix1", "greeter", "newmod",
                        versions={"greeter": GREET_V2, "newmod": GREET_V2})
        self.write_module("greeter", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "pending")
        self.assertEqual([w.module for w in result.waiting], [self.mod("newmod")])
        self.assertIn("not found", result.waiting[0].message)
        self.assertEqual(self.greets(), "v1 x")
        self.write_module("newmod", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "applied")
        self.assertEqual(self.greets(), "v2 x")

    def test_lists_after_a_pending_one_wait_for_it(self) -> None:
        self.write_module("other", GREET_V1)
        other = self.registry.import_system(self.mod("other"))
        self.write_list("a", "greeter", filename="001-a.toml", versions={"greeter": GREET_V2})
        self.write_module("other", GREET_V2)
        self.write_list("b", "other", filename="002-b.toml")
        first, second = self.hotfixer.apply_pending()
        self.assertEqual((first.state, second.state), ("pending", "pending"))
        self.assertIn("001-a.toml", second.waiting[0].message)
        self.assertEqual(other.greet(self.entity), "v1 x")
        self.write_module("greeter", GREET_V2)
        self.assertEqual([(r.fix_id, r.state) for r in self.hotfixer.apply_pending()],
                         [("a", "applied"), ("b", "applied")])
        self.assertEqual((self.greets(), other.greet(self.entity)), ("v2 x", "v2 x"))

    def test_two_packages_unpacked_before_one_pass_both_apply(self) -> None:
        v3 = GREET_V2.replace("v2", "v3")
        self.write_list("a", "greeter", filename="001-a.toml", versions={"greeter": GREET_V2})
        self.write_list("b", "greeter", filename="002-b.toml", versions={"greeter": v3})
        self.write_module("greeter", v3)  # the second package overwrote the first's file
        self.assertEqual([(r.fix_id, r.state) for r in self.hotfixer.apply_pending()],
                         [("a", "applied"), ("b", "applied")])
        self.assertEqual(self.greets(), "v3 x")
        self.assertEqual(self.hotfixer.code_version(), "1.0+a+b")

    def test_the_poller_picks_the_list_up_once_the_package_is_complete(self) -> None:
        clock = task.Clock()
        reported: list[Any] = []
        poller = hotfix_poller(self.hotfixer, interval=5, clock=clock,
                               on_results=reported.extend)
        poller.startService()
        self.addCleanup(poller.stopService)
        self.write_list("fix1", "greeter", versions={"greeter": GREET_V2})
        clock.advance(5)
        clock.advance(5)
        self.assertEqual([r.state for r in reported], ["pending"])
        self.write_module("greeter", GREET_V2)
        clock.advance(5)
        self.assertEqual([r.state for r in reported], ["pending", "applied"])
        self.assertEqual(self.greets(), "v2 x")

    def test_an_incomplete_list_is_not_adopted_at_start(self) -> None:
        self.write_list("fix1", "greeter", versions={"greeter": GREET_V2})
        self.assertEqual(self.hotfixer.adopt_existing(), ())
        self.assertEqual(self.hotfixer.code_version(), "1.0")
        self.write_module("greeter", GREET_V2)
        [result] = self.hotfixer.apply_pending()
        self.assertEqual((result.state, self.greets()), ("applied", "v2 x"))


class PersistentRollbackTests(HotfixTestCase):
    """Item 5: a rolled-back list stays rolled back in a process started later."""

    def setUp(self) -> None:
        super().setUp()
        self.state = self.root / "rolledback"
        self.hotfixer = self.make_hotfixer(state_dir=self.state, node_name="map1")
        self.write_module("greeter", GREET_V1)
        self.greeter = self.registry.import_system(self.mod("greeter"))
        self.entity = Entity(1, attrs={"name": "x"})
        self.write_module("greeter", GREET_V2)
        self.write_list("fix1", "greeter")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "applied")

    def restart(self, load_first: bool = False) -> tuple[HotFixer, Registry]:
        """A fresh process: nothing loaded; the old code never was in it.  *load_first*:
        the module is imported before the hotfixer starts (like errcode on a node)."""
        self._drop_modules()
        registry = Registry()
        if load_first:
            registry.import_system(self.mod("greeter"))
        hotfixer = self.make_hotfixer(registry, state_dir=self.state, node_name="map1")
        hotfixer.adopt_existing()
        return hotfixer, registry

    def test_a_restarted_process_does_not_load_the_rolled_back_code(self) -> None:
        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(self.greeter.greet(self.entity), "v1 x")
        self.assertTrue((self.state / "fix1" / "map1.json").is_file())
        self.assertEqual(self.hotfixer.rolled_back()[0].to_dict()["restored"],
                         [self.mod("greeter")])

        hotfixer, registry = self.restart()
        self.assertEqual(hotfixer.code_version(), "1.0")
        self.assertEqual(hotfixer.rolled_back_ids(), ("fix1",))
        self.assertEqual([(s["fix_id"], s["state"]) for s in hotfixer.list_states()],
                         [("fix1", "rolled_back")])
        greeter = registry.import_system(self.mod("greeter"))
        self.assertEqual(greeter.greet(self.entity), "v1 x")
        self.assertEqual(hotfixer.apply_pending(), [])
        self.assertEqual(greeter.greet(self.entity), "v1 x")

        # a newer fix of the module wins, now and after the next restart
        self.write_module("greeter", GREET_V2.replace("v2", "v3"))
        self.write_list("fix2", "greeter")
        [result] = hotfixer.apply_pending()
        self.assertEqual(result.state, "applied")
        self.assertEqual(greeter.greet(self.entity), "v3 x")
        hotfixer, registry = self.restart()
        self.assertEqual(hotfixer.code_version(), "1.0+fix2")
        self.assertEqual(registry.import_system(self.mod("greeter")).greet(self.entity),
                         "v3 x")

    def test_a_module_loaded_before_the_hotfixer_starts_is_brought_back(self) -> None:
        self.hotfixer.rollback()
        _, registry = self.restart(load_first=True)
        self.assertEqual(registry.import_system(self.mod("greeter")).greet(self.entity),
                         "v1 x")

    def test_a_rollback_that_cannot_be_recorded_rolls_nothing_back(self) -> None:
        self.state.write_text("not a directory")
        self.assertRaises(OSError, self.hotfixer.rollback)
        self.assertEqual(self.greeter.greet(self.entity), "v2 x")
        self.assertEqual(self.hotfixer.code_version(), "1.0+fix1")
        self.assertEqual(self.hotfixer.rolled_back_ids(), ())


ACTOR = """
from rltwist.nodes.common.lru import Actor, action


class Greeter(Actor):
    kind = "greeter"
    collection = "greeters"

    def __init__(self, prefix):
        self.prefix = prefix
        self.gate = None

    @action
    def hello(self, entity, who):
        entity.incr("calls", 1)
        return f"{self.prefix} VERSION {who} #{entity['calls']}"

    @action
    async def wait(self, entity):
        await self.gate
        return "waited"
"""


class ActorTests(HotfixTestCase):
    """Item 6: a fix of the module holding an LRU actor changes what a running group does."""

    def setUp(self) -> None:
        super().setUp()
        backend = EmbeddedBackend(str(self.root / "actors.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))
        self.write_module("actor", ACTOR.replace("VERSION", "v1"))
        module = importlib.import_module(self.mod("actor"))
        self.actor = module.Greeter("hi")
        self.group = LRUGroup(self.actor, backend, router="greeterrouter", worker="greeter",
                              workers=1, capacity=10, clock=task.Clock(),
                              registry=CollectorRegistry(), generation=0,
                              code_registry=self.registry)

    def fix(self, fix_id: str, version: str) -> Any:
        self.write_module("actor", ACTOR.replace("VERSION", version))
        self.write_list(fix_id, "actor")
        [result] = self.hotfixer.apply_pending()
        return result

    async def test_a_fixed_actor_module_changes_the_running_group(self) -> None:
        self.assertEqual(await self.group.call(1, "hello", "ann"), "hi v1 ann #1")
        result = self.fix("fix1", "v2")
        self.assertEqual((result.state, result.changed), ("applied", (self.mod("actor"),)))
        self.assertEqual(result.services, ("greeterrouter",))
        # the entity and the actor's own state carry over; the method is the new one
        self.assertEqual(await self.group.call(1, "hello", "ann"), "hi v2 ann #2")
        self.assertEqual(self.hotfixer.rollback(), "fix1")
        self.assertEqual(await self.group.call(1, "hello", "ann"), "hi v1 ann #3")

    async def test_a_message_queued_before_the_fix_runs_the_new_code(self) -> None:
        self.actor.gate = defer.Deferred()
        blocked = defer.ensureDeferred(self.group.call(1, "wait"))
        queued = defer.ensureDeferred(self.group.call(1, "hello", "bo"))
        self.assertNoResult(queued)
        self.fix("fix1", "v2")
        self.actor.gate.callback(None)
        self.assertEqual(await blocked, "waited")
        self.assertEqual(await queued, "hi v2 bo #1")

    async def test_a_fix_that_drops_the_actor_class_is_rejected(self) -> None:
        self.write_module("actor", ACTOR.replace("class Greeter", "class Renamed"))
        self.write_list("fix1", "actor")
        [result] = self.hotfixer.apply_pending()
        self.assertEqual(result.state, "rejected")
        self.assertIn("must still define Greeter", result.errors[0].message)
        self.assertEqual(await self.group.call(1, "hello", "ann"), "hi v1 ann #1")
