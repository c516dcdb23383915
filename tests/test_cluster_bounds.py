"""Bounds of the cluster layer: outbound bytes, liveness pings, deadlines, message size,
metric labels, stopping, lost sends and error types (issue 11, items 1-8).

Timing-dependent cases drive one sender over a fake transport on a fake clock: ``FakePeer``
plays the other node's side of the wire (handshake, reading frames, answering). Cases that
need real encoding and dispatch on both ends run two clusters over loopback TCP; the
cases that cross a process boundary (a SIGSTOPped node) are in tests/test_node_process.py.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from rltwist.cluster import (
    BadArguments,
    CallTimeout,
    Cluster,
    LinkLost,
    MessageTooLarge,
    NodeUnreachable,
    OutboundFull,
    RemoteError,
    Service,
    UnknownMethod,
    UnknownService,
    handler,
)
from rltwist.cluster.link import (
    AUTH,
    CALL,
    ERROR,
    HELLO,
    OK,
    PING,
    PONG,
    REPLY,
    SEND,
    AgentLink,
    mac,
    pack,
    unpack,
)
from rltwist.launcher import free_ports
from tests.util import SECRET, settings, wait_for

MiB = 1024 * 1024


class PipeTransport(StringTransport):
    """A StringTransport that treats a pull producer as Twisted's TCP transport does: it
    asks for data when the producer is registered and each time its buffer drains (here:
    when the test calls ``drain``)."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.producer is not None and not self.streaming:
            self.producer.resumeProducing()
        return data


class TcpLikeTransport(PipeTransport):
    """A PipeTransport that, like Twisted's TCP transport, exposes what it still holds
    (``dataBuffer``/``offset``/``_tempDataLen``) and can hand bytes to the "kernel" without
    ever draining completely, as under sustained load."""

    dataBuffer = b""
    offset = 0

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    @property
    def _tempDataLen(self) -> int:
        return len(self.value()) - self.sent

    def send_all_but(self, keep: int) -> None:
        self.sent = max(self.sent, len(self.value()) - keep)


class FakePeer:
    """Node b's end of the one link node a's sender opened on a MemoryReactorClock."""

    def __init__(self, clock: MemoryReactorClock, name: str = "b",
                 transport: PipeTransport | None = None) -> None:
        _, _, factory, _, _ = clock.tcpClients[-1]
        self.link = factory.buildProtocol(None)
        self.transport = transport if transport is not None else PipeTransport()
        self.link.makeConnection(self.transport)
        self.link.dataReceived(pack([HELLO, name, os.urandom(16)]))
        kind, caller, nonce, _ = unpack(self.transport.value())
        assert kind == AUTH, kind
        self.transport.clear()
        self.link.dataReceived(pack([OK, mac(SECRET, b"A", nonce, name, caller)]))
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def read(self) -> list[Any]:
        """Everything written since the last read; the transport reports itself drained."""
        self._unpacker.feed(self.transport.drain())
        return list(self._unpacker)

    def answer(self, frames: list[Any]) -> None:
        """Reply to every call in *frames* with its argument and to every ping with a pong."""
        out = []
        for f in frames:
            if f[0] == CALL:
                out.append(pack([REPLY, f[1], f[4][0] if f[4] else None]))
            elif f[0] == PING:
                out.append(pack([PONG, f[1]]))
        if out:
            self.link.dataReceived(b"".join(out))

    def lose(self) -> None:
        self.link.connectionLost(Failure(ConnectionLost("peer went away")))


class Echo(Service):
    name = "echo"

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.hanging: list[defer.Deferred[Any]] = []

    @handler
    def ping(self, value: Any) -> Any:
        return value

    @handler
    async def aping(self, value: Any) -> Any:
        return value

    @handler
    def note(self, value: Any) -> None:
        self.seen.append(value)

    @handler
    def hang(self) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self.hanging.append(d)
        return d

    @handler
    def blob(self, size: int) -> bytes:
        return b"x" * size

    @handler
    def broken(self, value: Any) -> None:
        raise TypeError(f"handler bug with {value!r}")

    @handler
    async def slow(self, seconds: float) -> str:
        d: defer.Deferred[None] = defer.Deferred()
        call = reactor.callLater(seconds, d.callback, None)
        try:
            await d
        finally:
            if call.active():
                call.cancel()
        return "done"


