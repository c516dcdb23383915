"""Client protocol: framing vectors, message ids, server and client protocols."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from google.protobuf.message import DecodeError, Message
from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest

from rltwist.protocols import (
    MAX_UP_BODY,
    REGISTRY,
    ClientProtocol,
    CloseReason,
    FrameDecoder,
    FrameError,
    ProtocolViolation,
    Registry,
    RequestConnectionLost,
    RequestTimeout,
    ResponseError,
    ServerProtocol,
    ServerProtocolFactory,
    UnknownMessage,
    class_of,
    decode_down,
    decode_downstream,
    decode_request,
    decode_up,
    encode_down,
    encode_push,
    encode_request,
    encode_response,
    encode_up,
    id_of,
    pb,
    response_class_of,
)
from rltwist.protocols.registry import MAX_MESSAGE_ID, declared_id

REPO = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).parent / "vectors" / "client_framing.json"


def load_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(VECTORS.read_text())["cases"]
    return cases


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "tools" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder:
    """Request handler that remembers what the server protocol handed it."""

    def __init__(self) -> None:
        self.calls: list[tuple[ServerProtocol, Message, int]] = []

    def __call__(self, protocol: ServerProtocol, message: Message, session: int) -> None:
        self.calls.append((protocol, message, session))

    @property
    def requests(self) -> list[tuple[Message, int]]:
        return [(message, session) for _, message, session in self.calls]


def connect_server(factory: ServerProtocolFactory) -> tuple[ServerProtocol, StringTransport]:
    protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def down_frames(transport: StringTransport) -> list[Message]:
    decoder = FrameDecoder(downstream=True)
    return [decode_downstream(*frame) for frame in decoder.feed(transport.value())]


LOGIN = pb.Login(openid="player-1", token="t", device_id="d", os="ios", server_id=3,
                 version="1.0.0")


class FramingVectorTests(unittest.TestCase):
    """Every case of tests/vectors/client_framing.json, both directions."""

    def test_every_vector_with_a_frame_encodes_to_exactly_those_bytes(self) -> None:
        checked = 0
        for case in load_vectors():
            if "frame_hex" not in case or case.get("valid") is False:
                continue
            encode = encode_up if case["direction"] == "up" else encode_down
            frame = encode(case["proto"], case["session"], bytes.fromhex(case["body_hex"]))
            self.assertEqual(frame.hex(), case["frame_hex"], case["name"])
            checked += 1
        self.assertEqual(checked, 4)

    def test_every_vector_with_a_frame_decodes_to_its_proto_session_and_body(self) -> None:
        for case in load_vectors():
            if "frame_hex" not in case or case.get("valid") is False:
                continue
            decode = decode_up if case["direction"] == "up" else decode_down
            frame = decode(bytes.fromhex(case["frame_hex"]))
            self.assertEqual(
                (frame.proto, frame.session, frame.body.hex()),
                (case["proto"], case["session"], case["body_hex"]),
                case["name"],
            )

    def test_largest_legal_upstream_frame_round_trips(self) -> None:
        (case,) = [c for c in load_vectors() if "frame_prefix_hex" in c]
        body = bytes(range(256)) * (case["body_len"] // 256) + b"x" * (case["body_len"] % 256)
        self.assertEqual(len(body), MAX_UP_BODY)
        frame = encode_up(case["proto"], case["session"], body)
        self.assertEqual(frame[:8].hex(), case["frame_prefix_hex"])
        self.assertEqual(decode_up(frame), (case["proto"], case["session"], body))

    def test_upstream_body_too_long_for_a_u16_length_cannot_be_encoded(self) -> None:
        (case,) = [c for c in load_vectors() if c.get("valid") is False and "body_len" in c]
        with self.assertRaises(ValueError):
            encode_up(1, 1, b"\0" * case["body_len"])

    def test_upstream_length_below_six_is_refused_by_the_decoder(self) -> None:
        (case,) = [c for c in load_vectors() if c.get("valid") is False and "frame_hex" in c]
        with self.assertRaises(FrameError) as caught:
            FrameDecoder(downstream=False).feed(bytes.fromhex(case["frame_hex"]))
        self.assertEqual(caught.exception.reason, "frame_too_short")

    def test_vector_bodies_are_the_messages_registered_under_their_ids(self) -> None:
        decoded = {}
        for case in load_vectors():
            if case.get("proto") in (1, 300) and "body_hex" in case:
                body = bytes.fromhex(case["body_hex"])
                if case["direction"] == "up":
                    decoded[case["name"]] = decode_request(case["proto"], body)
                else:
                    decoded[case["name"]] = decode_downstream(case["proto"], case["session"],
                                                              body)
        self.assertEqual(
            sorted(decoded.values(), key=str),
            sorted([pb.Login(openid="abc"), pb.Login.Response(code=pb.ErrorCode.BAD_TOKEN),
                    pb.KickNotify(reason="hi")], key=str),
        )


class FrameDecoderTests(unittest.TestCase):
    def test_bad_length_is_refused_before_the_body_arrives(self) -> None:
        decoder = FrameDecoder(downstream=False, max_length=100)
        with self.assertRaises(FrameError) as caught:
            decoder.feed(b"\x00\x65")
        self.assertEqual(caught.exception.reason, "frame_too_large")

    def test_decoder_stays_failed_after_a_bad_frame(self) -> None:
        decoder = FrameDecoder(downstream=False)
        self.assertRaises(FrameError, decoder.feed, b"\x00\x01")
        self.assertRaises(FrameError, decoder.feed, encode_up(1, 1))

    def test_large_downstream_frame_in_many_small_chunks_is_reassembled(self) -> None:
        body = os.urandom(1 << 20)
        stream = encode_down(1, 9, body) + encode_down(300, 0, b"tail")
        decoder = FrameDecoder(downstream=True)
        frames = []
        for i in range(0, len(stream), 1000):
            frames += decoder.feed(stream[i : i + 1000])
        self.assertEqual(frames, [(1, 9, body), (300, 0, b"tail")])
        self.assertEqual(decoder.buffered, 0)


class RegistryTests(unittest.TestCase):
    def all_declared_ids(self) -> list[tuple[int, str]]:
        found = []

        def walk(cls: type[Message]) -> None:
            msg_id = declared_id(cls)
            if msg_id is not None:
                found.append((msg_id, cls.DESCRIPTOR.full_name))
            for nested in cls.DESCRIPTOR.nested_types:
                walk(getattr(cls, nested.name))

        for module in pb.MODULES:
            for name in module.DESCRIPTOR.message_types_by_name:
                walk(getattr(module, name))
        return found

    def test_message_ids_are_unique_and_fit_in_sixteen_bits(self) -> None:
        declared = self.all_declared_ids()
        ids = [msg_id for msg_id, _ in declared]
        duplicates = {i: [n for j, n in declared if j == i] for i in ids if ids.count(i) > 1}
        self.assertEqual(duplicates, {})
        self.assertTrue(all(1 <= i <= MAX_MESSAGE_ID for i in ids), declared)
        self.assertEqual(sorted(ids), [info.id for info in REGISTRY])

    def test_every_id_is_a_request_with_a_response_or_a_notify_push(self) -> None:
        for info in REGISTRY:
            if info.is_push:
                self.assertTrue(info.cls.DESCRIPTOR.name.endswith("Notify"), info)
            else:
                assert info.response_cls is not None
                self.assertIs(info.response_cls.DESCRIPTOR,
                              info.cls.DESCRIPTOR.nested_types_by_name["Response"])

    def test_every_response_starts_with_an_error_code(self) -> None:
        for info in REGISTRY:
            if info.response_cls is not None:
                first = info.response_cls.DESCRIPTOR.fields_by_number.get(1)
                assert first is not None and first.enum_type is not None, info.name
                self.assertEqual((first.name, first.enum_type.full_name),
                                 ("code", "rl.ErrorCode"), info.name)

    def test_registry_refuses_two_messages_with_the_same_id(self) -> None:
        with self.assertRaisesRegex(ValueError, "rl.Login and rl.Auth"):
            Registry([(7, pb.Login), (7, pb.Auth)])

    def test_registry_refuses_ids_outside_one_to_65535(self) -> None:
        for bad in (0, MAX_MESSAGE_ID + 1):
            with self.assertRaisesRegex(ValueError, "outside"):
                Registry([(bad, pb.Login)])

    def test_registry_refuses_an_id_on_a_message_that_is_neither_request_nor_push(self) -> None:
        with self.assertRaisesRegex(ValueError, "neither a request"):
            Registry([(9, pb.PlayerBasics)])

    def test_a_response_travels_under_its_request_id(self) -> None:
        self.assertEqual(id_of(pb.Login), 1)
        self.assertEqual(id_of(pb.Login.Response), 1)
        self.assertEqual(id_of(pb.Login.Response(code=pb.ErrorCode.OK)), 1)
        self.assertIs(class_of(1), pb.Login)
        self.assertIs(response_class_of(1), pb.Login.Response)

    def test_pushes_have_their_own_ids_and_no_response(self) -> None:
        self.assertEqual(id_of(pb.KickNotify()), 300)
        self.assertIs(class_of(300), pb.KickNotify)
        self.assertRaises(UnknownMessage, response_class_of, 300)

    def test_unknown_ids_and_unregistered_messages_are_lookup_errors(self) -> None:
        self.assertRaises(UnknownMessage, class_of, 65000)
        self.assertRaises(UnknownMessage, id_of, pb.PlayerBasics)
        self.assertTrue(issubclass(UnknownMessage, LookupError))

    def test_decoders_report_bad_bodies_as_decode_errors(self) -> None:
        self.assertRaises(DecodeError, decode_request, 1, b"\x0a\x02\xff\xfe")
        self.assertRaises(DecodeError, decode_downstream, 300, 0, b"\x0a\x05ab")
        self.assertRaises(UnknownMessage, decode_downstream, 300, 5, b"")

    def test_encoders_refuse_messages_of_the_wrong_kind(self) -> None:
        self.assertRaises(UnknownMessage, encode_request, pb.Login.Response(), 1)
        self.assertRaises(UnknownMessage, encode_response, 1, pb.Login())
        self.assertRaises(UnknownMessage, encode_push, pb.Login())
        self.assertRaises(ValueError, encode_response, 0, pb.Login.Response())


class ServerProtocolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.handler = Recorder()
        self.clock = task.Clock()
        self.factory = ServerProtocolFactory(self.handler, clock=self.clock)
        self.server, self.transport = connect_server(self.factory)

    def test_server_hands_each_decoded_request_and_its_session_to_the_handler(self) -> None:
        self.server.dataReceived(encode_request(LOGIN, 7) + encode_request(pb.Heartbeat(), 8))
        self.assertEqual(self.handler.requests, [(LOGIN, 7), (pb.Heartbeat(), 8)])

    def test_reply_answers_the_session_under_the_request_id(self) -> None:
        self.assertTrue(self.server.reply(7, pb.Login.Response(code=pb.ErrorCode.BAD_TOKEN)))
        self.assertEqual(self.transport.value(), bytes.fromhex("000000080001000000070801"))

    def test_any_request_can_be_answered_with_just_an_error_code(self) -> None:
        self.server.replyError(4, pb.Rename(name="x"), pb.ErrorCode.INTERNAL)
        self.server.replyError(5, pb.Heartbeat, pb.ErrorCode.TIMEOUT)
        self.server.replyError(6, 1, pb.ErrorCode.NOT_AVAILABLE)
        self.assertEqual(down_frames(self.transport), [
            pb.Rename.Response(code=pb.ErrorCode.INTERNAL),
            pb.Heartbeat.Response(code=pb.ErrorCode.TIMEOUT),
            pb.Login.Response(code=pb.ErrorCode.NOT_AVAILABLE),
        ])

    def test_push_is_sent_with_session_zero_under_the_push_id(self) -> None:
        self.assertTrue(self.server.push(pb.KickNotify(reason="hi")))
        self.assertEqual(self.transport.value(), bytes.fromhex("0000000a012c000000000a026869"))

    def test_reply_refuses_messages_that_are_not_responses(self) -> None:
        self.assertRaises(UnknownMessage, self.server.reply, 1, pb.Login())
        self.assertRaises(UnknownMessage, self.server.push, pb.Login.Response())
        self.assertRaises(ValueError, self.server.reply, 0, pb.Login.Response())

    def test_frames_split_at_every_possible_boundary_are_all_delivered(self) -> None:
        stream = (encode_request(LOGIN, 1) + encode_request(pb.Heartbeat(), 2)
                  + encode_request(pb.Rename(name="x" * 300), 3))
        expected = [(LOGIN, 1), (pb.Heartbeat(), 2), (pb.Rename(name="x" * 300), 3)]
        for cut in range(1, len(stream)):
            handler = Recorder()
            server, _ = connect_server(ServerProtocolFactory(handler, clock=task.Clock()))
            server.dataReceived(stream[:cut])
            server.dataReceived(stream[cut:])
            self.assertEqual(handler.requests, expected, f"cut at {cut}")

    def test_frames_fed_one_byte_at_a_time_are_all_delivered(self) -> None:
        stream = encode_request(LOGIN, 1) + encode_request(pb.Heartbeat(), 2)
        for i in range(len(stream)):
            self.server.dataReceived(stream[i : i + 1])
        self.assertEqual(self.handler.requests, [(LOGIN, 1), (pb.Heartbeat(), 2)])

    def assert_closed_for(self, data: bytes, reason: str) -> None:
        other, other_transport = connect_server(self.factory)
        with capturedLogs() as events:
            self.server.dataReceived(data)
        self.assertTrue(self.transport.disconnecting, "bad connection left open")
        self.assertEqual(self.server.close_reason, reason)
        self.assertEqual(self.factory.closes[reason], 1)
        # the client is told why before the close
        self.assertEqual(down_frames(self.transport), [pb.KickNotify(
            reason=reason, code=pb.KickReason.KICK_PROTOCOL_ERROR)])
        logged = [e for e in events if e.get("reason") == reason]
        self.assertEqual(len(logged), 1, events)
        # The bad connection ignores whatever else it sends; others keep working.
        self.server.dataReceived(encode_request(LOGIN, 99))
        other.dataReceived(encode_request(LOGIN, 5))
        self.assertFalse(other_transport.disconnecting)
        self.assertEqual(self.handler.calls[-1][0], other)
        self.assertNotIn((LOGIN, 99), self.handler.requests)

    def test_length_field_below_six_closes_only_that_connection(self) -> None:
        self.assert_closed_for(bytes.fromhex("0003000100"), CloseReason.FRAME_TOO_SHORT)

    def test_length_field_above_the_limit_closes_only_that_connection(self) -> None:
        class SmallFrames(ServerProtocol):
            max_length = 64

        self.factory.protocol = SmallFrames
        self.server, self.transport = connect_server(self.factory)
        self.assert_closed_for(encode_up(1, 1, b"\0" * 59), CloseReason.FRAME_TOO_LARGE)

    def test_unknown_proto_id_closes_only_that_connection(self) -> None:
        self.assert_closed_for(encode_up(4321, 1, b""), CloseReason.UNKNOWN_PROTO)

    def test_push_id_sent_upstream_closes_only_that_connection(self) -> None:
        self.assert_closed_for(encode_up(300, 1, b""), CloseReason.UNKNOWN_PROTO)

    def test_undecodable_body_closes_only_that_connection(self) -> None:
        # Field 1 (openid, a string) with invalid UTF-8.
        self.assert_closed_for(encode_up(1, 1, b"\x0a\x02\xff\xfe"), CloseReason.UNDECODABLE_BODY)

    def test_truncated_body_closes_only_that_connection(self) -> None:
        self.assert_closed_for(encode_up(1, 1, b"\x0a\x05ab"), CloseReason.UNDECODABLE_BODY)

    def test_request_with_session_zero_closes_only_that_connection(self) -> None:
        self.assert_closed_for(encode_request(LOGIN, 0), CloseReason.ZERO_SESSION)

    def test_frames_after_a_bad_frame_in_the_same_chunk_are_not_handled(self) -> None:
        self.server.dataReceived(encode_request(LOGIN, 1) + encode_up(4321, 2, b"")
                                 + encode_request(pb.Heartbeat(), 3))
        self.assertEqual(self.handler.requests, [(LOGIN, 1)])
        self.assertEqual(self.server.close_reason, CloseReason.UNKNOWN_PROTO)

    def test_handler_that_closes_the_connection_stops_the_rest_of_the_chunk(self) -> None:
        def kick_first(protocol: ServerProtocol, message: Message, session: int) -> None:
            self.handler(protocol, message, session)
            protocol.closeWithReason(CloseReason.KICKED)

        server, transport = connect_server(ServerProtocolFactory(kick_first, clock=task.Clock()))
        server.dataReceived(encode_request(LOGIN, 1) + encode_request(pb.Heartbeat(), 2))
        self.assertEqual(self.handler.requests, [(LOGIN, 1)])
        self.assertTrue(transport.disconnecting)

    def test_node_policy_violation_closes_the_connection_with_its_reason(self) -> None:
        class Gateway(ServerProtocol):
            authed = False

            def requestReceived(self, message: Message, session: int) -> None:
                if isinstance(message, pb.Auth):
                    if self.authed:
                        raise ProtocolViolation(CloseReason.AUTH_TWICE)
                    self.authed = True
                elif not self.authed:
                    raise ProtocolViolation(CloseReason.REQUEST_BEFORE_AUTH,
                                            name=message.DESCRIPTOR.name)

        self.factory.protocol = Gateway
        early, early_transport = connect_server(self.factory)
        early.dataReceived(encode_request(pb.Heartbeat(), 1))
        twice, twice_transport = connect_server(self.factory)
        auth = encode_request(pb.Auth(userid=1, secret="s"), 1)
        twice.dataReceived(auth + auth)
        self.assertEqual((early.close_reason, twice.close_reason),
                         ("request_before_auth", "auth_twice"))
        for transport, reason in ((early_transport, "request_before_auth"),
                                  (twice_transport, "auth_twice")):
            self.assertEqual(down_frames(transport), [pb.KickNotify(
                reason=reason, code=pb.KickReason.KICK_PROTOCOL_ERROR)])
        self.assertTrue(early_transport.disconnecting and twice_transport.disconnecting)
        self.assertEqual(self.factory.closes,
                         {"request_before_auth": 1, "auth_twice": 1})

    def test_crashing_handler_closes_the_connection_and_logs_the_failure(self) -> None:
        def crash(protocol: ServerProtocol, message: Message, session: int) -> None:
            raise RuntimeError("handler bug")

        server, transport = connect_server(ServerProtocolFactory(crash, clock=task.Clock()))
        server.dataReceived(encode_request(LOGIN, 1))
        self.assertEqual(server.close_reason, CloseReason.HANDLER_ERROR)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")  # our fault, not a protocol error
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_close_with_notify_pushes_the_kick_before_closing(self) -> None:
        kick = pb.KickNotify(reason="logged in elsewhere", code=pb.KickReason.KICK_LOGIN_ELSEWHERE)
        self.server.closeWithReason(CloseReason.KICKED, notify=kick)
        self.assertEqual(down_frames(self.transport), [kick])
        self.assertTrue(self.transport.disconnecting)
        self.server.closeWithReason(CloseReason.HANDLER_ERROR)
        self.assertEqual(self.factory.closes, {"kicked": 1})

    def test_answers_after_the_connection_closed_are_dropped(self) -> None:
        self.server.connectionLost(Failure(ConnectionError()))
        self.assertFalse(self.server.reply(1, pb.Heartbeat.Response()))
        self.assertFalse(self.server.push(pb.KickNotify()))
        self.assertEqual(self.transport.value(), b"")


def connected_pair(
    handler: Callable[[ServerProtocol, Message, int], object],
    clock: task.Clock | None = None,
    **client_kw: Any,
) -> tuple[ClientProtocol, ServerProtocol, iosim.IOPump]:
    clock = clock or task.Clock()
    factory = ServerProtocolFactory(handler, clock=clock)
    client, server, pump = iosim.connectedServerAndClient(
        lambda: factory.buildProtocol(None),  # type: ignore[arg-type]
        lambda: ClientProtocol(clock=clock, **client_kw),
        clock=clock,
    )
    return client, server, pump


def answer_login(protocol: ServerProtocol, message: Message, session: int) -> None:
    assert isinstance(message, pb.Login)
    protocol.handshakeDone()  # as a login node does once Login is answered OK
    protocol.reply(session, pb.Login.Response(code=pb.ErrorCode.OK, userid=3 << 16 | 3,
                                              host="10.0.0.1", port=7001,
                                              secret=message.openid[::-1]))


class ClientServerTests(unittest.TestCase):
    def test_client_request_resolves_with_the_servers_response(self) -> None:
        client, _, pump = connected_pair(answer_login)
        d = client.request(LOGIN)
        pump.flush()
        response = self.successResultOf(d)
        self.assertEqual(response, pb.Login.Response(userid=3 << 16 | 3, host="10.0.0.1",
                                                     port=7001, secret="1-reyalp"))
        self.assertEqual(client.pending, 0)

    def test_out_of_order_responses_resolve_their_own_requests(self) -> None:
        held = Recorder()
        client, server, pump = connected_pair(held)
        first = client.request(pb.Rename(name="a"))
        second = client.request(pb.Heartbeat())
        pump.flush()
        (_, _, s1), (_, _, s2) = held.calls
        server.reply(s2, pb.Heartbeat.Response(server_time_ms=123))
        server.reply(s1, pb.Rename.Response(code=pb.ErrorCode.NAME_TAKEN))
        pump.flush()
        self.assertEqual(self.successResultOf(second), pb.Heartbeat.Response(server_time_ms=123))
        self.assertEqual(self.successResultOf(first),
                         pb.Rename.Response(code=pb.ErrorCode.NAME_TAKEN))

    def test_pushes_reach_the_client_push_callback(self) -> None:
        pushes: list[Message] = []
        _client, server, pump = connected_pair(answer_login, on_push=pushes.append)
        kick = pb.KickNotify(reason="bye", code=pb.KickReason.KICK_GM)
        server.push(kick)
        pump.flush()
        self.assertEqual(pushes, [kick])

    def test_request_without_response_times_out_and_late_answer_is_ignored(self) -> None:
        clock = task.Clock()
        held = Recorder()
        client, server, pump = connected_pair(held, clock=clock, timeout=5.0)
        d = client.request(pb.Heartbeat())
        pump.flush()
        clock.advance(4.9)
        self.assertNoResult(d)
        clock.advance(0.2)
        failure = self.failureResultOf(d, RequestTimeout)
        self.assertIn("Heartbeat", failure.getErrorMessage())
        self.assertEqual(client.pending, 0)
        server.reply(held.calls[0][2], pb.Heartbeat.Response())
        pump.flush()
        self.assertEqual(client.pending, 0)

    def test_per_request_timeout_overrides_the_default(self) -> None:
        clock = task.Clock()
        client, _, _pump = connected_pair(Recorder(), clock=clock, timeout=60.0)
        d = client.request(pb.Heartbeat(), timeout=1.0)
        clock.advance(1.0)
        self.failureResultOf(d, RequestTimeout)

    def test_answered_request_leaves_no_timer_behind(self) -> None:
        clock = task.Clock()
        client, _, pump = connected_pair(answer_login, clock=clock)
        d = client.request(LOGIN)
        pump.flush()
        self.successResultOf(d)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_server_side_sets_no_timer_per_frame(self) -> None:
        clock = task.Clock()
        client, server, pump = connected_pair(answer_login, clock=clock)
        client.transport.write(encode_request(LOGIN, 1) * 50)  # type: ignore[union-attr]
        pump.flush()
        self.assertTrue(server.is_open)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_pending_requests_fail_when_the_connection_is_lost(self) -> None:
        client, _, pump = connected_pair(Recorder())
        first, second = client.request(LOGIN), client.request(pb.Heartbeat())
        pump.flush()
        client.transport.loseConnection()  # type: ignore[union-attr]
        pump.flush()
        self.failureResultOf(first, RequestConnectionLost)
        self.failureResultOf(second, RequestConnectionLost)
        self.assertEqual(client.pending, 0)
        self.failureResultOf(client.request(LOGIN), RequestConnectionLost)

    def test_cancelled_request_is_forgotten(self) -> None:
        client, _, _pump = connected_pair(Recorder())
        d = client.request(LOGIN)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        self.assertEqual(client.pending, 0)

    def test_client_refuses_to_send_responses_or_oversized_requests(self) -> None:
        client, _, _ = connected_pair(Recorder())
        self.assertRaises(UnknownMessage, client.request, pb.Login.Response())
        self.assertRaises(ValueError, client.request, pb.Rename(name="x" * MAX_UP_BODY))

    def test_response_with_a_different_proto_fails_that_request(self) -> None:
        client, _server, pump = connected_pair(
            lambda p, m, s: p.reply(s, pb.Heartbeat.Response()))
        d = client.request(LOGIN)
        pump.flush()
        self.failureResultOf(d, ResponseError)

    def test_oversized_downstream_frame_closes_the_client_and_fails_pending(self) -> None:
        client, server, pump = connected_pair(Recorder(), max_length=64)
        d = client.request(LOGIN)
        pump.flush()
        server.push(pb.KickNotify(reason="x" * 100))
        pump.flush()
        self.failureResultOf(d, ResponseError)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_sessions_are_never_zero_and_wrap_after_u32_max(self) -> None:
        held = Recorder()
        client, _, pump = connected_pair(held)
        client._last_session = 0xFFFFFFFE
        for _ in range(3):
            client.request(pb.Heartbeat())
        pump.flush()
        self.assertEqual([s for _, _, s in held.calls], [0xFFFFFFFF, 1, 2])


class TCPTests(unittest.TestCase):
    """The same exchange over real loopback TCP with the reactor."""

    async def exchange(self) -> pb.Login.Response:
        lost: defer.Deferred[None] = defer.Deferred()

        class Server(ServerProtocol):
            def connectionLost(self, reason: Failure = connectionDone) -> None:
                super().connectionLost(reason)
                lost.callback(None)

        factory = ServerProtocolFactory(answer_login)
        factory.protocol = Server
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", address.port)
        client = await endpoints.connectProtocol(endpoint, ClientProtocol(timeout=5.0))
        try:
            response = await client.request(LOGIN)
        finally:
            client.transport.loseConnection()  # type: ignore[union-attr]
            await lost
        assert isinstance(response, pb.Login.Response)
        return response

    def test_login_request_and_response_over_loopback_tcp(self) -> defer.Deferred[None]:
        async def run() -> None:
            response = await self.exchange()
            self.assertEqual(response.secret, "1-reyalp")

        return defer.ensureDeferred(run())


class GeneratedCodeTests(unittest.TestCase):
    def setUp(self) -> None:
        if not (REPO / "proto").is_dir():
            raise unittest.SkipTest("proto/ is not present (installed package)")
        self.gen = load_generator()
        self.assertEqual(self.gen.grpcio_tools_version(), self.gen.PINNED_GRPCIO_TOOLS,
                         "install the pinned grpcio-tools (setup.py test extra) to "
                         "regenerate the protocol code and docs")

    def test_committed_python_matches_a_fresh_protoc_run(self) -> None:
        stale = self.gen.stale_files(self.gen.generate())
        self.assertEqual(stale, [], "run: python tools/gen_proto.py")

    def test_protocol_doc_tables_match_the_registry(self) -> None:
        doc = (REPO / "docs" / "protocol.md").read_text()
        section = self.gen.current_doc_section()
        self.assertIn(section, doc, "run: python tools/gen_proto.py")
