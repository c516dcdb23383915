"""The viewport property (issue 13 "Must show", hypothesis): for random sequences of
entity changes (appear, update, move, disappear), march lines (start, turn, end), view
moves and clears of two players on two role nodes — with batches, call answers and the
map -> role link arriving in random interleavings — a client that applies the MapView
answers and MapNotify pushes by the documented rules (``ClientView``) ends with exactly
the entities and march lines the server has in its view."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from rltwist.game.aoisystem import ClientView, visible_now
from rltwist.nodes.map.state import WorldState
from rltwist.protocols import pb
from tests.aoi_util import Net, clear, entity, march, view

E = pb.ErrorCode
SIZE = 128
OPS = ["appear", "appear", "update", "move", "move", "disappear", "march", "turn",
       "march_end", "view", "view", "clear", "flush", "tick", "deliver", "deliver",
       "answer", "answer"]


class Client:
    def __init__(self, net: Net, role: str, userid: int) -> None:
        self.role = role
        self.gw, _ = net.roles[role]
        self.player, self.events = net.player(role, userid)
        self.view = ClientView()

    def apply(self) -> None:
        for kind, msg in self.events:
            if kind == "answer":
                if msg.code == E.OK:
                    self.view.view(msg)
            elif kind == "clear":
                self.view.clear()
            else:
                self.view.notify(msg)
        self.events.clear()


class Property(unittest.TestCase):
    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_snapshot_plus_deltas_is_the_servers_view(self, data: Any) -> None:
        state = WorldState(1, SIZE, SIZE, 16)
        net = Net(state, roles=("role1", "role2"))
        clients = [Client(net, "role1", 11), Client(net, "role2", 22)]
        try:
            for _ in range(data.draw(st.integers(5, 60))):
                self.step(data, state, net, clients)
        finally:
            net.settle()   # everything in flight arrives (also when an example stops)
        for c in clients:
            c.apply()
            w = net.scene.watchers.get(c.player.userid)
            blocks = w.blocks if w is not None else frozenset()
            self.assertEqual(c.view.blocks, blocks)
            want = visible_now(state, blocks)
            got = c.view.ids()
            self.assertEqual(got[0], want[0], "entities")
            self.assertEqual(got[1], want[1], "march lines")

    def step(self, data: Any, state: WorldState, net: Net, clients: list[Client]) -> None:
        coord = st.integers(0, SIZE - 1)

        def free_tile() -> tuple[int, int] | None:
            for _ in range(10):
                x, y = data.draw(coord), data.draw(coord)
                if (x, y) not in state.tiles:
                    return x, y
            return None

        op = data.draw(st.sampled_from(OPS))
        ents = sorted(state.entities)
        lines = sorted(state.marches)
        if op == "appear":
            tile = free_tile()
            if tile:
                entity(state, data.draw(st.sampled_from(["city", "resource", "monster"])),
                       *tile)
        elif op == "update" and ents:
            e = state.entities[data.draw(st.sampled_from(ents))]
            state.update(e, level=data.draw(st.integers(1, 30)),
                         amount=data.draw(st.integers(0, 10**6)))
        elif op == "move" and ents:
            e = state.entities[data.draw(st.sampled_from(ents))]
            tile = free_tile()
            if tile:
                state.update(e, x=tile[0], y=tile[1])
        elif op == "disappear" and ents:
            state.remove(data.draw(st.sampled_from(ents)))
        elif op == "march":
            march(state, data.draw(coord), data.draw(coord), data.draw(coord),
                  data.draw(coord))
        elif op == "turn" and lines:
            mid = data.draw(st.sampled_from(lines))
            old = state.marches[mid]
            # turns back home from a point on its way
            march(state, data.draw(coord), data.draw(coord), old["from_x"], old["from_y"],
                  mid=mid, st="returning")
        elif op == "march_end" and lines:
            state.remove_march(data.draw(st.sampled_from(lines)))
        elif op == "view":
            c = data.draw(st.sampled_from(clients))
            net.answer()   # a second request of the player waits behind the first
            w = data.draw(st.integers(0, 64))   # 0: a refused view
            view(c.gw, c.player, data.draw(coord), data.draw(coord), w,
                 data.draw(st.integers(1, 64)), c.events)
        elif op == "clear":
            c = data.draw(st.sampled_from(clients))
            net.answer()
            clear(c.gw, c.player, c.events)
        elif op == "flush":
            net.broadcast.flush()
        elif op == "tick":
            net.clock.advance(0.01)
        elif op == "deliver":
            net.deliver(data.draw(st.sampled_from(["role1", "role2"])),
                        data.draw(st.integers(1, 3)))
        elif op == "answer":
            net.answer(1)