def scrape(cluster: Cluster) -> str:
    registry = CollectorRegistry()
    registry.register(cluster.collector)
    return generate_latest(registry).decode()


def label_sets(text: str, metric: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith(metric + "{")}


class OneSender(unittest.TestCase):
    """Node a on a fake clock; its sender to b talks to a FakePeer."""

    def make(self, **kw: Any) -> Cluster:
        kw.setdefault("max_outbound", 64 * MiB)
        kw.setdefault("ping_interval", 1.0)
        kw.setdefault("ping_timeout", 5.0)
        cluster_kw = {k: kw.pop(k) for k in ("max_outbound", "ping_interval", "ping_timeout")}
        self.clock = MemoryReactorClock()
        self.a = Cluster("a", settings(**kw), {"b": ("127.0.0.1", 1)}, reactor=self.clock,
                         **cluster_kw)
        self.a.register(Echo())
        self.a.startService()
        self.addCleanup(lambda: self.a.running and self.a.stopService())
        return self.a

    def connect(self, transport: PipeTransport | None = None) -> FakePeer:
        """Open a's link to b (a first message makes the sender connect) and complete it."""
        if "b" not in self.a.senders:
            self.a.send("b", "echo", "note", "hello")
        self.peer = FakePeer(self.clock, transport=transport)
        self.assertEqual(self.a.senders["b"].state, "ready")
        self.peer.read()
        self.clock.advance(0.1)  # the first sweep asks the peer to confirm that send
        self.peer.answer(self.peer.read())
        return self.peer

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    # -- item 1: backpressure ---------------------------------------------------------------

    def test_link_is_a_producer_of_its_transport(self) -> None:
        self.make()
        peer = self.connect()
        self.assertIs(peer.transport.producer, peer.link)
        self.assertFalse(peer.transport.streaming)

    def test_outbound_bytes_to_a_peer_that_does_not_read_are_bounded(self) -> None:
        self.make(max_outbound=1 * MiB)
        peer = self.connect()
        sender = self.a.senders["b"]
        drop_lines: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if "dropped sends" in (event.get("log_format") or ""):
                drop_lines.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        payload = b"p" * 10_000
        for i in range(1000):  # 10 MB offered; the peer reads nothing
            self.a.send("b", "echo", "note", i, payload)
            self.assertLessEqual(len(peer.transport.value()) + sender.queued_bytes,
                                 1 * MiB + 10_100, f"after send {i}")
        self.assertEqual(sender.outbound_bytes(), len(peer.transport.value())
                         + sender.queued_bytes)
        dropped = self.a.stats.dropped("b", "outbound_full")
        self.assertGreater(dropped, 800)
        # one log line for the first drop; the rest are summed up by the next sweep
        self.assertEqual(len(drop_lines), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(drop_lines), 2)
        self.assertEqual(drop_lines[0]["drops"]["outbound_full"]
                         + drop_lines[1]["drops"]["outbound_full"], dropped)
        text = scrape(self.a)
        self.assertIn(f'rl_cluster_sends_dropped_total{{peer="b",reason="outbound_full"}} '
                      f'{float(dropped)}', text)
        # a call that does not fit fails at once, with a type that says it was not sent
        f = self.failureResultOf(self.a.call("b", "echo", "ping", payload), OutboundFull)
        self.assertIsInstance(f.value, NodeUnreachable)
        self.assertIn("b.echo.ping", str(f.value))
        # the peer drains: everything accepted arrives, in order, and calls work again
        seen: list[int] = []
        for _ in range(200):
            frames = peer.read()
            if not frames:
                break
            seen += [f[3][0] for f in frames if f[0] == SEND]
        self.assertEqual(len(seen), 1000 - dropped)
        self.assertEqual(seen, list(range(len(seen))))
        self.assertEqual(sender.outbound_bytes(), 0)
        d = self.a.call("b", "echo", "ping", "after")
        peer.answer(peer.read())
        self.assertEqual(self.successResultOf(d), "after")

    def test_a_busy_link_that_never_drains_completely_is_not_held_back(self) -> None:
        # Twisted reports a drain only when its buffer is empty; under sustained load that
        # may not happen for long while the peer reads everything but the last bytes
        self.make(max_outbound=1 * MiB)
        transport = TcpLikeTransport()
        self.connect(transport)
        sender = self.a.senders["b"]
        for i in range(1000):  # 10 MB, forty times the high-water mark
            self.a.send("b", "echo", "note", i, b"p" * 10_000)
            transport.send_all_but(5_000)
            self.assertEqual(len(sender.queue), 0, f"send {i} was held back")
        self.assertEqual(self.a.stats.dropped("b"), 0)
        # and a peer that really stops reading is still bounded
        for i in range(1000):
            self.a.send("b", "echo", "note", i, b"p" * 10_000)
        self.assertLessEqual(transport._tempDataLen + sender.queued_bytes, 1 * MiB + 10_100)
        self.assertGreater(self.a.stats.dropped("b", "outbound_full"), 800)

    def test_calls_queued_behind_a_full_link_fail_as_unwritten(self) -> None:
        self.make(max_outbound=1 * MiB)
        self.connect()
        for i in range(40):
            self.a.send("b", "echo", "note", i, b"p" * 10_000)
        self.assertGreater(self.a.senders["b"].queued_bytes, 0, "nothing was held back")
        d = self.a.call("b", "echo", "ping", 1, timeout=2.0)
        self.advance(2.2)
        f = self.failureResultOf(d, NodeUnreachable)
        self.assertNotIsInstance(f.value, CallTimeout)
        self.assertNotIsInstance(f.value, LinkLost)

    def test_a_queue_of_timed_out_calls_does_not_block_the_link(self) -> None:
        self.make(max_outbound=1 * MiB)
        peer = self.connect()
        sender = self.a.senders["b"]
        # the transport takes this send and is then just under its high-water mark ...
        self.a.send("b", "echo", "note", b"p" * (sender.high_water - 200))
        self.assertFalse(sender.queue)
        # ... so this call waits in the queue, alone, until it times out there
        d = self.a.call("b", "echo", "ping", b"c" * 300, timeout=0.5)
        self.assertEqual(len(sender.queue), 1)
        self.advance(0.6)
        self.failureResultOf(d, NodeUnreachable)
        peer.read()  # the peer reads; the drained transport finds nothing left to write
        self.assertEqual(sender.outbound_bytes(), 0)
        big = b"b" * (sender.high_water + 1000)  # may only go alone, into a drained transport
        later = self.a.call("b", "echo", "ping", big)
        peer.answer([f for f in peer.read() if f[0] == CALL])
        self.assertEqual(self.successResultOf(later), big)

    # -- item 2: liveness -------------------------------------------------------------------

    def test_an_idle_link_pings_and_a_silent_peer_is_lost(self) -> None:
        self.make(ping_interval=1.0, ping_timeout=3.0, call_timeout=60.0)
        peer = self.connect()
        d = self.a.call("b", "echo", "ping", 1)
        self.assertEqual([f[0] for f in peer.read()], [CALL])
        self.advance(1.2)
        self.assertIn(PING, [f[0] for f in peer.read()], "no ping on an idle link")
        self.advance(3.2)  # no answer at all
        f = self.failureResultOf(d, LinkLost)
        self.assertIn("no answer", str(f.value))
        self.assertTrue(peer.transport.disconnecting)
        self.assertIn('rl_cluster_link_closes_total{reason="peer silent"} 1.0', scrape(self.a))

    def test_a_peer_that_answers_pings_keeps_its_link(self) -> None:
        self.make(ping_interval=1.0, ping_timeout=3.0, call_timeout=60.0)
        peer = self.connect()
        d = self.a.call("b", "echo", "hang")
        d.addErrback(lambda f: f.trap(NodeUnreachable))  # fails when a stops at the end
        pings = 0
        for _ in range(300):  # 30 s
            self.clock.advance(0.1)
            frames = peer.read()
            pings += sum(1 for f in frames if f[0] == PING)
            peer.answer([f for f in frames if f[0] == PING])
        self.assertFalse(d.called)
        self.assertFalse(peer.transport.disconnecting)
        self.assertGreaterEqual(pings, 10)
        self.assertLessEqual(pings, 40)

    # -- item 3: local calls honour their timeout -------------------------------------------

    def test_a_call_to_this_node_times_out(self) -> None:
        self.make()
        echo = self.a.services["echo"]
        d = self.a.call("a", "echo", "hang", timeout=2.0)
        self.assertNoResult(d)
        self.advance(2.1)
        f = self.failureResultOf(d, CallTimeout)
        self.assertEqual((f.value.node, f.value.method), ("a", "hang"))
        echo.hanging[0].callback("too late")  # a late answer goes nowhere, and is counted
        self.assertEqual(self.a.stats.late_replies, 1)
        self.assertEqual(self.successResultOf(self.a.call("a", "echo", "ping", 5)), 5)

    def test_a_call_to_this_node_still_waiting_at_stop_fails(self) -> None:
        self.make()
        d = self.a.call("a", "echo", "hang", timeout=60.0)
        self.a.stopService()
        self.failureResultOf(d, NodeUnreachable)
        self.assertEqual(self.clock.getDelayedCalls(), [], "the deadline timer was left")

    # -- item 6: after stopService ----------------------------------------------------------

    def test_calls_after_stop_fail_at_once_and_nothing_reconnects(self) -> None:
        self.make()
        self.connect()
        self.a.stopService()
        attempts = len(self.clock.tcpClients)
        f = self.failureResultOf(self.a.call("b", "echo", "ping", 1), NodeUnreachable)
        self.assertIn("stopped", str(f.value))
        self.a.send("b", "echo", "note", 1)
        self.advance(30)
        self.assertEqual(len(self.clock.tcpClients), attempts)
        self.assertEqual(self.a.stats.dropped("b", "stopped"), 1)

    # -- item 7: sends on a link that breaks or moves ----------------------------------------

    def test_unconfirmed_sends_on_a_broken_link_are_counted_lost(self) -> None:
        self.make()
        peer = self.connect()
        for i in range(5):
            self.a.send("b", "echo", "note", i)
        self.clock.advance(0.1)  # the sweeper asks for a confirmation of those sends
        frames = peer.read()
        self.assertIn(PING, [f[0] for f in frames])
        peer.answer(frames)
        for i in range(3):
            self.a.send("b", "echo", "note", i)
        peer.lose()
        self.assertEqual(self.a.stats.lost("b", "link_lost"), 3)
        self.assertIn('rl_cluster_sends_lost_total{peer="b",reason="link_lost"} 3.0',
                      scrape(self.a))

    def test_unconfirmed_sends_on_a_retargeted_link_are_counted_lost(self) -> None:
        self.make()
        peer = self.connect()
        for i in range(4):
            self.a.send("b", "echo", "note", i)
        self.a.set_address("b", "127.0.0.1", 2)
        self.assertTrue(peer.transport.disconnecting)
        peer.lose()  # the old link's close arrives after the re-target
        self.assertEqual(self.a.stats.lost("b", "retargeted"), 4)
        self.assertEqual(self.a.stats.lost("b", "link_lost"), 0)

    # -- item 8: a call never written is NodeUnreachable -------------------------------------

    def test_a_call_that_was_never_written_is_unreachable_not_timed_out(self) -> None:
        self.make(unreachable_after=30.0)
        d = self.a.call("b", "echo", "ping", 1, timeout=1.0)  # the connect never completes
        self.advance(1.2)
        f = self.failureResultOf(d, NodeUnreachable)
        self.assertNotIsInstance(f.value, CallTimeout)
        self.assertNotIsInstance(f.value, LinkLost)

    def test_a_written_call_without_reply_is_a_timeout(self) -> None:
        self.make()
        peer = self.connect()
        d = self.a.call("b", "echo", "ping", 1, timeout=1.0)
        peer.answer([f for f in peer.read() if f[0] == PING])
        self.advance(1.2)
        self.failureResultOf(d, CallTimeout)


