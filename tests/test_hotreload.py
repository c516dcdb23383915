"""Hot reload across real twistd node processes, driven through master's GM API: code fix
lists, rollback, config table reload and online data fixes (seed §12-14); what each node
reports it changed, rollbacks surviving a restart, and a fix of the real guild actor
(issue 17).

Each test writes its own game package (on the children's PYTHONPATH, configured as a game
package with ``[hotfix] game_packages``) and its own root with ``etc/game`` and ``hotfix/``
under the test's run directory, so the repository's hotfix/ is never touched; the guild
actor test fixes a copy of the ``rltwist`` package its nodes import instead of the
checkout's.  The test process is cluster node ``login1`` (never started as a process) and
keeps calls flowing to every node while the GM swaps code or tables.
"""

from __future__ import annotations

import os
import shutil
import textwrap
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from rltwist import __version__
from rltwist.cluster import Cluster
from rltwist.config import load_config
from rltwist.ecs.hotfix import write_fix_list
from rltwist.launcher import LocalCluster
from tests.util import sleep, wait_for

REPO = Path(__file__).resolve().parents[1]
NODES = ["master", "logiccenter", "map1", "guild1"]
DRIVER = "login1"  # in the config, played by the test process


def each(value: Any) -> dict[str, Any]:
    """*value* for every node (what an answer from the whole cluster should be)."""
    return {n: value for n in NODES}


def system_module(body: str, header: str = "") -> str:
    """Source of a system module whose class body is *body*."""
    return ("from rltwist.ecs.system import System\n" + textwrap.dedent(header)
            + "\n\nclass S(System):\n" + textwrap.indent(textwrap.dedent(body), "    ")
            + "\n\nsystem = S()\n")


def greeter(version: str) -> str:
    return system_module(f"""
        def greet(self, who):
            return "{version} " + who

        def version(self):
            return "{version}"
        """)


TABLECHECK = system_module("""
    def limits(self):
        # one snapshot per request: both values come from the same load
        tables = sharedata().snapshot
        return [tables["name_rules"]["max_length"],
                tables["building_costs"]["castle"][0]["seconds"]]
    """, header="from rltwist.nodes.common.sharedatad import sharedata\n")

# Test fixture only: real systems keep no state; these entities stand for a service's
# online players.
PEOPLE = system_module("""
    def spawn(self, kind, ids):
        if kind not in ONLINE:
            ONLINE[kind] = []
            register_online_entities(kind, lambda: list(ONLINE[kind]))
        ONLINE[kind].extend(Entity(i, 0, {"gold": 0}) for i in ids)
        return len(ONLINE[kind])

    def docs(self, kind):
        return [e.to_doc() for e in ONLINE.get(kind, [])]
    """, header="""
    from rltwist.ecs.entity import Entity
    from rltwist.nodes.common.hotfix import register_online_entities

    ONLINE = {}
    """)


class Load:
    """Calls ``hotfix.call_system(module, method)`` on every node, *per_node* at a time,
    until stopped; keeps every answer per node in arrival order and every failure."""

    def __init__(self, me: Cluster, nodes: list[str], module: str, method: str,
                 per_node: int = 4) -> None:
        self.me, self.module, self.method = me, module, method
        self.answers: dict[str, list[Any]] = {n: [] for n in nodes}
        self.failures: list[str] = []
        self.running = True
        self.loops = [defer.Deferred.fromCoroutine(self._loop(n))
                      for n in nodes for _ in range(per_node)]

    async def _loop(self, node: str) -> None:
        while self.running:
            try:
                answer = await self.me.call(node, "hotfix", "call_system", self.module,
                                            self.method, [], timeout=5)
            except Exception as e:
                self.failures.append(f"{node}: {e!r}")
                await sleep(0.01)
                continue
            self.answers[node].append(answer)

    async def stop(self) -> None:
        self.running = False
        await defer.gatherResults(self.loops)

    @property
    def total(self) -> int:
        return sum(map(len, self.answers.values()))


