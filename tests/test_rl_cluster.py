"""rl-cluster as a user runs it: up, status, down — real processes, nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from tests.util import wait_for

REPO = Path(__file__).resolve().parent.parent
RL_CLUSTER = [sys.executable, "-c", "from rltwist.cli.cluster import main; main()"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.text = ""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.text += data.decode(errors="replace")

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class RlCluster(unittest.TestCase):
    timeout = 240

    def run_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*RL_CLUSTER, *args], capture_output=True, text=True,
                              timeout=180, cwd=REPO)

    async def test_up_status_down_leaves_nothing_behind_and_keeps_data(self) -> None:
        run_dir = str(Path(self.mktemp()).absolute())
        config = self.write_config()
        for attempt in (1, 2):
            out = Output()
            up = reactor.spawnProcess(out, sys.executable, [*RL_CLUSTER, "up", "--run-dir",
                                                            run_dir, "--config", config],
                                      env=dict(os.environ), path=str(REPO))
            self.addCleanup(lambda p=up: p.pid and alive(p.pid) and os.kill(p.pid, 9))
            await wait_for(lambda o=out: "cluster up in" in o.text or o.ended.called, 120,
                           f"rl-cluster up to report the cluster up:\n{out.text}")
            self.assertIn("cluster up in", out.text, out.text)
            state = json.loads((Path(run_dir) / "cluster.json").read_text())
            pids = [*state["pids"].values(), state["redis_pid"], state["sdk_pid"]]
            status = await defer.Deferred.fromCoroutine(_in_thread(self.run_cmd, "status",
                                                                   "--run-dir", run_dir))
            self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
            self.assertIn("login1", status.stdout)
            if attempt == 1:
                await self.create_player(state)
            else:
                await self.check_player(state)
            down = await defer.Deferred.fromCoroutine(_in_thread(self.run_cmd, "down",
                                                                 "--run-dir", run_dir))
            self.assertEqual(down.returncode, 0, down.stdout + down.stderr)
            self.assertEqual(await out.ended, 0, out.text)
            self.assertIn("cluster stopped cleanly", out.text)
            deadline = time.monotonic() + 10
            while any(alive(p) for p in pids) and time.monotonic() < deadline:
                await _sleep(0.1)
            self.assertEqual([p for p in pids if alive(p)], [])

    def write_config(self) -> str:
        """etc/cluster.toml with free ports, so the test never collides with a dev cluster."""
        from rltwist.config import load_config
        from rltwist.launcher import free_ports, render_config

        base = load_config(REPO / "etc" / "cluster.toml")
        sections = {k: dict(v) for k, v in base.raw.items() if k != "nodes"}
        names = ("master", "logiccenter", "map1", "guild1", "mail1", "rolecity1", "role1",
                 "role2", "login1")
        ports = iter(free_ports(1 + 3 * len(names)))  # all at once: no port handed out twice
        sections["master"]["gm_port"] = next(ports)
        sections["hotreload"]["root"] = str(REPO)  # the copy lives outside etc/
        for name in names:
            node = {"host": "127.0.0.1", "port": next(ports), "metrics_port": next(ports)}
            client_port = next(ports)
            if name.startswith(("role", "login")) and not name.startswith("rolecity"):
                node["client_port"] = client_port
            sections[f"nodes.{name}"] = node
        path = Path(self.mktemp() + ".toml").absolute()
        path.write_text(render_config(sections))
        return str(path)

    async def create_player(self, state: dict) -> None:
        self.userid = await _login(state, "keeper")

    async def check_player(self, state: dict) -> None:
        self.assertEqual(await _login(state, "keeper"), self.userid)


async def _login(state: dict, openid: str) -> int:
    from rltwist.config import load_config
    from tests.login_util import GameClient

    config = load_config(state["config"])
    login = config.node("login1")
    c = GameClient(openid, token=None)
    try:
        await c.play(login.host, login.client_port)
        return c.login_response.userid
    finally:
        c.close()


async def _in_thread(fn, *args, **kwargs):
    from twisted.internet.threads import deferToThread

    return await deferToThread(fn, *args, **kwargs)


def _sleep(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import task

    return task.deferLater(reactor, seconds)


class RlClusterDemo(unittest.TestCase):
    timeout = 240

    async def test_demo_with_a_few_bots_passes_and_stops_cleanly(self) -> None:
        run_dir = str(Path(self.mktemp()).absolute())
        config = RlCluster.write_config(self)  # type: ignore[arg-type]
        from twisted.internet.threads import deferToThread

        out = await deferToThread(
            subprocess.run, [*RL_CLUSTER, "demo", "--bots", "20", "--run-dir", run_dir,
                             "--config", config],
            capture_output=True, text=True, timeout=200, cwd=REPO)
        text = out.stdout + out.stderr
        self.assertEqual(out.returncode, 0, text)
        self.assertIn("bots: 20  ok: 20  failed: 0", text)
        for step in ("login", "auth", "rename", "heartbeat"):
            self.assertRegex(text, rf"\n{step}\s+20\s")
        self.assertIn("cluster stopped cleanly", text)
        self.assertFalse((Path(run_dir) / "cluster.json").exists())
        # the first impression: the demo reports login latency and the kernel's count of
        # connections dropped by full accept queues (0 on a quiet machine: every listener
        # has a full backlog; the count is machine-wide, so other load can add to it)
        self.assertRegex(text, r"login latency: p50 [\d.]+ ms, p95 [\d.]+ ms, p99 [\d.]+ ms")
        self.assertRegex(text, r"listen-queue overflows during the demo: \d+ ")


class PidIdentity(unittest.TestCase):
    timeout = 60

    async def test_down_signals_no_process_that_is_no_longer_one_it_started(self) -> None:
        from rltwist.launcher import free_ports

        # a PID from cluster.json that now belongs to another process (after a reboot,
        # or a cluster that died long ago): rl-cluster must leave it alone
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.addCleanup(lambda: (stranger.kill(), stranger.wait()))
        run_dir = Path(self.mktemp()).absolute()
        run_dir.mkdir(parents=True)
        (run_dir / "cluster.json").write_text(json.dumps({
            "up_pid": None, "gm_url": f"http://127.0.0.1:{free_ports(1)[0]}",
            "gm_token": "x" * 8, "pids": {"map1": stranger.pid}, "redis_pid": None,
            "sdk_pid": None, "identities": {str(stranger.pid): "proc:1"}}))
        down = await defer.Deferred.fromCoroutine(_in_thread(
            RlCluster.run_cmd, self, "down", "--run-dir", str(run_dir), "--bound", "2"))
        self.assertEqual(down.returncode, 1, down.stdout + down.stderr)
        self.assertIn(f"not signalled, no longer the processes rl-cluster started: map1 "
                      f"(pid {stranger.pid})", down.stdout)
        self.assertIsNone(stranger.poll(), "rl-cluster signalled a process it did not start")

    def test_the_identity_is_the_start_time(self) -> None:
        from rltwist.cli.cluster import process_identity

        mine = process_identity(os.getpid())
        self.assertIsNotNone(mine)
        self.assertEqual(process_identity(os.getpid()), mine)
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        self.assertIsNone(process_identity(child.pid))


class UpChecksFirst(unittest.TestCase):
    timeout = 60

    def test_a_bad_config_stops_up_before_redis_starts(self) -> None:
        bad = Path(self.mktemp() + ".toml").absolute()
        bad.write_text(Path(RlCluster.write_config(self)).read_text().replace(  # type: ignore[arg-type]
            'secret = "dev-only-cluster-secret-change-me"', 'secret = "short"'))
        run_dir = Path(self.mktemp()).absolute()
        r = RlCluster.run_cmd(self, "up", "--run-dir", str(run_dir),  # type: ignore[arg-type]
                              "--config", str(bad))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("cluster.secret: must be at least 8 characters", r.stdout)
        self.assertNotIn("redis-server", r.stdout)
        self.assertFalse((run_dir / "redis").exists())


def build_wheel(case: unittest.TestCase) -> Path:
    """rltwist built as a wheel from a copy of the source tree and unpacked: a site
    directory holding only what an installed rltwist has."""
    import shutil
    import zipfile

    work = Path(case.mktemp()).absolute()
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("rltwist", "twisted", "etc"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"))
    try:
        import setuptools  # noqa: F401  (build in this environment, offline)
        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
                        "-w", str(work / "dist"), str(src)], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"pip wheel failed: {r.stdout}{r.stderr}")
    [wheel] = (work / "dist").glob("rltwist-*.whl")
    site = work / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


class OutsideACheckout(unittest.TestCase):
    """rltwist installed from its wheel, run from a directory that is no checkout."""

    timeout = 300

    def setUp(self) -> None:
        self.site = build_wheel(self)
        self.cwd = Path(self.mktemp()).absolute()
        self.cwd.mkdir(parents=True)
        self.env = {**os.environ, "PYTHONPATH": str(self.site)}

    def test_the_default_config_and_game_tables_ship_in_the_package(self) -> None:
        r = subprocess.run([sys.executable, "-c", (
            "import rltwist; from rltwist.cli.cluster import parse, Runner;"
            "from rltwist.config import load_config;"
            "runner = Runner(None, parse(['up']));"
            "load_config(runner.config_path);"
            "print(rltwist.__file__); print(runner.config_path)")],
            capture_output=True, text=True, timeout=60, cwd=self.cwd, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        module, config = r.stdout.split()
        self.assertTrue(module.startswith(str(self.site)), module)
        self.assertEqual(config, str(self.site / "rltwist" / "defaults" / "etc" /
                                     "cluster.toml"))
        self.assertTrue((self.site / "rltwist" / "defaults" / "etc" / "game" /
                         "building_costs.toml").is_file())

    async def test_up_and_down_run_from_the_installed_package(self) -> None:
        import tomllib

        from rltwist.launcher import render_config

        data = tomllib.loads(Path(RlCluster.write_config(self)).read_text())  # type: ignore[arg-type]
        # a config of the operator's own: no [hotreload] root, no checkout around it
        del data["hotreload"]
        nodes = data.pop("nodes")
        own = self.cwd / "cluster.toml"
        own.write_text(render_config({**data, **{f"nodes.{n}": t for n, t in nodes.items()}}))
        run_dir = self.cwd / "run"
        out = Output()
        argv = [*RL_CLUSTER, "up", "--roles", "1", "--run-dir", str(run_dir), "--config",
                str(own)]
        up = reactor.spawnProcess(out, sys.executable, argv, env=self.env, path=str(self.cwd))
        self.addCleanup(lambda p=up: p.pid and alive(p.pid) and os.kill(p.pid, 9))
        await wait_for(lambda: "cluster up in" in out.text or out.ended.called, 120,
                       f"rl-cluster up to report the cluster up:\n{out.text}")
        self.assertIn("cluster up in", out.text, out.text)
        self.assertTrue((run_dir / "etc" / "game" / "building_costs.toml").is_file())
        state = json.loads((run_dir / "cluster.json").read_text())
        self.assertIsNotNone(await _login(state, "outsider"))
        down = await defer.Deferred.fromCoroutine(_in_thread(
            subprocess.run, [*RL_CLUSTER, "down", "--run-dir", str(run_dir)],
            capture_output=True, text=True, timeout=180, cwd=self.cwd, env=self.env))
        self.assertEqual(down.returncode, 0, down.stdout + down.stderr)
        self.assertEqual(await out.ended, 0, out.text)


class FakeGM:
    """Master's GM API as rl-cluster sees it during a shutdown, scripted by the test."""

    def __init__(self) -> None:
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET, Site

        gm = self
        self.shutdown_body: dict = {"state": "running", "phase": "login", "phases": []}
        self.stall = False

        class Shutdown(Resource):
            isLeaf = True

            def render_POST(self, request):
                request.setResponseCode(202)
                return json.dumps(gm.shutdown_body).encode()

            def render_GET(self, request):
                if gm.stall:  # headers, half a body, then nothing
                    request.setHeader(b"Content-Length", b"1000")
                    request.write(b'{"state": ')
                    return NOT_DONE_YET
                return json.dumps(gm.shutdown_body).encode()

        root = Resource()
        root.putChild(b"shutdown", Shutdown())
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        self.alive = True

    def stop(self) -> defer.Deferred:
        self.alive = False
        return defer.maybeDeferred(self.port.stopListening)


