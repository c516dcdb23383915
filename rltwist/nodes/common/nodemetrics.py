"""What every node says about itself to Prometheus: its versions (an info metric), what
hot reload did here, and whether it may write (it has not lost master).

``rl_node_info`` is 1 with the versions as labels: the package ``version``, the
``code_version`` (``<version>+<fix id>...`` once fix lists are applied), the
``config_version`` (``<n>-<digest>``, n counting this process' loads) and the
``config_digest`` (equal on every node that loaded the same tables). A hotfix or a table
reload replaces the series with one carrying the new labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rltwist import __version__

if TYPE_CHECKING:
    from rltwist.nodes.common.hotfix import HotfixService
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.common.sharedatad import Sharedatad


class NodeCollector(Collector):
    """``rl_node_info``, ``rl_node_writes_allowed``, ``rl_hotfix_*`` and ``rl_config_*``."""

    def __init__(self, node: Node, hotfix: HotfixService, tables: Sharedatad) -> None:
        self.node = node
        self.hotfix = hotfix
        self.tables = tables

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "rl_node_info", "Versions this node runs (always 1): package version, code "
            "version with the fix lists in force, game config tables version and digest",
            labels=["version", "code_version", "config_version", "config_digest"])
        info.add_metric([__version__, self.hotfix.hotfixer.code_version(),
                         self.node.config_version, self.tables.sd.snapshot.digest], 1)
        yield info
        yield GaugeMetricFamily(
            "rl_node_writes_allowed", "1 while the node may write; 0 when it has not reached "
            "master for heartbeat_misses x heartbeat_interval (it answers RETRY_LATER)",
            value=1 if self.node.writes_allowed else 0)
        lists = CounterMetricFamily("rl_hotfix_lists", "Code fix lists handled here by "
                                    "result (applied, unchanged, rejected, rolled_back)",
                                    labels=["result"])
        for result, n in self.hotfix.outcomes.items():
            lists.add_metric([result], n)
        yield lists
        yield GaugeMetricFamily("rl_hotfix_rejected_lists", "Fix lists rejected here and not "
                                "repaired or removed since", value=len(self.hotfix.errors))
        yield GaugeMetricFamily("rl_hotfix_pending_lists", "Fix lists waiting for their files "
                                "to match their checksums",
                                value=len(self.hotfix.hotfixer.pending()))
        reloads = CounterMetricFamily("rl_config_reloads", "Game config table reloads here "
                                      "by result (ok, rejected)", labels=["result"])
        for result, n in self.tables.outcomes.items():
            reloads.add_metric([result], n)
        yield reloads
        yield GaugeMetricFamily("rl_config_reload_failing", "1 while the last table reload "
                                "was rejected (the old tables keep serving)",
                                value=1 if self.tables.problems else 0)