class HotReloadCase(unittest.TestCase):
    timeout = 180
    node_names = NODES

    async def start(self, modules: dict[str, str], code: Path | None = None,
                    **hotreload: Any) -> None:
        """Start the cluster with game package *modules*; *code*: a directory the nodes
        import first (a copy of ``rltwist``)."""
        base = Path(self.mktemp()).absolute()
        self.base = base
        self.pkg = "hrgame_" + uuid.uuid4().hex[:10]
        pkg_dir = base / "pylib" / self.pkg
        pkg_dir.mkdir(parents=True)
        (pkg_dir / "__init__.py").write_text("")
        self.pkg_dir = pkg_dir
        for short, source in modules.items():
            self.write_module(short, source)
        self.root = base / "root"
        shutil.copytree(REPO / "etc" / "game", self.root / "etc" / "game")
        self.codefix = self.root / "hotfix" / "codefix"
        self.codefix.mkdir(parents=True)
        self.datafix = self.root / "hotfix" / "datafix"
        self.datafix.mkdir(parents=True)
        settings = {"root": str(self.root), "hotfix_interval": 0.2, "config_interval": 0}
        settings.update(hotreload)
        self.lc = LocalCluster(base / "nodes", [*self.node_names, DRIVER],
                               overrides={"hotreload": settings,
                                          "hotfix": {"game_packages": [self.pkg]}})
        self.addCleanup(self.lc.stop_all)
        python_path = os.pathsep.join(
            p for p in (str(code) if code else "", str(base / "pylib"),
                        os.environ.get("PYTHONPATH", "")) if p)
        for name in self.node_names:
            # sources are rewritten within one second: never trust a .pyc
            self.lc.process(name).env.update(PYTHONPATH=python_path,
                                             PYTHONDONTWRITEBYTECODE="1")
        await self.lc.start(*self.node_names)
        await self.lc.wait_up(self.node_names)
        config = load_config(self.lc.config_path)
        me = config.node(DRIVER)
        self.me = Cluster(DRIVER, config.cluster,
                          {n.name: (n.host, n.port) for n in config.nodes.values()},
                          listen=(me.host, me.port))
        self.me.startService()
        self.addCleanup(self.me.stopService)

    def load(self, short: str, method: str) -> Load:
        load = Load(self.me, self.node_names, self.mod(short), method)
        self.addCleanup(load.stop)  # before the driver stops, even if the test failed
        return load

    def mod(self, short: str) -> str:
        return f"{self.pkg}.{short}"

    def write_module(self, short: str, source: str) -> None:
        (self.pkg_dir / f"{short}.py").write_text(source)

    def write_list(self, fix_id: str, *modules: str,
                   versions: dict[str, str] | None = None) -> None:
        """A fix list with the checksums of the modules' files as they are now, or of
        *versions* (short name -> the source the list ships, written or not)."""
        versions = versions or {}
        sources = {self.mod(m): (versions[m].encode() if m in versions
                                 else (self.pkg_dir / f"{m}.py").read_bytes())
                   for m in modules}
        write_fix_list(self.codefix, fix_id, list(sources), "test", sources=sources)

    async def system(self, node: str, short: str, method: str, *args: Any) -> Any:
        return await self.me.call(node, "hotfix", "call_system", self.mod(short), method,
                                  list(args), timeout=10)

    async def on_every_node(self, short: str, method: str, *args: Any) -> dict[str, Any]:
        return {n: await self.system(n, short, method, *args) for n in NODES}

    async def gm(self, method: str, path: str, body: Any = None,
                 expect: int = 200) -> dict[str, Any]:
        status, answer = await self.lc.gm(method, path, body, timeout=30)
        self.assertEqual(status, expect, f"{method} {path}: {answer}")
        return answer

    async def nodes(self) -> dict[str, dict[str, Any]]:
        listing = await self.gm("GET", "/nodes")
        return {n["name"]: n for n in listing["nodes"]}

    def applied_in_log(self, node: str, fix_id: str) -> int:
        return self.lc.nodes[node].log_path.read_text().count(f"hotfix {fix_id} applied")


