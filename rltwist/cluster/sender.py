"""One Sender per remote node: queue before connect, reconnect with backoff, pending calls.

The sender owns the only outgoing connection to its node. Frames made while the link is
not ready wait in an ordered queue and are flushed on connect, so send order is kept.
A frame that waits longer than ``unreachable_after`` is given up: its call fails with
:class:`NodeUnreachable`, a send is counted as dropped and logged. A broken link fails the
calls already written to it at once with :class:`LinkLost`; the rest stay queued.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IConnector, IDelayedCall
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster.errors import (
    CallTimeout,
    ClusterError,
    LinkLost,
    NodeUnreachable,
    remote_error,
)
from rltwist.cluster.link import CALL, ERROR, REPLY, ProtocolViolation, SenderLink, pack
from rltwist.cluster.metrics import LATENCY_BUCKETS, OutCalls

if TYPE_CHECKING:
    from rltwist.cluster.core import Cluster

log = Logger()

IDLE, CONNECTING, READY, CLOSED = "idle", "connecting", "ready", "closed"


# A pending call: (deferred, OutCalls of its service method, started_at, timeout),
# started_at from reactor.seconds(). A plain tuple: this is on the hot path of every call.
_Pending = tuple[defer.Deferred[Any], OutCalls, float, float]


class _Factory(ClientFactory):
    noisy = False

    def __init__(self, sender: Sender, attempt: int) -> None:
        self.sender = sender
        self.attempt = attempt

    def buildProtocol(self, addr: Any) -> SenderLink:
        return SenderLink(self.sender.cluster, self.sender, self.attempt)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.sender.connect_failed(self.attempt, reason)


class Sender:
    """Everything this node sends to one remote node goes through here."""

    def __init__(self, cluster: Cluster, node: str, address: tuple[str, int]) -> None:
        self.cluster = cluster
        self.node = node
        self.address = address
        self.state = IDLE
        self.link: SenderLink | None = None
        # send(frame): the ready link's transport.write, else the queue (see _use_link)
        self.send: Callable[[bytes], None] = self._queue_send
        self.pending: dict[int, _Pending] = {}
        self.unwritten: set[int] = set()  # pending calls still in the queue
        self._seconds = cluster.reactor.seconds
        # queued frames: (frame, enqueued_at, session or 0 for a send)
        self.queue: deque[tuple[bytes, float, int]] = deque()
        self._session = 0
        self._connector: IConnector | None = None
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._delay = cluster.settings.reconnect_initial
        self._failures_logged = 0
        self.sends_dropped = 0
        self.connect_failures = 0  # since the sender was made; for diagnostics

    # -- the two operations -------------------------------------------------------------

    def call(self, out: OutCalls, args: Any, timeout: float) -> defer.Deferred[Any]:
        """Queue or write one call of ``out.service``.``out.method``; raises TypeError or
        ValueError if *args* cannot be encoded."""
        self._session = session = self._session + 1
        frame = pack((CALL, session, out.service, out.method, args))
        d: defer.Deferred[Any] = defer.Deferred()
        now = self._seconds()
        self.pending[session] = (d, out, now, timeout)
        link = self.link
        if link is not None:
            link.transport.write(frame)  # type: ignore[union-attr]
        else:
            self.unwritten.add(session)
            self._enqueue(frame, now, session)
        return d

    def _queue_send(self, frame: bytes) -> None:
        self._enqueue(frame, self._seconds(), 0)

    def _enqueue(self, frame: bytes, now: float, session: int) -> None:
        if self.state == CLOSED:
            raise NodeUnreachable(self.node, detail="sender closed")
        self.queue.append((frame, now, session))
        if self.state == IDLE:
            self._connect()

    # -- replies -------------------------------------------------------------------------

    def received(self, msgs: Iterator[Any]) -> None:
        """Frames from the peer on our link: replies and errors of pending calls."""
        # One clock read per read from the socket: every reply in it arrived at that time.
        now = self._seconds()
        stats = self.cluster.stats
        for msg in msgs:
            kind = msg[0]
            if kind == REPLY:
                _, session, result = msg
                # self.pending, not a local: a callback may close the sender and replace it
                p = self.pending.pop(session, None)
                if p is None:
                    stats.late_replies += 1
                    continue
                out = p[1]  # out.observe(seconds), inline
                seconds = now - p[2]
                out.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
                out.seconds += seconds
                p[0].callback(result)
            elif kind == ERROR:
                _, session, kind, message = msg
                self.failed(session, kind, message, now)
            else:
                raise ProtocolViolation(f"frame kind {kind!r} not allowed towards a sender")

    def failed(self, session: int, kind: str, message: str, now: float) -> None:
        p = self.pending.pop(session, None)
        if p is None:
            self.cluster.stats.late_replies += 1
            return
        p[1].observe(now - p[2])
        self._fail(p, remote_error(self.node, p[1].service, p[1].method, kind, message))

    def _fail(self, p: _Pending, error: ClusterError) -> None:
        self.cluster.stats.error(type(error).__name__)
        p[0].errback(error)

    # -- connection management -----------------------------------------------------------
    # Each connection attempt has a number; events from an attempt that was abandoned
    # (re-targeted, closed) are ignored, so they can never disturb the current one.

    def _connect(self) -> None:
        self.state = CONNECTING
        self._retry = None
        self._attempt += 1
        host, port = self.address
        self._connector = self.cluster.reactor.connectTCP(
            host, port, _Factory(self, self._attempt),
            timeout=self.cluster.settings.connect_timeout)

    def link_ready(self, link: SenderLink) -> None:
        if link.attempt != self._attempt or self.state != CONNECTING:
            link.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._use_link(link)
        self.state = READY
        self._delay = self.cluster.settings.reconnect_initial
        if self._failures_logged:
            log.info("{node}: link to {peer} at {host}:{port} is up again",
                     node=self.cluster.name, peer=self.node, host=self.address[0],
                     port=self.address[1])
        self._failures_logged = 0
        self.cluster.stats.set_link(self.node, 1)
        queue, self.queue = self.queue, deque()
        pending = self.pending
        self.unwritten.clear()
        # calls that timed out while queued are no longer pending and are not written
        link.transport.writeSequence([  # type: ignore[union-attr]
            frame for frame, _, session in queue if not session or session in pending])

    def _use_link(self, link: SenderLink | None) -> None:
        """Make *link* the one frames are written to (None: queue them). The only place
        that changes ``link``, so ``send`` always matches it."""
        self.link = link
        self.send = link.transport.write if link is not None else self._queue_send  # type: ignore[union-attr]

    def connect_failed(self, attempt: int, reason: Failure) -> None:
        if attempt != self._attempt or self.state == CLOSED:
            return
        self._connector = None
        self._log_failure(f"cannot connect: {reason.getErrorMessage()}")
        self._schedule_retry()

    def link_lost(self, link: SenderLink, reason: Failure) -> None:
        if link.attempt != self._attempt or self.state == CLOSED:
            return
        self._connector = None
        if link is self.link:
            self._use_link(None)
            self.cluster.stats.set_link(self.node, 0)
            lost = self._fail_written(reason.getErrorMessage())
            if lost or self.queue:
                log.warn("{node}: link to {peer} lost ({why}); {n} calls failed, "
                         "{q} messages queued", node=self.cluster.name, peer=self.node,
                         why=reason.getErrorMessage(), n=lost, q=len(self.queue))
            self._delay = self.cluster.settings.reconnect_initial
        else:
            self._log_failure(f"handshake failed: {reason.getErrorMessage()}")
        self._schedule_retry()

    def _fail_written(self, why: str) -> int:
        """Fail the calls already written to the link that just went away."""
        unwritten = self.unwritten
        lost = [s for s in self.pending if s not in unwritten]
        for s in lost:
            p = self.pending.pop(s)
            self._fail(p, LinkLost(self.node, p[1].service, p[1].method, why))
        return len(lost)

    def _schedule_retry(self) -> None:
        if not self.queue:
            self.state = IDLE  # reconnect lazily, when there is something to send
            return
        self.state = CONNECTING
        delay = self._delay * (0.8 + 0.4 * random.random())
        self._delay = min(self._delay * 1.5, self.cluster.settings.reconnect_max)
        self._retry = self.cluster.reactor.callLater(delay, self._connect)

    def _log_failure(self, why: str) -> None:
        # Log the first failure and then every 10th, so a dead peer does not flood the log.
        if self._failures_logged % 10 == 0:
            log.warn("{node}: link to {peer} at {host}:{port}: {why} (queued: {q})",
                     node=self.cluster.name, peer=self.node, host=self.address[0],
                     port=self.address[1], why=why, q=len(self.queue))
        self._failures_logged += 1
        self.connect_failures += 1

    def _abandon_connection(self) -> None:
        """Forget the current attempt and link; their late events will be ignored."""
        self._attempt += 1
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        connector, self._connector = self._connector, None
        link = self.link
        self._use_link(None)
        if link is not None and link.transport is not None:
            link.transport.abortConnection()  # type: ignore[attr-defined]
        elif connector is not None:
            connector.disconnect()
        self.cluster.stats.set_link(self.node, 0)

    def retarget(self, address: tuple[str, int]) -> None:
        """The node moved: drop the old link (in-flight calls fail), reconnect to *address*."""
        if address == self.address or self.state == CLOSED:
            return
        log.info("{node}: {peer} moved from {old} to {new}", node=self.cluster.name,
                 peer=self.node, old=f"{self.address[0]}:{self.address[1]}",
                 new=f"{address[0]}:{address[1]}")
        self.address = address
        self._abandon_connection()
        self._fail_written("node address changed")
        self._delay = self.cluster.settings.reconnect_initial
        self.state = IDLE
        if self.queue:
            self._connect()

    def close(self, error: ClusterError) -> None:
        """Stop for good: fail every pending call with *error*, count queued sends dropped."""
        self.state = CLOSED
        self._abandon_connection()
        pending, self.pending = self.pending, {}
        self.unwritten.clear()
        for p in pending.values():
            self._fail(p, type(error)(self.node, p[1].service, p[1].method, error.detail))
        dropped = sum(1 for _, _, s in self.queue if not s)
        self.queue.clear()
        self._count_dropped(dropped, error.detail or str(error))
        self.cluster.stats.set_link(self.node, 0)

    def _count_dropped(self, n: int, why: str) -> None:
        if n:
            self.sends_dropped += n
            self.cluster.stats.sends_dropped[self.node] = (
                self.cluster.stats.sends_dropped.get(self.node, 0) + n)
            log.warn("{node}: dropped {n} sends to {peer}: {why}", node=self.cluster.name,
                     n=n, peer=self.node, why=why)

    # -- deadlines -----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Fail calls past their deadline and give up frames queued for too long."""
        bound = self.cluster.settings.unreachable_after
        if self.queue and self.queue[0][1] + bound <= now:
            dropped = 0
            queue = self.queue
            while queue and queue[0][1] + bound <= now:
                _, _, session = queue.popleft()
                if not session:
                    dropped += 1
                    continue
                self.unwritten.discard(session)
                p = self.pending.pop(session, None)
                if p is not None:
                    self._fail(p, NodeUnreachable(
                        self.node, p[1].service, p[1].method,
                        f"no link to {self.address[0]}:{self.address[1]} "
                        f"within {bound:g}s"))
            self._count_dropped(dropped, f"no link within {bound:g}s")
        if self.pending:
            late = [s for s, p in self.pending.items() if p[2] + p[3] <= now]
            for s in late:
                self.unwritten.discard(s)
                p = self.pending.pop(s)
                self._fail(p, CallTimeout(self.node, p[1].service, p[1].method, p[3]))
