"""One Sender per remote node: queue before connect, reconnect with backoff, pending calls,
bounded outbound bytes and a liveness check.

The sender owns the only outgoing connection to its node. Frames made while the link is
not ready wait in an ordered queue and are flushed on connect, so send order is kept.
A frame that waits longer than ``unreachable_after`` is given up: its call fails with
:class:`NodeUnreachable`, a send is counted as dropped and logged. A broken link fails the
calls already written to it at once with :class:`LinkLost`; the rest stay queued.

Bounds (all per peer):

* Outbound bytes. Frames go straight to the link's transport while it holds less than a
  high-water mark (``min(4 MiB, max_outbound / 4, max_message)``) since it last drained;
  beyond it they wait in the queue, which holds at most the rest of ``max_outbound``. A
  call that does not fit fails at once with :class:`OutboundFull`, a send is dropped and
  counted (reason ``outbound_full``). The link is a pull producer of its transport, so the
  queue is written again, a high-water mark at a time, as soon as the peer reads.
* Message size. A frame larger than ``max_message`` fails alone with
  :class:`MessageTooLarge`; the receiver would otherwise close the link it came on.
* Liveness. A link the peer has said nothing on for ``ping_interval`` gets a PING; if
  nothing at all comes back within ``ping_timeout``, the link is treated as lost (calls
  written to it fail with :class:`LinkLost`) and a new one is made.
* Lost sends. A PONG confirms every send written before its PING (the peer handles frames
  in order); a ping also goes out on each sweep that finds unconfirmed sends. When a link
  breaks, is re-targeted or closed, the sends written to it since the last confirmation
  are counted as lost (they may or may not have run).

Deadlines: a call still in the queue when its timeout passes was never written and fails
with :class:`NodeUnreachable`; only a written call can end in :class:`CallTimeout`.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
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
    MessageTooLarge,
    NodeUnreachable,
    OutboundFull,
    remote_error,
)
from rltwist.cluster.link import (
    CALL,
    ERROR,
    PING,
    PONG,
    REFUSED,
    REPLY,
    ProtocolViolation,
    SenderLink,
    pack,
)
from rltwist.cluster.metrics import LATENCY_BUCKETS, UNKNOWN, Counts, OutCalls, count

if TYPE_CHECKING:
    from rltwist.cluster.core import Cluster

log = Logger()

IDLE, CONNECTING, READY, CLOSED = "idle", "connecting", "ready", "closed"
# Most bytes handed to a transport between two drains. Twisted reports a drain only when
# its buffer is empty, and writes at most 128 KiB per reactor iteration, so a caller that
# keeps writing faster than that sees no drain until it pauses: a low mark would send a
# well-read link through the (slower) queue. 16 MiB is max_outbound / 4 by default.
HIGH_WATER_MAX = 16 * 1024 * 1024
DROP_LOG_INTERVAL = 1.0  # seconds between two log lines about dropped sends to one peer

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


def _held(transport: Any) -> int | None:
    """Bytes *transport* still holds, or None if it does not say. Twisted's TCP transport
    (``FileDescriptor``) keeps them in ``dataBuffer``/``offset``/``_tempDataLen``; there is
    no public accessor, and the pull producer only hears about *complete* drains. Read on
    the slow path only."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None


def _not_ready(frame: bytes) -> None:
    # ``write`` while there is no ready link; unreachable because ``limit`` is then 0
    raise AssertionError("write without a ready link")