class CodeFixes(HotReloadCase):
    async def test_gm_hotfix_changes_every_node_under_load_once_per_node(self) -> None:
        await self.start({"greeter": greeter("v1")})
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v1 ann"))
        load = self.load("greeter", "version")
        await sleep(0.3)

        fix_id = "20250301-01-greet-v2"
        self.write_module("greeter", greeter("v2"))
        self.write_list(fix_id, "greeter")
        answer = await self.gm("POST", "/hotfix")
        # the GM answer comes after every node swapped: the next call anywhere is new code
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v2 ann"))
        version = f"{__version__}+{fix_id}"
        self.assertEqual(answer["code_versions"], {version: sorted(NODES)})
        self.assertEqual((answer["ok"], answer["failed"]), (True, []))
        self.assertEqual({n: e["live"] for n, e in answer["nodes"].items()}, each([fix_id]))

        await sleep(1.0)  # the poller passes over the list several times more
        await load.stop()
        self.assertEqual(load.failures, [])
        for node, answers in load.answers.items():
            switch = answers.index("v2")
            self.assertGreater(switch, 0, f"{node} served no v1 before the fix")
            self.assertEqual(set(answers[:switch]), {"v1"}, node)
            self.assertEqual(set(answers[switch:]), {"v2"}, node)

        again = await self.gm("POST", "/hotfix")
        self.assertEqual({n: e["applied"] for n, e in again["nodes"].items()},
                         each([]))
        self.assertEqual({n: self.applied_in_log(n, fix_id) for n in NODES},
                         each(1))
        listing = await self.nodes()
        self.assertEqual({n: (listing[n]["code_version"], listing[n]["hotfix_errors"])
                          for n in NODES}, each((version, [])))

    async def test_broken_list_is_rejected_everywhere_and_old_code_keeps_serving(self) -> None:
        await self.start({"greeter": greeter("v1")})
        await self.on_every_node("greeter", "greet", "ann")
        load = self.load("greeter", "version")

        self.write_module("greeter", greeter("v2") + "\ndef broken(:\n")
        self.write_list("20250302-01-greet", "greeter")
        answer = await self.gm("POST", "/hotfix", expect=502)
        self.assertEqual((answer["ok"], answer["failed"]), (False, sorted(NODES)))
        for node, entry in answer["nodes"].items():
            # this pass's rejection, or the poller's just before: both are listed here
            [rejected] = entry["errors"]
            [error] = rejected["errors"]
            self.assertEqual(error["module"], self.mod("greeter"), node)
            self.assertIn("SyntaxError", error["message"], node)
            self.assertEqual(entry["code_version"], __version__, node)
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v1 ann"))
        listing = await self.nodes()
        for node in NODES:
            [shown] = listing[node]["hotfix_errors"]
            self.assertEqual((shown["list"], shown["fix_id"], shown["errors"][0]["module"]),
                             ("20250302-01-greet.toml", "20250302-01-greet",
                              self.mod("greeter")), node)
            self.assertIn("SyntaxError", shown["errors"][0]["message"])
            self.assertEqual(listing[node]["code_version"], __version__)

        # the repaired sources (with the list rewritten to vouch for them) make the same
        # list apply, and the error goes away
        self.write_module("greeter", greeter("v2"))
        self.write_list("20250302-01-greet", "greeter")
        answer = await self.gm("POST", "/hotfix")
        self.assertEqual(answer["code_versions"],
                         {f"{__version__}+20250302-01-greet": sorted(NODES)})
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v2 ann"))
        listing = await self.nodes()
        self.assertEqual({n: listing[n]["hotfix_errors"] for n in NODES},
                         each([]))
        await load.stop()
        self.assertEqual(load.failures, [])
        self.assertGreater(load.total, 100)

    async def test_rollback_restores_the_old_code_on_every_node(self) -> None:
        await self.start({"greeter": greeter("v1")})
        await self.on_every_node("greeter", "greet", "ann")
        load = self.load("greeter", "version")
        fix_id = "20250303-01-greet-v2"
        self.write_module("greeter", greeter("v2"))
        self.write_list(fix_id, "greeter")
        await self.gm("POST", "/hotfix")
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v2 ann"))

        answer = await self.gm("POST", "/hotfix/rollback")
        self.assertEqual(answer["fix_id"], fix_id)
        self.assertEqual({n: e["rolled_back"] for n, e in answer["nodes"].items()},
                         each(fix_id))
        self.assertEqual(answer["code_versions"], {__version__: sorted(NODES)})
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v1 ann"))

        await sleep(0.6)  # the list file stays; the pollers must not apply it again
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"),
                         each("v1 ann"))
        listing = await self.nodes()
        self.assertEqual({n: listing[n]["code_version"] for n in NODES},
                         each(__version__))
        answer = await self.gm("POST", "/hotfix/rollback", expect=409)
        self.assertEqual(answer["error"], "nothing_to_roll_back")

        # re-fixing takes a new list; the pollers find it without a GM call and each node
        # reports to master at once
        self.write_module("greeter", greeter("v3"))
        self.write_list("20250303-02-greet-v3", "greeter")
        version = f"{__version__}+20250303-02-greet-v3"
        await wait_for(lambda: self._versions_are(version), 5,
                       "GET /nodes to show every node on the v3 list")
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"), each("v3 ann"))
        await load.stop()
        self.assertEqual(load.failures, [])
        self.assertEqual({a for answers in load.answers.values() for a in answers},
                         {"v1", "v2", "v3"})

    async def _versions_are(self, version: str) -> bool:
        listing = await self.nodes()
        return all(listing[n]["code_version"] == version for n in NODES)


