"""Served-interval records: when this role node served which player (for ``rl-chaos``).

Each role node writes one log line when it starts serving a player (the Auth succeeded:
the instance is in ``gateway.players`` and takes requests) and one when it stops (the
instance leaves ``online``: logout, kick, fence, shutdown). Times are ``time.monotonic()``,
CLOCK_MONOTONIC, which every process on one host shares, so the records of all role nodes
can be compared::

    served_start userid=65537 generation=4 node=role1 t=81234.567890
    served_end userid=65537 generation=4 node=role1 t=81240.123456

``rl-chaos`` reads them from the node logs and proves that no two intervals of one player
overlap. A node killed by SIGKILL writes no end: its open intervals end at the kill time,
which whoever killed it knows.

The end is the moment the node stopped acting for the player. Normally that is when the
instance leaves ``online`` (from then on its requests get RETRY_LATER, and the final save
is fenced by generation in storage). When the node is refusing writes at that moment
because master has not answered it (``slaveflow.writes_allowed``), it has refused them
continuously since ``last answered heartbeat + heartbeat_misses x heartbeat_interval`` —
no later than master could mark it down and let the player log in elsewhere — so that
earlier moment is the end (a frozen node that wakes up has served nobody while frozen).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from twisted.logger import Logger

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()

START_FORMAT = "served_start userid={userid} generation={generation} node={node} t={t:.6f}"
END_FORMAT = "served_end userid={userid} generation={generation} node={node} t={t:.6f}"


def started(gw: Gateway, player: Player) -> None:
    """Record that this node serves *player* from now on."""
    log.info(START_FORMAT, userid=player.userid, generation=player.generation,
             node=gw.node.name, t=time.monotonic())


def served_until(gw: Gateway) -> float:
    """The monotonic time up to which this node could act for a player it takes offline
    now: now, or when it began refusing writes for lack of master (see module doc)."""
    now = time.monotonic()
    allowed = getattr(gw, "writes_allowed", None)
    if allowed is None or allowed():
        return now
    flow = getattr(gw.node, "slaveflow", None)
    last = getattr(flow, "last_answer", None)
    if last is None:
        return now
    s = gw.node.config.cluster
    refusing_since = last + s.heartbeat_interval * s.heartbeat_misses  # reactor clock
    ago = float(gw.node.reactor.seconds()) - refusing_since
    return now - ago if ago > 0 else now


def ended(gw: Gateway, player: Player) -> None:
    """Record that this node stopped serving *player* (call when it leaves online)."""
    try:
        until = served_until(gw)
    except Exception:  # a record must never stop a logout
        log.failure("served_until for {userid}", userid=player.userid)
        until = time.monotonic()
    log.info(END_FORMAT, userid=player.userid, generation=player.generation,
             node=gw.node.name, t=until)
