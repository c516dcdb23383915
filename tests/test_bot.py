"""rl-bot against small fake login and gateway servers on real loopback ports.

The fakes speak the real client protocol (``rltwist.protocols.ServerProtocol``) and check
the dev SDK token the way a login node does; end-to-end tests against the real nodes
live elsewhere.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import tomllib
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any, cast

from google.protobuf.message import Message
from twisted.internet import defer, reactor, utils
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort
from twisted.trial import unittest

from rltwist.bot import BotOptions, BotReport, BotSwarm, parse_logins, parse_script, run_bots
from rltwist.bot.actions import BotIdentity
from rltwist.bot.cli import build_parser, main, options_from_args
from rltwist.bot.report import LatencyStats, percentile
from rltwist.config import load_config
from rltwist.game.errcode import ErrCode
from rltwist.game.rolesystem import RoleSystem
from rltwist.launcher import free_ports
from rltwist.protocols import ProtocolViolation, ServerProtocol, ServerProtocolFactory, pb
from rltwist.sdk import check_dev_token
from rltwist.stats import percentile as shared_percentile

from .util import sleep, wait_for

REPO = Path(__file__).resolve().parent.parent
SDK_SECRET = "test-dev-sdk-secret"


def _bench_module(name: str) -> Any:
    """Import ``bench/<name>.py`` (a script directory, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeLoginProtocol(ServerProtocol):
    factory: FakeLoginFactory

    def requestReceived(self, message: Message, session: int) -> None:
        f = self.factory
        if not isinstance(message, pb.Login):
            raise ProtocolViolation("login_only")
        f.requests.append(message)
        f.in_flight += 1
        f.max_in_flight = max(f.max_in_flight, f.in_flight)
        if f.mode == "silent":
            return
        response = f.answer(message)

        def send() -> None:
            f.in_flight -= 1
            self.reply(session, response)

        if f.delay:
            reactor.callLater(f.delay, send)  # type: ignore[attr-defined]
        else:
            send()


class FakeLoginFactory(ServerProtocolFactory):
    """A login node: checks the dev token, hands out userids and one-time secrets.

    ``mode``: "ok"; "retry_once" (RETRY_LATER on each openid's first try); "retry_always";
    "silent" (never answers).
    """

    protocol = FakeLoginProtocol

    def __init__(self, gateway: FakeGatewayFactory, mode: str = "ok", delay: float = 0.0
                 ) -> None:
        super().__init__()
        self.gateway = gateway
        self.mode = mode
        self.delay = delay
        self.requests: list[pb.Login] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.userids: dict[str, int] = {}
        self.tried: set[str] = set()

    def answer(self, login: pb.Login) -> pb.Login.Response:
        if not check_dev_token(SDK_SECRET, login.openid, login.token):
            return pb.Login.Response(code=pb.ErrorCode.BAD_TOKEN)
        first_try = login.openid not in self.tried
        self.tried.add(login.openid)
        if self.mode == "retry_always" or (self.mode == "retry_once" and first_try):
            return pb.Login.Response(code=pb.ErrorCode.RETRY_LATER)
        userid = self.userids.get(login.openid) or self.gateway.new_userid(login.server_id)
        self.userids[login.openid] = userid
        secret = f"secret-{userid}-{len(self.requests)}"
        self.gateway.secrets[userid] = secret
        return pb.Login.Response(code=pb.ErrorCode.OK, userid=userid, host="127.0.0.1",
                                 port=self.gateway.port, secret=secret)


class FakeGatewayProtocol(ServerProtocol):
    factory: FakeGatewayFactory
    userid = 0

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost()
        self.factory.connections.discard(self)

    def requestReceived(self, message: Message, session: int) -> None:
        f = self.factory
        if isinstance(message, pb.Auth):
            if f.silent_auth:
                return
            f.auths_in_flight += 1
            f.max_auths_in_flight = max(f.max_auths_in_flight, f.auths_in_flight)
            reactor.callLater(f.auth_delay, self.answer_auth, message, session)  # type: ignore[attr-defined]
        elif not self.userid:
            raise ProtocolViolation("request_before_auth")
        elif isinstance(message, pb.Heartbeat):
            f.heartbeats += 1
            self.reply(session, pb.Heartbeat.Response(code=pb.ErrorCode.OK,
                                                      server_time_ms=int(time.time() * 1000)))
        elif isinstance(message, pb.Rename):
            code = pb.ErrorCode.NAME_TAKEN if message.name in f.names else pb.ErrorCode.OK
            f.names.add(message.name)
            self.reply(session, pb.Rename.Response(code=code))

    def answer_auth(self, auth: pb.Auth, session: int) -> None:
        f = self.factory
        f.auths_in_flight -= 1
        if f.secrets.pop(auth.userid, None) != auth.secret:
            self.reply(session, pb.Auth.Response(code=pb.ErrorCode.BAD_SECRET))
            return
        self.userid = auth.userid
        self.reply(session, pb.Auth.Response(code=pb.ErrorCode.OK, userid=auth.userid))
        if f.kick_after_auth:
            self.kick(pb.KickReason.KICK_LOGIN_ELSEWHERE)

    def kick(self, code: pb.KickReason) -> None:
        self.closeWithReason("kicked", notify=pb.KickNotify(reason="test kick", code=code))


class FakeGatewayFactory(ServerProtocolFactory):
    """A role gateway: Auth with the login's one-time secret, Heartbeat, Rename."""

    protocol = FakeGatewayProtocol

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.secrets: dict[int, str] = {}
        self.connections: set[FakeGatewayProtocol] = set()
        self.names: set[str] = set()
        self.heartbeats = 0
        self.silent_auth = False
        self.kick_after_auth = False
        self.auth_delay = 0.0
        self.auths_in_flight = 0
        self.max_auths_in_flight = 0
        self._seq = 0

    def new_userid(self, server_id: int) -> int:
        self._seq += 1
        return self._seq << 16 | server_id


class BotTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.gateway = FakeGatewayFactory()
        self.gateway.port = self.listen(self.gateway)
        self.login = FakeLoginFactory(self.gateway)
        self.login_port = self.listen(self.login)

    def listen(self, factory: ServerProtocolFactory) -> int:
        """Listen on a free loopback port until the test ends; the port number."""
        port: IListeningPort = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return cast(IPv4Address, port.getHost()).port

    def options(self, **kw: Any) -> BotOptions:
        kw.setdefault("logins", [("127.0.0.1", self.login_port)])
        kw.setdefault("count", 10)
        kw.setdefault("dev_sdk_secret", SDK_SECRET)
        kw.setdefault("timeout", 5.0)
        kw.setdefault("retry_delay", 0.01)
        kw.setdefault("retry_max_delay", 0.02)
        return BotOptions(**kw)

    def swarm(self, **kw: Any) -> BotSwarm:
        """A swarm released at the end of the test even if the test fails."""
        swarm = BotSwarm(self.options(**kw))
        self.addCleanup(lambda: defer.ensureDeferred(swarm.release()))
        return swarm

    async def run_bots(self, **kw: Any) -> BotReport:
        return await run_bots(self.options(**kw))

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """Run ``python -m rltwist.bot`` (the rl-bot entry point) against the fakes."""
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get(
            "PYTHONPATH", ""))
        env.pop("RLTWIST_DEV_SDK_SECRET", None)
        out, err, status = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "rltwist.bot", "--login", f"127.0.0.1:{self.login_port}",
                             *args], env=env, path=str(REPO))
        return status, out.decode(), err.decode()


