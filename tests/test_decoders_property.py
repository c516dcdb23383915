"""Property tests (hypothesis) of every decoder that reads bytes a peer chose:

* client framing: arbitrary bytes, split at arbitrary points, give the frames a reference
  decoder gives (or a prefix of them, then one clean close with the same reason);
* the cluster link codec before the handshake (nothing is ever dispatched, nothing
  escapes ``dataReceived``) and after it (the same handler calls whatever the splits);
* the GM API's JSON handling (any body is a dict or a 4xx, never an exception).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from rltwist.cluster import Cluster, Service, handler
from rltwist.cluster.link import AUTH, CALL, SEND, AgentLink, mac, pack, unpack
from rltwist.nodes.master.gm import GMApi, HTTPError
from rltwist.protocols import pb
from rltwist.protocols.framing import MIN_LENGTH, UP_HEADER, FrameDecoder, FrameError
from rltwist.protocols.registry import REGISTRY
from rltwist.protocols.server import ServerProtocol
from tests.util import SECRET
from tests.util import settings as cluster_settings

PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(data[last:p])
        last = p
    chunks.append(data[last:])
    return chunks


def reference(data: bytes, max_length: int = 0xFFFF) -> tuple[list[tuple[int, int, bytes]],
                                                            str | None, int]:
    """Decode *data* one frame at a time: (frames, reason of the first bad length or None,
    bytes left over)."""
    frames, offset = [], 0
    while len(data) - offset >= 2:
        (length,) = struct.unpack_from(">H", data, offset)
        if length < MIN_LENGTH or length > max_length:
            return frames, "frame_too_short" if length < MIN_LENGTH else "frame_too_large", 0
        if len(data) - offset < 2 + length:
            break
        proto, session = struct.unpack_from(">HI", data, offset + 2)
        frames.append((proto, session, data[offset + 8: offset + 2 + length]))
        offset += 2 + length
    return frames, None, len(data) - offset


def frame(proto: int, session: int, body: bytes) -> bytes:
    return UP_HEADER.pack(MIN_LENGTH + len(body), proto, session) + body


#: a stream that is mostly well framed (real ids, bodies, sometimes garbage in between)
frames_st = st.lists(st.one_of(
    st.builds(frame, st.sampled_from(sorted(REGISTRY.requests)), st.integers(0, 2**32 - 1),
              st.binary(max_size=40)),
    st.builds(frame, st.integers(0, 2**16 - 1), st.integers(0, 9), st.binary(max_size=8)),
    st.binary(max_size=12)), max_size=12).map(b"".join)
cuts_st = st.lists(st.integers(0, 10_000), max_size=12)


class ClientFraming(unittest.TestCase):
    @PROPERTY
    @given(frames_st, cuts_st, st.integers(MIN_LENGTH, 0xFFFF))
    def test_any_split_gives_the_reference_frames_or_one_clean_close(
            self, data: bytes, cuts: list[int], max_length: int) -> None:
        want, bad, left = reference(data, max_length)
        decoder = FrameDecoder(downstream=False, max_length=max_length)
        got: list[tuple[int, int, bytes]] = []
        error = None
        for chunk in split(data, cuts):
            try:
                got += [tuple(f) for f in decoder.feed(chunk)]  # type: ignore[misc]
            except FrameError as e:
                error = e.reason
                break
        self.assertEqual(error, bad)
        if bad is None:
            self.assertEqual(got, want)
            self.assertEqual(decoder.buffered, left)
        else:
            self.assertEqual(got, want[: len(got)])
            with self.assertRaises(FrameError):  # closed for good: every later feed fails
                decoder.feed(b"\x00\x06" + b"\x00" * 6)

    @PROPERTY
    @given(frames_st, cuts_st)
    def test_the_server_sees_the_same_requests_and_closes_once(self, data: bytes,
                                                               cuts: list[int]) -> None:
        def serve(chunks: list[bytes]) -> tuple[list[tuple[int, bytes]], str | None, int]:
            seen: list[tuple[int, bytes]] = []
            proto = ServerProtocol(lambda p, m, s: seen.append((s, m.SerializeToString())),
                                   clock=task.Clock())  # its idle/handshake timers
            transport = StringTransport()
            proto.makeConnection(transport)
            for chunk in chunks:
                proto.dataReceived(chunk)  # never raises
            return seen, proto.close_reason, sum(proto.closes.values())

        whole = serve([data])
        pieces = serve(split(data, cuts))
        self.assertLessEqual(pieces[2], 1)  # at most one close, counted once
        self.assertLessEqual(whole[2], 1)
        self.assertEqual(pieces[1] is None, whole[1] is None)  # closed either way, or not
        if whole[1] is None:
            self.assertEqual(pieces[0], whole[0])
        else:
            # A read holding a bad length is refused whole (frames before it in the same
            # read are dropped, and the reason is the bad length), so the two runs may stop
            # at different frames of the same stream: one is a prefix of the other.
            short, long = sorted((whole[0], pieces[0]), key=len)
            self.assertEqual(short, long[: len(short)])


class Recorder(Service):
    name = "rec"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @handler
    def act(self, *args: Any) -> Any:
        self.seen.append(args)
        return len(args)


msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
              st.text(max_size=10), st.binary(max_size=10), st.sampled_from(["rec", "act"])),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=20)
frame_st = st.one_of(
    msgpack_values,
    st.tuples(st.just(CALL), st.integers(0, 2**32), st.sampled_from(["rec", "x", 1]),
              st.sampled_from(["act", "y", None]), st.lists(msgpack_values, max_size=3)),
    st.tuples(st.just(SEND), st.sampled_from(["rec", "x"]), st.sampled_from(["act", "y"]),
              st.lists(msgpack_values, max_size=3)))


def agent() -> tuple[AgentLink, StringTransport, Recorder, Cluster]:
    cluster = Cluster("b", cluster_settings(), {}, reactor=MemoryReactorClock())
    rec = Recorder()
    cluster.register(rec)
    link = AgentLink(cluster)
    transport = StringTransport()
    link.makeConnection(transport)
    return link, transport, rec, cluster


def authenticate(link: AgentLink, transport: StringTransport) -> None:
    _, _, nonce = unpack(transport.value())
    transport.clear()
    link.dataReceived(pack([AUTH, "x", b"s" * 16, mac(SECRET, b"S", nonce, "x", "b")]))
    assert link.ready


class ClusterCodec(unittest.TestCase):
    @PROPERTY
    @given(st.lists(frame_st, max_size=8), st.binary(max_size=64), cuts_st)
    def test_before_the_handshake_nothing_is_ever_dispatched(
            self, frames: list[Any], garbage: bytes, cuts: list[int]) -> None:
        link, transport, rec, cluster = agent()
        data = b"".join(msgpack.packb(f, use_bin_type=True) for f in frames) + garbage
        for chunk in split(data, cuts):
            link.dataReceived(chunk)  # must not raise
            if transport.disconnecting:
                break
        self.assertEqual(rec.seen, [])
        self.assertFalse(link.ready)
        self.assertEqual(cluster.stats.unauthenticated_dispatches, 0)

    @PROPERTY
    @given(st.lists(frame_st, max_size=10), cuts_st)
    def test_after_it_any_split_runs_the_same_calls(self, frames: list[Any],
                                                    cuts: list[int]) -> None:
        data = b"".join(msgpack.packb(f, use_bin_type=True) for f in frames)

        def feed(chunks: list[bytes]) -> tuple[list[Any], bool]:
            link, transport, rec, _ = agent()
            authenticate(link, transport)
            for chunk in chunks:
                link.dataReceived(chunk)  # must not raise
                if transport.disconnecting:
                    break
            return rec.seen, transport.disconnecting

        self.assertEqual(feed(split(data, cuts)), feed([data]))


class _Request:
    """What GMApi._body reads of a request."""

    def __init__(self, body: bytes) -> None:
        self.content = io.BytesIO(body)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=15)


class GMJson(unittest.TestCase):
    def setUp(self) -> None:
        self.api = GMApi.__new__(GMApi)

    def body(self, raw: bytes, required: tuple[str, ...] = ()) -> Any:
        try:
            return self.api._body(_Request(raw), required)  # type: ignore[arg-type]
        except HTTPError as e:
            self.assertIn(e.status, (400, 413))
            return e

    @PROPERTY
    @given(st.one_of(st.binary(max_size=200), json_values.map(
        lambda v: __import__("json").dumps(v).encode())))
    def test_any_body_is_a_dict_or_a_4xx(self, raw: bytes) -> None:
        result = self.body(raw, ("node",))
        if not isinstance(result, HTTPError):
            self.assertIsInstance(result, dict)
            self.assertIn("node", result)

    @PROPERTY
    @given(json_values)
    def test_any_timeout_field_is_a_number_in_range_or_a_400(self, value: Any) -> None:
        try:
            t = self.api._timeout({"timeout": value})
        except HTTPError as e:
            self.assertEqual(e.status, 400)
            return
        self.assertTrue(0 < t <= 600)

    def test_a_body_over_the_limit_is_413(self) -> None:
        from rltwist.nodes.master.gm import MAX_BODY

        result = self.body(b" " * (MAX_BODY + 1))
        self.assertIsInstance(result, HTTPError)
        self.assertEqual(result.status, 413)


__all__ = ["pb"]
