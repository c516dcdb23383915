"""PlayerFence: "is generation G still the owner of player U?" for writes other services
make on an online player's behalf (rolecity's transfers and name index, later mail, map).

Auth on a role node claims a fresh generation on the player's document in the role
database (collection ``player`` of ``roledb``) before it answers; from then on the stored
generation of that document *is* the current owner's. A write carrying an older generation
comes from an instance that lost the player (a frozen or cut-off role node) and is refused
with :class:`~rltwist.storage.StaleGeneration` (callers see ``RemoteError`` kind
``StaleGeneration``).

The check reads the stored generation (one primary-key read); the highest generation seen
per player is kept in memory (bounded), so a known-stale caller is refused without a read.
Check and write are two steps: callers that need them atomic against other writes of the
same player serialize them (an LRU action, or a per-player lock), which is enough because a
newer owner's claim lands before any of its own writes, and those queue behind ours.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from twisted.logger import Logger

from rltwist.nodes.role.agent import PLAYERS
from rltwist.storage import Backend, StaleGeneration

log = Logger()

DEFAULT_CAPACITY = 100_000

#: the fenced writes of today's services (the ``what`` of rl_fence_refused_total, created
#: at 0); a service that fences another write passes its own name
FENCED_WRITES = ("set_name", "take_transfers", "confirm_transfers", "reserve_name",
                 "release_name", "reconcile_names")

_refused: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def _refused_counter(registry: CollectorRegistry | None) -> Counter:
    if registry is None:
        registry = CollectorRegistry(auto_describe=True)
    counter = _refused.get(registry)
    if counter is None:
        counter = _refused[registry] = Counter(
            "rl_fence_refused", "Writes for a player refused because a newer instance owns "
            "it", ["what"], registry=registry)
        for what in FENCED_WRITES:
            counter.labels(what)
    return counter


class PlayerFence:
    """Refuses writes of stale player instances (see the module docstring).

    *backend* is the role database (``node.database("roledb")``); *capacity* bounds the
    max-seen cache (least recently touched players are dropped first and read again)."""

    def __init__(self, backend: Backend, collection: str = PLAYERS, *,
                 capacity: int = DEFAULT_CAPACITY,
                 registry: CollectorRegistry | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"fence capacity must be >= 1, got {capacity!r}")
        self.backend = backend
        self.collection = collection
        self.capacity = capacity
        self.seen: OrderedDict[int, int] = OrderedDict()
        self.reads = 0
        self.refused = _refused_counter(registry)

    def observe(self, userid: int, generation: int) -> None:
        """Remember that *generation* of *userid* was claimed (from a read or a trusted
        report such as a rolecache ``set``); only ever raises the known generation."""
        if isinstance(generation, bool) or not isinstance(generation, int):
            return
        known = self.seen.get(userid)
        if known is None or generation > known:
            self.seen[userid] = generation
        self.seen.move_to_end(userid)
        while len(self.seen) > self.capacity:
            self.seen.popitem(last=False)

    def known(self, userid: int) -> int | None:
        """The highest generation of *userid* seen so far, or None."""
        return self.seen.get(userid)

    async def check(self, userid: int, generation: Any, what: str = "write") -> int:
        """Return the stored generation if *generation* still owns *userid*; else raise
        StaleGeneration (logged and counted under *what*).

        ``generation`` None means a caller of the old, unfenced API (rolling upgrade): it
        passes unchecked and is logged."""
        if generation is None:
            log.debug("{what} for {userid} without a generation (old caller): not fenced",
                      what=what, userid=userid)
            return 0
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
            raise ValueError(f"{what}: generation must be a non-negative int, "
                             f"got {generation!r}")
        known = self.seen.get(userid)
        if known is not None and generation < known:
            self._refuse(userid, generation, known, what)
        self.reads += 1
        stored = await self.backend.get_entity(self.collection, userid)
        current = stored.generation if stored is not None else 0
        self.observe(userid, current)
        if generation < current:
            self._refuse(userid, generation, current, what)
        return current

    def _refuse(self, userid: int, generation: int, current: int, what: str) -> None:
        self.refused.labels(what).inc()
        log.warn("{what} for {userid} refused: generation {generation} is older than the "
                 "owner's {current}", what=what, userid=userid, generation=generation,
                 current=current)
        raise StaleGeneration(self.collection, userid, generation, current)
