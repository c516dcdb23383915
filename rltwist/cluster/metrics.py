"""Cheap in-process counters for the cluster layer, exposed to Prometheus at scrape time.

The hot path only bumps plain dict entries (no locks, no label lookups); the collector
turns them into metric families when Prometheus scrapes, so a call costs nanoseconds of
bookkeeping instead of microseconds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

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
Counts = defaultdict[str, dict[str, int]]


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


class Stats:
    """Counters of one node's cluster traffic."""

    def __init__(self) -> None:
        self.calls_in: Counts = defaultdict(dict)
        self.sends_in: Counts = defaultdict(dict)
        self.sends_out: Counts = defaultdict(dict)
        self.calls_out: defaultdict[str, dict[str, OutCalls]] = defaultdict(dict)
        self.errors: dict[str, int] = {}
        self.links: dict[str, int] = {}
        self.sends_dropped: dict[str, int] = {}
        self.link_closes: dict[str, int] = {}
        self.late_replies = 0
        self.auth_failures = 0

    def out_calls(self, service: str, method: str) -> OutCalls:
        """The OutCalls of *service*.*method*, made on first use."""
        per = self.calls_out[service]
        o = per.get(method)
        if o is None:
            o = per[method] = OutCalls(service, method)
        return o

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def set_link(self, peer: str, up: int) -> None:
        self.links[peer] = up

    def link_closed(self, reason: str) -> None:
        short = reason.split(":", 1)[0].split("(", 1)[0].strip()
        self.link_closes[short] = self.link_closes.get(short, 0) + 1


class ClusterCollector(Collector):
    """Prometheus view of a node's :class:`Stats` and its senders' queues."""

    def __init__(self, stats: Stats, senders: Callable[[], dict[str, Sender]]) -> None:
        self.stats = stats
        self.senders = senders

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        made = CounterMetricFamily("rl_cluster_calls_out", "Calls made, by service and method",
                                   labels=["service", "method"])
        hist = HistogramMetricFamily("rl_cluster_call_seconds",
                                     "Outgoing call latency (reply or error)",
                                     labels=["service", "method"])
        for svc, per in list(s.calls_out.items()):
            for method, o in list(per.items()):
                made.add_metric([svc, method], o.made)
                acc, buckets = 0, []
                for bound, n in zip(LATENCY_BUCKETS, o.buckets, strict=False):
                    acc += n
                    buckets.append((repr(bound), acc))
                buckets.append(("+Inf", acc + o.buckets[-1]))
                hist.add_metric([svc, method], buckets, sum_value=o.seconds)
        yield made
        yield hist
        for name, doc, data in (
            ("rl_cluster_calls_in", "Calls received, by service and method", s.calls_in),
            ("rl_cluster_sends_in", "Sends received, by service and method", s.sends_in),
            ("rl_cluster_sends_out", "Sends made, by service and method", s.sends_out),
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
        senders = self.senders()
        up = GaugeMetricFamily("rl_cluster_link_up", "Outgoing link to peer is ready (1) or not",
                               labels=["peer"])
        queued = GaugeMetricFamily("rl_cluster_queued_messages",
                                   "Messages waiting for a link to the peer", labels=["peer"])
        pending = GaugeMetricFamily("rl_cluster_pending_calls",
                                    "Calls to the peer awaiting a reply", labels=["peer"])
        dropped = CounterMetricFamily("rl_cluster_sends_dropped",
                                      "Sends given up because the peer stayed unreachable",
                                      labels=["peer"])
        for peer in sorted(set(s.links) | set(senders)):
            up.add_metric([peer], s.links.get(peer, 0))
            snd = senders.get(peer)
            queued.add_metric([peer], len(snd.queue) if snd else 0)
            pending.add_metric([peer], len(snd.pending) if snd else 0)
            dropped.add_metric([peer], s.sends_dropped.get(peer, 0))
        yield up
        yield queued
        yield pending
        yield dropped