class TruthfulReports(HotReloadCase):
    """Issue 17 items 1, 2 and 4 as the operator sees them: the GM answer and GET /nodes say
    per node which modules changed, which lists wait for their files, and which were
    refused.  No poller (interval 0): every pass is the GM's, so each answer is complete."""

    async def test_each_node_says_what_changed_what_waits_and_what_was_refused(self) -> None:
        await self.start({"greeter": greeter("v1")}, hotfix_interval=0)
        # only map1 reaches the greeter through its registry
        self.assertEqual(await self.system("map1", "greeter", "greet", "ann"), "v1 ann")
        module = self.mod("greeter")
        fix1 = "20250304-01-greet-v2"
        self.write_module("greeter", greeter("v2"))
        self.write_list(fix1, "greeter")
        answer = await self.gm("POST", "/hotfix")
        self.assertEqual({n: e["changes"] for n, e in answer["nodes"].items()},
                         {**each({fix1: []}), "map1": {fix1: [module]}})
        self.assertEqual({n: ([r["fix_id"] for r in e["applied"]],
                              [r["fix_id"] for r in e["unchanged"]])
                          for n, e in answer["nodes"].items()},
                         {**each(([], [fix1])), "map1": ([fix1], [])})
        listing = await self.nodes()
        self.assertEqual({n: [(e["fix_id"], e["state"], e["changed"])
                              for e in listing[n]["status"]["hotfix_lists"]] for n in NODES},
                         {**each([(fix1, "unchanged", [])]),
                          "map1": [(fix1, "applied", [module])]})
        self.assertEqual(await self.system("map1", "greeter", "greet", "ann"), "v2 ann")

        # a package being unpacked: the list is there, its module not yet
        fix2 = "20250304-02-greet-v3"
        self.write_list(fix2, "greeter", versions={"greeter": greeter("v3")})
        answer = await self.gm("POST", "/hotfix")
        for node, entry in answer["nodes"].items():
            [pending] = entry["pending"]
            self.assertEqual((pending["fix_id"], [w["module"] for w in pending["waiting"]]),
                             (fix2, [module]), node)
            self.assertEqual(entry["code_version"], f"{__version__}+{fix1}", node)
        listing = await self.nodes()
        self.assertEqual({n: [p["fix_id"] for p in listing[n]["status"]["hotfix_pending"]]
                          for n in NODES}, each([fix2]))
        self.assertEqual(await self.system("map1", "greeter", "greet", "ann"), "v2 ann")
        self.write_module("greeter", greeter("v3"))
        answer = await self.gm("POST", "/hotfix")
        self.assertEqual({n: (e["changes"], e["pending"]) for n, e in answer["nodes"].items()},
                         {**each(({fix2: []}, [])), "map1": ({fix2: [module]}, [])})
        self.assertEqual(await self.system("map1", "greeter", "greet", "ann"), "v3 ann")

        # out of scope: refused everywhere, naming the module
        write_fix_list(self.codefix, "20250304-03-json", ["json"])
        answer = await self.gm("POST", "/hotfix", expect=502)
        self.assertEqual(answer["failed"], sorted(NODES))
        for node, entry in answer["nodes"].items():
            [rejected] = entry["errors"]
            [error] = rejected["errors"]
            self.assertEqual(error["module"], "json", node)
            self.assertIn("json is not game code", error["message"], node)


