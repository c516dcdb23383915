"""Console commands: rl-cluster (and rl-bot, in rltwist.bot), plus what scripts share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from twisted.internet import defer, task


def react_main(main: Callable[[Any], Awaitable[int]]) -> NoReturn:
    """Run ``main(reactor)`` under ``task.react``; what it returns is the exit status.

    (``task.react`` exits the process itself, so a ``sys.exit`` after it never runs:
    the status has to leave as a SystemExit from inside.)
    """

    async def run(reactor: Any) -> None:
        raise SystemExit(await main(reactor))

    task.react(lambda r: defer.ensureDeferred(run(r)))
    raise AssertionError("task.react returned")  # pragma: no cover
