"""activities: global activities on logiccenter (seed §5 gactivitymgr).

    activities.create(body)          -> {"ok": True, "activity": doc} | {"ok": False, ...}
    activities.stop(id)              -> the same (a running one ends now)
    activities.extend(id, body)      -> the same ({"end_ms"} or {"by": seconds})
    activities.list()                -> [doc, ...] every stored one, oldest first
    activities.current(regions)      -> [doc, ...] running for players of those regions

Every GM change is saved in globaldb (collection ``activity``) before it is answered.
Starts and ends are driven by one timer for the whole service, armed for the earliest
next start or end of any activity (re-armed after every change), not one timer per
activity. When a start or end comes, the online players born in the activity's regions
(all players for an activity of every region) get an ``ActivityNotify`` through
``reach.broadcast`` (one cluster message per role node), then the new state is saved: a
crash between the two reports the event again after the restart (at least once, never
lost). On start (and after a restart) the service reads every stored activity, moves each
one on to its state at the current time (reporting what happened while it was down: an
activity whose end passed is reported ended) and arms the timer again. Rules:
``rltwist.game.activitysystem``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.ecs import import_system
from rltwist.metrics import precreate
from rltwist.nodes.common import reach
from rltwist.nodes.common.keylock import FifoLock
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.logiccenter.account import GLOBALDB, Account
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
activity_system = import_system("rltwist.game.activitysystem", service="activities")

COLLECTION = "activity"
SEQ = "activity_seq"
#: seconds before a failed load or state save is tried again
RETRY_AFTER = 1.0

EVENTS = {"started": pb.ActivityEvent.ACTIVITY_STARTED,
          "ended": pb.ActivityEvent.ACTIVITY_ENDED,
          "extended": pb.ActivityEvent.ACTIVITY_EXTENDED}


def activity_pb(doc: dict[str, Any], tables: Any) -> Any:
    """The client's ``Activity`` of a stored activity (title from the game table)."""
    spec = tables["activities"].get(doc["kind"], {})
    return pb.Activity(id=doc["id"], kind=doc["kind"], title=spec.get("title", doc["kind"]),
                       start_ms=doc["start_ms"], end_ms=doc["end_ms"],
                       regions=doc["regions"], params=doc["params"])