class LoginFlowTests(BotTestCase):
    async def test_bots_are_spread_over_the_regions_given_and_know_each_other(self) -> None:
        swarm = self.swarm(count=6, server_ids=(1, 2), openid_prefix="spread")
        report = await swarm.run()
        self.assertEqual(report.ok, 6, report.format_table())
        by_openid = {r.openid: r.server_id for r in self.login.requests}
        self.assertEqual(by_openid, {f"bot-spread-{i}": 1 + i % 2 for i in range(6)})
        self.assertEqual(len(set(swarm.online_userids)), 6)

    def test_a_bots_peer_is_another_logged_in_bot(self) -> None:
        me = BotIdentity(index=1, openid="o", userid=20, run_token="ab",
                         online=[10, 20, 30])
        self.assertEqual(me.peer(), 30)
        self.assertEqual(me.peer(2), 10)
        alone = BotIdentity(index=0, openid="o", userid=20, run_token="ab", online=[20])
        self.assertEqual(alone.peer(), 20)

    async def test_every_bot_logs_in_authenticates_runs_its_script_and_logs_out(self) -> None:
        report = await self.run_bots(count=20, concurrency=5, script="rename,heartbeat*2",
                                     openid_prefix="flow")
        self.assertEqual((report.ok, report.failed, report.kicked, report.logins),
                         (20, 0, 0, 20), report.format_table())
        self.assertTrue(report.success)
        self.assertEqual(report.exit_status, 0)
        self.assertTrue(report.finished)
        self.assertEqual(report.online, 0)
        self.assertEqual(sorted(r.openid for r in self.login.requests),
                         sorted(f"bot-flow-{i}" for i in range(20)))
        self.assertEqual({r.server_id for r in self.login.requests}, {1})
        self.assertEqual(list(report.latency)[:5], ["connect", "login", "gateway", "auth",
                                                    "total"])
        for step, count in [("connect", 20), ("login", 20), ("gateway", 20), ("auth", 20),
                            ("total", 20), ("rename", 20), ("heartbeat", 40)]:
            stats = report.latency[step]
            self.assertEqual(stats.count, count, step)
            self.assertTrue(0 <= stats.p50 <= stats.p95 <= stats.p99 <= stats.max, step)
        self.assertGreater(report.logins_per_s, 0)
        # Every name was new and passes the real name rules.
        self.assertEqual(len(self.gateway.names), 20)
        rules = tomllib.loads((REPO / "etc/game/name_rules.toml").read_text())
        for name in self.gateway.names:
            self.assertEqual(RoleSystem().check_name(name, {"name_rules": rules}), ErrCode.OK,
                             name)
        # hold 0: every gateway connection is closed by the time the run reports.
        await wait_for(lambda: not self.gateway.connections, 2.0, "gateway connections closed")

    async def test_report_serialises_to_json_with_latencies_in_ms(self) -> None:
        report = await self.run_bots(count=3, script="rename")
        data = json.loads(json.dumps(report.to_dict()))
        self.assertEqual((data["ok"], data["failed"], data["success"]), (3, 0, True))
        self.assertEqual(data["latency"]["rename"]["count"], 3)
        self.assertIn("p99_ms", data["latency"]["login"])
        self.assertIn("logins/s", report.format_table())

    async def test_bots_spread_over_every_login_address(self) -> None:
        other = FakeLoginFactory(self.gateway)
        other_port = self.listen(other)
        report = await self.run_bots(count=6, logins=[("127.0.0.1", self.login_port),
                                                      ("127.0.0.1", other_port)])
        self.assertEqual(report.ok, 6)
        self.assertEqual((len(self.login.requests), len(other.requests)), (3, 3))

    async def test_concurrency_bounds_bots_in_their_login_phase(self) -> None:
        self.gateway.auth_delay = 0.02
        report = await self.run_bots(count=12, concurrency=3)
        self.assertEqual(report.ok, 12)
        self.assertLessEqual(self.gateway.max_auths_in_flight, 3)
        self.assertGreaterEqual(self.gateway.max_auths_in_flight, 2)

    async def test_rate_spaces_bot_starts(self) -> None:
        started = time.monotonic()
        report = await self.run_bots(count=5, rate=20.0)
        self.assertEqual(report.ok, 5)
        self.assertGreaterEqual(time.monotonic() - started, 0.18)