def unpack_all(data: bytes) -> list[Any]:
    u = msgpack.Unpacker(raw=False, strict_map_key=False)
    u.feed(data)
    return list(u)


class HostileCaller(unittest.TestCase):
    """Frames a buggy or hostile peer can send to node b's agent."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.b = Cluster("b", settings(), {}, reactor=self.clock)
        self.b.register(Echo())
        self.link = AgentLink(self.b)
        self.transport = StringTransport()
        self.link.makeConnection(self.transport)
        _, _, nonce = unpack(self.transport.value())
        self.transport.clear()
        self.link.dataReceived(pack([AUTH, "x", b"s" * 16, mac(SECRET, b"S", nonce, "x", "b")]))
        self.transport.clear()

    def test_labels_of_a_non_string_or_unknown_service_do_not_reach_the_metrics(self) -> None:
        frames = [pack([CALL, 1, 123, "m", []]), pack([CALL, 2, "echo", 7, []]),
                  pack([SEND, 123, "m", []]), pack([SEND, "echo", None, []])]
        frames += [pack([CALL, 10 + i, "echo", f"bogus{i}", []]) for i in range(1000)]
        frames += [pack([CALL, 2000, "echo", "ping", [1]])]
        self.link.dataReceived(b"".join(frames))
        self.assertFalse(self.transport.disconnecting)
        answers = unpack_all(self.transport.value())
        self.assertEqual(answers[-1], [REPLY, 2000, 1])
        self.assertEqual([a[2] for a in answers if a[0] == ERROR][:2],
                         ["UnknownService", "UnknownMethod"])
        text = scrape(self.b)  # must not raise
        calls = label_sets(text, "rl_cluster_calls_in_total")
        self.assertIn('rl_cluster_calls_in_total{method="ping",service="echo"}', calls)
        self.assertLessEqual(len(calls), len(self.b.handlers["echo"]) + 2, calls)
        self.assertIn('rl_cluster_calls_in_total{method="unknown",service="echo"} 1001.0', text)
        self.assertIn('rl_cluster_calls_in_total{method="unknown",service="unknown"} 1.0', text)
        self.assertIn('rl_cluster_sends_in_total{method="unknown",service="unknown"} 1.0', text)
        self.assertIn('rl_cluster_sends_in_total{method="unknown",service="echo"} 1.0', text)

    def test_a_ping_is_answered(self) -> None:
        self.link.dataReceived(pack([PING, 77]))
        self.assertEqual(unpack_all(self.transport.value()), [[PONG, 77]])


class TwoNodes(unittest.TestCase):
    """Nodes a and b in this process over loopback TCP; b serves Echo."""

    timeout = 60

    def setUp(self) -> None:
        port_a, port_b = free_ports(2)
        self.echo_b = Echo()
        self.a = self.node("a", port_a, {"b": ("127.0.0.1", port_b)}, Echo())
        self.b = self.node("b", port_b, {"a": ("127.0.0.1", port_a)}, self.echo_b)

    def node(self, name: str, port: int, addresses: dict[str, tuple[str, int]],
             *services: Service) -> Cluster:
        c = Cluster(name, settings(max_message=1 * MiB), addresses, listen=("127.0.0.1", port))
        for s in services:
            c.register(s)
        c.startService()
        self.addCleanup(lambda: c.running and c.stopService())
        return c

    # -- item 4: message size is checked before writing --------------------------------------

    async def test_an_oversized_message_fails_alone(self) -> None:
        self.assertEqual(await self.a.call("b", "echo", "ping", 1), 1)
        link_before = self.a.senders["b"].link
        in_flight = self.a.call("b", "echo", "slow", 0.3)
        big = b"x" * (1 * MiB + 1)
        with self.assertRaises(MessageTooLarge) as cm:
            await self.a.call("b", "echo", "ping", big)
        self.assertIsInstance(cm.exception, BadArguments)
        self.assertIn("max_message", str(cm.exception))
        self.assertRaises(MessageTooLarge, self.a.send, "b", "echo", "note", big)
        # a reply too large for the wire comes back as the same typed error
        with self.assertRaises(MessageTooLarge):
            await self.a.call("b", "echo", "blob", 1 * MiB + 1)
        self.assertEqual(await in_flight, "done")
        self.assertIs(self.a.senders["b"].link, link_before, "the link was replaced")
        # just under the bound still goes through
        near = b"y" * (1 * MiB - 100)
        self.assertEqual(await self.a.call("b", "echo", "ping", near), near)
        self.assertIs(self.a.senders["b"].link, link_before)
        self.assertEqual(self.a.stats.errors.get("MessageTooLarge"), 3)

    # -- item 5: labels come from registered names ------------------------------------------

    async def test_bogus_calls_do_not_create_label_sets(self) -> None:
        await self.a.call("b", "echo", "ping", 1)
        bogus = [self.a.call("b", "echo", f"nosuch{i}") for i in range(500)]
        bogus += [self.a.call("b", f"nosvc{i}", "m") for i in range(500)]
        for i in range(200):
            self.a.send("b", "echo", f"nosend{i}")
        results = await defer.DeferredList(bogus, consumeErrors=True)
        self.assertTrue(all(isinstance(f.value, (UnknownMethod, UnknownService))
                            for ok, f in results))
        await self.a.call("b", "echo", "ping", 2)  # behind the sends: b answered them all
        for node in (self.a, self.b):
            text = scrape(node)
            for metric in ("rl_cluster_calls_out_total", "rl_cluster_calls_in_total",
                           "rl_cluster_sends_out_total", "rl_cluster_sends_in_total"):
                sets = label_sets(text, metric)
                self.assertLessEqual(len(sets), 12, f"{node.name} {metric}: {sorted(sets)[:5]}")
        out = scrape(self.a)
        self.assertIn('rl_cluster_calls_out_total{method="unknown",service="unknown"} 1000.0',
                      out)
        self.assertIn('rl_cluster_calls_out_total{method="ping",service="echo"} 2.0', out)
        await wait_for(lambda: 'rl_cluster_sends_out_total{method="unknown",service="unknown"} '
                       '200.0' in scrape(self.a), 5, "a to learn b refused the 200 sends")
        self.assertIn('rl_cluster_calls_in_total{method="unknown",service="echo"} 500.0',
                      scrape(self.b))

    async def test_non_string_names_are_refused_by_the_caller(self) -> None:
        with self.assertRaises(BadArguments):
            await self.a.call("b", 123, "ping")  # type: ignore[arg-type]
        with self.assertRaises(BadArguments):
            await self.a.call("a", "echo", None)  # type: ignore[arg-type]
        self.assertRaises(BadArguments, self.a.send, "b", ["x"], "note")
        scrape(self.a)  # must not raise
        self.assertEqual(await self.a.call("b", "echo", "ping", 3), 3)

    # -- item 8: wrong argument count --------------------------------------------------------

    async def test_wrong_argument_count_is_bad_arguments(self) -> None:
        for node in ("a", "b"):
            for method in ("ping", "aping"):
                with self.assertRaises(BadArguments, msg=f"{node} {method}") as cm:
                    await self.a.call(node, "echo", method, 1, 2, 3)
                self.assertEqual((cm.exception.node, cm.exception.method), (node, method))
            # a TypeError raised inside the handler is the handler's own error
            with self.assertRaises(RemoteError) as cm2:
                await self.a.call(node, "echo", "broken", 1)
            self.assertNotIsInstance(cm2.exception, BadArguments)
            self.assertEqual(cm2.exception.kind, "TypeError")
        self.a.send("b", "echo", "note")  # missing argument: counted on b, not raised
        await self.a.call("b", "echo", "ping", 0)
        self.assertEqual(self.b.stats.errors.get("BadArguments"), 3)
        self.flushLoggedErrors(TypeError)
