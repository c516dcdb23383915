"""The march bot actions build valid requests: a targets lookup, then a march to a target
of the right kind; a recall of a march not on its way home."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script
from rltwist.protocols import REGISTRY, pb

K = pb.MapEntityKind


class MarchBotActions(unittest.TestCase):
    def setUp(self) -> None:
        self.me = BotIdentity(index=1, openid="o", userid=10, run_token="abcdef12",
                              online=[10, 20])

    def test_lookups_are_registered_requests(self) -> None:
        names = ("march_gather", "march_attack", "march_recall")
        self.assertEqual(parse_script(",".join(names)), names)
        for name in names:
            msg = ACTIONS[name].build(self.me)
            self.assertIn(type(msg), REGISTRY.request_ids, name)
            msg.SerializeToString()
        self.assertTrue(ACTIONS["march_gather"].build(self.me).around_city)

    def test_gather_and_attack_pick_a_target_of_their_kind(self) -> None:
        found = pb.MarchTargets.Response(code=pb.ErrorCode.OK, targets=[
            pb.MapEntity(id=1, kind=K.MAP_MONSTER, x=5, y=6),
            pb.MapEntity(id=2, kind=K.MAP_RESOURCE, x=7, y=8),
            pb.MapEntity(id=3, kind=K.MAP_RESOURCE, x=9, y=9)])
        then = ACTIONS["march_gather"].then
        assert then is not None
        gather = then(self.me, found)
        assert isinstance(gather, pb.MarchStart)
        self.assertEqual((gather.type, gather.target_x, gather.target_y),
                         (pb.MarchType.MARCH_GATHER, 9, 9))  # index 1 of the two points
        self.assertTrue(gather.troops)
        then = ACTIONS["march_attack"].then
        assert then is not None
        attack = then(self.me, found)
        assert isinstance(attack, pb.MarchStart)
        self.assertEqual((attack.type, attack.target_x), (pb.MarchType.MARCH_ATTACK, 5))
        self.assertIsNone(then(self.me, pb.MarchTargets.Response()))
        self.assertIn(pb.ErrorCode.MARCH_TOO_MANY, ACTIONS["march_gather"].ok_codes)

    def test_recall_picks_a_march_not_returning(self) -> None:
        S = pb.MarchState
        listed = pb.MarchList.Response(marches=[
            pb.MarchInfo(line=pb.MarchLine(march_id=4, state=S.MARCH_RETURNING)),
            pb.MarchInfo(line=pb.MarchLine(march_id=5, state=S.MARCH_STAYING))])
        then = ACTIONS["march_recall"].then
        assert then is not None
        recall = then(self.me, listed)
        assert isinstance(recall, pb.MarchRecall)
        self.assertEqual(recall.march_id, 5)
        self.assertIsNone(then(self.me, pb.MarchList.Response()))