class FailureTests(BotTestCase):
    async def test_bad_token_fails_every_bot_with_the_reason_and_an_example(self) -> None:
        report = await self.run_bots(count=4, dev_sdk_secret="wrong-secret")
        self.assertEqual((report.ok, report.failed, report.logins), (0, 4, 0))
        self.assertEqual(list(report.failures), ["login: BAD_TOKEN"])
        group = report.failures["login: BAD_TOKEN"]
        self.assertEqual(group.count, 4)
        self.assertEqual(len(group.examples), 3)
        self.assertIn("BAD_TOKEN", group.examples[0])
        self.assertEqual(report.exit_status, 1)
        self.assertEqual(report.retries, 0)

    async def test_retry_later_is_retried_and_counted(self) -> None:
        self.login.mode = "retry_once"
        report = await self.run_bots(count=5)
        self.assertEqual((report.ok, report.failed), (5, 0), report.format_table())
        self.assertEqual(report.retries, 5)
        self.assertEqual(len(self.login.requests), 10)
        self.assertEqual(report.exit_status, 0)

    async def test_retries_are_bounded(self) -> None:
        self.login.mode = "retry_always"
        report = await self.run_bots(count=3, retries=2)
        self.assertEqual(report.failed, 3)
        self.assertEqual(report.retries, 6)
        self.assertEqual(report.failures["login: RETRY_LATER"].count, 3)
        self.assertIn("after 2 retries", report.failures["login: RETRY_LATER"].examples[0])

    async def test_silent_login_node_fails_bots_within_the_timeout(self) -> None:
        self.login.mode = "silent"
        started = time.monotonic()
        report = await self.run_bots(count=3, timeout=0.3)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(report.failed, 3)
        self.assertEqual(report.failures["login: timeout"].count, 3)

    async def test_silent_gateway_fails_auth_within_the_timeout(self) -> None:
        self.gateway.silent_auth = True
        report = await self.run_bots(count=2, timeout=0.3)
        self.assertEqual(report.failures["auth: timeout"].count, 2)
        self.assertEqual(report.logins, 0)

    async def test_refused_connection_is_a_connect_failure(self) -> None:
        [port] = free_ports(1)
        report = await self.run_bots(count=2, logins=[("127.0.0.1", port)])
        self.assertEqual(report.failures["connect: connection refused"].count, 2)

    async def test_taken_name_fails_the_rename_step(self) -> None:
        # As if another run had drawn the same run token: every name is taken already.
        swarm = self.swarm(count=2, script="rename")
        self.gateway.names.update(
            BotIdentity(i, "x", 1, swarm.run_token).unique_name() for i in range(2))
        report = await swarm.run()
        self.assertEqual(report.failures["rename: NAME_TAKEN"].count, 2)
        self.assertEqual(report.logins, 2)

    async def test_gateway_closing_a_held_session_fails_the_bot(self) -> None:
        swarm = self.swarm(count=2, hold=None, heartbeat=5.0)
        report = await swarm.login()
        self.assertEqual(report.online, 2)
        for connection in list(self.gateway.connections):
            assert connection.transport is not None
            connection.transport.loseConnection()
        await wait_for(lambda: swarm.recorder.failed == 2, 2.0, "both bots failed")
        report = await swarm.release()
        self.assertEqual(report.failures["session: connection lost"].count, 2)
        self.assertEqual(report.exit_status, 1)


