"""diag: a small operator/diagnostic service present on every node.

It answers liveness checks (``ping``), shows what the node is (``info``), echoes data
(used by benchmarks and link checks) and relays a call to another node (so an operator can
check reachability *from* a node).

Tests and benchmarks also need calls that hold a handler (``sleep``) and sends whose
delivery and order they can check (``note``/``notes_of``, ``tally``/``tally_of``). A
production node does not serve those (a 60 s ``sleep`` per call, or 100,000 kept notes, is
a cheap way to tie a node up): only a node started with ``RLTWIST_TEST_FLAGS`` containing
``diag`` does (``LocalCluster(test_flags=["diag"])``).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import task

from rltwist.cluster import Service, handler
from rltwist.crashpoint import test_flag

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

NOTES_KEPT = 100_000
MAX_SLEEP = 60.0


def diag_service(node: Node, environ: dict[str, str] | None = None) -> Diag:
    """The diag service for *node*: with the test helpers only under the ``diag`` test
    flag."""
    return DiagWithTestHelpers(node) if test_flag("diag", environ) else Diag(node)


class Diag(Service):
    """What operators use on any node."""

    name = "diag"

    def __init__(self, node: Node) -> None:
        self.node = node

    @handler
    def ping(self) -> str:
        return "pong"

    @handler
    def echo(self, value: Any) -> Any:
        return value

    @handler
    def info(self) -> dict[str, Any]:
        return self.node.info()

    @handler
    def status(self) -> dict[str, Any]:
        """What this node reports in its heartbeats (versions, login_open, ...)."""
        return self.node.status()

    @handler
    def addresses(self) -> dict[str, list[Any]]:
        """The node's current name table."""
        return {n: [h, p] for n, (h, p) in sorted(self.cluster.addresses.items())}

    @handler
    async def relay(self, node: str, service: str, method: str, args: list[Any]) -> Any:
        """Make a call from this node and return its result."""
        return await self.cluster.call(node, service, method, *args)


class DiagWithTestHelpers(Diag):
    """diag plus the helpers tests and benchmarks use (``RLTWIST_TEST_FLAGS=diag``)."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.notes: dict[str, deque[Any]] = {}
        self.tallies: dict[str, int] = {}

    @handler
    async def sleep(self, seconds: float) -> float:
        """Reply after *seconds* (at most 60): lets tests hold a call in flight."""
        seconds = min(float(seconds), MAX_SLEEP)
        await task.deferLater(self.node.reactor, seconds)
        return seconds

    @handler
    def note(self, tag: str, value: Any) -> None:
        """Record *value* under *tag* (bounded), for delivery and order checks."""
        q = self.notes.get(tag)
        if q is None:
            q = self.notes[tag] = deque(maxlen=NOTES_KEPT)
        q.append(value)

    @handler
    def notes_of(self, tag: str) -> list[Any]:
        return list(self.notes.get(tag, ()))

    @handler
    def tally(self, tag: str, payload: Any = None) -> None:
        """Count one send under *tag* (delivery-rate checks keep no payloads)."""
        self.tallies[tag] = self.tallies.get(tag, 0) + 1

    @handler
    def tally_of(self, tag: str) -> int:
        return self.tallies.get(tag, 0)