class ShutdownFollowing(unittest.TestCase):
    timeout = 30

    async def test_master_gone_in_the_middle_is_not_a_completed_shutdown(self) -> None:
        from rltwist.cli.cluster import shutdown_via_gm

        gm = FakeGM()
        self.addCleanup(lambda: gm.alive and gm.stop())
        gm.shutdown_body = {"state": "running", "phase": "role", "phases": []}
        reactor.callLater(0.5, gm.stop)  # master dies during the role phase
        done = await shutdown_via_gm(gm.url, "token", reactor, 10,
                                     master_alive=lambda: gm.alive, request_timeout=1)
        self.assertFalse(done)

    async def test_master_gone_after_it_reported_done_is_a_completed_shutdown(self) -> None:
        from rltwist.cli.cluster import shutdown_via_gm

        gm = FakeGM()
        self.addCleanup(lambda: gm.alive and gm.stop())
        gm.shutdown_body = {"state": "done", "phase": None, "phases": []}
        reactor.callLater(0.5, gm.stop)
        self.assertTrue(await shutdown_via_gm(gm.url, "token", reactor, 10,
                                              master_alive=lambda: gm.alive,
                                              request_timeout=1))

    async def test_a_gm_that_stops_answering_half_way_is_given_up_on(self) -> None:
        from rltwist.cli.cluster import shutdown_via_gm

        gm = FakeGM()
        self.addCleanup(lambda: gm.alive and gm.stop())
        gm.stall = True
        started = time.monotonic()
        done = await shutdown_via_gm(gm.url, "token", reactor, 3,
                                     master_alive=lambda: gm.alive, request_timeout=0.5)
        self.assertFalse(done)
        self.assertLess(time.monotonic() - started, 6)