class KickTests(BotTestCase):
    async def test_kick_notify_is_recorded_and_fails_the_run_unless_expected(self) -> None:
        self.gateway.kick_after_auth = True
        report = await self.run_bots(count=3, hold=5.0)
        self.assertEqual((report.ok, report.failed, report.kicked), (0, 0, 3))
        self.assertEqual(report.kicks, {"KICK_LOGIN_ELSEWHERE": 3})
        self.assertEqual(report.exit_status, 1)
        self.assertLess(report.elapsed, 4.0)  # the kick ended the hold

    async def test_expected_kicks_are_not_failures(self) -> None:
        self.gateway.kick_after_auth = True
        report = await self.run_bots(count=3, hold=5.0, expect_kicks=True)
        self.assertEqual(report.kicked, 3)
        self.assertEqual(report.exit_status, 0)

    async def test_kick_during_a_held_session_ends_it(self) -> None:
        swarm = self.swarm(count=4, hold=None)
        await swarm.login()
        victim = next(iter(self.gateway.connections))
        victim.kick(pb.KickReason.KICK_GM)
        await wait_for(lambda: swarm.recorder.kicked == 1, 2.0, "the kick recorded")
        report = await swarm.release()
        self.assertEqual((report.ok, report.kicked, report.failed), (3, 1, 0))
        self.assertEqual(report.kicks, {"KICK_GM": 1})


