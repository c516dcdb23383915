"""The guild system's rules without processes: membership, roles and permissions from the
tables, the outbox and its settlement, the player's side (rolecity arbiter, ledger entries
applied in order), guild chat history, names and the table validator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial import unittest

from rltwist.ecs.entity import Entity
from rltwist.ecs.sharedata import ShareData
from rltwist.game.guildsystem import CHAT_KEEP, GuildSystem, NotAMember
from rltwist.game.tables import VALIDATORS, validate_guilds
from rltwist.nodes.common import transfer
from rltwist.protocols import pb

E = pb.ErrorCode
EV = pb.GuildEvent
R = pb.GuildRole
GAME_TABLES = Path(__file__).resolve().parent.parent / "etc" / "game"

A, B, C, D = (10 << 16 | 1), (11 << 16 | 2), (12 << 16 | 1), (13 << 16 | 2)
GID = 5 << 16 | 1


def tables(**guilds: Any) -> dict[str, Any]:
    snap = ShareData(GAME_TABLES, VALIDATORS).snapshot
    return {**snap, "guilds": {**snap["guilds"], **guilds}}


class Rules(unittest.TestCase):
    def setUp(self) -> None:
        self.g = GuildSystem()
        self.t = tables(max_members=3)
        self.guild = Entity(GID)
        r = self.g.create(self.guild, A, "ann", "Red  Lions ", True, 1)
        self.assertEqual((r["code"], r["deliver"]), (E.OK, [A]))
        self.settle_all()

    def settle_all(self, result: str = "ok") -> list[int]:
        done = []
        for e in self.g.outbox(self.guild):
            self.g.settle(self.guild, e["userid"], e["tid"], result)
            done.append(e["userid"])
        return done

    def test_create_join_cap_and_notify(self) -> None:
        self.assertEqual(self.guild["name"], "Red Lions")
        self.assertFalse(self.guild["pending"])
        r = self.g.join(self.guild, B, "bob", self.t)
        self.assertEqual(r["code"], E.OK)
        self.assertEqual(r["deliver"], [B])
        self.assertEqual(r["notify"][0]["to"], sorted([A, B]))
        self.assertEqual(r["notify"][0]["event"], EV.GUILD_JOINED)
        self.assertTrue(self.guild["pending"])
        self.assertEqual(self.g.join(self.guild, B, "bob", self.t)["deliver"], [B])  # retry
        self.assertEqual(self.settle_all(), [B])
        self.assertEqual(self.g.join(self.guild, B, "bob", self.t)["deliver"], [])
        self.assertEqual(self.g.join(self.guild, C, "cat", self.t)["code"], E.OK)
        self.assertEqual(self.g.join(self.guild, D, "dan", self.t)["code"], E.GUILD_FULL)

    def test_a_join_in_conflict_is_undone(self) -> None:
        self.g.join(self.guild, B, "bob", self.t)
        self.settle_all("conflict")
        self.assertEqual(self.g.member_ids(self.guild), [A])
        self.assertEqual(self.g.outbox(self.guild), [])

    def test_a_stale_settle_does_not_touch_a_newer_entry(self) -> None:
        self.g.join(self.guild, B, "bob", self.t)
        old = self.g.outbox(self.guild)[0]["tid"]
        self.settle_all()
        self.g.leave(self.guild, B, self.t)
        self.assertEqual(self.g.settle(self.guild, B, old, "conflict"), {"removed": False})
        self.assertEqual(len(self.g.outbox(self.guild)), 1)

    def test_closed_guild_apply_approve_reject(self) -> None:
        self.guild["open"] = False
        self.assertEqual(self.g.join(self.guild, B, "bob", self.t)["code"], E.GUILD_CLOSED)
        r = self.g.apply(self.guild, B, "bob", self.t)
        self.assertEqual((r["code"], r["deliver"]), (E.OK, []))
        self.assertEqual(r["notify"][0]["to"], [A])  # the approvers
        self.g.apply(self.guild, C, "cat", self.t)
        self.assertEqual(self.g.approve(self.guild, C, B, self.t)["code"],
                         E.GUILD_NOT_IN_GUILD)
        r = self.g.approve(self.guild, A, B, self.t)
        self.assertEqual((r["code"], r["deliver"]), (E.OK, [B]))
        self.settle_all()
        self.assertEqual(self.g.approve(self.guild, B, C, self.t)["code"],
                         E.GUILD_NO_PERMISSION)  # a member may not approve
        r = self.g.reject(self.guild, A, C, self.t)
        self.assertEqual(r["notify"][0]["to"], [C])
        self.assertEqual(self.g.approve(self.guild, A, C, self.t)["code"],
                         E.GUILD_NO_APPLICATION)
        view = self.g.view(self.guild, A, self.t)
        self.assertEqual([m["user_id"] for m in view["members"]], [A, B])
        self.assertEqual(view["members"][0]["role"], R.GUILD_LEADER)

    def test_roles_permissions_kick_leave_transfer_disband(self) -> None:
        for u in (B, C):
            self.g.join(self.guild, u, "x", self.t)
        self.settle_all()
        self.assertEqual(self.g.kick(self.guild, B, C, self.t)["code"], E.GUILD_NO_PERMISSION)
        self.assertEqual(self.g.set_role(self.guild, B, C, R.GUILD_OFFICER, self.t)["code"],
                         E.GUILD_NO_PERMISSION)
        self.assertEqual(self.g.set_role(self.guild, A, B, R.GUILD_LEADER, self.t)["code"],
                         E.GUILD_BAD_ROLE)
        r = self.g.set_role(self.guild, A, B, R.GUILD_OFFICER, self.t)
        self.assertEqual(r["notify"][0]["event"], EV.GUILD_ROLE_CHANGED)
        self.assertEqual(self.g.kick(self.guild, B, A, self.t)["code"], E.GUILD_NOT_A_MEMBER)
        r = self.g.kick(self.guild, B, C, self.t)  # an officer kicks a member
        self.assertEqual((r["code"], r["deliver"]), (E.OK, [C]))
        self.assertIn(C, r["notify"][0]["to"])  # the kicked player is told too
        self.assertEqual(self.g.outbox(self.guild)[0]["guildid"], 0)
        self.settle_all()
        self.assertEqual(self.g.leave(self.guild, A, self.t)["code"],
                         E.GUILD_LEADER_CANNOT_LEAVE)
        self.assertEqual(self.g.transfer_leader(self.guild, B, A, self.t)["code"],
                         E.GUILD_NO_PERMISSION)
        self.assertEqual(self.g.transfer_leader(self.guild, A, B, self.t)["code"], E.OK)
        self.assertEqual((self.guild["leader"], self.g.role_of(self.guild, A)), (B, "officer"))
        self.assertEqual(self.g.leave(self.guild, A, self.t)["code"], E.OK)
        self.settle_all()
        self.assertEqual(self.g.disband(self.guild, A, self.t)["code"], E.GUILD_NOT_IN_GUILD)
        r = self.g.disband(self.guild, B, self.t)
        self.assertEqual((r["code"], r["deliver"], r["name_key"]), (E.OK, [B], "red lions"))
        self.assertFalse(self.g.exists(self.guild))
        self.assertEqual(self.g.join(self.guild, D, "d", self.t)["code"], E.GUILD_NOT_FOUND)

    def test_a_member_seen_under_a_new_name_is_shown_with_it(self) -> None:
        self.g.join(self.guild, B, "bob", self.t)
        self.assertTrue(self.g.touch(self.guild, B, "Robert"))
        self.assertFalse(self.g.touch(self.guild, B, "Robert"))  # unchanged: not dirty
        self.assertFalse(self.g.touch(self.guild, C, "cat"))  # not a member
        self.assertFalse(self.g.touch(self.guild, B, ""))
        names = {m["user_id"]: m["name"] for m in self.g.view(self.guild, A, self.t)["members"]}
        self.assertEqual(names[B], "Robert")

    def test_permissions_come_from_the_tables(self) -> None:
        t = tables(roles={"leader": (), "officer": (), "member": ("kick",)})
        self.g.join(self.guild, B, "b", t)
        self.g.join(self.guild, C, "c", t)
        self.settle_all()
        # members may kick here, but only lower ranks: nobody ranks below a member
        self.assertEqual(self.g.kick(self.guild, B, C, t)["code"], E.GUILD_NOT_A_MEMBER)
        self.assertEqual(self.g.disband(self.guild, A, t)["code"], E.GUILD_NO_PERMISSION)

    def test_chat_keeps_the_last_messages_of_members_only(self) -> None:
        self.assertEqual(self.g.chat_add(self.guild, B, {"text": "x"})["code"],
                         E.CHAT_NOT_IN_GUILD)
        with self.assertRaises(NotAMember):
            self.g.chat_history(self.guild, B)
        for i in range(CHAT_KEEP + 5):
            r = self.g.chat_add(self.guild, A, {"text": str(i), "bogus": 1, "from_name": "a"})
        self.assertEqual(r["members"], [A])
        history = self.g.chat_history(self.guild, A)
        self.assertEqual([m["text"] for m in history],
                         [str(i) for i in range(5, CHAT_KEEP + 5)])
        self.assertEqual(history[-1]["guild_id"], GID)
        self.assertNotIn("bogus", history[-1])
        pb.ChatMessage(**history[-1])  # the fields are ChatMessage's


class PlayerSide(unittest.TestCase):
    def test_rolecity_arbitrates_and_records_ordered_ledger_entries(self) -> None:
        g = GuildSystem()
        rc = Entity(A)
        other = 6 << 16 | 2
        self.assertEqual(g.rolecity_set(rc, GID, GID, "t1", True)["result"], "ok")
        self.assertEqual(g.rolecity_set(rc, GID, GID, "t1", True),
                         {"result": "ok", "added": False, "guildid": GID})  # a retry
        self.assertEqual(g.rolecity_set(rc, other, other, "t2", True)["result"], "conflict")
        self.assertFalse(g.rolecity_set(rc, 0, other, "t3", False)["added"])  # not in other
        self.assertTrue(g.rolecity_set(rc, 0, GID, "t4", False)["added"])
        self.assertTrue(g.rolecity_set(rc, other, other, "t5", True)["added"])
        # entries of one millisecond are taken in any order: seq orders them
        entries = sorted(transfer.take(rc, A, 1), key=lambda e: e["items"]["seq"])
        self.assertEqual([e["items"] for e in entries],
                         [{"guildid": GID, "seq": 1}, {"guildid": 0, "seq": 2},
                          {"guildid": other, "seq": 3}])
        player = Entity(A)
        for e in reversed(entries):  # in any order, the newest wins
            g.apply_ledger(player, e["items"])
        self.assertEqual((player["guildid"], player["guild_seq"]), (other, 3))

    def test_names(self) -> None:
        g, t = GuildSystem(), tables()
        self.assertEqual(g.check_name("Red Lions", t), E.OK)
        self.assertEqual(g.check_name("红狮", t), E.OK)
        self.assertEqual(g.name_key(" RED   lions"), "red lions")
        for bad in ("", "x", "a" * 17, "bad!name", "the admins"):
            self.assertEqual(g.check_name(bad, t), E.GUILD_NAME_INVALID, bad)

    def test_the_validator_names_bad_keys(self) -> None:
        bad = {"max_members": 0, "max_applications": 5, "name_min_length": 4,
               "name_max_length": 3, "cost": {"gems": 1}, "roles": {"leader": ("fly",)}}
        keys = {k for k, _ in validate_guilds(bad)}
        self.assertEqual(keys, {"max_members", "name_max_length", "cost.gems",
                                "roles.officer", "roles.member", "roles.leader[0]"})
        self.assertEqual(list(validate_guilds(tables()["guilds"])), [])