class RollbackAcrossRestart(HotReloadCase):
    """Issue 17 item 5: a node restarted after a rollback runs the old code."""

    async def test_a_rolled_back_list_stays_rolled_back_when_a_node_restarts(self) -> None:
        await self.start({"greeter": greeter("v1")}, hotfix_interval=0)
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"), each("v1 ann"))
        fix_id = "20250305-01-greet-v2"
        self.write_module("greeter", greeter("v2"))
        self.write_list(fix_id, "greeter")
        await self.gm("POST", "/hotfix")
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"), each("v2 ann"))
        answer = await self.gm("POST", "/hotfix/rollback")
        self.assertEqual({n: (e["rolled_back"], e["record"]["restored"])
                          for n, e in answer["nodes"].items()},
                         each((fix_id, [self.mod("greeter")])))

        # the list file and the v2 source stay where they are
        old_pid = self.lc.process("map1").pid
        await self.lc.process("map1").stop()
        await self.lc.start("map1")
        new_pid = self.lc.process("map1").pid
        self.assertNotEqual(new_pid, old_pid)
        await wait_for(lambda: self._listed_with_pid("map1", new_pid), 30,
                       "master to list the restarted map1 up with its new pid")
        self.assertEqual(await self.system("map1", "greeter", "greet", "ann"), "v1 ann")
        listing = await self.nodes()
        status = listing["map1"]["status"]
        self.assertEqual(listing["map1"]["code_version"], __version__)
        self.assertEqual([(r["fix_id"], r["restored"]) for r in status["hotfix_rolled_back"]],
                         [(fix_id, [self.mod("greeter")])])
        self.assertEqual([(e["fix_id"], e["state"]) for e in status["hotfix_lists"]],
                         [(fix_id, "rolled_back")])
        answer = await self.gm("POST", "/hotfix")  # a pass over the directory: nothing new
        self.assertEqual((answer["nodes"]["map1"]["changes"], answer["code_versions"]),
                         ({}, {__version__: sorted(NODES)}))
        self.assertEqual(await self.on_every_node("greeter", "greet", "ann"), each("v1 ann"))

    async def _listed_with_pid(self, node: str, pid: int | None) -> bool:
        entry = (await self.nodes()).get(node)
        return entry is not None and entry["state"] == "up" and entry["pid"] == pid


class GuildLoad:
    """Calls ``guildrouter.call(guildid, "info")`` *per_node* at a time until stopped."""

    def __init__(self, me: Cluster, guildid: int, per_node: int = 4) -> None:
        self.me, self.guildid = me, guildid
        self.answers: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.running = True
        self.loops = [defer.Deferred.fromCoroutine(self._loop()) for _ in range(per_node)]

    async def _loop(self) -> None:
        while self.running:
            try:
                self.answers.append(await self.me.call("guild1", "guildrouter", "call",
                                                       self.guildid, "info", timeout=5))
            except Exception as e:
                self.failures.append(repr(e))
                await sleep(0.01)

    async def stop(self) -> None:
        self.running = False
        await defer.gatherResults(self.loops)


