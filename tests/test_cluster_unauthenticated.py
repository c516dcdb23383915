"""The cluster agent counts dispatches from unauthenticated peers
(``rl_cluster_unauthenticated_dispatches_total``, must stay 0): a stranger's frames before
the handshake run nothing, and a link that reached frame handling without a handshake (a
bug) is refused, counted and closed instead of dispatched."""

from __future__ import annotations

from typing import Any

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from rltwist.cluster import Cluster, Service, handler
from rltwist.cluster.link import AUTH, CALL, SEND, AgentLink, pack
from tests.test_cluster_bounds import scrape
from tests.util import settings


class Recorder(Service):
    name = "rec"

    def __init__(self) -> None:
        self.seen: list[Any] = []

    @handler
    def act(self, value: Any) -> Any:
        self.seen.append(value)
        return value


class Unauthenticated(unittest.TestCase):
    def setUp(self) -> None:
        self.cluster = Cluster("b", settings(), {}, reactor=MemoryReactorClock())
        self.rec = Recorder()
        self.cluster.register(self.rec)
        self.transport = StringTransport()
        self.link = AgentLink(self.cluster)
        self.link.makeConnection(self.transport)

    def counted(self) -> float:
        for line in scrape(self.cluster).splitlines():
            if line.startswith("rl_cluster_unauthenticated_dispatches_total "):
                return float(line.split()[1])
        raise AssertionError("rl_cluster_unauthenticated_dispatches_total is not exported")

    def test_frames_before_the_handshake_run_nothing_and_count_zero(self) -> None:
        self.link.dataReceived(pack([CALL, 1, "rec", "act", [1]]) + pack([SEND, "rec", "act",
                                                                           [2]]))
        self.assertTrue(self.transport.disconnecting)
        stranger = AgentLink(self.cluster)
        stranger.makeConnection(StringTransport())
        stranger.dataReceived(pack([AUTH, "x", b"n" * 16, b"wrong mac"]) +
                              pack([CALL, 2, "rec", "act", [3]]))
        self.assertEqual(self.rec.seen, [])
        self.assertEqual(self.counted(), 0)

    def test_a_link_that_skipped_the_handshake_is_counted_and_closed(self) -> None:
        self.link.frames(iter([[CALL, 1, "rec", "act", [1]], [SEND, "rec", "act", [2]]]))
        self.assertEqual(self.rec.seen, [])
        self.assertEqual(self.counted(), 2)
        self.assertTrue(self.transport.disconnecting)