class HoldTests(BotTestCase):
    async def test_held_sessions_heartbeat_until_released(self) -> None:
        swarm = self.swarm(count=30, hold=None, heartbeat=0.05)
        report = await swarm.login()
        self.assertEqual((report.online, report.logins, report.ok), (30, 30, 0))
        self.assertFalse(report.finished)
        self.assertEqual(len(self.gateway.connections), 30)

        def answered() -> int:
            stats = swarm.snapshot().latency.get("heartbeat")
            return stats.count if stats else 0

        await wait_for(lambda: answered() >= 90, 3.0, "three heartbeats per bot answered")
        self.assertGreaterEqual(self.gateway.heartbeats, 90)
        report = await swarm.release()
        self.assertEqual((report.ok, report.failed, report.online), (30, 0, 0))
        self.assertTrue(report.finished)
        self.assertGreaterEqual(report.latency["heartbeat"].count, 90)
        await wait_for(lambda: not self.gateway.connections, 2.0, "gateway connections closed")

    async def test_hold_keeps_each_session_for_its_duration(self) -> None:
        started = time.monotonic()
        report = await self.run_bots(count=5, hold=0.4, heartbeat=0.1)
        self.assertGreaterEqual(time.monotonic() - started, 0.4)
        self.assertEqual(report.ok, 5)
        self.assertGreater(self.gateway.heartbeats, 5)

    async def test_stop_cancels_bots_not_started_and_releases_the_rest(self) -> None:
        self.gateway.auth_delay = 0.05
        swarm = self.swarm(count=50, concurrency=2, hold=None)
        swarm.start()
        await sleep(0.05)
        swarm.stop()
        report = await swarm.run()
        self.assertTrue(report.interrupted)
        self.assertTrue(report.finished)
        self.assertGreater(report.ok, 0)
        self.assertEqual(report.ok + report.failed, 50)
        self.assertEqual(report.failures["not started: interrupted"].count, 50 - report.ok)
        self.assertEqual(report.exit_status, 1)


class CommandLineTests(BotTestCase):
    async def test_successful_run_exits_zero_and_prints_the_summary(self) -> None:
        json_path = os.path.abspath(self.mktemp())
        status, out, err = await self.cli("--dev-sdk-secret", SDK_SECRET, "--count", "5",
                                          "--script", "rename", "--json", json_path)
        self.assertEqual(status, 0, out + err)
        self.assertIn("ok: 5", out)
        self.assertIn("rename", out)
        self.assertIn("logins/s", out)
        self.assertIn("] 5/5", err)  # the final progress line
        data = json.loads(Path(json_path).read_text())
        self.assertEqual((data["ok"], data["options"]["count"]), (5, 5))

    async def test_bad_token_exits_one_and_names_the_reason(self) -> None:
        status, out, err = await self.cli("--dev-sdk-secret", "wrong", "--count", "3",
                                          "--quiet")
        self.assertEqual(status, 1, out + err)
        self.assertEqual(out, "")
        self.assertIn("3 failed", err)
        status, out, err = await self.cli("--dev-sdk-secret", "wrong", "--count", "3")
        self.assertEqual(status, 1)
        self.assertIn("login: BAD_TOKEN", out)

    def test_bad_usage_exits_two(self) -> None:
        for argv in (["--count", "1"],                                   # nowhere to log in
                     ["--login", "127.0.0.1:1", "--count", "1"],         # no secret
                     ["--login", "nohost", "--count", "1", "--dev-sdk-secret", "s"],
                     ["--login", "127.0.0.1:1", "--count", "0", "--dev-sdk-secret", "s"],
                     ["--login", "127.0.0.1:1", "--count", "1", "--dev-sdk-secret", "s",
                      "--script", "dance"],
                     ["--config", "/nonexistent.toml", "--count", "1"]):
            with self.assertRaises(SystemExit) as caught, redirect_stderr(io.StringIO()):
                main(argv)
            self.assertEqual(caught.exception.code, 2, argv)

    def test_config_supplies_login_addresses_and_the_dev_secret(self) -> None:
        config = str(REPO / "etc/cluster.toml")
        login = tomllib.loads(Path(config).read_text())["login"]
        parser = build_parser()
        options = options_from_args(parser.parse_args(
            ["--config", config, "--count", "2", "--hold", "inf"]), parser)
        self.assertEqual(options.logins, (("127.0.0.1", 7401),))
        self.assertEqual(options.dev_sdk_secret, login["dev_sdk_secret"])
        self.assertIsNone(options.hold)
        options = options_from_args(parser.parse_args(
            ["--config", config, "--count", "2", "--login", "10.0.0.1:1,10.0.0.2:2",
             "--dev-sdk-secret", "cli"]), parser)
        self.assertEqual(options.logins, (("10.0.0.1", 1), ("10.0.0.2", 2)))
        self.assertEqual(options.dev_sdk_secret, "cli")