class DevSDK(unittest.TestCase):
    timeout = 60

    async def test_the_secret_is_not_on_the_command_line(self) -> None:
        import treq

        from rltwist.cli.cluster import start_dev_sdk
        from rltwist.sdk import dev_token

        run_dir = Path(self.mktemp()).absolute()
        secret = "a-dev-sdk-secret-of-this-test"
        sdk = await start_dev_sdk(reactor, run_dir, secret)
        self.addCleanup(sdk.kill)
        cmdline = Path(f"/proc/{sdk.pid}/cmdline").read_bytes()
        self.assertNotIn(secret.encode(), cmdline)
        response = await treq.post(sdk.ready_info["url"], json={
            "openid": "alice", "token": dev_token(secret, "alice")}, persistent=False)
        self.assertEqual(await response.json(), {"ok": True})

        self.assertEqual(await sdk.stop(), 0)

    async def test_rl_cluster_waits_for_a_hung_dev_sdk_within_a_bound(self) -> None:
        from rltwist.cli.cluster import Runner, parse
        from rltwist.launcher import ChildProcess

        run_dir = Path(self.mktemp()).absolute()
        hung = ChildProcess("sdk", [sys.executable, "-c", (
            "import signal, time\n"
            "from rltwist.readiness import notify_ready\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "notify_ready({})\n"
            "time.sleep(60)")], run_dir)
        self.addCleanup(hung.kill)
        hung.start()
        await hung.wait_ready(10)
        runner = Runner(reactor, parse(["up", "--run-dir", str(run_dir)]))
        runner.sdk, runner.aux_stop_timeout = hung, 1.0
        started = time.monotonic()
        self.assertTrue(await runner.down())
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual(hung.exit_code, -9)