class GuildActorFix(HotReloadCase):
    """Issue 17 item 6: a fix list naming the guild rules changes the running guild
    groups (issue 12 moved them from the actor into ``rltwist.game.guildsystem``, which the
    actor reaches through the import registry).  The nodes import a copy of ``rltwist``
    (first on their PYTHONPATH), so the test can change the source without touching the
    checkout."""

    node_names = ["master", "logiccenter", "guild1"]
    ACTOR = "rltwist.game.guildsystem"

    async def test_a_fix_of_the_guild_actor_reaches_running_guilds_under_load(self) -> None:
        code = Path(self.mktemp()).absolute()
        shutil.copytree(REPO / "rltwist", code / "rltwist",
                        ignore=shutil.ignore_patterns("__pycache__"))
        actor = code / "rltwist" / "game" / "guildsystem.py"
        await self.start({}, code=code, hotfix_interval=0)
        guildid = await self.me.call("guild1", "guildrouter", "create", 7001, "Fixers",
                                     timeout=10)
        await self.me.call("guild1", "guildrouter", "call", guildid, "join", 7002, timeout=10)
        before = await self.me.call("guild1", "guildrouter", "call", guildid, "info",
                                    timeout=10)
        self.assertNotIn("fixed", before)
        load = GuildLoad(self.me, guildid)
        self.addCleanup(load.stop)
        await wait_for(lambda: len(load.answers) > 20, 10, "info answers under load")

        old = '"members": sorted(int(u) for u in members)}'
        source = actor.read_text()
        self.assertEqual(source.count(old), 1, "the guild system's info() changed; adapt")
        actor.write_text(source.replace(old, '"members": sorted(int(u) for u in members), '
                                             '"fixed": True}'))
        fix_id = "20250306-01-guild-info"
        write_fix_list(self.codefix, fix_id, [self.ACTOR],
                       sources={self.ACTOR: actor.read_bytes()})
        answer = await self.gm("POST", "/hotfix")
        self.assertEqual({n: e["changes"] for n, e in answer["nodes"].items()},
                         {"master": {fix_id: []}, "logiccenter": {fix_id: []},
                          "guild1": {fix_id: [self.ACTOR]}})
        after = await self.me.call("guild1", "guildrouter", "call", guildid, "info",
                                   timeout=10)
        self.assertEqual(after, {**before, "fixed": True})  # same guild, new code
        await load.stop()
        self.assertEqual(load.failures, [])
        fixed = [a.get("fixed", False) for a in load.answers]
        switch = fixed.index(True)
        self.assertEqual((set(fixed[:switch]), set(fixed[switch:])), ({False}, {True}))

        answer = await self.gm("POST", "/hotfix/rollback")
        self.assertEqual(answer["nodes"]["guild1"]["rolled_back"], fix_id)
        self.assertEqual(await self.me.call("guild1", "guildrouter", "call", guildid, "info",
                                            timeout=10), before)


class ConfigReload(HotReloadCase):
    async def test_reload_swaps_tables_together_and_bumps_config_version(self) -> None:
        await self.start({"tablecheck": TABLECHECK})
        before = await self.nodes()
        first = {before[n]["config_version"] for n in NODES}
        self.assertEqual(len(first), 1, before)
        self.assertTrue(first.pop().startswith("1-"))
        self.assertEqual(await self.on_every_node("tablecheck", "limits"),
                         each([14, 0]))
        load = self.load("tablecheck", "limits")
        await sleep(0.2)

        tables = self.root / "etc" / "game"
        names = tables / "name_rules.toml"
        costs = tables / "building_costs.toml"
        names.write_text(names.read_text().replace("max_length = 14", "max_length = 20"))
        await sleep(0.2)  # on disk the two files differ for a while; nobody reloads yet
        costs.write_text(costs.read_text().replace("level = 1\nseconds = 0",
                                                   "level = 1\nseconds = 5", 1))
        answer = await self.gm("POST", "/config/reload")
        self.assertEqual({n: (e["ok"], e["changed"]) for n, e in answer["nodes"].items()},
                         each((True, True)))
        [label] = answer["config_versions"]
        self.assertTrue(label.startswith("2-"), label)
        self.assertEqual(answer["config_versions"], {label: sorted(NODES)})
        self.assertEqual(await self.on_every_node("tablecheck", "limits"),
                         each([20, 5]))
        await sleep(0.2)
        await load.stop()
        self.assertEqual(load.failures, [])
        for node, answers in load.answers.items():
            self.assertEqual({tuple(a) for a in answers}, {(14, 0), (20, 5)}, node)
        listing = await self.nodes()
        self.assertEqual({n: listing[n]["config_version"] for n in NODES},
                         each(label))

        # a rejected table keeps the old tables serving and shows why on every node
        names.write_text(names.read_text().replace("max_length = 20", "max_length = 1"))
        answer = await self.gm("POST", "/config/reload", expect=502)
        for node, entry in answer["nodes"].items():
            self.assertFalse(entry["ok"], node)
            self.assertEqual(entry["config_version"], label)
            self.assertTrue(any("name_rules.toml: max_length" in p for p in entry["problems"]),
                            entry["problems"])
        self.assertEqual(await self.on_every_node("tablecheck", "limits"),
                         each([20, 5]))
        listing = await self.nodes()
        for node in NODES:
            self.assertEqual(listing[node]["config_version"], label)
            self.assertIn("max_length", " ".join(listing[node]["config_errors"]))

        names.write_text(names.read_text().replace("max_length = 1\n", "max_length = 16\n"))
        answer = await self.gm("POST", "/config/reload")
        [label3] = answer["config_versions"]
        self.assertTrue(label3.startswith("3-"), label3)
        listing = await self.nodes()
        self.assertEqual({n: (listing[n]["config_version"], listing[n]["config_errors"])
                          for n in NODES}, each((label3, [])))


