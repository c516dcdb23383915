"""The cluster layer between two in-process nodes over real loopback TCP."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from rltwist.cluster import (
    BadArguments,
    CallTimeout,
    Cluster,
    LinkLost,
    NodeUnreachable,
    RemoteError,
    Service,
    UnknownMethod,
    UnknownNode,
    UnknownService,
    handler,
)
from rltwist.launcher import free_ports
from tests.util import RawClient, make_cluster, wait_for


class Echo(Service):
    name = "echo"

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.calls = 0
        self.timers: list[Any] = []

    @handler
    async def ping(self, value: Any) -> Any:
        self.calls += 1
        return value

    @handler
    def note(self, value: Any) -> None:
        self.seen.append(value)

    @handler
    async def slow(self, seconds: float) -> str:
        d: defer.Deferred[None] = defer.Deferred()
        self.timers.append(reactor.callLater(seconds, d.callback, None))
        await d
        return "done"

    def cancel_timers(self) -> None:
        for t in self.timers:
            if t.active():
                t.cancel()

    @handler
    async def fail(self) -> None:
        raise KeyError("no such player")

    @handler
    def mutate(self, data: dict[str, Any]) -> dict[str, Any]:
        data["touched"] = True
        return data


class TwoNodes(unittest.TestCase):
    """Node "a" calls node "b" which serves Echo."""

    timeout = 60

    def setUp(self) -> None:
        self.port_a, self.port_b = free_ports(2)
        self.echo_b = Echo()
        self.a = self.node("a", self.port_a, {"b": ("127.0.0.1", self.port_b)})
        self.b = self.node("b", self.port_b, {"a": ("127.0.0.1", self.port_a)}, self.echo_b)

    def node(self, name: str, port: int, addresses: dict[str, tuple[str, int]],
             *services: Service, start: bool = True, **kw: Any) -> Cluster:
        c = make_cluster(name, port, addresses, **kw)
        for s in services:
            c.register(s)
            if isinstance(s, Echo):
                self.addCleanup(s.cancel_timers)
        if start:
            c.startService()
        self.addCleanup(lambda: c.running and c.stopService())
        return c

    async def test_call_returns_the_remote_result(self) -> None:
        self.assertEqual(await self.a.call("b", "echo", "ping", {"x": [1, b"\x00", "é"]}),
                         {"x": [1, b"\x00", "é"]})

    async def test_send_is_delivered_in_order(self) -> None:
        for i in range(5000):
            self.a.send("b", "echo", "note", i)
        # a call travels on the same link behind the sends, so once it is answered
        # every send before it has been handled.
        await self.a.call("b", "echo", "ping", None)
        self.assertEqual(self.echo_b.seen, list(range(5000)))

    async def test_messages_sent_before_the_peer_starts_are_delivered_when_it_starts(self) -> None:
        port_c = free_ports(1)[0]
        self.a.set_address("c", "127.0.0.1", port_c)
        echo_c = Echo()
        self.a.send("c", "echo", "note", "early-1")
        pending = self.a.call("c", "echo", "ping", "early-call")
        self.a.send("c", "echo", "note", "early-2")
        await wait_for(lambda: self.a.senders["c"].connect_failures >= 2, 10,
                       "a to fail connecting to the absent peer twice")
        self.assertFalse(pending.called)
        self.node("c", port_c, {}, echo_c)
        self.assertEqual(await pending, "early-call")
        await self.a.call("c", "echo", "ping", None)
        self.assertEqual(echo_c.seen, ["early-1", "early-2"])

    async def test_call_to_a_node_that_never_comes_up_fails_within_the_bound(self) -> None:
        a2 = self.node("a2", free_ports(1)[0], {"ghost": ("127.0.0.1", free_ports(1)[0])},
                       unreachable_after=1.0)
        started = time.monotonic()
        with self.assertRaises(NodeUnreachable) as cm:
            await a2.call("ghost", "echo", "ping", 1)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 3.0)
        self.assertIn("ghost.echo.ping", str(cm.exception))
        a2.send("ghost", "echo", "note", 1)
        await wait_for(lambda: a2.stats.dropped("ghost", "unreachable") == 1, 5,
                       "the undeliverable send to be counted as dropped")

    async def test_unknown_node_fails_at_once(self) -> None:
        with self.assertRaises(UnknownNode):
            await self.a.call("nowhere", "echo", "ping", 1)
        self.assertRaises(UnknownNode, self.a.send, "nowhere", "echo", "note", 1)

    async def test_remote_exception_names_node_service_and_method(self) -> None:
        with self.assertRaises(RemoteError) as cm:
            await self.a.call("b", "echo", "fail")
        e = cm.exception
        self.assertEqual((e.node, e.service, e.method, e.kind), ("b", "echo", "fail", "KeyError"))
        self.assertIn("no such player", str(e))
        self.flushLoggedErrors(KeyError)

    async def test_unknown_service_and_method_are_typed(self) -> None:
        with self.assertRaises(UnknownService):
            await self.a.call("b", "nosuch", "ping", 1)
        with self.assertRaises(UnknownMethod):
            await self.a.call("b", "echo", "nosuch", 1)

    async def test_local_and_remote_calls_share_copying_and_error_semantics(self) -> None:
        self.a.register(Echo())
        for node in ("a", "b"):
            data = {"k": (1, 2)}
            result = await self.a.call(node, "echo", "mutate", data)
            self.assertEqual(result, {"k": [1, 2], "touched": True}, node)
            self.assertNotIn("touched", data, f"{node}: caller's argument was mutated")
            with self.assertRaises(RemoteError) as cm:
                await self.a.call(node, "echo", "fail")
            self.assertEqual((cm.exception.node, cm.exception.kind), (node, "KeyError"))
            with self.assertRaises(UnknownMethod):
                await self.a.call(node, "echo", "nosuch")
            with self.assertRaises(BadArguments):
                await self.a.call(node, "echo", "ping", object())
        self.flushLoggedErrors(KeyError)

    async def test_call_times_out_with_a_typed_error(self) -> None:
        started = time.monotonic()
        with self.assertRaises(CallTimeout) as cm:
            await self.a.call("b", "echo", "slow", 5.0, timeout=0.3)
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(cm.exception.method, "slow")

    async def test_one_megabyte_round_trip(self) -> None:
        blob = bytes(range(256)) * 4096
        self.assertEqual(await self.a.call("b", "echo", "ping", blob), blob)
        text = "x" * (1024 * 1024)
        self.assertEqual(await self.a.call("b", "echo", "ping", [text, text]), [text, text])

    async def test_ten_thousand_concurrent_calls_are_all_answered(self) -> None:
        results = await defer.gatherResults(
            [self.a.call("b", "echo", "ping", i) for i in range(10_000)])
        self.assertEqual(results, list(range(10_000)))

    async def test_wrong_secret_gets_nothing_invoked(self) -> None:
        intruder = self.node("intruder", free_ports(1)[0], {"b": ("127.0.0.1", self.port_b)},
                             secret=b"not-the-cluster-secret", unreachable_after=1.0)
        intruder.send("b", "echo", "note", "should never arrive")
        with self.assertRaises(NodeUnreachable):
            await intruder.call("b", "echo", "ping", "hello")
        self.assertGreaterEqual(self.b.stats.auth_failures, 1)
        self.assertEqual(self.echo_b.calls, 0)
        self.assertEqual(self.echo_b.seen, [])
        # and the real cluster still works
        self.assertEqual(await self.a.call("b", "echo", "ping", 1), 1)

    async def test_a_stranger_never_becomes_a_link_and_garbage_closes_only_its_own(self) -> None:
        self.assertEqual(await self.a.call("b", "echo", "ping", 1), 1)
        links_before = set(self.b.agent_links)  # the objects: a's authenticated link
        sender_link = self.a.senders["b"].link
        self.assertEqual(len(links_before), 1)

        stranger = RawClient()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_b, timeout=5),
                              stranger)
        await wait_for(lambda: stranger.received, 5, "b to greet the stranger (HELLO)")
        # b holds an accepted connection from the stranger now, not an agent link
        self.assertEqual(set(self.b.agent_links), links_before)

        stranger.transport.write(b"\xc1" * 64 + b"GET / HTTP/1.1\r\n\r\n")
        await stranger.lost.addTimeout(5, reactor)  # b hung up on the stranger
        self.assertEqual(self.b.stats.link_closes.get("protocol violation"), 1,
                         self.b.stats.link_closes)
        # a's link was not touched: the same objects on both ends, no close counted
        self.assertEqual(set(self.b.agent_links), links_before)
        self.assertIs(self.a.senders["b"].link, sender_link)
        self.assertEqual(self.a.stats.link_closes, {})
        self.assertEqual(await self.a.call("b", "echo", "ping", 2), 2)
        self.assertEqual(set(self.b.agent_links), links_before)

    async def test_name_table_update_retargets_a_live_sender(self) -> None:
        self.assertEqual(await self.a.call("b", "echo", "ping", 1), 1)
        # "b" restarts on another port
        await self.b.stopService()
        new_port = free_ports(1)[0]
        echo2 = Echo()
        self.node("b", new_port, {}, echo2)
        self.a.set_address("b", "127.0.0.1", new_port)
        self.assertEqual(await self.a.call("b", "echo", "ping", "moved"), "moved")
        self.assertEqual(echo2.calls, 1)

    async def test_in_flight_calls_fail_promptly_when_the_link_breaks(self) -> None:
        d = self.a.call("b", "echo", "slow", 30.0)
        await wait_for(lambda: self.b.agent_links, 5, "b to accept a's link")
        started = time.monotonic()
        for link in list(self.b.agent_links):
            link.transport.abortConnection()
        with self.assertRaises(LinkLost):
            await d
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(await self.a.call("b", "echo", "ping", "again"), "again")

    async def test_removed_node_fails_its_pending_calls(self) -> None:
        d = self.a.call("b", "echo", "slow", 30.0)
        await wait_for(lambda: self.b.agent_links, 5, "b to accept a's link")
        self.a.remove_node("b")
        with self.assertRaises(UnknownNode):
            await d
        with self.assertRaises(UnknownNode):
            await self.a.call("b", "echo", "ping", 1)

    async def test_metrics_count_calls_and_latency(self) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        await self.a.call("b", "echo", "ping", 1)
        registry = CollectorRegistry()
        registry.register(self.a.collector)
        text = generate_latest(registry).decode()
        self.assertIn('rl_cluster_calls_out_total{method="ping",service="echo"} 1.0', text)
        self.assertIn('rl_cluster_call_seconds_count{method="ping",service="echo"} 1.0', text)
        self.assertIn('rl_cluster_link_up{peer="b"} 1.0', text)


class StoppedCluster(unittest.TestCase):
    def test_stop_fails_pending_calls(self) -> None:
        c = make_cluster("solo", free_ports(1)[0], {"x": ("127.0.0.1", free_ports(1)[0])})
        c.startService()
        d = c.call("x", "svc", "m")
        c.stopService()
        f = self.failureResultOf(d, NodeUnreachable)
        self.assertIn("solo is stopping", str(f.value))

