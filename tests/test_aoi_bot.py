"""The viewport bot actions build valid MapView / MapViewClear requests, the pan follows
the first answer, and a bot decodes the MapNotify pushes the map sends."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.bot.actions import ACTIONS, BotIdentity, parse_script
from rltwist.game.aoisystem import MAX_VIEW_HEIGHT, MAX_VIEW_WIDTH
from rltwist.protocols import REGISTRY, pb


class AoiBotActions(unittest.TestCase):
    def test_map_pan_views_a_random_place_then_moves(self) -> None:
        me = BotIdentity(index=3, openid="o", userid=10, run_token="abcdef12", online=[10])
        self.assertEqual(parse_script("map_pan*2,map_clear"),
                         ("map_pan", "map_pan", "map_clear"))
        first = ACTIONS["map_pan"].build(me)
        self.assertIn(type(first), REGISTRY.request_ids)
        self.assertTrue(0 < first.width <= MAX_VIEW_WIDTH)
        self.assertTrue(0 < first.height <= MAX_VIEW_HEIGHT)
        self.assertTrue(first.x + first.width <= 512 and first.y + first.height <= 512)
        answer = pb.MapView.Response(
            code=pb.ErrorCode.OK, blocks=[32 * 4 + 5, 32 * 4 + 6, 32 * 5 + 5],
            info=pb.MapInfo(map_id=1, width=512, height=512, block=16))
        then = ACTIONS["map_pan"].then
        assert then is not None
        for _ in range(50):
            moved = then(me, answer)
            assert moved is not None
            self.assertLessEqual(abs(moved.x - 5 * 16), 16)
            self.assertLessEqual(abs(moved.y - 4 * 16), 16)
            self.assertEqual((moved.width, moved.height), (first.width, first.height))
        self.assertIsNone(then(me, pb.MapView.Response(code=pb.ErrorCode.OK)))
        self.assertIsInstance(ACTIONS["map_clear"].build(me), pb.MapViewClear)

    def test_map_notify_is_a_registered_push(self) -> None:
        self.assertIn(pb.MapNotify, REGISTRY.push_ids)
