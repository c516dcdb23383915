"""Regions without processes: logiccenter's ``regions`` service and ``account`` over real
embedded storage — which regions start open, open/close saved and reloaded, the
BAD_SERVER_ID decision for new players (never for existing ones), the recommended region,
players counted per region."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cli import regions as cli_regions
from rltwist.cluster import NodeUnreachable
from rltwist.nodes.logiccenter.account import Account
from rltwist.nodes.logiccenter.regions import CLOSED, OPEN, BadServerId, Regions
from rltwist.nodes.login.regionlist import RegionListCache
from rltwist.protocols import pb
from rltwist.storage.embedded import EmbeddedBackend
from tests.util import wait_for

NOW = 1_700_000_000


class FakeCluster:
    def __init__(self, names: list[str]) -> None:
        self.addresses: dict[str, tuple[str, int]] = {n: ("127.0.0.1", 1) for n in names}


class FakeConfig:
    def __init__(self, names: list[str]) -> None:
        self.nodes = {n: object() for n in names}


class FakeNode:
    """What Regions and Account use of a logiccenter node: its config file's nodes, the
    name table (``cluster.addresses``), globaldb, a clock."""

    def __init__(self, db: EmbeddedBackend, config: list[str], table: list[str],
                 clock: task.Clock) -> None:
        self.db = db
        self.config = FakeConfig(config)
        self.cluster = FakeCluster(table)
        self.reactor = clock

    def database(self, name: str) -> EmbeddedBackend:
        assert name == "globaldb"
        return self.db


BASE = ["master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "map2", "role1",
        "login1"]


class RegionState(unittest.TestCase):
    def setUp(self) -> None:
        self.path = self.mktemp()
        self.db = EmbeddedBackend(self.path)
        self.addCleanup(self.db.close)
        self.clock = task.Clock()
        self.clock.advance(NOW)

    def node(self, config: list[str] = BASE, table: list[str] | None = None) -> FakeNode:
        return FakeNode(self.db, config, BASE if table is None else table, self.clock)

    async def refused(self, regions: Regions, sid: Any, words: str) -> None:
        with self.assertRaises(BadServerId) as e:
            await regions.check_new_player(sid)
        self.assertIn(words, str(e.exception))

    async def test_config_regions_open_at_first_start_later_ones_closed_until_opened(
            self) -> None:
        node = self.node()
        regions = Regions(node)
        await regions.check_new_player(1)
        await regions.check_new_player(2)
        await self.refused(regions, 3, "does not exist")
        await self.refused(regions, 0, "1..65535")
        await self.refused(regions, True, "1..65535")
        await self.refused(regions, "1", "1..65535")
        # region 3 registers at run time: known, closed
        node.cluster.addresses["map3"] = ("127.0.0.1", 2)
        self.assertEqual(await regions.sync(), [3])
        await self.refused(regions, 3, "closed to new players")
        listing = await regions.list()
        self.assertEqual([(r["sid"], r["state"], r["source"]) for r in listing["regions"]],
                         [(1, OPEN, "config"), (2, OPEN, "config"), (3, CLOSED, "registered")])
        self.clock.advance(5)
        answer = await regions.open(3)
        self.assertEqual((answer["ok"], answer["changed"], answer["region"]["state"]),
                         (True, True, OPEN))
        self.assertEqual(answer["region"]["first_opened_ms"], (NOW + 5) * 1000)
        await regions.check_new_player(3)
        self.assertEqual((await regions.open(3))["changed"], False)
        # saved: a restarted logiccenter (new service, same globaldb) knows all of it,
        # and does not start over (region 4 in a later config file starts closed)
        self.clock.advance(5)
        self.assertTrue((await regions.close(1))["ok"])
        again = Regions(self.node(config=[*BASE, "map3", "map4"],
                                  table=[*BASE, "map3", "map4"]))
        await self.refused(again, 1, "closed")
        await again.check_new_player(3)
        await self.refused(again, 4, "closed")
        states = {r["sid"]: r["state"] for r in (await again.list())["regions"]}
        self.assertEqual(states, {1: CLOSED, 2: OPEN, 3: OPEN, 4: CLOSED})

    async def test_operator_errors_are_named(self) -> None:
        node = self.node()
        regions = Regions(node)
        self.assertEqual((await regions.open(9))["error"], "unknown_region")
        self.assertEqual((await regions.close(9))["error"], "unknown_region")
        self.assertEqual((await regions.open(0))["error"], "bad_region")
        self.assertEqual((await regions.open("x"))["error"], "bad_region")
        self.assertEqual((await regions.recommend(9))["error"], "unknown_region")
        # region 2's nodes are decommissioned: it stays known, closes, cannot be opened
        self.assertTrue((await regions.close(2))["ok"])
        del node.cluster.addresses["map2"]
        self.assertEqual((await regions.open(2))["error"], "no_nodes")
        await self.refused(regions, 2, "closed")
        # open but without nodes now: still no new players there
        self.clock.advance(1)
        node.cluster.addresses["map2"] = ("127.0.0.1", 1)
        self.assertTrue((await regions.open(2))["ok"])
        del node.cluster.addresses["map2"]
        await self.refused(regions, 2, "no node in the name table")
        self.assertNotIn(2, [r["sid"] for r in (await regions.public())["regions"]])

    async def test_recommended_is_the_newest_opened_or_the_operators_choice(self) -> None:
        node = self.node()
        regions = Regions(node)
        public = await regions.public()
        # both opened at the first start: the highest sid
        self.assertEqual(public, {"regions": [{"sid": 1, "opened_ms": NOW * 1000},
                                              {"sid": 2, "opened_ms": NOW * 1000}],
                                  "recommended": 2})
        node.cluster.addresses["rolecity3"] = ("127.0.0.1", 3)
        await regions.sync()
        self.assertEqual((await regions.public())["recommended"], 2)  # 3 is closed
        self.clock.advance(10)
        await regions.open(3)
        self.assertEqual((await regions.public())["recommended"], 3)
        # closing and opening an old region again does not make it the newest
        self.clock.advance(10)
        await regions.close(1)
        await regions.open(1)
        self.assertEqual((await regions.public())["recommended"], 3)
        self.assertEqual((await regions.recommend(1))["recommended"], 1)
        self.assertEqual((await regions.public())["recommended"], 1)
        await regions.close(1)  # the choice applies only while it is open
        public = await regions.public()
        self.assertEqual(([r["sid"] for r in public["regions"]], public["recommended"]),
                         ([2, 3], 3))
        await regions.open(1)
        self.assertEqual((await Regions(self.node(table=[*BASE, "rolecity3"])).public())
                         ["recommended"], 1)  # saved
        self.assertEqual((await regions.recommend(0))["recommended"], 3)

    async def test_accounts_new_players_only_in_open_regions_existing_ones_always(
            self) -> None:
        # accounts made before regions were tracked are counted once, at the first start
        await self.db.insert("account", "old", {"userid": 1 << 16 | 2, "server_id": 2})
        node = self.node()
        account = Account(node)  # type: ignore[arg-type]
        regions = account.region_state
        a = await account.get_or_create("alice", 1)
        self.assertEqual((a["created"], a["userid"] & 0xFFFF), (True, 1))
        self.assertEqual((await account.get_or_create("bob", 2))["created"], True)
        await regions.close(1)
        refused = await account.get_or_create("carol", 1)
        self.assertEqual((refused["userid"], refused["refused"]), (None, "BadServerId"))
        self.assertIn("closed", refused["why"])
        self.assertEqual(await self.db.get("account", "carol"), None)  # no account made
        # alice was born in region 1: she logs in whatever it is now
        self.assertEqual(await account.get_or_create("alice", 1),
                         {"userid": a["userid"], "created": False})
        unknown = await account.get_or_create("dave", 7)
        self.assertIn("does not exist", unknown["why"])
        players = {r["sid"]: r["players"] for r in (await regions.list())["regions"]}
        self.assertEqual(players, {1: 1, 2: 2})
        again = Regions(self.node())
        self.assertEqual({r["sid"]: r["players"] for r in (await again.list())["regions"]},
                         {1: 1, 2: 2})

    async def test_a_region_that_registers_is_recorded_by_the_periodic_sync(self) -> None:
        node = self.node()
        regions = Regions(node)
        regions.start()
        self.addCleanup(regions.stop)
        await regions.loaded()
        node.cluster.addresses["guild5"] = ("127.0.0.1", 5)
        self.clock.advance(2)  # the next look at the name table
        await wait_for(lambda: self.db.get("region", 5), 10, "region 5 to be stored")
        stored = await self.db.get("region", 5)
        assert stored is not None
        self.assertEqual((stored["state"], stored["added_ms"]), (CLOSED, (NOW + 2) * 1000))


class FakeLogiccenter:
    """A cluster whose logiccenter answers ``regions.public`` (or fails)."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer: Any = {"regions": [{"sid": 1, "opened_ms": 5}], "recommended": 1}
        self.pending: list[defer.Deferred[Any]] = []

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float = 0) -> defer.Deferred[Any]:
        assert (node, service, method) == ("logiccenter", "regions", "public")
        self.calls += 1
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d

    def reply(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            if isinstance(self.answer, Exception):
                d.errback(self.answer)
            else:
                d.callback(self.answer)


class RegionListOnTheLoginNode(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.logiccenter = FakeLogiccenter()
        node = FakeNode.__new__(FakeNode)
        node.reactor = self.clock
        node.cluster = self.logiccenter  # type: ignore[assignment]
        self.cache = RegionListCache(node)  # type: ignore[arg-type]

    def ask(self) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self.cache.respond(pb.RegionList()))

    def test_one_call_a_second_for_any_number_of_clients(self) -> None:
        first, second = self.ask(), self.ask()  # the second waits for the first's call
        self.assertEqual(self.logiccenter.calls, 1)
        self.logiccenter.reply()
        for d in (first, second):
            answer = self.successResultOf(d)
            self.assertEqual((answer.code, [r.sid for r in answer.regions],
                              answer.recommended), (pb.ErrorCode.OK, [1], 1))
        self.clock.advance(0.9)
        self.successResultOf(self.ask())
        self.assertEqual(self.logiccenter.calls, 1)
        self.clock.advance(0.2)  # older than a second: asked again
        self.logiccenter.answer = {"regions": [], "recommended": 0}
        third = self.ask()
        self.logiccenter.reply()
        self.assertEqual((self.successResultOf(third).recommended, self.logiccenter.calls),
                         (0, 2))

    def test_logiccenter_unreachable_is_retry_later_and_not_kept(self) -> None:
        self.logiccenter.answer = NodeUnreachable("logiccenter", "regions", "public", "down")
        d = self.ask()
        self.logiccenter.reply()
        self.assertEqual(self.successResultOf(d).code, pb.ErrorCode.RETRY_LATER)
        self.logiccenter.answer = {"regions": [], "recommended": 0}
        d = self.ask()
        self.assertEqual(self.logiccenter.calls, 2)
        self.logiccenter.reply()
        self.assertEqual(self.successResultOf(d).code, pb.ErrorCode.OK)


class RegionAddCommand(unittest.TestCase):
    """`rl-cluster region add` refuses clearly when there is no running `up` to ask."""

    async def test_without_a_running_up_it_says_so(self) -> None:
        from twisted.internet import reactor

        run_dir = Path(self.mktemp()).absolute()
        run_dir.mkdir()
        lines: list[str] = []
        self.patch(cli_regions, "say", lines.append)
        self.assertEqual(await cli_regions.region_add(reactor, run_dir, 3, 5), 1)
        self.assertIn("no cluster recorded", lines[-1])
        (run_dir / "cluster.json").write_text(json.dumps(
            {"up_pid": 999999999, "identities": {"999999999": "proc:1"}}))
        self.assertEqual(await cli_regions.region_add(reactor, run_dir, 3, 5), 1)
        self.assertIn("is not running", lines[-1])
        self.assertEqual(await cli_regions.region_add(reactor, run_dir, 0, 5), 1)
        self.assertIn("--sid must be 1..65535", lines[-1])
        self.assertEqual(cli_regions.region_names(3), ["map3", "guild3", "mail3",
                                                       "rolecity3"])


class FakeProc:
    def __init__(self, pid: int, running: bool = False, fails: bool = False) -> None:
        self.pid, self.running, self.fails = pid, running, fails
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.running = True

    async def wait_ready(self, timeout: float) -> None:
        if self.fails:
            self.running = False
            raise cli_regions.LaunchError(f"pid {self.pid} exited with status 1")


class FakeLocalCluster:
    """What add_region uses of rl-cluster's LocalCluster."""

    def __init__(self, nodes: dict[str, FakeProc], master: dict[str, str]) -> None:
        self.nodes = nodes
        self.master = master
        self.config_path = "run/cluster.toml"
        self.waited: list[list[str]] = []

    async def node_states(self) -> dict[str, str]:
        return self.master

    def process(self, name: str) -> FakeProc:
        return self.nodes.setdefault(name, FakeProc(100 + len(self.nodes)))

    def node_config(self, name: str) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": 1}

    async def wait_up(self, names: list[str], timeout: float) -> None:
        self.waited.append(list(names))

    def gm_url(self) -> str:
        return "http://gm"


class FakeRunner:
    def __init__(self, run_dir: Path, lc: FakeLocalCluster) -> None:
        self.run_dir, self.lc, self.stopping, self.names = run_dir, lc, False, ["master"]
        (run_dir / cli_regions.REQUESTS).mkdir(parents=True)

    def write_state(self) -> None:
        pass


class RegionAddInUp(unittest.TestCase):
    """The `up` side of region add: what it starts, what it refuses, a retry after a
    failure keeps the nodes that started."""

    def setUp(self) -> None:
        self.lines: list[str] = []
        self.patch(cli_regions, "say", self.lines.append)

    def status(self, runner: FakeRunner) -> Any:
        return json.loads(cli_regions._status_path(runner.run_dir, 3).read_text())

    async def test_start_refuse_and_retry(self) -> None:
        lc = FakeLocalCluster({}, {})
        runner = FakeRunner(Path(self.mktemp()).absolute(), lc)
        lc.nodes["mail3"] = FakeProc(7, fails=True)
        self.assertFalse(await cli_regions.add_region(runner, 3))  # type: ignore[arg-type]
        self.assertEqual(self.status(runner)["state"], "failed")
        self.assertIn("exited with status 1", self.status(runner)["lines"][-1])
        self.assertEqual(lc.waited, [])
        # the retry keeps map3 and guild3 and starts the others
        lc.nodes["mail3"].fails = False
        self.assertTrue(await cli_regions.add_region(runner, 3))  # type: ignore[arg-type]
        status = self.status(runner)
        self.assertEqual(status["state"], "done")
        self.assertIn("already running, kept: map3 guild3", status["lines"][0])
        self.assertEqual({n: p.starts for n, p in lc.nodes.items()},
                         {"map3": 1, "guild3": 1, "mail3": 2, "rolecity3": 1})
        self.assertEqual(lc.waited, [["map3", "guild3", "mail3", "rolecity3"]])
        self.assertEqual(runner.names, ["master", "map3", "guild3", "mail3", "rolecity3"])
        # all four running: refused
        self.assertFalse(await cli_regions.add_region(runner, 3))  # type: ignore[arg-type]
        self.assertIn("already running: map3 (pid", self.status(runner)["lines"][-1])

    async def test_a_region_started_by_hand_is_not_started_twice(self) -> None:
        lc = FakeLocalCluster({}, {"map3": "up"})
        runner = FakeRunner(Path(self.mktemp()).absolute(), lc)
        self.assertFalse(await cli_regions.add_region(runner, 3))  # type: ignore[arg-type]
        self.assertIn("master already has {'map3': 'up'}", self.status(runner)["lines"][-1])
        self.assertEqual(lc.nodes, {})
