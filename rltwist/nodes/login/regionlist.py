"""RegionList on a login node: the regions open to new players, asked of logiccenter's
``regions.public`` at most once a second per login node (a login storm's region lists
cost logiccenter one call a second, not one per client). Concurrent requests while a
fetch runs wait for that fetch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode
#: how long an answer of logiccenter is served again (s)
TTL = 1.0
#: bound of the call to logiccenter (s)
CALL_TIMEOUT = 5.0


class RegionListCache:
    """Answers ``RegionList`` from logiccenter's answer of the last TTL seconds."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._answer: Any = None
        self._fetched_at = float("-inf")
        self._fetching: list[defer.Deferred[Any]] | None = None

    async def respond(self, msg: pb.RegionList) -> pb.RegionList.Response:
        """The RegionList answer; RETRY_LATER when logiccenter cannot be asked now."""
        now = self.node.reactor.seconds()
        if self._answer is not None and now - self._fetched_at < TTL:
            return self._answer
        if self._fetching is not None:  # one fetch at a time: wait for it
            d: defer.Deferred[Any] = defer.Deferred()
            self._fetching.append(d)
            return await d
        self._fetching = []
        try:
            answer = await self._fetch()
        except Exception:
            # whatever it was, the waiters get an answer too (never a hung request)
            log.failure("region list: asking logiccenter failed")
            answer = pb.RegionList.Response(code=E.INTERNAL)
        waiters, self._fetching = self._fetching, None
        for w in waiters:
            w.callback(answer)
        return answer

    async def _fetch(self) -> pb.RegionList.Response:
        try:
            public = await self.node.cluster.call("logiccenter", "regions", "public",
                                                  timeout=CALL_TIMEOUT)
        except ClusterError as e:
            log.warn("region list unavailable: {e}", e=e)
            return pb.RegionList.Response(code=E.RETRY_LATER)
        try:
            answer = pb.RegionList.Response(
                code=E.OK, recommended=public["recommended"],
                regions=[pb.RegionInfo(sid=r["sid"], opened_ms=r["opened_ms"])
                         for r in public["regions"]])
        except (KeyError, TypeError, ValueError):
            # a logiccenter of another version: the client may retry, the log says why
            log.failure("region list: unexpected answer of logiccenter {answer!r}",
                        answer=public)
            return pb.RegionList.Response(code=E.INTERNAL)
        self._answer, self._fetched_at = answer, self.node.reactor.seconds()
        return answer
