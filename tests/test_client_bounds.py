"""Bounds of a client port (issue 11 items 13 and 14), one connection at a time: handshake
and stalled-frame deadlines on a Clock, requests in flight, connection caps, and a client
that does not read over real loopback TCP."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from rltwist.config import ClientSettings, ConfigError, config_from_dict
from rltwist.protocols import (
    CloseReason,
    FrameDecoder,
    ServerProtocol,
    ServerProtocolFactory,
    decode_downstream,
    encode_request,
    pb,
)
from rltwist.protocols.server import RefuseReason
from tests.util import wait_for

LOGIN = pb.Login(openid="o", token="t", server_id=1, version="1")
HEARTBEAT = encode_request(pb.Heartbeat(), 1)


def pushes(transport: StringTransport) -> list[Message]:
    frames = FrameDecoder(downstream=True).feed(transport.value())
    return [decode_downstream(*f) for f in frames if f.session == 0]


def protocol_error(reason: str) -> pb.KickNotify:
    return pb.KickNotify(reason=reason, code=pb.KickReason.KICK_PROTOCOL_ERROR)


class Silent:
    """A request handler that answers nothing (requests stay in flight)."""

    def __init__(self) -> None:
        self.calls: list[tuple[ServerProtocol, Message, int]] = []

    def __call__(self, protocol: ServerProtocol, message: Message, session: int) -> None:
        self.calls.append((protocol, message, session))


class Bounds(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.handler = Silent()

    def factory(self, **limits: Any) -> ServerProtocolFactory:
        return ServerProtocolFactory(self.handler, limits=ClientSettings(**limits),
                                     clock=self.clock)

    def connect(self, factory: ServerProtocolFactory,
                host: str = "10.0.0.1") -> tuple[ServerProtocol, StringTransport]:
        protocol = factory.buildProtocol(IPv4Address("TCP", host, 40000))
        assert protocol is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(transport)
        return protocol, transport

    # -- item 13 ----------------------------------------------------------------------

    def test_a_connection_without_login_or_auth_is_closed_after_the_handshake_bound(self) -> None:
        factory = self.factory(handshake_timeout=30.0)
        idle, idle_transport = self.connect(factory)
        done, done_transport = self.connect(factory)
        done.handshakeDone()  # what the nodes call once Login/Auth answered OK
        self.clock.advance(29.9)
        self.assertFalse(idle_transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(idle_transport.disconnecting)
        self.assertEqual(idle.close_reason, CloseReason.HANDSHAKE_TIMEOUT)
        self.assertEqual(pushes(idle_transport), [protocol_error("handshake_timeout")])
        self.clock.advance(3600)
        self.assertFalse(done_transport.disconnecting)
        self.assertEqual(factory.closes, {"handshake_timeout": 1})

    def test_half_a_frame_then_silence_closes_the_connection(self) -> None:
        server, transport = self.connect(self.factory(frame_timeout=10.0))
        server.handshakeDone()
        server.dataReceived(HEARTBEAT[:3])
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.close_reason, CloseReason.FRAME_TIMEOUT)
        self.assertEqual(pushes(transport), [protocol_error("frame_timeout")])

    def test_the_frame_bound_runs_from_the_start_of_each_frame(self) -> None:
        server, transport = self.connect(self.factory(frame_timeout=10.0))
        server.handshakeDone()
        # a frame trickling in byte by byte is still one frame: bound from its start
        for byte in range(len(HEARTBEAT) - 1):
            server.dataReceived(HEARTBEAT[byte:byte + 1])
            self.clock.advance(1.0)
        self.assertFalse(transport.disconnecting)
        # reads that each complete a frame and begin the next restart the bound ...
        stream = HEARTBEAT[-1:] + b"".join(encode_request(pb.Heartbeat(), s)
                                           for s in range(2, 40))
        for offset in range(0, len(stream), 8):
            server.dataReceived(stream[offset:offset + 8])
            self.clock.advance(5.0)
            for protocol, _, session in self.handler.calls:
                protocol.reply(session, pb.Heartbeat.Response())
            self.handler.calls.clear()
        self.assertFalse(transport.disconnecting, server.close_reason)
        # ... and a connection with nothing pending has no frame deadline
        self.assertEqual(server._decoder.buffered, 0)
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    # -- item 14: requests in flight --------------------------------------------------------

    def test_one_request_over_the_in_flight_bound_closes_the_connection(self) -> None:
        server, transport = self.connect(self.factory(max_inflight=16))
        server.handshakeDone()
        server.dataReceived(b"".join(encode_request(pb.Heartbeat(), s) for s in range(1, 17)))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(server.inflight, 16)
        # an answer frees a place
        first = self.handler.calls[0]
        server.reply(first[2], pb.Heartbeat.Response())
        server.dataReceived(encode_request(pb.Heartbeat(), 17))
        self.assertFalse(transport.disconnecting)
        server.dataReceived(encode_request(pb.Heartbeat(), 18))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.close_reason, CloseReason.TOO_MANY_REQUESTS)
        self.assertEqual(len(self.handler.calls), 17)  # the 18th never reached the node
        self.assertEqual(pushes(transport), [protocol_error("too_many_requests")])

    # -- item 14: connection caps ---------------------------------------------------------

    def test_connections_past_the_node_cap_are_refused_and_counted(self) -> None:
        factory = self.factory(max_connections=2)
        first, _ = self.connect(factory, "10.0.0.1")
        self.connect(factory, "10.0.0.2")
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 1)))
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 2)))
        self.assertEqual(factory.refused, {RefuseReason.MAX_CONNECTIONS: 2})
        self.assertEqual(factory.open_connections, 2)
        first.connectionLost(Failure(ConnectionError()))
        self.assertEqual(factory.open_connections, 1)
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.3", 3)))

    def test_the_per_address_cap_is_off_by_default_and_counts_per_host(self) -> None:
        unlimited = self.factory()
        for _ in range(50):  # players behind one carrier NAT address
            self.connect(unlimited, "10.9.9.9")
        self.assertEqual(unlimited.refused, {})

        factory = self.factory(max_connections_per_ip=2)
        a1, _ = self.connect(factory, "10.0.0.1")
        self.connect(factory, "10.0.0.1")
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 9)))
        self.connect(factory, "10.0.0.2")  # another address is not affected
        self.assertEqual(factory.refused, {RefuseReason.MAX_CONNECTIONS_PER_IP: 1})
        a1.connectionLost(Failure(ConnectionError()))
        a1.connectionLost(Failure(ConnectionError()))  # counted once
        self.assertEqual(dict(factory.per_host), {"10.0.0.1": 1, "10.0.0.2": 1})
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 10)))

    # -- item 14: write backpressure (the producer hooks, deterministically) -------------------

    def test_the_transport_pausing_the_connection_drops_it(self) -> None:
        server, transport = self.connect(self.factory(max_outbound=65536))
        server.handshakeDone()
        producer = transport.producer
        self.assertIsNotNone(producer, "the connection registered no producer")
        self.assertTrue(transport.streaming)
        self.assertTrue(server.push(pb.KickNotify(reason="x")))
        # what Twisted's transport does once more than bufferSize bytes wait
        producer.pauseProducing()
        self.assertEqual(server.close_reason, CloseReason.SLOW_READER)
        self.assertIsNone(transport.producer)  # unregistered, or the close would wait for it
        self.assertFalse(server.push(pb.KickNotify(reason="x")))
        self.assertEqual(pushes(transport), [pb.KickNotify(reason="x")])  # no notice: unread


    def test_a_close_notice_that_overflows_the_buffer_is_one_slow_reader_close(self) -> None:
        class Full(StringTransport):
            """A transport whose buffer is over its bound: every write pauses."""

            def write(self, data: bytes) -> None:
                super().write(data)
                if self.producer is not None:
                    self.producer.pauseProducing()

        factory = self.factory()
        server = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
        assert server is not None
        server.makeConnection(Full())
        server.closeWithReason(CloseReason.REQUEST_BEFORE_AUTH)
        self.assertEqual(factory.closes, {"slow_reader": 1})
        self.assertEqual(server.close_reason, CloseReason.SLOW_READER)


class ConfigKeys(unittest.TestCase):
    BASE: dict[str, Any] = {
        "cluster": {"secret": "s" * 8}, "master": {"gm_token": "t" * 8},
        "nodes": {"master": {"port": 1, "metrics_port": 2}}}

    def test_defaults_and_keys_of_the_client_section(self) -> None:
        config = config_from_dict(self.BASE)
        self.assertEqual(config.client, ClientSettings(
            handshake_timeout=30.0, frame_timeout=30.0, max_connections=20_000,
            max_connections_per_ip=0, max_inflight=16, max_outbound=1024 * 1024))
        config = config_from_dict({**self.BASE, "client": {
            "handshake_timeout": 5, "max_connections_per_ip": 4, "max_inflight": 2}})
        self.assertEqual((config.client.handshake_timeout, config.client.max_connections_per_ip,
                          config.client.max_inflight), (5.0, 4, 2))
        with self.assertRaisesRegex(ConfigError, "client.max_inflight: must be >= 1"):
            config_from_dict({**self.BASE, "client": {"max_inflight": 0}})

    def test_min_version_must_be_dotted_numbers(self) -> None:
        config = config_from_dict({**self.BASE, "login": {"min_version": "1.4.0"}})
        self.assertEqual(config.login.min_version, "1.4.0")
        with self.assertRaisesRegex(ConfigError, "login.min_version"):
            config_from_dict({**self.BASE, "login": {"min_version": "1.4-beta"}})


class _Reader(Protocol):
    """A client that stops reading at once, or reads everything."""

    def __init__(self, read: bool) -> None:
        self.read = read
        self.received = 0
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class SlowReaderOverTCP(unittest.TestCase):
    """The same bound with Twisted's TCP transport and the kernel's buffers in between."""

    timeout = 60
    MAX_OUTBOUND = 1024 * 1024
    PER_TURN = 16 * 1024  # a busy client's pushes are far less per reactor turn

    async def serve(self, read: bool, total: int) -> tuple[ServerProtocol, _Reader, int]:
        """Push *total* bytes of KickNotify frames, PER_TURN per reactor turn, to a client
        that reads or not; return the server side, the client, and the bytes pushed."""
        built: list[ServerProtocol] = []

        self.server_lost: defer.Deferred[None] = defer.Deferred()
        lost = self.server_lost

        class Server(ServerProtocol):
            def connectionLost(self, reason: Any = None) -> None:
                super().connectionLost(reason)
                lost.callback(None)

        class Factory(ServerProtocolFactory):
            protocol = Server

            def buildProtocol(self, addr: Any) -> ServerProtocol | None:
                p = super().buildProtocol(addr)
                assert p is not None
                built.append(p)
                return p

        factory = Factory(Silent(), limits=ClientSettings(max_outbound=self.MAX_OUTBOUND))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = _Reader(read)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                              client)
        if not read:
            client.transport.pauseProducing()  # type: ignore[union-attr]  # stops reading
        self.addCleanup(lambda: client.transport.abortConnection()  # type: ignore[union-attr]
                        if not client.lost.called else None)
        await wait_for(lambda: built, 5, "the server to accept the connection")
        server = built[0]
        server.handshakeDone()
        blob = pb.KickNotify(reason="x" * 8000)
        pushed = 0
        while pushed < total and server.is_open:
            for _ in range(self.PER_TURN // 8000):
                if not server.push(blob):
                    break
                pushed += 8010
            await task.deferLater(reactor, 0)
        return server, client, pushed

    async def test_a_client_that_does_not_read_is_dropped_past_max_outbound(self) -> None:
        # far more than the kernel's socket buffers and max_outbound together
        server, client, pushed = await self.serve(read=False, total=64 * 1024 * 1024)
        self.assertEqual(server.close_reason, CloseReason.SLOW_READER)
        self.assertLess(pushed, 64 * 1024 * 1024)
        await self.server_lost.addTimeout(10, reactor)  # dropped, not waiting to flush
        self.assertEqual(client.received, 0)

    async def test_a_client_that_reads_is_not_dropped(self) -> None:
        server, client, pushed = await self.serve(read=True, total=16 * 1024 * 1024)
        self.assertTrue(server.is_open, server.close_reason)
        await wait_for(lambda: client.received >= pushed, 20, "the client to read it all")
        server.closeWithReason("done")
        await client.lost.addTimeout(10, reactor)