class OnlineDataFixes(HotReloadCase):
    async def test_data_fix_runs_exactly_once_per_online_entity(self) -> None:
        await self.start({"people": PEOPLE})
        holders = {"map1": [11, 12, 13], "guild1": [21, 22]}
        for node, ids in holders.items():
            self.assertEqual(await self.system(node, "people", "spawn", "hrtest", ids),
                             len(ids))
        scripts = self.datafix / "hrtest"
        scripts.mkdir()
        (scripts / "0001_bonus.py").write_text(textwrap.dedent("""
            TARGET_VERSION = 1

            def fix(entity):
                entity["gold"] = entity.get("gold", 0) + 100   # not idempotent on purpose
            """))

        answer = await self.gm("POST", "/datafix")
        fixed = {n: e["kinds"].get("hrtest", {}).get("fixed") for n, e in
                 answer["nodes"].items()}
        self.assertEqual(fixed, {"master": None, "logiccenter": None, "map1": 3, "guild1": 2})
        # other services may register kinds of their own: only hrtest is looked at
        self.assertEqual(answer["totals"]["hrtest"], {"entities": 5, "fixed": 5, "failed": 0})
        answer = await self.gm("POST", "/datafix")
        self.assertEqual(answer["totals"]["hrtest"], {"entities": 5, "fixed": 0, "failed": 0})

        (scripts / "0002_oil.py").write_text(textwrap.dedent("""
            TARGET_VERSION = 2

            def fix(entity):
                entity["oil"] = entity.get("oil", 0) + 7
            """))
        for expect_fixed in (5, 0):
            answer = await self.gm("POST", "/datafix", {"kinds": ["hrtest"]})
            self.assertEqual(answer["totals"],
                             {"hrtest": {"entities": 5, "fixed": expect_fixed, "failed": 0}})
        for node, ids in holders.items():
            docs = await self.system(node, "people", "docs", "hrtest")
            self.assertEqual([(d["_id"], d["version"], d["attrs"]) for d in docs],
                             [(i, 2, {"gold": 100, "oil": 7}) for i in ids])

        # a fix that raises leaves every entity as it was, at the version before it
        (scripts / "0003_broken.py").write_text(textwrap.dedent("""
            TARGET_VERSION = 3

            def fix(entity):
                entity["gold"] = 0
                raise RuntimeError("bad fix")
            """))
        answer = await self.gm("POST", "/datafix", {"kinds": ["hrtest"]}, expect=502)
        self.assertEqual(answer["failed"], ["guild1", "map1"])
        self.assertEqual(answer["totals"], {"hrtest": {"entities": 5, "fixed": 0, "failed": 5}})
        failure = answer["nodes"]["map1"]["kinds"]["hrtest"]["failures"][0]["failed"]
        self.assertEqual(failure["version"], 3)
        self.assertIn("RuntimeError: bad fix", failure["message"])
        docs = await self.system("map1", "people", "docs", "hrtest")
        self.assertEqual({(d["version"], d["attrs"]["gold"]) for d in docs}, {(2, 100)})
