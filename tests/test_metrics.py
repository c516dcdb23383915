"""The metrics every node serves: bounded labels, values created at 0, per-peer latency
without the method label, and what master exports about other nodes."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.trial import unittest

from rltwist.cluster import CallTimeout, Service, handler
from rltwist.cluster.metrics import PeerCalls
from rltwist.launcher import free_ports
from tests.util import make_cluster


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of *registry* by (name, sorted labels)."""
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def named(found: dict[Any, float], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


class Echo(Service):
    name = "echo"

    def __init__(self) -> None:
        self.hold: list[defer.Deferred[None]] = []

    @handler
    def ping(self, value: Any) -> Any:
        return value

    @handler
    def other(self) -> int:
        return 1

    @handler
    async def never(self) -> None:
        d: defer.Deferred[None] = defer.Deferred()
        self.hold.append(d)
        await d


class PeerLatency(unittest.TestCase):
    """Outgoing call latency per peer: one p99 per peer, whatever the methods called;
    calls that time out count as taking their timeout."""

    timeout = 30

    def setUp(self) -> None:
        pa, pb_ = free_ports(2)
        self.echo = Echo()
        self.a = make_cluster("a", pa, {"b": ("127.0.0.1", pb_)})
        self.b = make_cluster("b", pb_, {"a": ("127.0.0.1", pa)})
        self.b.register(self.echo)
        self.a.startService()
        self.b.startService()
        self.addCleanup(self.a.stopService)
        self.addCleanup(self.b.stopService)
        self.addCleanup(lambda: [d.callback(None) for d in self.echo.hold if not d.called])
        self.registry = CollectorRegistry()
        self.registry.register(self.a.collector)

    async def test_one_p99_per_peer_without_method(self) -> None:
        for _ in range(20):
            await self.a.call("b", "echo", "ping", 1)
        for _ in range(10):
            await self.a.call("b", "echo", "other")
        with self.assertRaises(CallTimeout):
            await self.a.call("b", "echo", "never", timeout=0.3)
        found = samples(self.registry)
        self.assertEqual(self.a.stats.peers["b"].calls, 31)
        self.assertFalse([n for n, _ in found if n.startswith("rl_cluster_peer_")
                          and n != "rl_cluster_peer_call_p99_seconds"])
        p99 = named(found, "rl_cluster_peer_call_p99_seconds")
        self.assertEqual(list(p99), [(("peer", "b"),)])
        # 1 of 31 calls took its 0.3 s timeout: that is above the 99th percentile's rank
        # (30.69 of 31), so p99 lands in the bucket holding 0.3 s
        self.assertGreaterEqual(p99[(("peer", "b"),)], 0.25)
        self.assertLessEqual(p99[(("peer", "b"),)], 0.5)

    async def test_idle_peer_has_link_state_but_no_queue_series(self) -> None:
        await self.a.call("b", "echo", "ping", 1)
        found = samples(self.registry)
        self.assertEqual(named(found, "rl_cluster_link_up"), {(("peer", "b"),): 1.0})
        # zero backlogs are not served per peer (420 peers at 100 regions): only totals
        for name in ("rl_cluster_queued_messages", "rl_cluster_outbound_bytes",
                     "rl_cluster_pending_calls"):
            self.assertEqual(named(found, name), {}, name)
            self.assertEqual(named(found, name + "_all_peers"), {(): 0.0}, name)


class PeerWindow(unittest.TestCase):
    """The p99 covers the last one to two windows: old latencies leave it."""

    def test_p99_forgets_latencies_older_than_two_windows(self) -> None:
        p = PeerCalls()
        p.rotate(0.0)
        for _ in range(100):
            p.observe(2.0)
        self.assertTrue(2.0 <= p.p99() <= 2.5, p.p99())  # in the (1, 2.5] bucket
        p.rotate(31.0)  # the slow window is now the previous one: still counted
        for _ in range(100):
            p.observe(0.0004)
        self.assertGreater(p.p99(), 1.0)
        p.rotate(62.0)  # two windows later the slow calls are gone
        for _ in range(100):
            p.observe(0.0004)
        self.assertLess(p.p99(), 0.001)
        self.assertEqual(p.calls, 300)

    def test_no_calls_in_the_window_means_no_p99(self) -> None:
        p = PeerCalls()
        p.rotate(0.0)
        p.observe(0.01)
        p.rotate(31.0)
        p.rotate(62.0)
        self.assertIsNone(p.p99())



class RoleNodeMetrics(unittest.TestCase):
    """Online players per birth region, codes and reasons at 0 from the start, free-text
    reasons folded into ``other``."""

    def setUp(self) -> None:
        from rltwist.nodes.role.metrics import RoleMetrics, regions_of

        self.players: dict[int, Any] = {}
        self.registry = CollectorRegistry()
        names = ["master", "map1", "mail1", "rolecity2", "map3", "role1", "login1"]
        self.metrics = RoleMetrics(self.registry, lambda: self.players,
                                   lambda: regions_of(names))

    def test_online_per_region_lists_every_configured_region(self) -> None:
        for seq in range(5):
            self.players[seq << 16 | 1] = object()
        self.players[7 << 16 | 3] = object()
        found = samples(self.registry)
        self.assertEqual(named(found, "rl_role_online_players_by_region"),
                         {(("region", "1"),): 5.0, (("region", "2"),): 0.0,
                          (("region", "3"),): 1.0})
        self.assertEqual(named(found, "rl_role_online_players"), {(): 6.0})

    def test_a_region_not_in_the_name_table_counts_as_other(self) -> None:
        self.players[1 << 16 | 9] = object()
        region = named(samples(self.registry), "rl_role_online_players_by_region")
        self.assertEqual(region[(("region", "other"),)], 1.0)

    def test_codes_reasons_and_steps_exist_at_zero(self) -> None:
        from rltwist.metrics import AUTH_CODES, AUTH_STEPS, kick_names
        from rltwist.nodes.role.metrics import LOGOUT_REASONS

        found = samples(self.registry)
        self.assertEqual(set(named(found, "rl_role_auth_total")),
                         {(("outcome", c),) for c in AUTH_CODES})
        self.assertEqual(set(named(found, "rl_role_kicks_total")),
                         {(("reason", k),) for k in kick_names()})
        self.assertEqual(set(named(found, "rl_role_logouts_total")),
                         {(("reason", r),) for r in LOGOUT_REASONS})
        self.assertEqual({dict(labels)["step"] for labels in
                          named(found, "rl_role_auth_step_seconds_count")}, set(AUTH_STEPS))
        self.assertTrue(all(v == 0 for (n, _), v in found.items() if n.endswith("_total")))

    def test_free_text_reasons_and_unknown_kick_codes_do_not_grow_labels(self) -> None:
        for i in range(100):
            self.metrics.logouts.labels(f"kicked by script #{i}").inc()
            self.metrics.kicked(1000 + i)
        found = samples(self.registry)
        self.assertEqual(named(found, "rl_role_logouts_total")[(("reason", "other"),)], 100)
        self.assertEqual(named(found, "rl_role_kicks_total")[(("reason", "other"),)], 100)
        self.metrics.kicked(4)
        self.assertEqual(named(samples(self.registry), "rl_role_kicks_total")
                         [(("reason", "KICK_GM"),)], 1)


class LoginNodeMetrics(unittest.TestCase):
    """A login node's result codes and steps exist at 0 before the first login."""

    def test_codes_and_steps_at_zero(self) -> None:
        from pathlib import Path

        from rltwist.config import load_config
        from rltwist.launcher import local_config, render_config
        from rltwist.metrics import LOGIN_CODES, LOGIN_STEPS
        from rltwist.nodes.common.node import Node
        from rltwist.nodes.login.service import build

        path = Path(self.mktemp() + ".toml").absolute()
        path.write_text(render_config(local_config(["login1"], overrides={
            "hotreload": {"hotfix_interval": 0, "config_interval": 0}})))
        config = load_config(str(path))
        node = Node(config, config.node("login1"))  # built, never started
        build(node)
        found = samples(node.registry)
        self.assertEqual(set(named(found, "rl_login_total")),
                         {(("outcome", c),) for c in LOGIN_CODES})
        self.assertEqual({dict(labels)["step"] for labels in
                          named(found, "rl_login_step_seconds_count")}, set(LOGIN_STEPS))


class RedisCommandLatency(unittest.TestCase):
    """Each Redis round trip is timed under its command name, scripts under their own
    name; failures are counted by kind; raw commands we do not know count as other."""

    timeout = 30

    async def setUp(self) -> None:
        from twisted.internet import reactor

        from rltwist.redis import OnlineState, RedisClient, RedisServer
        from rltwist.redis.metrics import RedisMetrics

        self.server = RedisServer(reactor=reactor)
        self.addCleanup(lambda: defer.ensureDeferred(self.server.stop()))
        await self.server.start()
        self.registry = CollectorRegistry()
        self.client = RedisClient(self.server.url, prefix="m:", reactor=reactor,
                                  metrics=RedisMetrics(self.registry))
        self.addCleanup(lambda: defer.ensureDeferred(self.client.disconnect()))
        await self.client.connect()
        self.state = OnlineState(self.client)

    async def test_commands_and_scripts_are_timed_by_name(self) -> None:
        from rltwist.redis import RedisCommandError

        await self.client.set("k", "v")
        await self.client.get("k")
        await self.state.get_available()
        await self.state.login_begin("openid-1", 1000)
        await self.client.execute("DBSIZE")
        with self.assertRaises(RedisCommandError):
            await self.client.execute("NOSUCHCOMMAND")
        found = samples(self.registry)
        counts = {dict(labels)["command"]: v for labels, v in
                  named(found, "rl_redis_command_seconds_count").items()}
        self.assertEqual(counts.get("SET"), 1)
        self.assertEqual(counts.get("GET"), 2)  # ours and get_available's
        self.assertEqual(counts.get("login_begin"), 1)
        self.assertEqual(counts.get("other"), 2)
        self.assertNotIn("EVALSHA", counts)
        errors = named(found, "rl_redis_errors_total")
        self.assertEqual(errors[(("kind", "RedisCommandError"),)], 1)
        self.assertEqual(errors[(("kind", "RedisTimeout"),)], 0)
