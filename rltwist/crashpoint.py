"""Crash points: a test-only way to make a process die hard at a named step.

Every "a crash at any step loses nothing" claim (rename, grant transfers, mail delivery,
later gifts, marches and move-city) is tested by killing the process exactly at each step,
not by hoping a ``kill -9`` lands in the right millisecond. Code marks its steps::

    await self.names.reserve(key, userid)
    crashpoint("after_reserve_name")

and a test starts the node with the environment variable ``RLTWIST_CRASH_POINTS`` naming
the steps to die at (comma-separated; ``name@N`` dies the N-th time the step is reached).
The process then sends itself SIGKILL: no ``finally`` block, no shutdown trigger and no
buffered write runs, exactly like an operator's ``kill -9`` or the OOM killer.

Production nodes never die here: the variable is honoured only together with
``RLTWIST_TEST_FLAGS`` containing ``crashpoints`` (so a stray variable in an operator's
shell does nothing), and a node that honours it logs that it does at start.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import Mapping

ENV_POINTS = "RLTWIST_CRASH_POINTS"
ENV_FLAGS = "RLTWIST_TEST_FLAGS"

_seen: Counter[str] = Counter()


def test_flag(flag: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the test flag *flag* is set in ``RLTWIST_TEST_FLAGS`` (comma-separated)."""
    env = os.environ if environ is None else environ
    return flag in {f.strip() for f in env.get(ENV_FLAGS, "").split(",") if f.strip()}


def armed(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """The armed crash points ``{name: occurrence}`` (empty unless test flags enable them)."""
    env = os.environ if environ is None else environ
    if not test_flag("crashpoints", env):
        return {}
    points: dict[str, int] = {}
    for item in env.get(ENV_POINTS, "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, nth = item.partition("@")
        if sep and not (nth.isdigit() and int(nth) >= 1):
            raise ValueError(f"{ENV_POINTS}: bad occurrence in {item!r} (name or name@N, N >= 1)")
        points[name.strip()] = int(nth) if sep else 1
    return points


_armed = armed()


def rearm(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Read the environment again (unit tests); returns the armed points."""
    global _armed
    _armed = armed(environ)
    _seen.clear()
    return _armed


def crashpoint(name: str) -> None:
    """Die with SIGKILL here if the crash point *name* is armed for this occurrence."""
    if not _armed:
        return
    nth = _armed.get(name)
    if nth is None:
        return
    _seen[name] += 1
    if _seen[name] == nth:
        sys.stderr.write(f"rltwist: crash point {name} reached (occurrence {nth}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
