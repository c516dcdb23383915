"""Cheap in-process counters for the cluster layer, exposed to Prometheus at scrape time.

The hot path only bumps plain dict entries (no locks, no label lookups); the collector
turns them into metric families when Prometheus scrapes, so a call costs nanoseconds of
bookkeeping instead of microseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from rltwist.cluster.sender import Sender

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# service -> method -> count. Nested rather than keyed by (service, method): the hot paths
# then look up two strings with cached hashes instead of building and hashing a tuple.
Counts = dict[str, dict[str, int]]


class OutCalls:
    """Calls made to one service method: how many, and how long their replies took.

    ``buckets`` counts replies (and error replies) per bound of LATENCY_BUCKETS, plus one
    above the last bound; ``seconds`` is their sum. A pending call holds its OutCalls, so
    the sender's reply path updates it without any lookup.
    """

    __slots__ = ("buckets", "made", "method", "seconds", "service")

    def __init__(self, service: str, method: str) -> None:
        self.service = service
        self.method = method
        self.made = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.seconds += seconds


UNKNOWN = "unknown"  # the label of every name that is not a registered service or method

#: call error kinds created at 0, so an error panel shows 0 rather than nothing
ERROR_KINDS = ("CallTimeout", "NodeUnreachable", "LinkLost", "OutboundFull", "UnknownNode",
               "UnknownService", "UnknownMethod", "BadArguments", "MessageTooLarge",
               "RemoteError")

#: the p99 of calls to a peer covers the current and the previous window of this length
PEER_WINDOW = 30.0


class PeerCalls:
    """Calls to one peer, whatever the method: how many were answered (or timed out), and
    their latency over the last one to two windows, for a p99 per peer.

    A histogram per peer would cost ~20 series per peer, and a node at 100 regions has
    about 420 peers; this costs one (the p99), computed when Prometheus scrapes (call
    rates are in ``rl_cluster_calls_out_total`` by service and method). The windows turn
    at scrape time (``roll``): the p99 covers the last ``PEER_WINDOW`` to 2 x
    ``PEER_WINDOW`` seconds, or the time since the previous scrape when scrapes are
    further apart. The sender's reply path bumps ``cur`` inline; a call that timed out
    counts as taking its timeout.
    """

    __slots__ = ("_rotated", "cur", "prev", "started")

    def __init__(self) -> None:
        self._rotated = 0  # calls counted in windows that are no longer current
        self.cur = [0] * (len(LATENCY_BUCKETS) + 1)
        self.prev = [0] * (len(LATENCY_BUCKETS) + 1)
        self.started: float | None = None

    @property
    def calls(self) -> int:
        """Calls answered (or timed out) so far. Derived from the windows, so the reply
        path bumps one counter per call, not two."""
        return self._rotated + sum(self.cur)

    def observe(self, seconds: float) -> None:
        self.cur[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def rotate(self, now: float) -> None:
        """Start a new window at *now*; the current one becomes the previous one."""
        self._rotated += sum(self.cur)
        self.prev, self.cur = self.cur, [0] * len(self.cur)
        self.started = now

    def roll(self, now: float, window: float = PEER_WINDOW) -> None:
        """Rotate when the current window is *window* seconds old."""
        if self.started is None:
            self.started = now
        elif now - self.started >= window:
            self.rotate(now)

    def p99(self) -> float | None:
        """The 99th percentile of the windows' latencies (interpolated within its bucket,
        as PromQL's histogram_quantile does), or None when they hold no call."""
        counts = [a + b for a, b in zip(self.prev, self.cur, strict=True)]
        total = sum(counts)
        if not total:
            return None
        rank = 0.99 * total
        seen = 0
        lower = 0.0
        for bound, n in zip(LATENCY_BUCKETS, counts, strict=False):
            if n and seen + n >= rank:
                return lower + (bound - lower) * (rank - seen) / n
            seen += n
            lower = bound
        return LATENCY_BUCKETS[-1]  # in the +Inf bucket: the highest bound, as PromQL does


def count(table: Counts, service: str, method: str, n: int = 1) -> None:
    """Add *n* to ``table[service][method]`` (the cold path; hot paths index directly)."""
    per = table.get(service)
    if per is None:
        per = table[service] = {}
    per[method] = per.get(method, 0) + n


def merge_into(target: Counts, source: Counts) -> None:
    for service, per in source.items():
        for method, n in per.items():
            count(target, service, method, n)


