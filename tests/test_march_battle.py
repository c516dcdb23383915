"""Battles are deterministic: the same army, monster, ids and tables give the same report
(in another process too: the seed is not Python's salted hash); other ids change the
dice; a strong army wins and a weak one loses; the tables are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial import unittest

from rltwist.ecs.sharedata import shared
from rltwist.game.battlesystem import BattleSystem, battle_seed
from rltwist.game.tables import VALIDATORS, validate_battle, validate_troops

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Battles(unittest.TestCase):
    def setUp(self) -> None:
        self.tables = shared(os.path.join(REPO, "etc", "game"), VALIDATORS).snapshot
        self.types = self.tables["troops"]["types"]
        self.b = BattleSystem()

    def fight(self, army: dict[str, int], level: int = 2, mid: int = 7,
              monster: int = 9) -> dict[str, object]:
        return self.b.fight(army, level, mid, monster, self.types, self.tables)

    def test_same_inputs_same_report(self) -> None:
        army = {"infantry": 300, "cavalry": 200, "archer": 100}
        first = self.fight(army)
        for _ in range(5):
            self.assertEqual(self.fight(army), first)
        # another process (another hash salt) fights the same battle
        code = ("import json, os; from rltwist.ecs.sharedata import shared; "
                "from rltwist.game.tables import VALIDATORS; "
                "from rltwist.game.battlesystem import BattleSystem; "
                f"t = shared({os.path.join(REPO, 'etc', 'game')!r}, VALIDATORS).snapshot; "
                f"print(json.dumps(BattleSystem().fight({army!r}, 2, 7, 9, "
                "t['troops']['types'], t)))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=60,
                             env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
        self.assertEqual(json.loads(out), json.loads(json.dumps(first)))

    def test_other_ids_roll_other_dice(self) -> None:
        army = {"infantry": 300, "cavalry": 200}
        seeds = {self.fight(army, mid=m)["seed"] for m in range(20)}
        self.assertEqual(len(seeds), 20)
        self.assertNotEqual(battle_seed(1, 2, 3), battle_seed(1, 3, 2))
        losses = {json.dumps(self.fight(army, mid=m)["army_lost"]) for m in range(20)}
        self.assertGreater(len(losses), 1)  # the variance shows

    def test_strong_wins_with_rewards_weak_loses_without(self) -> None:
        strong = self.fight({"infantry": 2000, "cavalry": 1000}, level=1)
        self.assertTrue(strong["won"])
        self.assertEqual(strong["monster_lost"], strong["monster_troops"])
        self.assertEqual(strong["rewards"], {"gold": 300, "food": 500})
        after = strong["army_after"]
        assert isinstance(after, dict)
        self.assertLessEqual(sum(after.values()), 3000)
        weak = self.fight({"archer": 10}, level=5)
        self.assertFalse(weak["won"])
        self.assertEqual(weak["rewards"], {})
        self.assertEqual(weak["army_after"], {})
        self.assertEqual(weak["army_lost"], {"archer": 10})

    def test_tables_are_checked(self) -> None:
        self.assertEqual(list(validate_battle(self.tables["battle"])), [])
        self.assertEqual(list(validate_troops(self.tables["troops"])), [])
        bad = dict(self.tables["battle"], rounds=0,
                   monster=({"level": 1, "count": 0, "attack": 1, "defense": 1, "hp": 1,
                             "rewards": {"gems": 1}},))
        keys = [k for k, _ in validate_battle(bad)]
        self.assertEqual(keys, ["rounds", "monster[0].count", "monster[0].rewards.gems"])
        troops = {"types": {"x": {"attack": 1, "defense": 1, "hp": 0, "speed": 0,
                                  "load": 1}},
                  "initial": {"y": 1}, "march": {"max_marches": 1}}
        keys = [k for k, _ in validate_troops(troops)]
        self.assertEqual(keys, ["types.x.hp", "types.x.speed", "initial.y",
                                "march.max_distance", "march.gather_per_second",
                                "march.max_troops"])
