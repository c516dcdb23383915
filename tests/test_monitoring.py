"""The monitoring an operator gets: the shipped Prometheus files, the Grafana dashboards,
and a real Prometheus (``rl-cluster up --prometheus``) scraping a real cluster with bots.

* ``etc/prometheus``: ``promtool check rules`` and ``promtool test rules`` pass, every alert
  rule has a unit test, the config ``rl-cluster`` writes passes ``promtool check config``.
* ``etc/grafana``: the committed dashboards are what ``tools/gen_dashboards.py`` writes,
  each is templated by region and node and uses the provisioned datasource.
* Live: every dashboard panel's PromQL returns a non-empty result through Prometheus's
  HTTP API, the alert rules load and evaluate, and ``RltwistNodeDown`` fires within 60 s
  of a node's SIGKILL (1 s scrape and evaluation intervals).

The Prometheus tests need the ``prometheus``/``promtool`` binaries (``apt-get install
prometheus``; CI installs them): without them they are skipped, saying so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from rltwist.prometheus import PrometheusAPI, find_prometheus, find_promtool, render_config
from tests.util import sleep, wait_for

REPO = Path(__file__).resolve().parent.parent
PROM = REPO / "etc" / "prometheus"
DASHBOARDS = REPO / "etc" / "grafana" / "dashboards"
RL_CLUSTER = [sys.executable, "-c", "from rltwist.cli.cluster import main; main()"]
NO_BINARY = ("no prometheus/promtool binary: install the Debian package (apt-get install "
             "prometheus) or set RLTWIST_PROMETHEUS=/path/to/prometheus")
#: what a panel's Grafana variables become in the test: every region, every node, and a
#: rate window of 15 scrapes at the test's 1 s interval
VARIABLES = {"$__rate_interval": "15s", "$region": ".*", "$node": ".*"}


def panels() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) of every target of every shipped dashboard."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for p in json.loads(path.read_text())["panels"]:
            for t in p["targets"]:
                out.append((path.name, p["title"], t["expr"]))
    return out


def concrete(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=REPO)


class ShippedFiles(unittest.TestCase):
    """etc/prometheus and etc/grafana as shipped."""

    def promtool(self) -> str:
        found = find_promtool()
        if found is None:
            raise unittest.SkipTest(NO_BINARY)
        return found

    def test_promtool_check_rules(self) -> None:
        out = run(self.promtool(), "check", "rules", str(PROM / "alerts.yml"))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("SUCCESS", out.stdout)

    def test_promtool_test_rules(self) -> None:
        files = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
        out = run(self.promtool(), "test", "rules", *files)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertEqual(out.stdout.count("SUCCESS"), len(files), out.stdout)

    def test_every_alert_rule_has_a_test_file_that_fires_it_and_keeps_it_quiet(self) -> None:
        rules = set(re.findall(r"^\s+- alert: (\w+)$", (PROM / "alerts.yml").read_text(),
                               re.M))
        self.assertEqual(len(rules), 9, rules)
        by_file = {}
        for path in sorted((PROM / "tests").glob("*.yml")):
            text = path.read_text()
            tested = set(re.findall(r"alertname: (\w+)", text))
            self.assertEqual(len(tested), 1, f"{path.name} tests {tested}: one rule per file")
            [rule] = tested
            by_file[rule] = path.name
            # a block that expects the alert, and one that expects silence
            self.assertRegex(text, r"alertname: \w+\n\s+exp_alerts:\n\s+- exp_labels",
                             path.name)
            self.assertIn("exp_alerts: []", text, path.name)
        self.assertEqual(set(by_file), rules)

    def test_shipped_and_rendered_configs_pass_promtool(self) -> None:
        promtool = self.promtool()
        out = run(promtool, "check", "config", str(PROM / "prometheus.yml"))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        text = render_config((PROM / "prometheus.yml").read_text(),
                             sd_url="http://127.0.0.1:1/sd", token='a "quoted" token',
                             interval=1.0)
        (directory / "prometheus.yml").write_text(text)
        (directory / "alerts.yml").write_text((PROM / "alerts.yml").read_text())
        out = run(promtool, "check", "config", str(directory / "prometheus.yml"))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for expected in ("scrape_interval: 1000ms", "evaluation_interval: 1000ms",
                         "url: http://127.0.0.1:1/sd", 'credentials: "a \\"quoted\\" token"'):
            self.assertIn(expected, text)

    def test_dashboards_are_generated_templated_and_use_the_provisioned_datasource(self) -> None:
        out = run(sys.executable, str(REPO / "tools" / "gen_dashboards.py"), "--check")
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        provisioned = (REPO / "etc" / "grafana" / "provisioning" / "datasources" /
                       "rltwist.yml").read_text()
        uid = re.search(r"uid: (\S+)", provisioned).group(1)  # type: ignore[union-attr]
        titles = set()
        for path in sorted(DASHBOARDS.glob("*.json")):
            board = json.loads(path.read_text())
            titles.add(board["title"])
            self.assertEqual({v["name"] for v in board["templating"]["list"]},
                             {"region", "node"}, path.name)
            for p in board["panels"]:
                self.assertEqual(p["datasource"]["uid"], uid, p["title"])
                self.assertTrue(p["targets"] and all(t["expr"] for t in p["targets"]))
        self.assertEqual(titles, {"rltwist: cluster overview", "rltwist: per node",
                                  "rltwist: storage", "rltwist: hot reload"})
        provider = (REPO / "etc" / "grafana" / "provisioning" / "dashboards" /
                    "rltwist.yml").read_text()
        self.assertIn("type: file", provider)


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.text = ""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.text += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback(code if code is not None else -1)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class LivePrometheus(unittest.TestCase):
    """rl-cluster up --prometheus with 1 s intervals, 40 bots holding their sessions."""

    timeout = 420
    bots = 40

    async def test_every_panel_answers_rules_load_and_node_down_fires(self) -> None:
        if find_prometheus() is None:
            raise unittest.SkipTest(NO_BINARY)
        from tests.test_rl_cluster import RlCluster

        run_dir = Path(self.mktemp()).absolute()
        config = RlCluster.write_config(self)  # type: ignore[arg-type]
        up = _Output()
        proc = reactor.spawnProcess(up, sys.executable, [
            *RL_CLUSTER, "up", "--run-dir", str(run_dir), "--config", config,
            "--prometheus", "--prometheus-interval", "1"], env=dict(os.environ),
            path=str(REPO))
        self.addCleanup(self._stop_everything, run_dir, proc.pid, up)
        await wait_for(lambda: "Prometheus       http" in up.text or up.ended.called, 150,
                       f"rl-cluster up --prometheus to print Prometheus' URL:\n{up.text}")
        match = re.search(r"Prometheus\s+(http://\S+)", up.text)
        self.assertIsNotNone(match, up.text)
        state = json.loads((run_dir / "cluster.json").read_text())
        self.assertTrue(_alive(state["prometheus_pid"]))
        prom = PrometheusAPI(match.group(1), reactor)  # type: ignore[union-attr]
        nodes = sorted(state["pids"])

        bots = await self._start_bots(run_dir)
        self.addCleanup(self._stop_bots, bots)
        await wait_for(lambda: _all_up(prom, nodes), 60,
                       f"Prometheus to scrape every node up through /sd: {nodes}")
        await wait_for(lambda: _at_least(prom, "sum(rl_role_online_players)", self.bots), 90,
                       f"{self.bots} bots online, as Prometheus sees it")
        await sleep(3)  # a few scrapes with the bots online fill the rate windows

        table = await self._check_panels(prom)
        (run_dir / "panels.md").write_text(table)
        print("\n" + table)

        await self._check_rules(prom)
        await self._node_down_alert_fires(prom, state, "guild1")

    async def _start_bots(self, run_dir: Path) -> Any:
        out = _Output()
        env = dict(os.environ)
        env.pop("RLTWIST_DEV_SDK_SECRET", None)
        argv = [sys.executable, "-m", "rltwist.bot", "--config", str(run_dir / "cluster.toml"),
                "--count", str(self.bots), "--script", "rename,heartbeat", "--hold", "inf",
                "--heartbeat", "2", "--quiet"]
        transport = reactor.spawnProcess(out, argv[0], argv, env=env, path=str(REPO))
        transport.output = out
        return transport

    async def _stop_bots(self, transport: Any) -> None:
        if _alive(transport.pid) and not transport.output.ended.called:
            os.kill(transport.pid, signal.SIGTERM)
            try:
                await transport.output.ended.addTimeout(20, reactor)
            except defer.TimeoutError:
                os.kill(transport.pid, signal.SIGKILL)

    async def _check_panels(self, prom: PrometheusAPI) -> str:
        """Query every panel until it answers something (bounded); return the table."""
        rows = []
        empty: list[str] = []
        deadline = time.monotonic() + 60
        for board, title, expr in panels():
            query = concrete(expr)
            while True:
                result = await prom.query(query)
                if result or time.monotonic() > deadline:
                    break
                await sleep(1)
            if not result:
                empty.append(f"{board}: {title}: {query}")
            rows.append(f"| {board.removesuffix('.json')} | {title} | {len(result)} |")
        self.assertEqual(empty, [], "panels whose query returned nothing")
        return "\n".join(["| dashboard | panel | series |", "|---|---|---:|", *rows])

    async def _check_rules(self, prom: PrometheusAPI) -> None:
        want = set(re.findall(r"^\s+- alert: (\w+)$", (PROM / "alerts.yml").read_text(),
                              re.M))

        async def evaluated() -> dict[str, Any] | None:
            data = await prom.api("rules")
            rules = {r["name"]: r for g in data["groups"] for r in g["rules"]}
            never = "0001-01-01"  # Prometheus' lastEvaluation of a rule not evaluated yet
            if set(rules) == want and not any(r.get("lastEvaluation", never).startswith(never)
                                              for r in rules.values()):
                return rules
            return None

        rules = await wait_for(evaluated, 30, f"Prometheus to load and evaluate {want}")
        bad = {n: (r["health"], r.get("lastError")) for n, r in rules.items()
               if r["health"] != "ok"}
        self.assertEqual(bad, {})
        firing = [a for a in (await prom.api("alerts"))["alerts"] if a["state"] == "firing"]
        self.assertEqual(firing, [], "alerts firing on a healthy cluster")

    async def _node_down_alert_fires(self, prom: PrometheusAPI, state: dict[str, Any],
                                     node: str) -> None:
        pid = state["pids"][node]
        os.kill(pid, signal.SIGKILL)  # a node this test's rl-cluster started
        killed = time.monotonic()

        async def fired() -> bool:
            alerts = (await prom.api("alerts"))["alerts"]
            return any(a["labels"].get("alertname") == "RltwistNodeDown"
                       and a["labels"].get("node") == node and a["state"] == "firing"
                       for a in alerts)

        await wait_for(fired, 75, f"RltwistNodeDown to fire for {node}", interval=0.5)
        elapsed = time.monotonic() - killed
        print(f"\nRltwistNodeDown fired for {node} {elapsed:.1f}s after SIGKILL")
        self.assertLessEqual(elapsed, 60.0)
        # master's table says so too, and /sd kept the node: Prometheus sees up == 0
        self.assertTrue(await prom.query(f'rl_node_up{{node="{node}"}} == 0'))
        self.assertTrue(await prom.query(f'up{{job="rltwist", node="{node}"}} == 0'))

    async def _stop_everything(self, run_dir: Path, up_pid: int, up: _Output) -> None:
        """rl-cluster down (ordered), then SIGKILL by PID whatever this test started and
        is still alive."""
        state_path = run_dir / "cluster.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if not up.ended.called:
            from twisted.internet.threads import deferToThread

            await deferToThread(subprocess.run, [*RL_CLUSTER, "down", "--run-dir",
                                                 str(run_dir), "--bound", "60"],
                                capture_output=True, timeout=150, cwd=REPO)
            try:
                await up.ended.addTimeout(30, reactor)
            except defer.TimeoutError:
                pass
        pids = [up_pid, *state.get("pids", {}).values(), state.get("redis_pid"),
                state.get("sdk_pid"), state.get("prometheus_pid")]
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _all_up(prom: PrometheusAPI, nodes: list[str]) -> bool:
    result = await prom.query('up{job="rltwist"} == 1')
    return {r["metric"].get("node") for r in result} >= set(nodes)


async def _at_least(prom: PrometheusAPI, expr: str, value: float) -> bool:
    result = await prom.query(expr)
    return bool(result) and float(result[0]["value"][1]) >= value
