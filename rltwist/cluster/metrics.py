"""Cheap in-process counters for the cluster layer, exposed to Prometheus at scrape time.

The hot path only bumps plain dict entries (no locks, no label lookups); the collector
turns them into metric families when Prometheus scrapes, so a call costs nanoseconds of
bookkeeping instead of microseconds.
"""

from __future__ import annotations

from bisect import bisect_left
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

Key = tuple[str, str]


class Stats:
    """Counters of one node's cluster traffic."""

    def __init__(self) -> None:
        self.calls_in: dict[Key, int] = {}
        self.calls_out: dict[Key, int] = {}
        self.sends_in: dict[Key, int] = {}
        self.sends_out: dict[Key, int] = {}
        self.errors: dict[str, int] = {}
        self.links: dict[str, int] = {}
        self.sends_dropped: dict[str, int] = {}
        self.link_closes: dict[str, int] = {}
        self.latency: dict[Key, list[float]] = {}
        self.late_replies = 0
        self.auth_failures = 0

    def histogram(self, key: Key) -> list[float]:
        """The latency histogram of outgoing calls to *key*: a count per bucket of
        LATENCY_BUCKETS, then the count above the last bucket, then the sum of seconds.
        The reply path of the sender updates it inline."""
        h = self.latency.get(key)
        if h is None:
            h = self.latency[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        return h

    def observe_call(self, key: Key, seconds: float) -> None:
        h = self.histogram(key)
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-1] += seconds

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
        for name, doc, data in (
            ("rl_cluster_calls_in", "Calls received, by service and method", s.calls_in),
            ("rl_cluster_calls_out", "Calls made, by service and method", s.calls_out),
            ("rl_cluster_sends_in", "Sends received, by service and method", s.sends_in),
            ("rl_cluster_sends_out", "Sends made, by service and method", s.sends_out),
        ):
            c = CounterMetricFamily(name, doc, labels=["service", "method"])
            for (svc, method), n in list(data.items()):
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
        hist = HistogramMetricFamily("rl_cluster_call_seconds",
                                     "Outgoing call latency (reply or error)",
                                     labels=["service", "method"])
        for (svc, method), h in list(s.latency.items()):
            acc, buckets = 0.0, []
            for bound, n in zip(LATENCY_BUCKETS, h, strict=False):
                acc += n
                buckets.append((repr(bound), acc))
            acc += h[len(LATENCY_BUCKETS)]
            buckets.append(("+Inf", acc))
            hist.add_metric([svc, method], buckets, sum_value=h[-1])
        yield hist
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
