"""The metric conventions of every node, and the helpers that keep label sets bounded.

Every node serves its metrics on ``nodes.<name>.metrics_port`` at ``/metrics``; Prometheus
finds them through master's ``GET /sd`` and adds the target labels ``node``, ``kind`` and
``sid`` (empty for global and pool nodes). A metric therefore never carries its own node
name, except master's ``rl_node_up``, which speaks about other nodes.

Names: ``rl_<area>_<what>[_<unit>]`` — ``rl_login_total``, ``rl_role_auth_step_seconds``,
``rl_redis_command_seconds``. Counters end in ``_total`` (prometheus_client adds it),
durations are histograms in seconds with one of the bucket sets below, sizes are gauges.

Labels take values from a closed set known when the node starts, never from a player
(userid, openid, name), a guild, a map cell, a client string or a peer's free text:

* result codes: ``code`` or ``outcome`` = an ``ErrorCode`` name (``code_name``);
* reasons: ``reason`` = a ``KickReason`` name or a short fixed word (``bounded``);
* steps: ``step`` = a fixed list per flow (``LOGIN_STEPS``, ``AUTH_STEPS``);
* places: ``region`` = the sid of a configured region (at most the configured regions),
  ``peer`` = a node name (at most the nodes of the name table), ``service``/``method`` =
  registered handlers only (unknown ones are counted under ``unknown``).

A value outside its set is counted under ``other`` (or ``unknown`` for cluster names),
so a bug or a hostile client cannot grow a label set. The values of a set are created at 0
when the metric is made (``precreate``): a dashboard panel then shows 0, not "no data",
and ``rate()`` sees the first increase.

Budget: at 100 regions (about 420 nodes) no node serves more than ``SERIES_BUDGET``
series. What grows with the cluster is per peer (``rl_cluster_link_up`` and
``rl_cluster_peer_call_p99_seconds`` — no method label beside ``peer``; backlogs only for
peers that have one), per node on master (``rl_node_up``) and per region on role nodes
(``rl_role_online_players_by_region``); ``bench/metrics.py`` counts them.

Features that come later follow the same shape, per node and never per player, guild or
map cell: chat ``rl_chat_messages_total{channel, code}`` (channel: world, region, guild,
private) and ``rl_chat_deliveries_total{channel}``; mail ``rl_mail_sent_total{kind, code}``
(kind: player, system, region, global) and ``rl_mail_claims_total{code}``; march
``rl_march_started_total{code}``, ``rl_march_arrived_total{result}`` and
``rl_march_active`` (gauge). Per-region figures come from the region node's ``sid``
target label, or a ``region`` label bounded by the configured regions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from rltwist.protocols import pb

#: the most series one node may serve at 100 regions (bench/metrics.py checks it)
SERIES_BUDGET = 2000

OTHER = "other"

#: request-sized work: a login, an Auth, one of their steps (1 ms .. 10 s)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
#: one round trip to Redis or storage (100 µs .. 5 s)
ROUNDTRIP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                     0.1, 0.25, 1.0, 5.0)

#: the steps of a Login on a login node, in order (sdk check, Redis lock, account on
#: logiccenter, the player's Redis state, kicking the online instance, the assign script)
LOGIN_STEPS = ("sdk", "lock", "account", "state", "kick", "assign")
#: the steps of an Auth on a role node (consume the secret, claim + load in storage, the
#: GAME_STEP_FINISH script, name reconciliation, pending transfers)
AUTH_STEPS = ("begin", "claim", "finish", "reconcile", "transfers", "rolecaches")

#: the codes a Login can answer (created at 0 on every login node)
LOGIN_CODES = ("OK", "BAD_TOKEN", "LOGIN_IN_PROGRESS", "RETRY_LATER", "NOT_AVAILABLE",
               "BAD_REQUEST", "INTERNAL", "BAD_SERVER_ID", "VERSION_TOO_OLD", "TIMEOUT")
#: the codes an Auth can answer (created at 0 on every role node)
AUTH_CODES = ("OK", "BAD_SECRET", "RETRY_LATER", "NOT_AVAILABLE", "BAD_REQUEST", "INTERNAL")
#: login answers that are the server's fault (the login error ratio alert); the others
#: are the client's (bad token, bad request, old version) or deliberate (GM closed logins)
LOGIN_SERVER_ERRORS = ("INTERNAL", "RETRY_LATER", "TIMEOUT")


def code_name(code: int) -> str:
    """The ``ErrorCode`` name of *code*, or ``other`` for a number the enum lacks."""
    try:
        return str(pb.ErrorCode.Name(code))
    except ValueError:
        return OTHER


def kick_names() -> tuple[str, ...]:
    """Every ``KickReason`` name (the ``reason`` values of ``rl_role_kicks_total``)."""
    return tuple(pb.KickReason.keys())


def kick_name(code: int) -> str:
    """The ``KickReason`` name of *code*, or ``other``."""
    try:
        return str(pb.KickReason.Name(code))
    except ValueError:
        return OTHER


def bounded(value: Any, known: Iterable[str]) -> str:
    """*value* if it is one of *known*, else ``other``."""
    return value if isinstance(value, str) and value in known else OTHER


def precreate(metric: Any, *values: Sequence[str]) -> None:
    """Create every combination of label *values* (one sequence per label) at 0."""
    for combo in itertools.product(*values):
        metric.labels(*combo)
