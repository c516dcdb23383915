"""The LRU metrics of a node: one set per Prometheus registry, labelled by worker."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class LRUMetrics:
    """The LRU metrics of one registry, labelled by worker service name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.resident = Gauge("rl_lru_resident", "Entities held in memory", ["service"],
                              registry=registry)
        self.loads = Counter("rl_lru_loads", "Entity loads by result (found, new, absent, "
                             "error)", ["service", "result"], registry=registry)
        self.load_seconds = Histogram(
            "rl_lru_load_seconds", "Latency of an entity load", ["service"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry)
        self.evictions = Counter("rl_lru_evictions", "Entities evicted (after their save)",
                                 ["service"], registry=registry)
        self.eviction_failures = Counter(
            "rl_lru_eviction_failures", "Evictions given up because the save failed",
            ["service"], registry=registry)


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, LRUMetrics] = weakref.WeakKeyDictionary()


def lru_metrics(registry: CollectorRegistry | None) -> LRUMetrics:
    if registry is None:
        return LRUMetrics(CollectorRegistry(auto_describe=True))
    m = _metrics.get(registry)
    if m is None:
        m = _metrics[registry] = LRUMetrics(registry)
    return m
