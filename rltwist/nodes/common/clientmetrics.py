"""Prometheus view of a node's client port (login nodes, role gateways): open connections,
refused connections and server-side closes by reason.

Every known reason is exported from the start (at 0), so a dashboard shows 0 rather than
"no data"; reasons are code constants, never client-supplied text, so the label set is
bounded.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rltwist.protocols.server import CloseReason, RefuseReason, ServerProtocolFactory


class ClientPortCollector(Collector):
    """Reads the counters a :class:`ServerProtocolFactory` keeps, at scrape time."""

    def __init__(self, factory: ServerProtocolFactory) -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        f = self.factory
        open_ = GaugeMetricFamily("rl_client_connections",
                                  "Open game client connections on this node's client port")
        open_.add_metric([], f.open_connections)
        yield open_
        refused = CounterMetricFamily(
            "rl_client_refused", "Client connections refused at accept, by reason "
            "(client.max_connections, client.max_connections_per_ip)", labels=["reason"])
        for refuse in RefuseReason:
            refused.add_metric([refuse.value], f.refused.get(refuse.value, 0))
        yield refused
        closes = CounterMetricFamily(
            "rl_client_closes", "Client connections closed by the server, by reason",
            labels=["reason"])
        counts = dict(f.closes)
        for reason in sorted({r.value for r in CloseReason} | set(counts)):
            closes.add_metric([reason], counts.get(reason, 0))
        yield closes