class Sender:
    """Everything this node sends to one remote node goes through here.

    The hot paths (``Cluster.send`` and ``call``) write a frame to ``write`` when
    ``out_bytes + len(frame) <= limit`` and take the slow path otherwise: ``limit`` is 0
    whenever frames must wait (no ready link, or frames already queued), so one comparison
    covers connecting, backpressure and oversized frames.
    """

    # Slots: the hot paths read a dozen of these per message, and an instance dict with
    # this many keys would lose CPython's fast attribute access.
    __slots__ = (
        "_attempt", "_batch", "_confirmed", "_connector", "_delay", "_drops_logged_at",
        "_drops_unlogged", "_failures_logged", "_ping", "_ping_token", "_retry", "_seconds",
        "_session", "_unwritten_sends", "address", "cluster", "connect_failures", "high_water",
        "last_heard", "limit", "link", "max_message", "node", "out_bytes", "peer_calls",
        "pending", "queue", "queue_limit", "queued_bytes", "queued_sends", "sends_out", "state",
        "unwritten", "write",
    )

    def __init__(self, cluster: Cluster, node: str, address: tuple[str, int]) -> None:
        self.cluster = cluster
        self.node = node
        self.address = address
        self.state = IDLE
        self.link: SenderLink | None = None  # the ready link, also while its peer lags
        self.write: Any = _not_ready  # the ready link's transport.write (see received)
        self._batch: list[bytes] | None = None  # frames written while a read is handled
        self.limit = 0  # bytes the transport may hold before frames wait in the queue
        self.out_bytes = 0  # bytes handed to the transport since it last drained
        settings = cluster.settings
        self.max_message = settings.max_message
        self.high_water = max(1, min(HIGH_WATER_MAX, cluster.max_outbound // 4,
                                     settings.max_message))
        self.queue_limit = max(0, cluster.max_outbound - self.high_water)
        self.pending: dict[int, _Pending] = {}
        self.peer_calls = cluster.stats.peer(node)  # latency per peer, any method
        self.unwritten: set[int] = set()  # pending calls still in the queue
        self._seconds = cluster.reactor.seconds
        # queued frames: (frame, enqueued_at, session or 0 for a send)
        self.queue: deque[tuple[bytes, float, int]] = deque()
        self.queued_bytes = 0
        self.queued_sends = 0
        self._drops_unlogged: dict[str, int] = {}  # reason -> sends dropped, not yet logged
        self._drops_logged_at = float("-inf")
        # sends made through this sender, by service and method (Cluster.send counts here)
        self.sends_out: Counts = {}
        self._unwritten_sends = 0  # of those, never handed to a transport
        self._confirmed = 0  # written sends confirmed by a PONG or sent on an earlier link
        self._ping: tuple[int, float, int] | None = None  # (token, sent_at, written sends)
        self._ping_token = 0
        self.last_heard = 0.0  # when the ready link last brought anything
        self._session = 0
        self._connector: IConnector | None = None
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._delay = settings.reconnect_initial
        self._failures_logged = 0
        self.connect_failures = 0  # since the sender was made; for diagnostics

    # -- the two operations -------------------------------------------------------------

    def call(self, out: OutCalls, args: Any, timeout: float) -> defer.Deferred[Any]:
        """Write or queue one call of ``out.service``.``out.method``; raises TypeError or
        ValueError if *args* cannot be encoded, MessageTooLarge or OutboundFull."""
        self._session = session = self._session + 1
        frame = pack((CALL, session, out.service, out.method, args))
        d: defer.Deferred[Any] = defer.Deferred()
        n = self.out_bytes + len(frame)
        if n > self.limit:
            self._call_slow(frame, session, d, out, timeout)
            return d
        self.pending[session] = (d, out, self._seconds(), timeout)
        self.out_bytes = n
        self.write(frame)
        return d

    def _call_slow(self, frame: bytes, session: int, d: defer.Deferred[Any], out: OutCalls,
                   timeout: float) -> None:
        size = len(frame)
        if size > self.max_message:
            raise MessageTooLarge(self.node, out.service, out.method, "MessageTooLarge",
                                  self._too_large(size))
        now = self._seconds()
        queue = self.queue
        if self._takes(size):
            self.pending[session] = (d, out, now, timeout)
            self.out_bytes += size
            self.write(frame)
            return
        if self.queued_bytes + size > self.queue_limit:
            raise OutboundFull(self.node, out.service, out.method, self._full())
        if self.state == CLOSED:
            raise NodeUnreachable(self.node, out.service, out.method, "sender closed")
        self.pending[session] = (d, out, now, timeout)
        self.unwritten.add(session)
        queue.append((frame, now, session))
        self.queued_bytes += size
        self.limit = 0  # everything after this frame waits behind it
        if self.state == IDLE:
            self._connect()

    def send_slow(self, frame: bytes, service: str, method: str) -> None:
        """The slow path of ``Cluster.send``: queue, write a large frame alone, or drop."""
        size = len(frame)
        if size > self.max_message:
            self._unwritten_sends += 1
            raise MessageTooLarge(self.node, service, method, "MessageTooLarge",
                                  self._too_large(size))
        queue = self.queue
        if self._takes(size):
            self.out_bytes += size
            self.write(frame)
            return
        self._unwritten_sends += 1
        queued = self.queued_bytes + size
        if queued > self.queue_limit:
            self._count_dropped(1, "outbound_full")
            return
        if self.state == CLOSED:
            raise NodeUnreachable(self.node, service, method, "sender closed")
        queue.append((frame, self._seconds(), 0))
        self.queued_bytes = queued
        self.queued_sends += 1
        self.limit = 0  # everything after this frame waits behind it
        if self.state == IDLE:
            self._connect()

    def _takes(self, size: int) -> bool:
        """Whether the ready transport may take a frame of *size* although ``out_bytes``
        says it is full. ``out_bytes`` counts what was handed over since the last
        *complete* drain, which under sustained load can be long ago while the peer reads
        nearly everything (in bench/rpc.py's 4 KB send row 70 % of the sends queued behind
        a transport that held far less): so ask the transport what it really holds.
        Nothing may pass queued frames; a frame above the high-water mark goes only into
        an empty transport."""
        if self.queue or self.link is None:
            return False
        batch = self._batch
        if batch:  # hand over what was collected, so that the transport's count is true
            self.link.transport.write(b"".join(batch))  # type: ignore[union-attr]
            batch.clear()
        held = _held(self.link.transport) if self.out_bytes else 0
        if held is None:
            return False
        self.out_bytes = held
        return held + size <= self.high_water or not held

    def _too_large(self, size: int) -> str:
        return f"message of {size} bytes exceeds cluster.max_message ({self.max_message})"

    def _full(self) -> str:
        return (f"{self.outbound_bytes()} bytes already wait for {self.node} "
                f"(cluster.max_outbound {self.cluster.max_outbound}); it is not reading")

    def outbound_bytes(self) -> int:
        """Bytes waiting for this peer: queued, and handed to the transport since it last
        drained (an upper bound of what it still holds)."""
        return self.queued_bytes + self.out_bytes

    def drained(self, link: SenderLink) -> None:
        """The link's transport has written everything it was given: write more."""
        if link is not self.link:
            return
        self.out_bytes = 0
        if self.queue:
            self._flush()
        else:
            self.limit = self.high_water

    def _flush(self) -> None:
        """Write queued frames, up to one high-water mark (at least one frame)."""
        queue, pending = self.queue, self.pending
        if self.queued_bytes <= self.high_water:
            # the usual case: everything fits; calls that timed out while queued are skipped
            frames = [f for f, _, session in queue if not session or session in pending]
            # only what is written counts: the transport reports a drain only if it had data
            self.out_bytes = (self.queued_bytes if len(frames) == len(queue)
                              else sum(len(f) for f in frames))
            self._unwritten_sends -= self.queued_sends
            queue.clear()
            self.unwritten.clear()  # only queued calls are unwritten
            self.queued_bytes = self.queued_sends = 0
        else:
            frames = []
            size = sends = 0
            unwritten = self.unwritten
            while queue:
                frame, _, session = queue[0]
                n = len(frame)
                if session and session not in pending:  # timed out while it waited
                    queue.popleft()
                    self.queued_bytes -= n
                    continue
                if frames and size + n > self.high_water:
                    break
                queue.popleft()
                self.queued_bytes -= n
                frames.append(frame)
                size += n
                if session:
                    unwritten.discard(session)
                else:
                    sends += 1
            self.out_bytes = size
            self._unwritten_sends -= sends
            self.queued_sends -= sends
        self.limit = 0 if queue else self.high_water
        if frames:
            self.write(b"".join(frames))  # see AgentLink.frames: cheaper than writeSequence

    # -- replies -------------------------------------------------------------------------

    def received(self, msgs: Iterator[Any]) -> None:
        """Frames from the peer on our link: replies and errors of pending calls.

        Frames written to this peer while they are handled (a reply's callback making the
        next call, as a busy caller does) are collected and handed to the transport in one
        write at the end: Twisted's ``write`` costs six Python calls per frame, and the
        transport would not send them before this read is handled anyway. Bytes are
        counted and bounded per frame as always (``out_bytes``)."""
        # One clock read per read from the socket: every reply in it arrived at that time.
        self.last_heard = now = self._seconds()
        link = self.link
        if link is None or self._batch is not None:  # not ours, or already collecting
            self._received(msgs, now)
            return
        write = self.write
        batch: list[bytes] = []
        self._batch = batch
        self.write = batch.append
        try:
            self._received(msgs, now)
        finally:
            self._batch = None
            if self.link is link:  # else the link went away: nothing more goes to it
                self.write = write
                if batch:
                    write(b"".join(batch))  # see AgentLink.frames: cheaper than writeSequence

    def _received(self, msgs: Iterator[Any], now: float) -> None:
        stats = self.cluster.stats
        peer = self.peer_calls
        for msg in msgs:
            kind = msg[0]
            if kind == REPLY:
                _, session, result = msg
                # self.pending, not a local: a callback may close the sender and replace it
                p = self.pending.pop(session, None)
                if p is None:
                    stats.late_replies += 1
                    continue
                out = p[1]  # out.observe(seconds) and peer.observe(seconds), inline
                seconds = now - p[2]
                i = bisect_left(LATENCY_BUCKETS, seconds)
                out.buckets[i] += 1
                out.seconds += seconds
                peer.cur[i] += 1
                p[0].callback(result)
            elif kind == ERROR:
                _, session, kind, message = msg
                self.failed(session, kind, message, now)
            elif kind == PONG:
                ping = self._ping
                if ping is not None and msg[1] == ping[0]:
                    self._confirmed = ping[2]
                    self._ping = None
            elif kind == REFUSED:
                self.refused(msg[1], msg[2])
            else:
                raise ProtocolViolation(f"frame kind {kind!r} not allowed towards a sender")

    def failed(self, session: int, kind: str, message: str, now: float) -> None:
        p = self.pending.pop(session, None)
        if p is None:
            self.cluster.stats.late_replies += 1
            return
        out = p[1]
        self.peer_calls.observe(now - p[2])
        if kind in ("UnknownService", "UnknownMethod"):
            # not a name of the peer's: it must not become a label set of ours
            self.cluster.stats.fold_out(out)
            self.cluster.stats.unknown_out.observe(now - p[2])
        else:
            out.observe(now - p[2])
        self._fail(p, remote_error(self.node, out.service, out.method, kind, message))

    def refused(self, service: Any, method: Any) -> None:
        """The peer has no handler for a send of ours: count it under unknown."""
        try:
            per = self.sends_out.get(service)
            n = per.get(method) if per is not None else None
        except TypeError:  # not a name we could have sent
            return
        if not n or per is None:
            return
        if n > 1:
            per[method] = n - 1
        else:
            del per[method]
            if not per:
                del self.sends_out[service]
        count(self.sends_out, UNKNOWN, UNKNOWN)

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
        self.last_heard = self._seconds()
        self._ping = None
        self._confirmed = self.written_sends()
        # A pull producer: the transport asks for data now (Twisted's TCP transport does so
        # inside registerProducer) and each time it drains; queued frames go out then.
        link.transport.registerProducer(link, False)  # type: ignore[union-attr]
        if not link.asked and self.link is link:
            self.drained(link)

    def _use_link(self, link: SenderLink | None) -> None:
        """Make *link* the one frames are written to (None: queue them). The only place
        that changes ``link``, so ``write`` and ``limit`` always match it; the limit opens
        when the transport first asks for data."""
        self.link = link
        self.write = link.transport.write if link is not None else _not_ready  # type: ignore[union-attr]
        self.limit = 0
        self.out_bytes = 0

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
            why = reason.getErrorMessage()
            lost = self._fail_written(why)
            self._count_lost("link_lost")
            if lost or self.queue:
                log.warn("{node}: link to {peer} lost ({why}); {n} calls failed, "
                         "{q} messages queued", node=self.cluster.name, peer=self.node,
                         why=why, n=lost, q=len(self.queue))
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

    def written_sends(self) -> int:
        """Sends handed to a transport so far (made minus never written)."""
        made = sum(n for per in self.sends_out.values() for n in per.values())
        return made - self._unwritten_sends

    def _count_lost(self, reason: str) -> None:
        """The link went away: the sends written to it since the last confirmation are
        counted as lost."""
        written = self.written_sends()
        n = written - self._confirmed
        self._confirmed = written
        self._ping = None
        if n > 0:
            self.cluster.stats.lose(self.node, reason, n)
            log.warn("{node}: {n} sends to {peer} were written but not confirmed when the "
                     "link went away ({reason}); they may be lost", node=self.cluster.name,
                     n=n, peer=self.node, reason=reason)

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

    def _restart(self, why: str, reason: str) -> None:
        """Drop the current link now (calls on it fail with LinkLost, unconfirmed sends
        are counted lost for *reason*) and connect again if anything waits."""
        had_link = self.link is not None
        self._abandon_connection()
        if had_link:
            self._fail_written(why)
            self._count_lost(reason)
        self._delay = self.cluster.settings.reconnect_initial
        self.state = IDLE
        if self.queue:
            self._connect()

    def retarget(self, address: tuple[str, int]) -> None:
        """The node moved: drop the old link (in-flight calls fail), reconnect to *address*."""
        if address == self.address or self.state == CLOSED:
            return
        log.info("{node}: {peer} moved from {old} to {new}", node=self.cluster.name,
                 peer=self.node, old=f"{self.address[0]}:{self.address[1]}",
                 new=f"{address[0]}:{address[1]}")
        self.address = address
        self._restart("node address changed", "retargeted")

    def close(self, error: ClusterError) -> None:
        """Stop for good: fail every pending call with *error*, count queued sends dropped
        and unconfirmed written ones lost; hand the send counts to the cluster's stats."""
        had_link = self.link is not None
        self.state = CLOSED
        self._abandon_connection()
        if had_link:
            self._count_lost("closed")
        pending, self.pending = self.pending, {}
        self.unwritten.clear()
        for p in pending.values():
            self._fail(p, type(error)(self.node, p[1].service, p[1].method, error.detail))
        dropped = self.queued_sends
        self.queue.clear()
        self.queued_bytes = self.queued_sends = 0
        self._count_dropped(dropped, "closed", error.detail or str(error))
        if self._drops_unlogged:
            self._log_drops(self._seconds(), "")
        self.cluster.stats.set_link(self.node, 0)
        stats = self.cluster.stats
        for service, per in self.sends_out.items():
            for method, n in per.items():
                count(stats.sends_out, service, method, n)
        self.sends_out = {}
        self._unwritten_sends = self._confirmed = 0

    def _count_dropped(self, n: int, reason: str, why: str = "") -> None:
        """Count *n* sends dropped for *reason*; log it, at most one line per
        DROP_LOG_INTERVAL (the sweeper logs what accumulated), so a peer that stopped
        reading cannot flood the log."""
        if not n:
            return
        self.cluster.stats.drop(self.node, reason, n)
        self._drops_unlogged[reason] = self._drops_unlogged.get(reason, 0) + n
        now = self._seconds()
        if now - self._drops_logged_at >= DROP_LOG_INTERVAL:
            self._log_drops(now, why)

    def _log_drops(self, now: float, why: str) -> None:
        drops, self._drops_unlogged = self._drops_unlogged, {}
        self._drops_logged_at = now
        if "outbound_full" in drops and not why:
            why = self._full()
        log.warn("{node}: dropped sends to {peer}: {counts}{why}", node=self.cluster.name,
                 peer=self.node, counts=", ".join(f"{n} {r}" for r, n in sorted(drops.items())),
                 why=f" ({why})" if why else "", drops=drops)

    # -- deadlines and liveness (every cluster.timeout_tick) ----------------------------

    def expire(self, now: float) -> None:
        """Fail calls past their deadline, give up frames queued for too long, and check
        that the peer still answers."""
        bound = self.cluster.settings.unreachable_after
        if self.queue and self.queue[0][1] + bound <= now:
            dropped = 0
            queue = self.queue
            why = self._why_unsent(bound)
            while queue and queue[0][1] + bound <= now:
                frame, _, session = queue.popleft()
                self.queued_bytes -= len(frame)
                if not session:
                    dropped += 1
                    self.queued_sends -= 1
                    continue
                self.unwritten.discard(session)
                p = self.pending.pop(session, None)
                if p is not None:
                    self._fail(p, NodeUnreachable(self.node, p[1].service, p[1].method, why))
            self._count_dropped(dropped, "unreachable", why)
            if not queue and self.link is not None:
                self.limit = self.high_water
        if self.pending:
            late = [s for s, p in self.pending.items() if p[2] + p[3] <= now]
            for s in late:
                p = self.pending.pop(s)
                if s in self.unwritten:
                    # never written, so it cannot have run: not a timeout
                    self.unwritten.discard(s)
                    self._fail(p, NodeUnreachable(self.node, p[1].service, p[1].method,
                                                  self._why_unsent(p[3])))
                else:
                    self.peer_calls.observe(p[3])  # took at least its timeout
                    self._fail(p, CallTimeout(self.node, p[1].service, p[1].method, p[3]))
        if self._drops_unlogged and now - self._drops_logged_at >= DROP_LOG_INTERVAL:
            self._log_drops(now, "")
        if self.link is not None:
            self._check_liveness(now)

    def _why_unsent(self, seconds: float) -> str:
        if self.link is not None:
            return (f"not sent within {seconds:g}s: {self.node} is not reading fast enough "
                    f"({self.outbound_bytes()} bytes waiting)")
        return f"no link to {self.address[0]}:{self.address[1]} within {seconds:g}s"

    def _check_liveness(self, now: float) -> None:
        cluster = self.cluster
        ping = self._ping
        if ping is not None:
            timeout = cluster.ping_timeout
            if now - ping[1] >= timeout and now - self.last_heard >= timeout:
                cluster.stats.link_closed("peer silent", "peer silent")
                why = f"no answer from {self.node} for {timeout:g}s"
                log.warn("{node}: link to {peer}: {why}; closing it", node=cluster.name,
                         peer=self.node, why=why)
                self._restart(why, "link_lost")
            return
        written = self.written_sends()
        if written != self._confirmed or now - self.last_heard >= cluster.ping_interval:
            self._ping_token += 1
            self._ping = (self._ping_token, now, written)
            # straight to the link, past any queued frames: it confirms only what was
            # written before it, and it must reach a peer that is merely slow
            self.write(pack((PING, self._ping_token)))
