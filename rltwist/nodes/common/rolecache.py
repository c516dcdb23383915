"""rolecache: which role node each online player of this region is on (seed §10).

The role gateway tells the player's rolecity, mail and map rolecache where it is at Auth
(``set(userid, node, generation)``) and at logout (``clear(userid, node, generation)``);
anything that wants to reach an online player asks here, or sends through here.

Sets and clears are fenced by the instance's generation, because they travel on different
links and can arrive out of order with a newer login's: a ``set`` older than the highest
generation seen for the player is ignored, and a ``clear`` only removes the entry it was
meant for (same node and same generation). The highest generation is kept after a clear
(bounded), so a late ``set`` of an older instance cannot put it back. The two-argument forms
of older role nodes still work (unfenced: last writer wins, clear by node).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.nodes.common.reach import role_nodes

log = Logger()

REFILL_TIMEOUT = 10.0
"""How long each role node has to answer a refill."""
MAX_REMEMBERED = 100_000
"""Players whose highest generation is remembered after they went offline (oldest dropped)."""


def _generation(generation: Any) -> int | None:
    if generation is None:
        return None
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(f"generation must be a non-negative int or None, got {generation!r}")
    return generation


class RoleCache(Service):
    name = "rolecache"

    def __init__(self, on_generation: Callable[[int, int], Any] | None = None) -> None:
        self.where: dict[int, str] = {}
        """userid -> role node, for the online players."""
        self.owner: dict[int, int | None] = {}
        """userid -> generation of the instance ``where`` names (None: an unfenced set)."""
        self.highest: OrderedDict[int, int] = OrderedDict()
        """userid -> highest generation seen (kept after a clear, bounded)."""
        self.ended: OrderedDict[int, int] = OrderedDict()
        """userid -> generation of its last instance cleared here (bounded): a late set of
        that instance (a refill answer written before its logout) is ignored."""
        self.ignored = 0
        self.on_generation = on_generation
        #: ``fn(userid)`` run after a clear removed an online player (its logout): the
        #: friends feature records the last-seen time there
        self.on_clear: list[Callable[[int], Any]] = []
        #: ``fn(node)`` run after ``node_down`` dropped a role node's players: the map's
        #: viewport (aoiscene) drops that node's watchers there
        self.on_node_down: list[Callable[[str], Any]] = []

    @handler
    def set(self, userid: int, node: str, generation: int | None = None) -> bool:
        """*userid* is online on *node* as instance *generation*; False if ignored because a
        newer instance was seen already."""
        gen = _generation(generation)
        if gen is not None:
            ended = self.ended.get(userid)
            if ended is not None and gen <= ended:
                self.ignored += 1  # that instance logged out already (a late refill)
                return False
            known = self._known(userid)
            if known is not None and gen < known:
                self.ignored += 1
                log.info("rolecache: set of {userid} on {node} ignored: generation {gen} < "
                         "{known} seen", userid=userid, node=node, gen=gen, known=known)
                return False
            self._remember(userid, gen)
            if self.on_generation is not None:
                self.on_generation(userid, gen)
        self.where[userid] = node
        self.owner[userid] = gen
        return True

    @handler
    def clear(self, userid: int, node: str, generation: int | None = None) -> bool:
        """Forget *userid* if it is still recorded on *node* as instance *generation* (a
        newer login wins); without a generation, if it is recorded on *node*."""
        gen = _generation(generation)
        if self.where.get(userid) != node:
            return False
        if gen is not None:
            self._remember(userid, gen)
            if self.owner.get(userid) not in (gen, None):
                return False
        del self.where[userid]
        self.owner.pop(userid, None)
        if gen is not None:
            self.ended[userid] = gen
            self.ended.move_to_end(userid)
            while len(self.ended) > MAX_REMEMBERED:
                self.ended.popitem(last=False)
        for fn in self.on_clear:
            try:
                fn(userid)
            except Exception:
                log.failure("rolecache: clear hook for {userid} failed", userid=userid)
        return True

    def _remember(self, userid: int, gen: int) -> None:
        known = self.highest.get(userid)
        if known is None or gen > known:
            self.highest[userid] = gen
        self.highest.move_to_end(userid)
        while len(self.highest) > MAX_REMEMBERED:
            # an online player dropped here is still fenced by ``owner``
            self.highest.popitem(last=False)

    def _known(self, userid: int) -> int | None:
        known = self.highest.get(userid)
        online = self.owner.get(userid) if userid in self.where else None
        if online is not None and (known is None or online > known):
            return online
        return known

    @handler
    def get(self, userid: int) -> str | None:
        return self.where.get(userid)

    @handler
    def generation(self, userid: int) -> int | None:
        """The generation of *userid*'s online instance as recorded here, or None."""
        return self.owner.get(userid) if userid in self.where else None

    @handler
    def count(self) -> int:
        return len(self.where)

    @handler
    def forward(self, userid: int, service: str, method: str, args: list[Any]) -> bool:
        """Send *method* to the player's online instance; False if the player is offline."""
        node = self.where.get(userid)
        if node is None:
            return False
        try:
            self.cluster.send(node, service, method, userid, *args)
        except ClusterError as e:
            log.warn("rolecache: cannot forward to {userid} on {node}: {e}", userid=userid,
                     node=node, e=e)
            return False
        return True

    @handler
    def locate(self, userids: list[int]) -> list[list[Any]]:
        """``[[userid, role node], ...]`` for those of *userids* online."""
        where = self.where
        return [[u, where[u]] for u in userids if u in where]

    async def refill(self, node: Any) -> int:
        """After this node (re)started: ask every role node which of its online players
        this rolecache covers, and record them (fenced like any set). How many."""
        cluster = self.cluster

        async def ask(role: str) -> int:
            try:
                found = await cluster.call(role, "gateway", "whereabouts", node.name,
                                           timeout=REFILL_TIMEOUT)
            except ClusterError as e:
                log.info("rolecache refill: {role} did not answer ({e})", role=role, e=e)
                return 0
            return sum(1 for userid, generation in found
                       if self.set(int(userid), role, int(generation)))

        counts = await defer.gatherResults([defer.Deferred.fromCoroutine(ask(role))
                                            for role in role_nodes(cluster)])
        total = sum(counts)
        log.info("rolecache refilled: {n} online players", n=total)
        return total

    @handler
    def node_down(self, node: str) -> int:
        """Drop every player recorded on *node* (master saw it crash)."""
        gone = [u for u, n in self.where.items() if n == node]
        for u in gone:
            del self.where[u]
            self.owner.pop(u, None)
        for fn in self.on_node_down:
            try:
                fn(node)
            except Exception:
                log.failure("rolecache: node_down hook for {node} failed", node=node)
        return len(gone)


def install_rolecache(node: Any, rolecache: RoleCache | None = None) -> RoleCache:
    """Register *rolecache* (a new one by default) on *node* and refill it from the role
    nodes once the node is ready (a restarted rolecity, mail or map node knows at once who
    is online); master tells it ``node_down`` for a role node it marks down or stopped."""
    cache = rolecache if rolecache is not None else RoleCache()
    node.cluster.register(cache)

    def refill() -> None:  # in the background: role nodes may still be starting
        defer.Deferred.fromCoroutine(cache.refill(node)).addErrback(
            lambda f: log.failure("rolecache refill failed", f))

    node.add_ready_hook(refill)
    return cache