class PartsTests(unittest.TestCase):
    def test_options_from_a_cluster_config_aim_at_its_login_nodes(self) -> None:
        config = load_config(REPO / "etc/cluster.toml")
        options = BotOptions.from_config(config, count=3, script="rename,heartbeat")
        self.assertEqual(options.logins, (("127.0.0.1", 7401),))
        self.assertEqual(options.dev_sdk_secret, config.raw["login"]["dev_sdk_secret"])
        self.assertEqual(options.script, ("rename", "heartbeat"))

    def test_script_expands_repeats_and_refuses_unknown_actions(self) -> None:
        self.assertEqual(parse_script("rename, heartbeat*2"), ("rename", "heartbeat", "heartbeat"))
        self.assertEqual(parse_script(""), ())
        for bad in ("dance", "rename*0", "rename*x", "heartbeat*5000"):
            self.assertRaises(ValueError, parse_script, bad)

    def test_login_addresses_parse(self) -> None:
        self.assertEqual(parse_logins("a:1, b:2,[::1]:3"), (("a", 1), ("b", 2), ("::1", 3)))
        for bad in ("a", "a:x", "a:0", "a:70000", ""):
            self.assertRaises(ValueError, parse_logins, bad)

    def test_names_are_unique_per_index_and_within_the_length_limit(self) -> None:
        names = {BotIdentity(i, "o", 1, "0123456789abcdef").unique_name()
                 for i in (0, 1, 10, 11, 110, 999_999_999)}
        self.assertEqual(len(names), 6)
        self.assertTrue(all(2 <= len(n) <= 14 for n in names))

    def test_percentiles_use_nearest_rank(self) -> None:
        ordered = [float(i) for i in range(1, 101)]
        self.assertEqual((percentile(ordered, 50), percentile(ordered, 99),
                          percentile(ordered, 100)), (50.0, 99.0, 100.0))
        # rl-bot and the benches share the function: of 100 samples p99 is not the max
        self.assertIs(percentile, shared_percentile)
        rpc_bench = _bench_module("rpc")
        self.assertEqual(rpc_bench.pct(list(reversed(ordered)), 99), 99.0)
        self.assertIsNone(rpc_bench.pct([], 99))
        self.assertIs(_bench_module("storage").percentile, shared_percentile)
        self.assertEqual((percentile([5.0], 0), percentile([3.0, 1.0, 2.0], 50)), (5.0, 2.0))
        self.assertEqual(percentile([float(i) for i in range(1000)], 99), 989.0)
        self.assertRaises(ValueError, percentile, [], 50)
        self.assertRaises(ValueError, percentile, [1.0], 101)
        stats = LatencyStats.of([0.003, 0.001, 0.002])
        self.assertEqual((stats.count, stats.p50, stats.max), (3, 0.002, 0.003))

    def test_options_refuse_inconsistent_values(self) -> None:
        base: dict[str, Any] = {"logins": [("h", 1)], "count": 1, "dev_sdk_secret": "s"}
        bads: list[dict[str, Any]] = [
            {"count": 0}, {"dev_sdk_secret": ""}, {"logins": []}, {"timeout": 0},
            {"hold": -1.0}, {"openid_prefix": "a-b"}, {"script": ("dance",)}, {"rate": 0.0}]
        for bad in bads:
            self.assertRaises(ValueError, BotOptions, **{**base, **bad})