class Stats:
    """Counters of one node's cluster traffic.

    Label values come only from names this node can vouch for, so neither a buggy caller
    nor a hostile peer can grow the label sets (or break the scrape with a non-string):
    inbound counts exist for registered services and methods (others under ``unknown``);
    outbound names a peer answered as unknown are folded into ``unknown``.
    """

    def __init__(self) -> None:
        # inbound, pre-filled by ``serve`` so the hot paths just index and add
        self.calls_in: Counts = {}
        self.sends_in: Counts = {}
        # outbound calls; a lookup that misses goes through ``out_calls``
        self.calls_out: dict[str, dict[str, OutCalls]] = {}
        self.unknown_out = OutCalls(UNKNOWN, UNKNOWN)
        # outbound sends of this node to itself, to unknown nodes, and of closed senders
        # (each live sender counts its own: it needs them to count lost sends)
        self.sends_out: Counts = {}
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.links: dict[str, int] = {}
        self.peers: dict[str, PeerCalls] = {}  # outgoing calls per peer (see PeerCalls)
        self.sends_dropped: dict[tuple[str, str], int] = {}  # (peer, reason): never written
        self.sends_lost: dict[tuple[str, str], int] = {}  # (peer, reason): written, unconfirmed
        self.link_closes: dict[str, int] = {}
        self.late_replies = 0
        self.auth_failures = 0
        # calls/sends that reached dispatch on an inbound link without a handshake: never run,
        # and a bug if ever non-zero (rl-chaos fuzz checks it stays 0)
        self.unauthenticated_dispatches = 0

    def serve(self, service: str, methods: Iterable[str]) -> None:
        """Make the inbound counters of a registered service's methods exist (at 0)."""
        methods = list(methods)
        for table in (self.calls_in, self.sends_in):
            per = table.setdefault(service, {})
            for method in methods:
                per.setdefault(method, 0)

    def unknown_in(self, table: Counts, service: Any, known_service: bool) -> None:
        """Count an inbound message for a service or method this node does not have."""
        count(table, service if known_service else UNKNOWN, UNKNOWN)

    def out_calls(self, service: str, method: str) -> OutCalls:
        """The OutCalls of *service*.*method*, made on first use (names are str)."""
        per = self.calls_out.get(service)
        if per is None:
            per = self.calls_out[service] = {}
        o = per.get(method)
        if o is None:
            o = per[method] = OutCalls(service, method)
        return o

    def fold_out(self, out: OutCalls) -> None:
        """The target has no such service or method: count *out*'s calls under unknown and
        forget the name (calls still in flight with it are folded as they are answered)."""
        if out is self.unknown_out:
            return
        u = self.unknown_out
        u.made += out.made
        u.seconds += out.seconds
        for i, n in enumerate(out.buckets):
            u.buckets[i] += n
        out.made, out.seconds, out.buckets = 0, 0.0, [0] * len(out.buckets)
        per = self.calls_out.get(out.service)
        if per is not None and per.get(out.method) is out:
            del per[out.method]
            if not per:
                del self.calls_out[out.service]

    def peer(self, node: str) -> PeerCalls:
        """The PeerCalls of *node* (one per peer, kept while the node is known)."""
        p = self.peers.get(node)
        if p is None:
            p = self.peers[node] = PeerCalls()
        return p

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def set_link(self, peer: str, up: int) -> None:
        self.links[peer] = up

    def drop(self, peer: str, reason: str, n: int = 1) -> None:
        """*n* sends to *peer* were given up before they were written."""
        key = (peer, reason)
        self.sends_dropped[key] = self.sends_dropped.get(key, 0) + n

    def lose(self, peer: str, reason: str, n: int) -> None:
        """*n* sends written to *peer* went down with their link unconfirmed."""
        key = (peer, reason)
        self.sends_lost[key] = self.sends_lost.get(key, 0) + n

    def dropped(self, peer: str, reason: str | None = None) -> int:
        """Sends to *peer* dropped for *reason* (any reason if None)."""
        return sum(n for (p, r), n in self.sends_dropped.items()
                   if p == peer and reason in (None, r))

    def lost(self, peer: str, reason: str | None = None) -> int:
        """Sends to *peer* lost with a link for *reason* (any reason if None)."""
        return sum(n for (p, r), n in self.sends_lost.items()
                   if p == peer and reason in (None, r))

    def link_closed(self, reason: str, label: str | None = None) -> None:
        short = label or reason.split(":", 1)[0].split("(", 1)[0].strip()
        self.link_closes[short] = self.link_closes.get(short, 0) + 1


