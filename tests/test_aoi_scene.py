"""aoiscene / aoibroadcast / the role's mapview on a task.Clock (issue 13 "Viewport
AOI"): batching (one cluster message per role node per batch), deltas per watcher, the
order of notifies around a MapView answer, relogin, logout and a role node marked down."""

from __future__ import annotations

from twisted.trial import unittest

from rltwist.game.aoisystem import ClientView, visible_now
from rltwist.nodes.map.aoi import FLUSH_INTERVAL, FLUSH_TOUCHES
from rltwist.nodes.map.state import WorldState, entity_pb
from rltwist.protocols import pb
from tests.aoi_util import MAP, Net, clear, entity, march, view

E = pb.ErrorCode


def apply(events: list, client: ClientView) -> None:
    for kind, msg in events:
        if kind == "answer":
            if msg.code == E.OK:
                client.view(msg)
        elif kind == "clear":
            client.clear()
        else:
            client.notify(msg)
    events.clear()


class Batching(unittest.TestCase):
    def setUp(self) -> None:
        self.state = WorldState(1, 512, 512, 16)
        self.net = Net(self.state, roles=("role1", "role2"))

    def watchers(self, n_per_role: int) -> dict[int, tuple]:
        out = {}
        for i in range(2 * n_per_role):
            role = "role1" if i % 2 == 0 else "role2"
            gw, _ = self.net.roles[role]
            p, events = self.net.player(role, 100 + i)
            d = view(gw, p, 0, 0, 30, 20, events)
            out[p.userid] = (role, gw, p, events, d)
        self.net.answer()
        self.net.clock.advance(0)
        for *_, d in out.values():
            self.assertTrue(d.called)
        return out

    def test_one_cluster_message_per_role_node_per_batch(self) -> None:
        ws = self.watchers(5)
        self.net.sent.clear()
        for i in range(30):
            entity(self.state, "monster", i, 3)           # all in blocks 0/1: watched
        self.state.update(self.state.at(0, 3), level=9)   # one of them changes again
        entity(self.state, "monster", 400, 400)           # nobody watches there
        self.assertEqual(self.net.sent, [], "nothing is sent before the batch is due")
        self.net.clock.advance(FLUSH_INTERVAL - 0.001)
        self.assertEqual(self.net.sent, [])
        self.net.clock.advance(0.002)
        self.assertEqual(sorted(s[0] for s in self.net.sent), ["role1", "role2"])
        for _node, service, method, args in self.net.sent:
            self.assertEqual((service, method), ("mapview", "deliver"))
            source, _epoch, seq, groups = args
            self.assertEqual((source, seq), (MAP, 1))
            # the five watchers of a node see the same changes: one body, five players
            self.assertEqual(len(groups), 1)
            self.assertEqual(len(groups[0][1]), 5)
        for role in ("role1", "role2"):
            self.net.deliver(role)
        for _role, _gw, _p, events, _ in ws.values():
            notes = [m for k, m in events if k == "notify"]
            self.assertEqual(len(notes), 1, "one MapNotify per watcher per batch")
            self.assertEqual(len(notes[0].appeared), 30)
            self.assertEqual(notes[0].map_id, 1)
            # the later change of an entity that appeared in this batch is folded in
            first = next(e for e in notes[0].appeared if (e.x, e.y) == (0, 3))
            self.assertEqual(first.level, 9)
        reg = self.net.map_node.registry
        self.assertEqual(reg.get_sample_value("rl_aoi_batches_total"), 2)
        self.assertEqual(reg.get_sample_value("rl_aoi_deliveries_total"), 10)
        self.assertEqual(reg.get_sample_value("rl_aoi_watchers"), 10)
        # nothing more is due: no timer, no message
        self.net.sent.clear()
        self.net.clock.advance(1)
        self.assertEqual(self.net.sent, [])

    def test_many_touches_flush_at_once(self) -> None:
        self.watchers(5)
        self.net.sent.clear()
        n = FLUSH_TOUCHES // 10 + 1   # 10 watchers see each change
        for i in range(n):
            entity(self.state, "monster", i % 30, i // 30)
        self.assertEqual(len(self.net.sent), 2, "one batch per role node, before the timer")

    def test_the_encoded_notify_is_what_protobuf_would_write(self) -> None:
        ws = self.watchers(1)
        self.net.settle()
        for *_, events, _ in ws.values():
            events.clear()
        e = entity(self.state, "resource", 5, 5, resource="gold", amount=2**40, owner=3)
        gone = entity(self.state, "monster", 6, 6)
        m = march(self.state, 1, 1, 300, 2)
        self.net.settle()
        self.state.remove(int(gone.id))
        self.state.remove_march(int(m.id))
        self.state.update(e, x=200)  # out of the view: gone for these watchers
        self.net.settle()
        for _role, _gw, _p, events, _ in ws.values():
            notes = [m for k, m in events if k == "notify"]
            self.assertEqual(len(notes), 2)
            self.assertEqual(notes[0].appeared[0].amount, 2**40)
            self.assertEqual(notes[0].marches[0].to_x, 300)
            self.assertEqual(sorted(notes[1].disappeared), sorted([int(e.id), int(gone.id)]))
            self.assertEqual(list(notes[1].marches_ended), [int(m.id)])
            again = pb.MapNotify.FromString(notes[1].SerializeToString())
            self.assertEqual(again, notes[1])
        self.assertEqual(entity_pb(e).x, 200)


class Watchers(unittest.TestCase):
    def setUp(self) -> None:
        self.state = WorldState(1, 512, 512, 16)
        self.net = Net(self.state, roles=("role1", "role2"))

    def test_notifies_for_the_old_view_are_written_before_the_answer(self) -> None:
        net, s = self.net, self.state
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        client = ClientView()
        view(gw, p, 0, 0, 30, 20, events)
        net.settle()
        apply(events, client)
        c = entity(s, "city", 10, 10, owner=5, name="x")
        net.clock.advance(FLUSH_INTERVAL)            # batch 1 is on the link, not arrived
        s.update(c, x=40)                             # moves into the block the view adds
        d = view(gw, p, 16, 0, 30, 20, events)       # watch flushes batch 2 first
        net.answer()                                  # the answer overtakes both batches
        self.assertFalse(d.called, "the answer waits for the batches sent before it")
        net.deliver("role1")
        self.assertTrue(d.called)
        kinds = [k for k, _ in events]
        self.assertEqual(kinds, ["notify", "notify", "answer"])
        apply(events, client)
        ents, lines = client.ids()
        want = visible_now(s, net.scene.watchers[5].blocks)
        self.assertEqual((ents, lines), want)
        self.assertIn(int(c.id), ents)

    def test_notifies_for_the_new_view_are_written_after_the_answer(self) -> None:
        net, s = self.net, self.state
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        view(gw, p, 0, 0, 30, 20, events)
        net.settle()
        events.clear()
        d = view(gw, p, 16, 0, 30, 20, events)
        entity(s, "monster", 40, 3)                 # on a block the new view added
        net.broadcast.flush()
        net.deliver("role1")                        # arrives before the answer
        self.assertEqual(events, [])
        net.answer()
        self.assertTrue(d.called)
        net.clock.advance(0)
        self.assertEqual([k for k, _ in events], ["answer", "notify"])

    def test_a_lost_batch_does_not_hold_the_answer_forever(self) -> None:
        net, s = self.net, self.state
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        view(gw, p, 0, 0, 30, 20, events)
        net.settle()
        entity(s, "monster", 3, 3)
        net.broadcast.flush()
        net.links["role1"].clear()                 # the link broke: the batch is lost
        d = view(gw, p, 1, 0, 30, 20, events)
        net.answer()
        self.assertFalse(d.called)
        net.clock.advance(2.5)
        self.assertTrue(d.called)
        self.assertEqual(self.successResultOf(d).code, E.OK)

    def test_relogin_on_another_node_replaces_the_watch(self) -> None:
        net, s = self.net, self.state
        gw1, _ = net.roles["role1"]
        gw2, _ = net.roles["role2"]
        old, old_events = net.player("role1", 5, generation=3)
        view(gw1, old, 0, 0, 30, 20, old_events)
        net.settle()
        new, events = net.player("role2", 5, generation=4)
        d = view(gw2, new, 100, 100, 30, 20, events)
        net.settle()
        answer = self.successResultOf(d)
        self.assertEqual(answer.removed_blocks, [], "a new instance starts afresh")
        self.assertEqual(net.scene.watching(5)["node"], "role2")
        # the old instance's late MapView is refused, the watch stays the new one's
        late = view(gw1, old, 0, 0, 30, 20, old_events)
        net.settle()
        self.assertEqual(self.successResultOf(late).code, E.RETRY_LATER)
        self.assertEqual(net.scene.watching(5)["generation"], 4)
        old_events.clear()
        net.sent.clear()
        entity(s, "monster", 105, 105)
        net.settle()
        self.assertEqual([x[0] for x in net.sent], ["role2"])
        self.assertEqual(old_events, [])
        self.assertEqual([k for k, _ in events][-1], "notify")

    def test_logout_clear_and_node_down_drop_watchers(self) -> None:
        net, s = self.net, self.state
        gw1, _ = net.roles["role1"]
        gw2, _ = net.roles["role2"]
        a, ae = net.player("role1", 1, generation=2)
        b, be = net.player("role2", 2, generation=2)
        c, ce = net.player("role2", 3, generation=2)
        for gw, p, ev in ((gw1, a, ae), (gw2, b, be), (gw2, c, ce)):
            view(gw, p, 0, 0, 30, 20, ev)
        net.settle()
        self.assertEqual(net.scene.count(), 3)
        # logout: the role node clears the player in this map's rolecache
        net.rolecache.set(1, "role1", 2)
        net.rolecache.clear(1, "role1", 2)
        self.assertIsNone(net.scene.watching(1))
        # a clear of an older instance leaves a newer instance's watch alone
        net.rolecache.set(2, "role2", 2)
        net.rolecache.set(2, "role2", 1)   # ignored (older)
        self.assertIsNotNone(net.scene.watching(2))
        # MapViewClear
        d = clear(gw2, c, ce)
        net.settle()
        self.assertEqual(self.successResultOf(d).code, E.OK)
        self.assertIsNone(net.scene.watching(3))
        # master marks role2 down
        net.rolecache.node_down("role2")
        self.assertEqual(net.scene.count(), 0)
        self.assertEqual(net.scene.by_block, {})
        net.sent.clear()
        entity(s, "monster", 3, 3)
        net.settle()
        self.assertEqual(net.sent, [])

    def test_bad_views_and_an_unreachable_role_node(self) -> None:
        net = self.net
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        d = view(gw, p, 0, 0, 0, 20, events)
        net.settle()
        self.assertEqual(self.successResultOf(d).code, E.BAD_REQUEST)
        self.assertIsNone(net.scene.watching(5))
        view(gw, p, 0, 0, 30, 20, events)
        net.settle()
        net.down.add("role1")
        entity(self.state, "monster", 3, 3)
        net.broadcast.flush()     # logged, not raised; nothing counted as sent
        self.assertEqual(net.broadcast.stats()["batches"], 0)
        # kept for the next batch (node_down drops the watchers of a dead node)
        self.assertEqual({w.userid for w in net.broadcast.dirty}, {5})


class Renew(unittest.TestCase):
    def test_a_restarted_map_gets_the_views_back_and_clients_the_whole_view(self) -> None:
        state = WorldState(1, 512, 512, 16)
        net = Net(state, roles=("role1",))
        gw, push = net.roles["role1"]
        p, events = net.player("role1", 5, generation=3)
        gone, gone_events = net.player("role1", 6, generation=3)
        client = ClientView()
        kept = entity(state, "city", 20, 5, owner=5, name="x")
        lost = entity(state, "monster", 3, 3)
        line = march(state, 2, 2, 40, 2)
        view(gw, p, 0, 0, 30, 20, events)
        view(gw, gone, 0, 0, 30, 20, gone_events)
        net.settle()
        apply(events, client)
        self.assertEqual(set(client.entities), {int(kept.id), int(lost.id)})
        del gw.players[6]                       # logged out meanwhile
        # the map restarts: it knows no watchers, and its world changed meanwhile
        net.scene.drop_node("role1")
        state.remove(int(lost.id))
        state.remove_march(int(line.id))
        new = entity(state, "monster", 25, 6)
        events.clear()
        self.assertEqual(push.rewatch(MAP), 1)
        net.settle()
        self.assertEqual([k for k, _ in events], ["notify"])
        self.assertTrue(events[0][1].reset)
        apply(events, client)
        self.assertEqual(client.ids(), visible_now(state, net.scene.watchers[5].blocks))
        self.assertEqual(set(client.entities), {int(kept.id), int(new.id)})
        self.assertEqual(client.marches, {})
        self.assertNotIn(6, push.views)
        push.views[77] = (1, 0, 0, 30, 20)     # a player who logged out since
        self.assertEqual(push.prune(), 1)
        self.assertEqual(set(push.views), {5})
        # a renewal without a restart (a duplicate announcement) still sends it whole
        push.rewatch(MAP)
        net.settle()
        apply(events, client)
        self.assertEqual(client.ids(), visible_now(state, net.scene.watchers[5].blocks))
        # after MapViewClear there is nothing to renew
        clear(gw, p, events)
        net.settle()
        self.assertEqual(push.rewatch(MAP), 0)

    def test_a_lost_batch_renews_the_views_of_that_map(self) -> None:
        state = WorldState(1, 512, 512, 16)
        net = Net(state, roles=("role1",))
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        client = ClientView()
        view(gw, p, 0, 0, 30, 20, events)
        entity(state, "monster", 1, 1)
        net.settle()
        apply(events, client)
        lost = entity(state, "monster", 2, 2)
        net.broadcast.flush()
        net.links["role1"].clear()              # batch 2 lost with its link
        state.update(state.at(1, 1), level=5)
        net.settle()                            # batch 3 arrives: a gap
        self.assertTrue(any(k == "notify" and m.reset for k, m in events))
        apply(events, client)
        self.assertIn(int(lost.id), client.entities)
        self.assertEqual(client.ids(), visible_now(state, net.scene.watchers[5].blocks))

    def test_a_batch_that_cannot_be_sent_goes_with_the_next(self) -> None:
        state = WorldState(1, 512, 512, 16)
        net = Net(state, roles=("role1",))
        gw, _ = net.roles["role1"]
        p, events = net.player("role1", 5)
        client = ClientView()
        view(gw, p, 0, 0, 30, 20, events)
        net.settle()
        apply(events, client)
        net.down.add("role1")
        e = entity(state, "monster", 1, 1)
        net.clock.advance(FLUSH_INTERVAL)       # refused: kept
        self.assertEqual(net.links.get("role1", []), [])
        net.down.clear()
        net.clock.advance(FLUSH_INTERVAL)       # the retry goes out
        net.settle()
        apply(events, client)
        self.assertIn(int(e.id), client.entities)
