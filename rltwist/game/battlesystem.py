"""Battle rules (issue 13 "Marches and battle"): an attack march against a monster.

Reached through ``import_system("rltwist.game.battlesystem", service="battle")`` by the
map node's ``battle`` service, so ``POST /hotfix`` changes them. The result depends only
on its inputs: the army, the monster's level, the tables and the seed (the table's
``seed`` mixed with the march and monster ids), through :class:`random.Random` seeded with
those — the same inputs give the same report, on any node and after any restart (a march
whose arrival runs again after a crash fights the same battle). ``etc/game/battle.toml``
documents the formula.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from rltwist.ecs.system import System

__all__ = ["DEFAULT_BATTLE", "BattleSystem", "system"]

DEFAULT_BATTLE: dict[str, Any] = {
    "seed": 20261201, "rounds": 6, "variance_percent": 10,
    "monster": ({"level": 1, "count": 200, "attack": 8, "defense": 6, "hp": 60,
                 "rewards": {"gold": 300, "food": 500}},),
}
"""Used when ``etc/game/battle.toml`` is missing (unit tests without tables)."""


def battle_table(tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (tables or {}).get("battle") or DEFAULT_BATTLE


def battle_seed(base: int, march_id: int, monster_id: int) -> int:
    """A 63-bit seed from the table's seed and the two ids (stable across processes:
    no ``hash()``, which is salted per process for strings)."""
    digest = hashlib.blake2b(f"{base}:{march_id}:{monster_id}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") >> 1


class BattleSystem(System):
    name = "battle"

    def monster(self, level: int, tables: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """The stats of a monster of *level* (the highest level listed at or below it)."""
        rows = sorted(battle_table(tables)["monster"], key=lambda m: m["level"])
        found = rows[0]
        for m in rows:
            if m["level"] <= level:
                found = m
        return found

    def fight(self, army: Mapping[str, int], monster_level: int, march_id: int,
              monster_id: int, troop_types: Mapping[str, Any],
              tables: Mapping[str, Any] | None) -> dict[str, Any]:
        """Fight *army* (type -> count; stats from *troop_types*) against a monster of
        *monster_level*; the report (plain data)::

            {"won", "rounds", "seed", "army_before", "army_lost", "army_after",
             "monster_troops", "monster_lost", "rewards"}
        """
        table = battle_table(tables)
        mon = self.monster(monster_level, tables)
        seed = battle_seed(int(table["seed"]), march_id, monster_id)
        rng = random.Random(seed)
        variance = int(table["variance_percent"]) / 100.0
        ours = {t: int(n) for t, n in sorted(army.items()) if n > 0}
        theirs = int(mon["count"])
        rounds = 0
        for _ in range(int(table["rounds"])):
            if not theirs or not sum(ours.values()):
                break
            rounds += 1
            attack = sum(n * int(troop_types[t]["attack"]) for t, n in ours.items())
            hit = attack * (1 + rng.uniform(-variance, variance))
            hit = hit * 100 / (100 + int(mon["defense"]))
            their_hit = theirs * int(mon["attack"]) * (1 + rng.uniform(-variance, variance))
            theirs = max(0, theirs - int(hit // int(mon["hp"])))
            ours = self._take_losses(ours, their_hit, troop_types)
        won = theirs == 0 and sum(ours.values()) > 0
        lost = {t: int(army.get(t, 0)) - ours.get(t, 0) for t in sorted(army)}
        return {"won": won, "rounds": rounds, "seed": seed,
                "army_before": {t: int(n) for t, n in sorted(army.items())},
                "army_lost": lost, "army_after": {t: n for t, n in ours.items() if n > 0},
                "monster_troops": int(mon["count"]),
                "monster_lost": int(mon["count"]) - theirs,
                "rewards": dict(mon.get("rewards") or {}) if won else {}}

    @staticmethod
    def _take_losses(ours: dict[str, int], damage: float,
                     troop_types: Mapping[str, Any]) -> dict[str, int]:
        """Spread *damage* over the types by their share of the army's hp; each type loses
        damage share / (hp x (100 + defense) / 100) troops."""
        total_hp = sum(n * int(troop_types[t]["hp"]) for t, n in ours.items())
        if total_hp <= 0:
            return ours
        after = {}
        for t, n in ours.items():
            stats = troop_types[t]
            share = damage * n * int(stats["hp"]) / total_hp
            per_troop = int(stats["hp"]) * (100 + int(stats["defense"])) / 100
            after[t] = max(0, n - int(share // per_troop))
        return after


system = BattleSystem()
