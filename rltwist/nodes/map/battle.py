"""battle: the battles of one map node's attack marches (issue 13 "Marches and battle").

The ``march`` service fights in-process when an attack march reaches its monster
(:meth:`Battle.fight`, rules in :mod:`rltwist.game.battlesystem`: seeded, the same inputs
give the same report), applies the losses and rewards to the march, and hands the report
here: :meth:`Battle.report` pushes a ``BattleReportNotify`` to the owner when online on a
role node the map's rolecache knows, and keeps the report in the owner's mail as a system
mail (``mailrouter.deliver`` with the key ``battle-<map>-<march>``: a retry, or the same
battle fought again after a crash, is stored once). A mail node that does not answer is
retried ``MAIL_TRIES`` times, ``MAIL_RETRY`` seconds apart, then the loss is logged.

Handlers: ``battle.fight(army, level, march_id, monster_id)`` computes a report without
changing anything (operators, tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster import ClusterError, Service, handler
from rltwist.ecs import import_system
from rltwist.nodes.common.reach import send_located
from rltwist.nodes.common.sharedatad import tables_or_none
from rltwist.protocols import pb

log = Logger()

battles = import_system("rltwist.game.battlesystem", service="battle")

MAIL_TRIES = 5
MAIL_RETRY = 10.0
CALL_TIMEOUT = 10.0


def _troops(army: Mapping[str, Any]) -> list[Any]:
    return [pb.TroopCount(type=t, count=int(n)) for t, n in sorted(army.items())]


def report_pb(march_id: int, report: Mapping[str, Any]) -> Any:
    """The BattleReportNotify of a battle report."""
    return pb.BattleReportNotify(
        march_id=march_id, monster_id=int(report["monster_id"]),
        monster_level=int(report["monster_level"]), x=int(report["x"]), y=int(report["y"]),
        won=bool(report["won"]), rounds=int(report["rounds"]), seed=int(report["seed"]),
        troops_before=_troops(report["army_before"]), troops_lost=_troops(report["army_lost"]),
        monster_troops=int(report["monster_troops"]),
        monster_lost=int(report["monster_lost"]),
        rewards={k: int(v) for k, v in report["rewards"].items()},
        time_ms=int(report["time_ms"]))


def report_mail(map_id: int, march_id: int, report: Mapping[str, Any]) -> dict[str, Any]:
    """The system mail keeping a battle report (mailrouter.deliver's format)."""
    lost = ", ".join(f"{t} {n}" for t, n in report["army_lost"].items() if n) or "none"
    sent = ", ".join(f"{t} {n}" for t, n in report["army_before"].items())
    rewards = ", ".join(f"{k} {v}" for k, v in report["rewards"].items()) or "none"
    body = (f"{'Victory' if report['won'] else 'Defeat'} against a level "
            f"{report['monster_level']} monster at ({report['x']}, {report['y']}) in "
            f"{report['rounds']} rounds (seed {report['seed']}).\n"
            f"Sent: {sent}. Lost: {lost}.\n"
            f"Monster troops: {report['monster_troops']}, killed: {report['monster_lost']}.\n"
            f"Rewards (credited when the march is home): {rewards}.")
    return {"title": "Battle report", "body": body, "from_name": "Battle",
            "key": f"battle-{map_id}-{march_id}"}


class Battle(Service):
    """The ``battle`` service of a map node (module docstring)."""

    name = "battle"

    def __init__(self, node: Any, map_id: int) -> None:
        self.node = node
        self.map_id = map_id
        self.inflight: set[defer.Deferred[Any]] = set()

    def fight(self, army: Mapping[str, int], level: int, march_id: int,
              monster_id: int) -> dict[str, Any]:
        """A battle's report (nothing changes)."""
        from rltwist.game.marchsystem import troop_table

        tables = tables_or_none()
        result: dict[str, Any] = battles.fight(army, level, march_id, monster_id,
                                               troop_table(tables)["types"], tables)
        return result

    @handler(name="fight")
    def fight_handler(self, army: dict[str, int], level: int, march_id: int,
                      monster_id: int) -> dict[str, Any]:
        return self.fight(army, level, march_id, monster_id)

    def report(self, owner: int, march_id: int, report: Mapping[str, Any]) -> None:
        """Push the report to *owner* if online, and keep it in their mail."""
        cache = self.node.cluster.services.get("rolecache")
        node = getattr(cache, "where", {}).get(owner)
        if node is not None:
            send_located(self.node.cluster, {owner: node}, report_pb(march_id, report))
        d = defer.Deferred.fromCoroutine(self._mail(owner, march_id, report))
        self.inflight.add(d)
        d.addErrback(lambda f: log.failure("battle report mail of {owner} failed", f,
                                           owner=owner))
        d.addBoth(lambda _: self.inflight.discard(d))

    async def _mail(self, owner: int, march_id: int, report: Mapping[str, Any]) -> None:
        cluster = self.node.cluster
        mail = report_mail(self.map_id, march_id, report)
        for attempt in range(1, MAIL_TRIES + 1):
            try:
                await cluster.call(cluster.mail_node(owner), "mailrouter", "deliver", owner,
                                   mail, timeout=CALL_TIMEOUT)
                return
            except ClusterError as e:
                log.warn("battle report of march {mid} to {owner}: {e} (try {n} of {tries})",
                         mid=march_id, owner=owner, e=e, n=attempt, tries=MAIL_TRIES)
            if attempt < MAIL_TRIES:
                await task.deferLater(self.node.reactor, MAIL_RETRY, lambda: None)
        log.error("battle report of march {mid} to {owner} not kept in mail: the mail node "
                  "did not answer; the player got the push only if online", mid=march_id,
                  owner=owner)