class ClusterCollector(Collector):
    """Prometheus view of a node's :class:`Stats` and its senders' queues."""

    def __init__(self, stats: Stats, senders: Callable[[], dict[str, Sender]],
                 clock: Callable[[], float] | None = None) -> None:
        self.stats = stats
        self.senders = senders
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        senders = self.senders()
        made = CounterMetricFamily("rl_cluster_calls_out", "Calls made, by service and method",
                                   labels=["service", "method"])
        hist = HistogramMetricFamily("rl_cluster_call_seconds",
                                     "Outgoing call latency (reply or error)",
                                     labels=["service", "method"])
        outs = [o for per in list(s.calls_out.values()) for o in list(per.values())]
        if s.unknown_out.made:
            outs.append(s.unknown_out)
        for o in outs:
            made.add_metric([o.service, o.method], o.made)
            acc, buckets = 0, []
            for bound, n in zip(LATENCY_BUCKETS, o.buckets, strict=False):
                acc += n
                buckets.append((repr(bound), acc))
            buckets.append(("+Inf", acc + o.buckets[-1]))
            hist.add_metric([o.service, o.method], buckets, sum_value=o.seconds)
        yield made
        yield hist
        sends_out: Counts = {}
        merge_into(sends_out, s.sends_out)
        for live in list(senders.values()):
            merge_into(sends_out, live.sends_out)
        for name, doc, data in (
            ("rl_cluster_calls_in", "Calls received, by service and method", s.calls_in),
            ("rl_cluster_sends_in", "Sends received, by service and method", s.sends_in),
            ("rl_cluster_sends_out", "Sends made, by service and method", sends_out),
        ):
            c = CounterMetricFamily(name, doc, labels=["service", "method"])
            for svc, counts in list(data.items()):
                for method, n in list(counts.items()):
                    c.add_metric([svc, method], n)
            yield c
        errors = CounterMetricFamily("rl_cluster_errors", "Call errors by kind", labels=["kind"])
        for kind, n in list(s.errors.items()):
            errors.add_metric([kind], n)
        yield errors
        closes = CounterMetricFamily("rl_cluster_link_closes",
                                     "Links closed by this node, by reason", labels=["reason"])
        for reason, n in list(s.link_closes.items()):
            closes.add_metric([reason], n)
        yield closes
        yield CounterMetricFamily("rl_cluster_late_replies",
                                  "Replies that arrived after their call timed out",
                                  value=s.late_replies)
        yield CounterMetricFamily("rl_cluster_auth_failures",
                                  "Inbound links refused for a bad handshake",
                                  value=s.auth_failures)
        yield CounterMetricFamily("rl_cluster_unauthenticated_dispatches",
                                  "Calls and sends from peers that did not complete the "
                                  "handshake that reached dispatch (refused; must stay 0)",
                                  value=s.unauthenticated_dispatches)
        up = GaugeMetricFamily("rl_cluster_link_up", "Outgoing link to peer is ready (1) or not",
                               labels=["peer"])
        # Backlogs per peer only where there is one: at 100 regions a node has ~420 peers,
        # and three always-zero series each would take most of the node's series budget.
        queued = GaugeMetricFamily("rl_cluster_queued_messages",
                                   "Messages waiting in the sender's queue (no link yet, or "
                                   "the peer is not reading); peers with none are left out",
                                   labels=["peer"])
        outbound = GaugeMetricFamily("rl_cluster_outbound_bytes",
                                     "Bytes waiting to be sent to the peer (bounded by "
                                     "cluster.max_outbound); peers with none are left out",
                                     labels=["peer"])
        pending = GaugeMetricFamily("rl_cluster_pending_calls",
                                    "Calls to the peer awaiting a reply; peers with none are "
                                    "left out", labels=["peer"])
        totals = [0, 0, 0]
        for peer in sorted(set(s.links) | set(senders)):
            up.add_metric([peer], s.links.get(peer, 0))
            snd = senders.get(peer)
            if snd is None:
                continue
            for i, (family, value) in enumerate(((queued, len(snd.queue)),
                                                 (outbound, snd.outbound_bytes()),
                                                 (pending, len(snd.pending)))):
                if value:
                    family.add_metric([peer], value)
                    totals[i] += value
        yield up
        yield queued
        yield outbound
        yield pending
        for (name, doc), value in zip((
                ("rl_cluster_queued_messages_all_peers", "Messages waiting in the queues of "
                 "every peer"),
                ("rl_cluster_outbound_bytes_all_peers", "Bytes waiting to be sent to every "
                 "peer"),
                ("rl_cluster_pending_calls_all_peers", "Calls awaiting a reply from any peer"),
        ), totals, strict=True):
            yield GaugeMetricFamily(name, doc, value=value)
        now = self.clock() if self.clock is not None else None
        p99 = GaugeMetricFamily("rl_cluster_peer_call_p99_seconds",
                                "99th percentile of call latency to the peer (any method; a "
                                "timeout counts as its timeout) over the last 30-60 s; absent "
                                "when there was no call", labels=["peer"])
        for peer, pc in sorted(s.peers.items()):
            if now is not None:
                pc.roll(now)
            q = pc.p99()
            if q is not None:
                p99.add_metric([peer], q)
        yield p99
        dropped = CounterMetricFamily(
            "rl_cluster_sends_dropped", "Sends given up before they were written, by peer and "
            "reason (unreachable, outbound_full, closed, stopped)", labels=["peer", "reason"])
        for (peer, reason), n in sorted(s.sends_dropped.items()):
            dropped.add_metric([peer, reason], n)
        yield dropped
        lost = CounterMetricFamily(
            "rl_cluster_sends_lost", "Sends written to a link that went away before the peer "
            "confirmed them (they may or may not have run), by peer and reason (link_lost, "
            "retargeted, closed)", labels=["peer", "reason"])
        for (peer, reason), n in sorted(s.sends_lost.items()):
            lost.add_metric([peer, reason], n)
        yield lost
