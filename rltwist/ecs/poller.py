"""A service that runs a check on a fixed interval and reports what it found.

Used for the codefix directory (``HotFixer.apply_pending``), new data-fix scripts
(``DataFixer.load``) and changed config tables (``ShareData.reload``).  The clock is
injected so tests step time with ``twisted.internet.task.Clock``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from twisted.application import service
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["PollingService"]

log = Logger()

R = TypeVar("R")


class PollingService(service.Service, Generic[R]):
    """Call ``check()`` every ``interval`` seconds; pass non-empty results to ``on_results``.

    The first check runs when the service starts.  An exception from ``check`` or
    ``on_results`` is logged and the loop keeps going — a poller that dies on one bad file
    would silently stop every later hotfix.
    """

    def __init__(
        self,
        check: Callable[[], Sequence[R]],
        interval: float,
        clock: IReactorTime | None = None,
        on_results: Callable[[Sequence[R]], Any] | None = None,
        name: str = "poller",
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as _reactor

            clock = _reactor
        self.check = check
        self.interval = interval
        self.clock = clock
        self.on_results = on_results
        self.setName(name)
        self._loop: task.LoopingCall | None = None

    def poll(self) -> Sequence[R]:
        """Run one check now (also what the timer calls); return its results."""
        try:
            results = self.check()
        except Exception:
            log.failure("{service}: check failed", service=self.name)
            return ()
        if results and self.on_results is not None:
            try:
                self.on_results(results)
            except Exception:
                log.failure("{service}: reporting results failed", service=self.name)
        return results

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()
