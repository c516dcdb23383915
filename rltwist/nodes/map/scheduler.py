"""The timed events of one map node (march arrivals, gathers ending, returns home).

One :class:`Scheduler` per map node keeps every pending event in a heap and holds ONE
``IDelayedCall``, armed for the earliest event and re-armed when that changes: 10,000
marches in flight cost one timer, not 10,000 ``callLater`` s, and nothing runs while none
is due.

An event is ``(key, due_ms, kind)``: *key* names its owner (a march id), *kind* selects
the handler registered with :meth:`Scheduler.on`. A key has at most one pending event:
scheduling it again replaces the earlier one (a recalled march's arrival becomes its
return home). The scheduler itself stores nothing: the owner keeps its next event in its
own saved data (a march's ``event`` and ``due_ms``), and whoever loads the owners at start
schedules them again; :meth:`start` then runs every event that fell due while the node was
down, in time order (ties in the order they were scheduled), before anything later.

Due events run in batches of at most ``batch`` per reactor turn, so a burst of arrivals
never blocks the node for long. Handlers may return a Deferred (or be coroutine
functions); the scheduler does not wait for them, it counts them in :attr:`inflight`
(``drained()`` waits for them). A handler that raises is logged and does not stop the
others.

:meth:`pause` stops firing (the map's first phase of an ordered cluster shutdown: the
role, rolecity and mail nodes stop before the map, so a return home could not land); the
paused events stay in the owners' saved data and run after the restart.
"""

from __future__ import annotations

import heapq
import inspect
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["Scheduler"]

log = Logger()

Handler = Callable[[Any], Any]


class Scheduler:
    """Timed events keyed by owner, driven by one delayed call (module docstring).

    *clock* is the reactor (``task.Clock`` in tests); *now_ms* the time events are
    compared with (default: the clock's seconds in ms). Created paused: :meth:`start`
    once the owners' events are scheduled."""

    def __init__(self, clock: IReactorTime, *, now_ms: Callable[[], int] | None = None,
                 batch: int = 2000) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        self.clock = clock
        self.now_ms = now_ms or (lambda: int(clock.seconds() * 1000))
        self.batch = batch
        self.handlers: dict[str, Handler] = {}
        self._heap: list[tuple[int, int, Hashable]] = []
        self._events: dict[Hashable, tuple[int, int, str]] = {}  # key -> (due, seq, kind)
        self._seq = 0
        self._call: IDelayedCall | None = None
        self._firing = False
        self.paused = True
        self.fired = 0
        """Events handed to their handler since creation."""
        self.inflight: set[defer.Deferred[Any]] = set()
        """Handlers that returned a Deferred not fired yet."""

    # -- the events --------------------------------------------------------------------

    def on(self, kind: str, handler: Handler) -> None:
        """Run ``handler(key)`` for each due event of *kind*."""
        self.handlers[kind] = handler

    def schedule(self, key: Hashable, due_ms: int, kind: str) -> None:
        """Make *key*'s pending event ``(due_ms, kind)``, replacing any earlier one."""
        if kind not in self.handlers:
            raise KeyError(f"no handler for event kind {kind!r}")
        self._seq += 1
        due = int(due_ms)
        self._events[key] = (due, self._seq, kind)
        heapq.heappush(self._heap, (due, self._seq, key))
        self._arm()

    def cancel(self, key: Hashable) -> bool:
        """Drop *key*'s pending event; True if it had one (its heap entry is skipped when
        it comes up: no re-heapify)."""
        return self._events.pop(key, None) is not None

    def pending(self, key: Hashable) -> tuple[int, str] | None:
        """``(due_ms, kind)`` of *key*'s pending event, or None."""
        ev = self._events.get(key)
        return None if ev is None else (ev[0], ev[2])

    def __len__(self) -> int:
        return len(self._events)

    def next_due(self) -> int | None:
        """The due time of the earliest pending event, or None."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Fire events from now on (those already due first, in time order)."""
        self.paused = False
        self._arm()

    def pause(self) -> None:
        """Stop firing; pending events stay (and stay in their owners' data)."""
        self.paused = True
        self._disarm()

    def drained(self) -> defer.Deferred[None]:
        """Fires once every handler in flight now has finished."""
        pending = list(self.inflight)
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)
        return d.addCallback(lambda _: None)

    def _drop_stale(self) -> None:
        heap, events = self._heap, self._events
        while heap:
            _due, seq, key = heap[0]
            ev = events.get(key)
            if ev is not None and ev[1] == seq:
                return
            heapq.heappop(heap)

    def _disarm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        """Point the one delayed call at the earliest pending event."""
        if self.paused or self._firing:
            return
        due = self.next_due()
        if due is None:
            self._disarm()
            return
        delay = max(0.0, (due - self.now_ms()) / 1000.0)
        at = self.clock.seconds() + delay
        call = self._call
        if call is not None and call.active():
            if call.getTime() <= at:
                return  # armed for this time or earlier: it re-arms when it fires
            call.reset(delay)
            return
        self._call = self.clock.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        if self.paused:
            return
        self._firing = True
        try:
            now = self.now_ms()
            heap, events = self._heap, self._events
            n = 0
            while heap and n < self.batch and not self.paused:
                due, seq, key = heap[0]
                ev = events.get(key)
                if ev is None or ev[1] != seq:
                    heapq.heappop(heap)
                    continue
                if due > now:
                    break
                heapq.heappop(heap)
                del events[key]
                n += 1
                self._run(key, ev[2], due)
        finally:
            self._firing = False
        self._arm()

    def _run(self, key: Hashable, kind: str, due: int) -> None:
        self.fired += 1
        handler = self.handlers.get(kind)
        if handler is None:  # only if a kind's handler was removed (hot fix gone wrong)
            log.error("event {kind} of {key} due {due}: no handler; dropped", kind=kind,
                      key=key, due=due)
            return
        try:
            result = handler(key)
            if inspect.iscoroutine(result):
                result = defer.Deferred.fromCoroutine(result)
        except Exception:
            log.failure("event {kind} of {key} failed", kind=kind, key=key)
            return
        if isinstance(result, defer.Deferred):
            self.inflight.add(result)

            def done(outcome: Any, d: defer.Deferred[Any] = result) -> None:
                self.inflight.discard(d)
                if isinstance(outcome, Failure):
                    log.failure("event {kind} of {key} failed", outcome, kind=kind, key=key)

            result.addBoth(done)
