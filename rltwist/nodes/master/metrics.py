"""Master's metrics about the cluster: ``rl_node_up{node, kind, sid}`` from its node table,
whether Redis' ``is_available`` is set, and whether logins are open.

``rl_node_up`` is the node-down signal that survives the node: 1 for a node that
heartbeats (up, waiting for its start-order predecessors, stopping), 0 for one master
marked down, and 0 for a node named in master's config (and not decommissioned) that has
not registered within ``heartbeat_misses x heartbeat_interval`` of master's start — what
a node that died while master was away looks like to a restarted master. Nodes that left
in an ordered shutdown (``stopped``) are not listed. The series carry their own ``node``,
``kind`` and ``sid`` labels (the scrape config keeps them: ``honor_labels``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rltwist.config import REGION_KINDS, parse_node_name

if TYPE_CHECKING:
    from rltwist.nodes.master.masterflow import Masterflow


def sid_label(kind: str, number: int | None) -> str:
    """The ``sid`` label of a node: its region for region kinds, empty otherwise."""
    return str(number) if kind in REGION_KINDS and number is not None else ""


class MasterCollector(Collector):
    """See the module docstring; *registry* is the RoleRegistry (``unavailable``)."""

    def __init__(self, flow: Masterflow, registry: Any = None) -> None:
        self.flow = flow
        self.role_registry = registry

    def collect(self) -> Iterator[Metric]:
        from rltwist.nodes.master.masterflow import DOWN, STOPPED

        flow = self.flow
        me = flow.node.me
        up = GaugeMetricFamily(
            "rl_node_up", "Node heartbeats master (1), or master marked it down / a "
            "configured node never registered (0); from master's node table",
            labels=["node", "kind", "sid"])
        up.add_metric([me.name, "master", ""], 1)
        for name, record in sorted(flow.nodes.items()):
            if record.state == STOPPED:
                continue
            up.add_metric([name, record.kind, sid_label(record.kind, record.number)],
                          0 if record.state == DOWN else 1)
        if flow.startup_grace_over():
            for name in sorted(flow.configured()):  # decommissioned nodes are not missing
                if name != me.name and name not in flow.nodes:
                    kind, number = parse_node_name(name)
                    up.add_metric([name, kind, sid_label(kind, number)], 0)
        yield up
        yield GaugeMetricFamily("rl_login_open", "Logins open (1) or closed by GM (0)",
                                value=1 if flow.login_open else 0)
        reg = self.role_registry
        if reg is not None and reg.started_at is not None:
            yield GaugeMetricFamily(
                "rl_redis_available", "Redis is_available set (1); 0 after Redis lost its "
                "keys until every role node wrote its players back (logins answer "
                "NOT_AVAILABLE meanwhile)", value=0 if reg.unavailable else 1)
