"""Crash points (rltwist/crashpoint.py): which points are armed, and a real process that
dies by SIGKILL exactly at the armed step — and only when the test flag allows it."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial import unittest

from rltwist import crashpoint as cp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Armed(unittest.TestCase):
    """Parsing of RLTWIST_TEST_FLAGS and RLTWIST_CRASH_POINTS."""

    def test_nothing_is_armed_without_the_crashpoints_test_flag(self) -> None:
        points = {cp.ENV_POINTS: "after_reserve_name,before_grant_clear@2"}
        self.assertEqual(cp.armed(points), {})
        self.assertEqual(cp.armed({**points, cp.ENV_FLAGS: ""}), {})
        self.assertEqual(cp.armed({**points, cp.ENV_FLAGS: "other,crashpointsX"}), {})
        self.assertEqual(cp.armed({cp.ENV_FLAGS: "crashpoints"}), {})  # flag, no points

    def test_points_are_comma_separated_and_name_at_n_picks_the_occurrence(self) -> None:
        env = {cp.ENV_FLAGS: "fast, crashpoints ,x",
               cp.ENV_POINTS: " after_reserve_name , before_grant_clear@3,,after_save@1 "}
        self.assertEqual(cp.armed(env), {"after_reserve_name": 1, "before_grant_clear": 3,
                                         "after_save": 1})

    def test_test_flag_matches_whole_comma_separated_flags(self) -> None:
        self.assertTrue(cp.test_flag("crashpoints", {cp.ENV_FLAGS: "a,crashpoints"}))
        self.assertTrue(cp.test_flag("a", {cp.ENV_FLAGS: " a , crashpoints"}))
        self.assertFalse(cp.test_flag("crash", {cp.ENV_FLAGS: "crashpoints"}))
        self.assertFalse(cp.test_flag("crashpoints", {}))

    def test_an_armed_point_kills_at_its_nth_occurrence_only(self) -> None:
        # In process, with os.kill recorded instead of delivered.
        kills: list[tuple[int, int]] = []
        self.patch(cp.os, "kill", lambda pid, sig: kills.append((pid, sig)))
        self.patch(cp.sys, "stderr", _Sink())
        self.addCleanup(cp.rearm)  # back to this process's own environment
        cp.rearm({cp.ENV_FLAGS: "crashpoints", cp.ENV_POINTS: "step@3,first"})
        cp.crashpoint("unarmed")
        cp.crashpoint("step")
        cp.crashpoint("step")
        self.assertEqual(kills, [])
        cp.crashpoint("step")
        self.assertEqual(kills, [(os.getpid(), signal.SIGKILL)])
        cp.crashpoint("step")  # (a real process is gone by now) no second kill
        cp.crashpoint("first")
        self.assertEqual(kills, [(os.getpid(), signal.SIGKILL)] * 2)
        cp.rearm({cp.ENV_POINTS: "step"})  # no flag: disarmed
        cp.crashpoint("step")
        self.assertEqual(len(kills), 2)


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


CHILD = """
    from rltwist.crashpoint import crashpoint
    for i in (1, 2, 3):
        print("at", i, flush=True)
        crashpoint("step")
        print("past", i, flush=True)
    print("done", flush=True)
"""


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)


async def run_child(**env: str) -> tuple[list[str], str, int | None, int | None]:
    """Run CHILD with *env* added; its stdout lines, stderr, exit code and signal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RLTWIST_")}
    base["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    child = _Child()
    argv = [sys.executable, "-c", textwrap.dedent(CHILD)]
    proc = reactor.spawnProcess(child, sys.executable, argv, env={**base, **env}, path=REPO)
    try:
        ended = await child.ended.addTimeout(30, reactor)
    except defer.TimeoutError:
        proc.signalProcess("KILL")
        raise AssertionError("the child did not exit within 30 s") from None
    lines = b"".join(child.out).decode().splitlines()
    return lines, b"".join(child.err).decode(), ended.exitCode, ended.signal


class RealProcess(unittest.TestCase):
    timeout = 60

    async def test_process_dies_by_sigkill_exactly_at_the_armed_occurrence(self) -> None:
        lines, err, code, sig = await run_child(
            RLTWIST_TEST_FLAGS="crashpoints", RLTWIST_CRASH_POINTS="step@2")
        self.assertEqual((code, sig), (None, signal.SIGKILL), err)
        # nothing after the point ran: no "past 2", no normal exit
        self.assertEqual(lines, ["at 1", "past 1", "at 2"])
        self.assertIn("crash point step reached (occurrence 2)", err)

    async def test_first_occurrence_by_default(self) -> None:
        lines, err, code, sig = await run_child(
            RLTWIST_TEST_FLAGS="crashpoints", RLTWIST_CRASH_POINTS="other,step")
        self.assertEqual((code, sig), (None, signal.SIGKILL), err)
        self.assertEqual(lines, ["at 1"])

    async def test_without_the_test_flag_the_process_runs_through(self) -> None:
        lines, err, code, sig = await run_child(RLTWIST_CRASH_POINTS="step")
        self.assertEqual((code, sig), (0, None), err)
        self.assertEqual(lines[-1], "done")
        self.assertNotIn("crash point", err)

    async def test_an_unarmed_name_does_not_stop_the_process(self) -> None:
        lines, err, code, sig = await run_child(
            RLTWIST_TEST_FLAGS="crashpoints", RLTWIST_CRASH_POINTS="after_reserve_name")
        self.assertEqual((code, sig), (0, None), err)
        self.assertEqual(lines[-1], "done")
