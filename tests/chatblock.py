"""Test stand-in for the friends feature (issue 12): a system, called on a rolecity node
through ``hotfix.call_system``, that writes a player's block list where friends keeps it
(rolecity entity component ``friends``, key ``blocked``). The entity must be resident (it
is once the player logged in: chat reads its mute there at Auth)."""

from __future__ import annotations

from rltwist.ecs.system import System
from rltwist.nodes.common.hotfix import ONLINE


class ChatBlock(System):
    def block(self, userid: int, blocked: list[int]) -> bool:
        entities, _ = ONLINE.entities("rolecity")
        for entity in entities:
            if entity.id == userid:
                entity.component("friends")["blocked"] = list(blocked)
                entity.mark_dirty()
                return True
        return False


system = ChatBlock()