class Activities(Service):
    """The ``activities`` service (see the module docstring)."""

    name = "activities"

    def __init__(self, node: Node, account: Account, clock: Any = None) -> None:
        self.node = node
        self.account = account
        self.db = node.database(GLOBALDB)
        self.clock = clock if clock is not None else node.reactor
        self.docs: dict[int, dict[str, Any]] = {}
        #: activities whose state changed but is not saved yet (retried by the timer)
        self.unsaved: set[int] = set()
        self.lock = FifoLock()
        self.timer: IDelayedCall | None = None
        self._is_loaded = False
        registry = getattr(node, "registry", None) or CollectorRegistry()
        self.events = Counter("rl_activity_events", "Activity starts, extensions and ends "
                              "announced to players", ["event"], registry=registry)
        precreate(self.events, list(EVENTS))
        states = Gauge("rl_activities", "Activities by state", ["state"], registry=registry)
        for state in ("scheduled", "running", "ended"):
            states.labels(state).set_function(self._counter_of(state))

    def _counter_of(self, state: str) -> Callable[[], float]:
        return lambda: float(sum(d["state"] == state for d in self.docs.values()))

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- loading, the timer -------------------------------------------------------------

    def start(self) -> None:
        """Load the stored activities and arm the timer; retried until storage answers."""
        def failed(f: Any) -> None:
            log.failure("activities: cannot load them; trying again", f)
            self._arm_in(RETRY_AFTER)
        defer.Deferred.fromCoroutine(self.loaded()).addErrback(failed)

    def stop_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    async def loaded(self) -> None:
        """Read every stored activity once, then bring each up to now (requests wait)."""
        if self._is_loaded:
            return
        async with self.lock:
            if not self._is_loaded:
                for _, doc in await self.db.find(COLLECTION, {}):
                    self.docs[int(doc["id"])] = doc
                self._is_loaded = True
                log.info("activities: {n} loaded ({live} not ended)", n=len(self.docs),
                         live=sum(d["state"] != "ended" for d in self.docs.values()))
        await self.advance()

    async def advance(self) -> list[tuple[int, str]]:
        """Move every activity on to its state now: report and save each change, save
        what earlier failed to save, re-arm the timer. The events reported."""
        events: list[tuple[int, str]] = []
        async with self.lock:
            now = self.now_ms()
            for activity_id, doc in sorted(self.docs.items()):
                event = activity_system.step(doc, now)
                if event is not None:
                    self.notify(doc, event)  # before the save: at least once
                    self.unsaved.add(activity_id)
                    events.append((activity_id, event))
                    log.info("activity {id} ({kind}) {event}", id=activity_id,
                             kind=doc["kind"], event=event)
            for activity_id in sorted(self.unsaved):
                try:
                    await self.db.upsert(COLLECTION, activity_id, self.docs[activity_id])
                    self.unsaved.discard(activity_id)
                except Exception as e:
                    log.warn("activity {id}: state not saved ({e}); trying again",
                             id=activity_id, e=e)
                    break
            self._arm()
        return events

    def _arm(self) -> None:
        """One timer for the service: at the earliest next start or end (or soon, when a
        state change waits to be saved)."""
        now = self.now_ms()
        dues = [d for d in (activity_system.due_ms(doc) for doc in self.docs.values())
                if d is not None]
        if self.unsaved:
            dues.append(now + int(RETRY_AFTER * 1000))
        if not dues:
            self.stop_timer()
            return
        # +1 ms: fire once the due time has passed, not a rounding error before it
        self._arm_in(max(0.0, (min(dues) - now + 1) / 1000))

    def _arm_in(self, seconds: float) -> None:
        self.stop_timer()
        self.timer = self.clock.callLater(seconds, self._fire)

    def _fire(self) -> None:
        self.timer = None

        async def tick() -> None:
            await self.loaded()
            await self.advance()

        def failed(f: Any) -> None:
            log.failure("activities: advancing failed; trying again", f)
            self._arm_in(RETRY_AFTER)
        defer.Deferred.fromCoroutine(tick()).addErrback(failed)

    def notify(self, doc: dict[str, Any], event: str) -> int:
        """Push the event to the online players of the activity's regions (one message
        per role node); how many role nodes it went to."""
        self.events.labels(event).inc()
        message = pb.ActivityNotify(event=EVENTS[event],
                                    activity=activity_pb(doc, sharedata().snapshot))
        return reach.broadcast(self.cluster, message, regions=doc["regions"] or None)

    # -- GM operations --------------------------------------------------------------------

    @staticmethod
    def _refused(error: str, message: str) -> dict[str, Any]:
        return {"ok": False, "error": error, "message": message}

    @handler
    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Schedule an activity (see ``activitysystem.check`` for *body*); saved before
        the answer. One that starts now is started (and reported) before the answer."""
        await self.loaded()
        try:
            checked = activity_system.check(body, sharedata().snapshot,
                                            self.account.regions(), self.now_ms())
        except ValueError as e:
            return self._refused("bad_field", str(e))
        async with self.lock:
            activity_id = await self.db.incr(SEQ)
            doc = activity_system.make(activity_id, checked, self.now_ms())
            await self.db.upsert(COLLECTION, activity_id, doc)
            self.docs[activity_id] = doc
        log.info("activity {id} ({kind}) scheduled: {start}..{end} for regions {regions}",
                 id=activity_id, kind=doc["kind"], start=doc["start_ms"], end=doc["end_ms"],
                 regions=doc["regions"] or "all")
        await self.advance()
        return {"ok": True, "activity": doc}

    async def _change(self, activity_id: Any, change: Any) -> dict[str, Any]:
        await self.loaded()
        async with self.lock:
            doc = self.docs.get(activity_id) if isinstance(activity_id, int) else None
            if doc is None:
                return self._refused("unknown_activity", f"no activity {activity_id!r}")
            if doc["state"] == "ended":
                return self._refused("ended", f"activity {activity_id} already ended")
            saved = dict(doc)
            try:
                event = change(doc)
            except ValueError as e:
                doc.clear()
                doc.update(saved)
                return self._refused("bad_field", str(e))
            try:
                await self.db.upsert(COLLECTION, activity_id, doc)
            except Exception:
                doc.clear()
                doc.update(saved)  # not durable: not done
                raise
            if event is not None:
                self.notify(doc, event)
            self._arm()
        return {"ok": True, "activity": doc}

    @handler
    async def stop(self, activity_id: int) -> dict[str, Any]:
        """A GM stops an activity: a running one ends now (reported), a scheduled one is
        cancelled."""
        return await self._change(
            activity_id, lambda doc: activity_system.stop(doc, self.now_ms()))

    @handler
    async def extend(self, activity_id: int, body: dict[str, Any]) -> dict[str, Any]:
        """A GM moves an activity's end later (``{"end_ms"}`` or ``{"by": seconds}``)."""
        return await self._change(
            activity_id, lambda doc: activity_system.extend(doc, body, sharedata().snapshot,
                                                            self.now_ms()))

    @handler
    async def current(self, regions: list[int]) -> list[dict[str, Any]]:
        """The activities running now for a player of *regions* (client ActivityList)."""
        await self.loaded()
        return [d for _, d in sorted(self.docs.items())
                if activity_system.current(d, regions)]

    # last: the name "list" shadows the builtin in the class body below it
    @handler
    async def list(self) -> list[dict[str, Any]]:
        """Every stored activity, oldest first (GM ``GET /activities``)."""
        await self.loaded()
        return [d for _, d in sorted(self.docs.items())]