class SeedTables(unittest.TestCase):
    """A run directory made by an older version lacks the tables of newer features: nodes
    would refuse to start. The shipped tables it lacks are copied; edited ones are kept."""

    def test_missing_tables_are_copied_and_edited_ones_kept(self) -> None:
        from rltwist.cli.cluster import seed_tables

        shipped = Path(self.mktemp())
        shipped.mkdir()
        (shipped / "name_rules.toml").write_text("shipped = 1\n")
        (shipped / "chat.toml").write_text("new = 1\n")
        tables = Path(self.mktemp()) / "etc" / "game"
        tables.mkdir(parents=True)
        (tables / "name_rules.toml").write_text("edited = 2\n")
        self.assertEqual(seed_tables(shipped, tables), ["chat.toml"])
        self.assertEqual((tables / "name_rules.toml").read_text(), "edited = 2\n")
        self.assertEqual((tables / "chat.toml").read_text(), "new = 1\n")
        self.assertEqual(seed_tables(shipped, tables), [])


class DownAfterAnOrderedShutdown(unittest.TestCase):
    """Master reports the ordered shutdown complete as soon as each node said it stopped;
    the node processes may still be closing storage and exiting. ``down`` must let them
    exit by themselves (within a bound) instead of signalling them at once: a SIGTERM that
    lands after twistd dropped its handlers kills the node with -15, and a clean shutdown
    is reported as NOT clean."""

    async def test_nodes_still_exiting_after_the_gm_shutdown_are_not_signalled(self) -> None:
        from rltwist.cli import cluster as cli
        from rltwist.launcher import ChildProcess

        run_dir = Path(self.mktemp()).absolute()
        run_dir.mkdir()
        # a node that has finished its part: it exits 0 by itself 1.5 s later, and dies
        # with -15 if signalled (as a twistd does once its handlers are gone)
        slow = ChildProcess("mail1", [sys.executable, "-c", (
            "import signal, time\n"
            "from rltwist.readiness import notify_ready\n"
            "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "notify_ready({})\n"
            "time.sleep(1.5)")], run_dir)
        self.addCleanup(slow.kill)
        slow.start()
        await slow.wait_ready(10)

        class Cluster:
            nodes = {"mail1": slow}
            sections = {"master": {"gm_token": "t"}}

            def gm_url(self, path: str = "") -> str:
                return "http://127.0.0.1:1" + path

            async def stop_all(self, timeout: float = 15.0) -> dict[str, int | None]:
                from rltwist.launcher import LocalCluster
                return await LocalCluster.stop_all(self, timeout)  # type: ignore[arg-type]

        async def completed(*args: object, **kw: object) -> bool:
            return True

        self.patch(cli, "shutdown_via_gm", completed)
        runner = cli.Runner(reactor, cli.parse(["up", "--run-dir", str(run_dir)]))
        runner.lc = Cluster()  # type: ignore[assignment]
        self.assertTrue(await runner.down())
        self.assertEqual(slow.exit_code, 0)


class TwoQuickSignals(unittest.TestCase):
    """Two SIGTERMs (or an impatient double Ctrl-C) before the reactor took the first:
    the stop is requested once, with the first signal's name (it raised
    AlreadyCalledError out of the reactor's thread-call queue)."""

    def test_the_second_signal_before_the_reactor_ran_is_ignored(self) -> None:
        import signal

        from rltwist.cli.cluster import StopSignal

        queued: list[Any] = []

        class Reactor:
            def callFromThread(self, fn: Any, *args: Any) -> None:
                queued.append((fn, args))

        stop = StopSignal(Reactor())
        stop.on_signal(signal.SIGTERM, None)
        stop.on_signal(signal.SIGINT, None)
        for fn, args in queued:
            fn(*args)
        self.assertEqual(self.successResultOf(stop.requested), "SIGTERM")
        self.assertEqual(len(queued), 1)
