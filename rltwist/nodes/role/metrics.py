"""The role node's metrics: players online (in all, and per birth region), Auth by result
code and by step, logouts by reason and kicks by KickReason.

Label values come from closed sets (see :mod:`rltwist.metrics`): result codes from
``AUTH_CODES``, reasons from ``LOGOUT_REASONS`` and the ``KickReason`` enum, regions from
the configured regions. All of them exist at 0 from the start.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rltwist.cluster import birth_region
from rltwist.config import REGION_KINDS, parse_node_name
from rltwist.metrics import (
    AUTH_CODES,
    AUTH_STEPS,
    OTHER,
    REQUEST_BUCKETS,
    bounded,
    kick_name,
    kick_names,
    precreate,
)

#: why a player left a role node (the ``reason`` of ``rl_role_logouts_total``); anything
#: else, e.g. the free text of a ``gateway.kick`` call, is counted as ``other``
LOGOUT_REASONS = ("connection lost", "login elsewhere", "gm kick", "kick", "heartbeat timeout",
                  "fenced off by a newer login", "server shutdown", "fenced: lost master",
                  "node was marked down", OTHER)


class _BoundedLabels:
    """A one-label metric whose label values outside *known* are counted as ``other``."""

    def __init__(self, metric: Any, known: Iterable[str]) -> None:
        self.metric = metric
        self.known = frozenset(known)

    def labels(self, value: Any) -> Any:
        return self.metric.labels(bounded(value, self.known))


def regions_of(names: Iterable[str]) -> list[str]:
    """The region sids (as label strings) of the region nodes among *names*."""
    sids = set()
    for name in names:
        try:
            kind, number = parse_node_name(name)
        except Exception:
            continue
        if kind in REGION_KINDS and number is not None:
            sids.add(number)
    return [str(sid) for sid in sorted(sids)]


class OnlineByRegion(Collector):
    """``rl_role_online_players_by_region{region}``: the players held here per birth region
    (``birth_region(userid)``), counted when Prometheus scrapes; every configured region is
    listed, at 0 when nobody of it is here. Players of a region this node does not know
    (one opened after it started and not broadcast yet) count under ``other``."""

    def __init__(self, players: Callable[[], Mapping[int, Any]],
                 regions: Callable[[], Iterable[str]]) -> None:
        self.players = players
        self.regions = regions

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "rl_role_online_players_by_region",
            "Players online on this role node by birth region (the region in the userid)",
            labels=["region"])
        tally = Tally(birth_region(userid) for userid in self.players())
        known = list(self.regions())
        for region in known:
            family.add_metric([region], tally.pop(int(region), 0))
        if tally or not known:
            family.add_metric([OTHER], sum(tally.values()))
        yield family


class RoleMetrics:
    """Every role node metric, registered in *registry*."""

    def __init__(self, registry: CollectorRegistry, players: Callable[[], Mapping[int, Any]],
                 regions: Callable[[], Iterable[str]]) -> None:
        self.online = Gauge("rl_role_online_players", "Players online on this role node",
                            registry=registry)
        self.online.set_function(lambda: len(players()))
        registry.register(OnlineByRegion(players, regions))
        self.auths = Counter("rl_role_auth", "Auth requests by result (ErrorCode name)",
                             ["outcome"], registry=registry)
        precreate(self.auths, AUTH_CODES)
        self.auth_latency = Histogram("rl_role_auth_seconds", "Time to answer an Auth",
                                      buckets=REQUEST_BUCKETS, registry=registry)
        self.auth_steps = Histogram("rl_role_auth_step_seconds",
                                    "Time of each step of a successful Auth (begin: secret "
                                    "and ticket in Redis; claim: generation claim and load "
                                    "in storage; finish: GAME_STEP_FINISH in Redis; "
                                    "reconcile: name index; transfers: pending grants)",
                                    ["step"], buckets=REQUEST_BUCKETS, registry=registry)
        precreate(self.auth_steps, AUTH_STEPS)
        logouts = Counter("rl_role_logouts", "Logouts by reason", ["reason"],
                          registry=registry)
        precreate(logouts, LOGOUT_REASONS)
        self.logouts = _BoundedLabels(logouts, LOGOUT_REASONS)
        self.kicks = Counter("rl_role_kicks", "Players kicked (sent a KickNotify), by "
                             "KickReason", ["reason"], registry=registry)
        precreate(self.kicks, kick_names())
        self.final_save_retries = Counter(
            "rl_role_final_save_retries",
            "Final (logout) saves that failed and were retried; the player is kept meanwhile",
            registry=registry)

    def kicked(self, code: int) -> None:
        """Count one kick with KickReason *code*."""
        self.kicks.labels(kick_name(code)).inc()
