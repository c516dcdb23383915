"""Bugs ``rl-chaos fuzz`` found, each pinned by the input that showed it."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial import unittest

from rltwist.cluster import Cluster
from rltwist.cluster.link import AUTH, AgentLink, mac, pack, unpack
from rltwist.sdk import check_dev_token, dev_token
from tests.util import SECRET, settings


class DevTokenCheck(unittest.TestCase):
    def test_a_non_ascii_token_is_a_wrong_token_not_a_crash(self) -> None:
        # fuzz: a Login whose token held "é" made the login node answer INTERNAL and log a
        # critical traceback (hmac.compare_digest refuses non-ASCII str)
        self.assertFalse(check_dev_token("s", "openid", "é" * 64))
        self.assertFalse(check_dev_token("s", "openid", "\U0001f642"))
        self.assertTrue(check_dev_token("s", "é-openid", dev_token("s", "é-openid")))


class MapFrameAfterHandshake(unittest.TestCase):
    def test_a_msgpack_map_frame_closes_the_link_as_a_protocol_violation(self) -> None:
        # fuzz: {"a": 1} as a frame raised KeyError out of dataReceived ("Unhandled
        # Error"), so the link went down uncounted instead of as a protocol violation
        cluster = Cluster("b", settings(), {}, reactor=MemoryReactorClock())
        link = AgentLink(cluster)
        transport = StringTransport()
        link.makeConnection(transport)
        _, _, nonce = unpack(transport.value())
        link.dataReceived(pack([AUTH, "x", b"s" * 16, mac(SECRET, b"S", nonce, "x", "b")]))
        self.assertTrue(link.ready)
        link.dataReceived(pack({"a": 1}))  # must not raise
        self.assertTrue(transport.disconnecting)
        self.assertEqual(cluster.stats.link_closes.get("protocol violation"), 1)


class OpenidsInLogLines(unittest.TestCase):
    """A client-chosen openid goes into log lines escaped and bounded: a newline in it
    cannot forge a log line, and 128 characters of it do not flood one."""

    def test_control_characters_are_escaped_and_long_ones_cut(self) -> None:
        from rltwist.net import loggable
        forged = "x\n2026-12-01T00:00:00+0000 [master#info] shutdown complete\r\x1b[2J"
        text = loggable(forged)
        self.assertNotIn("\n", text)
        self.assertNotIn("\r", text)
        self.assertNotIn("\x1b", text)
        self.assertIn("\\n", text)
        long = loggable("a" * 128)
        self.assertLessEqual(len(long), 100)
        self.assertTrue(long.endswith("(128 chars)"))
        self.assertEqual(loggable("player-1"), "'player-1'")
