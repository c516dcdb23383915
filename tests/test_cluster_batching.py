"""Frames a caller writes while its sender handles one read from the peer (a reply's
callback making the next call, as a busy caller does) reach the transport in one write at
the end of that read, in the order they were made, and count against the outbound bound
like any other frame. Driven over a fake transport on a fake clock, as in
tests/test_cluster_bounds.py.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from rltwist.cluster import Cluster, LinkLost
from rltwist.cluster.link import CALL, PING, SEND
from tests.test_cluster_bounds import Echo, FakePeer, PipeTransport
from tests.util import settings

MiB = 1024 * 1024


class CountingTransport(PipeTransport):
    """A PipeTransport that records each ``write`` it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class WritesWhileReading(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.a = Cluster("a", settings(), {"b": ("127.0.0.1", 1)}, reactor=self.clock,
                         max_outbound=1 * MiB, ping_interval=1.0, ping_timeout=5.0)
        self.a.register(Echo())
        self.a.startService()
        self.addCleanup(lambda: self.a.running and self.a.stopService())
        self.a.send("b", "echo", "note", "hello")  # makes the sender connect
        self.transport = CountingTransport()
        self.peer = FakePeer(self.clock, transport=self.transport)
        self.peer.read()
        self.clock.advance(0.1)  # the first sweep asks the peer to confirm that send
        self.peer.answer(self.peer.read())
        self.sender = self.a.senders["b"]

    def test_frames_made_in_reply_callbacks_go_out_in_one_write_in_order(self) -> None:
        made: list[tuple[int, str, Any]] = []
        results: list[Any] = []

        def next_call(value: Any) -> None:
            # nothing of this read's work has reached the transport yet
            self.assertEqual(self.transport.writes, [])
            results.append(value)
            self.a.send("b", "echo", "note", f"s{value}")
            made.append((SEND, "note", f"s{value}"))
            self.a.call("b", "echo", "ping", f"c{value}").addCallback(results.append)
            made.append((CALL, "ping", f"c{value}"))

        for i in range(3):
            self.a.call("b", "echo", "ping", i).addCallback(next_call)
        frames = self.peer.read()
        self.transport.writes.clear()
        self.peer.answer(frames)  # one read with the three replies
        self.assertEqual(results, [0, 1, 2])
        self.assertEqual(len(self.transport.writes), 1, "one write for the whole read")
        written = self.peer.read()
        self.assertEqual([(f[0], f[-2] if f[0] == CALL else f[2], f[-1][-1]) for f in written],
                         made)
        self.assertEqual(self.sender.outbound_bytes(), 0)
        # the calls made in the callbacks are answered like any other
        self.peer.answer(written)
        self.assertEqual(results[3:], ["c0", "c1", "c2"])
        # outside a read, a frame is written at once, as always
        self.transport.writes.clear()
        alone = self.a.call("b", "echo", "ping", "alone")
        self.assertEqual(len(self.transport.writes), 1)
        self.peer.answer(self.peer.read())
        self.assertEqual(self.successResultOf(alone), "alone")

    def test_bytes_written_during_a_read_count_against_the_bound(self) -> None:
        high = self.sender.high_water
        payload = b"p" * (high // 4)
        # the peer stops reading after this read: the callbacks offer four high-water marks
        seen: list[int] = []

        def flood(_: Any) -> None:
            for i in range(16):
                self.a.send("b", "echo", "note", i, payload)
                seen.append(i)
                self.assertLessEqual(self.sender.outbound_bytes(), 1 * MiB + len(payload) + 100)

        self.a.call("b", "echo", "ping", 1).addCallback(flood)
        self.peer.answer(self.peer.read())
        self.assertEqual(len(seen), 16)
        # the transport got at most a high-water mark (plus the frame that crossed it); the
        # rest waits in the queue or was dropped, as for sends made outside a read
        self.assertLessEqual(len(self.transport.value()), high + len(payload) + 100)
        self.assertGreater(self.sender.queued_bytes, 0)
        self.assertEqual(self.sender.outbound_bytes(),
                         len(self.transport.value()) + self.sender.queued_bytes)
        # once the peer reads, every send that was accepted arrives, in order
        got: list[int] = []
        for _ in range(50):
            frames = self.peer.read()
            if not frames:
                break
            got += [f[3][0] for f in frames if f[0] == SEND and len(f[3]) == 2]
        dropped = self.a.stats.dropped("b")
        self.assertEqual(got, list(range(16 - dropped)))

    def test_a_link_lost_during_a_read_gets_nothing_more(self) -> None:
        outcomes: list[Any] = []

        def lose_then_call(_: Any) -> None:
            d = self.a.call("b", "echo", "ping", "before loss")
            d.addErrback(lambda f: outcomes.append(f.trap(LinkLost)))
            self.a.send("b", "echo", "note", "before loss")
            self.peer.lose()
            self.a.call("b", "echo", "ping", "after loss").addBoth(outcomes.append)

        self.a.call("b", "echo", "ping", 1).addCallback(lose_then_call)
        frames = self.peer.read()
        self.transport.writes.clear()
        self.peer.answer(frames)
        # the call made before the loss counts as written to the lost link: LinkLost (it may
        # have run), its send is counted lost; nothing reached the old transport afterwards
        self.assertEqual(outcomes, [LinkLost])
        self.assertEqual(self.transport.writes, [])
        self.assertEqual(self.a.stats.lost("b", "link_lost"), 1)
        # the call made after the loss waits for the next link and goes out on it
        self.assertEqual(len(self.sender.queue), 1)
        self.clock.advance(self.a.settings.reconnect_max)
        peer2 = FakePeer(self.clock)
        frames = peer2.read()
        self.assertEqual([f[4] for f in frames if f[0] == CALL], [["after loss"]])
        peer2.answer(frames)
        self.assertEqual(outcomes, [LinkLost, "after loss"])

    def test_a_ping_made_during_a_read_follows_the_frames_before_it(self) -> None:
        # A PONG confirms every send written before its PING: a PING must never pass a
        # send made earlier in the same read.
        def send_then_sweep(_: Any) -> None:
            self.a.send("b", "echo", "note", "first")
            self.sender.expire(self.clock.seconds())  # finds an unconfirmed send: pings

        self.a.call("b", "echo", "ping", 1).addCallback(send_then_sweep)
        self.peer.answer(self.peer.read())
        kinds = [f[0] for f in self.peer.read()]
        self.assertIn(PING, kinds)
        self.assertLess(kinds.index(SEND), kinds.index(PING))
