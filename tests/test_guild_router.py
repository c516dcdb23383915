"""The guild node's router and the rolecity's guildledger in one process, over embedded
storage and a fake cluster that can take a node down: idempotent creates, names unique
per region, the member cap, the outbox when a rolecity is down, two guilds approving one
applicant at once, and a name left behind by a gone guild."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.cluster.errors import NodeUnreachable
from rltwist.ecs.sharedata import ShareData
from rltwist.features.guild import GuildLedger
from rltwist.game.tables import VALIDATORS
from rltwist.nodes.common import sharedatad
from rltwist.nodes.common.lru import LRUGroup, LRURouter
from rltwist.nodes.guild.actor import GuildActor
from rltwist.nodes.guild.service import GuildChat, GuildRouter
from rltwist.nodes.rolecity.service import RoleCityActor
from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend

E = pb.ErrorCode
GAME_TABLES = Path(__file__).resolve().parent.parent / "etc" / "game"
A, B, C, D = (11 << 16 | 1), (12 << 16 | 2), (13 << 16 | 1), (14 << 16 | 2)


class FakeRoleCache:
    where: dict[int, str] = {}

    def locate(self, userids: list[int]) -> list[Any]:
        return []


class FakeCluster:
    """Nodes by name -> services; ``down`` nodes are unreachable."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.down: set[str] = set()
        self.sent: list[tuple[Any, ...]] = []

    def view(self, node: str) -> Any:
        cluster = self

        class View:
            services = cluster.nodes[node]
            addresses = cluster.nodes

            def call(self, *a: Any, **kw: Any) -> Any:
                return cluster.call(*a, **kw)

            def send(self, *a: Any) -> None:
                cluster.sent.append(a)

            def rolecity_node(self, userid: int) -> str:
                return f"rolecity{userid & 0xFFFF}"

            def guild_node(self, guildid: int) -> str:
                return f"guild{guildid & 0xFFFF}"

        return View()

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        if node in self.down or node not in self.nodes:
            return defer.fail(NodeUnreachable(node, service, method, "test: down"))
        return defer.maybeDeferred(getattr(self.nodes[node][service], method), *args) \
            .addCallback(lambda r: r if not hasattr(r, "__await__")
                         else defer.Deferred.fromCoroutine(r))


class Harness(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        old = sharedatad._CURRENT
        sharedatad._CURRENT = ShareData(GAME_TABLES, VALIDATORS)
        self.addCleanup(setattr, sharedatad, "_CURRENT", old)
        self.clock = task.Clock()
        self.cluster = FakeCluster()
        self.groups: dict[str, LRUGroup] = {}
        for sid in (1, 2):
            self.guild_node(sid)
            rc = self.group(f"rolecity{sid}", RoleCityActor(), "rolerouter", LRURouter)
            self.cluster.nodes[f"rolecity{sid}"] = {"guildledger": GuildLedger(rc),
                                                    "rolecache": FakeRoleCache()}
        for node, services in self.cluster.nodes.items():
            for svc in services.values():
                svc.cluster = self.cluster.view(node)

    def guild_node(self, sid: int) -> None:
        g = self.group(f"guild{sid}", GuildActor(), "guildrouter",
                       lambda group: GuildRouter(group, sid))
        self.cluster.nodes[f"guild{sid}"] = {"guildrouter": g.router,
                                             "guildchat": GuildChat(g)}

    def group(self, name: str, actor: Any, router: str, cls: Any) -> LRUGroup:
        backend = EmbeddedBackend(os.path.join(self.mktemp(), f"{name}.sqlite3"))
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))
        g = LRUGroup(actor, backend, router=router, worker=f"{name}w", workers=2,
                     capacity=100, interval=300.0, clock=self.clock,
                     registry=CollectorRegistry(), generation=1, router_cls=cls)
        g.startService()
        self.addCleanup(lambda: g.running and g.stopService())
        self.groups[name] = g
        return g

    def router(self, sid: int = 1) -> GuildRouter:
        r = self.cluster.nodes[f"guild{sid}"]["guildrouter"]
        assert isinstance(r, GuildRouter)
        return r

    async def create(self, owner: int, name: str, open: bool = True, cid: str = "",
                     sid: int = 1) -> dict[str, Any]:
        r: dict[str, Any] = await self.router(sid).create_guild(
            owner, f"p{owner}", name, open, cid or f"c-{owner}-{name}")
        return r

    async def player_guild(self, userid: int) -> int:
        """The guild the player's rolecity ledger says (what the player will apply)."""
        g = self.groups[f"rolecity{userid & 0xFFFF}"]
        entries = await g.call(userid, "transfers")
        guilds = [e["items"] for e in entries if e["kind"] == "guild"]
        return max(guilds, key=lambda i: i["seq"])["guildid"] if guilds else 0

    async def members(self, guildid: int) -> list[int]:
        info = await self.groups[f"guild{guildid & 0xFFFF}"].call(guildid, "info")
        return list(info["members"])


class Router(Harness):
    async def test_create_is_idempotent_names_are_unique_per_region_and_saved(self) -> None:
        r = await self.create(A, "Knights", cid="x1")
        gid = r["guild_id"]
        self.assertEqual((r["code"], gid & 0xFFFF), (E.OK, 1))
        self.assertEqual(await self.create(A, "Knights", cid="x1"), r)  # a retry
        self.assertEqual(await self.player_guild(A), gid)
        taken = await self.create(C, " KNIGHTS ")
        self.assertEqual(taken, {"code": E.GUILD_NAME_TAKEN, "guild_id": 0})
        other_region = await self.create(D, "knights", sid=2)
        self.assertEqual(other_region["code"], E.OK)
        in_one = await self.create(A, "Second")
        self.assertEqual(in_one["code"], E.GUILD_ALREADY_IN_GUILD)
        self.assertEqual(await self.router().search("second"), [])  # its name is free
        doc = await self.groups["guild1"].backend.get("guild", gid)
        self.assertEqual(list(doc["components"]["members"]), [str(A)])  # saved at OK
        self.assertEqual([s["guild_id"] for s in await self.router().list()], [gid])

    async def test_the_member_cap_from_the_tables(self) -> None:
        gid = (await self.create(A, "Full"))["guild_id"]
        for n in range(49):
            self.assertEqual(await self.router().op(gid, "join", (100 + n) << 16 | 2, "x"),
                             E.OK)
        self.assertEqual(await self.router().op(gid, "join", B, "b"), E.GUILD_FULL)
        self.assertEqual(len(await self.members(gid)), 50)
        self.assertEqual(await self.player_guild(B), 0)

    async def test_with_the_rolecity_down_the_outbox_delivers_later(self) -> None:
        gid = (await self.create(A, "Wait"))["guild_id"]
        self.cluster.down.add("rolecity2")
        self.assertEqual(await self.router().op(gid, "join", B, "b"), E.RETRY_LATER)
        self.assertEqual(await self.members(gid), sorted([A, B]))  # pending: slot held
        self.assertEqual(await self.router().op(gid, "join", D, "d"), E.RETRY_LATER)
        self.cluster.down.clear()
        self.assertEqual(await self.router().retry_pending(), 1)
        self.assertEqual((await self.groups["guild1"].call(gid, "info"))["outbox"], [])
        self.assertEqual((await self.player_guild(B), await self.player_guild(D)), (gid, gid))
        # OK means the player's ledger has it: with the rolecity down a kick, a leave and
        # a disband are saved in the guild but answer RETRY_LATER; a retry answers OK once
        # the ledger took it (or the periodic retry delivered it meanwhile)
        self.cluster.down.add("rolecity2")
        self.assertEqual(await self.router().op(gid, "kick", A, "a", B), E.RETRY_LATER)
        self.assertEqual(await self.router().op(gid, "leave", D, "d"), E.RETRY_LATER)
        self.assertNotIn(B, await self.members(gid))
        self.assertEqual(await self.player_guild(B), gid)
        self.assertEqual(await self.router().op(gid, "kick", A, "a", B), E.RETRY_LATER)
        self.cluster.down.clear()
        self.assertEqual(await self.router().op(gid, "kick", A, "a", B), E.OK)
        # the guild hands its whole outbox at once: D's leave went through with it, so
        # D's retry learns it is out
        self.assertEqual((await self.player_guild(B), await self.player_guild(D)), (0, 0))
        self.assertEqual(await self.router().op(gid, "leave", D, "d"), E.GUILD_NOT_IN_GUILD)
        self.assertEqual(await self.router().op(gid, "kick", A, "a", B), E.GUILD_NOT_A_MEMBER)
        self.cluster.down.add("rolecity1")
        self.assertEqual(await self.router().op(gid, "disband", A, "a"), E.RETRY_LATER)
        self.cluster.down.clear()
        self.assertEqual(await self.router().op(gid, "disband", A, "a"), E.OK)
        self.assertEqual(await self.player_guild(A), 0)
        self.assertEqual(await self.router().op(gid, "disband", A, "a"), E.OK)  # a repeat
        self.assertEqual(await self.router().op(gid, "disband", D, "d"), E.GUILD_NOT_IN_GUILD)

    async def test_two_guilds_approving_one_applicant_at_once_admit_it_once(self) -> None:
        g1 = (await self.create(A, "One", open=False))["guild_id"]
        g2 = (await self.create(D, "Two", open=False, sid=2))["guild_id"]
        for g in (g1, g2):
            self.assertEqual(await self.router(g & 0xFFFF).op(g, "apply", B, "b"), E.OK)
        codes = await defer.gatherResults([
            defer.Deferred.fromCoroutine(self.router(1).op(g1, "approve", A, "a", B)),
            defer.Deferred.fromCoroutine(self.router(2).op(g2, "approve", D, "d", B))])
        self.assertEqual(sorted(codes), sorted([E.OK, E.GUILD_ALREADY_IN_GUILD]))
        won = g1 if codes[0] == E.OK else g2
        lost = g2 if won == g1 else g1
        self.assertIn(B, await self.members(won))
        self.assertNotIn(B, await self.members(lost))
        self.assertEqual(await self.player_guild(B), won)

    async def test_a_name_left_by_a_gone_guild_is_taken_over(self) -> None:
        gid = (await self.create(A, "Ghost"))["guild_id"]
        # a disband whose name release was cut (crash): the guild is gone, the name held
        r = await self.groups["guild1"].call(gid, "disband", A)
        self.assertEqual(r["code"], E.OK)
        self.assertEqual(await self.router().names.lookup("ghost"), gid)
        again = await self.create(C, "ghost")
        self.assertEqual(again["code"], E.OK)
        self.assertEqual(await self.router().names.lookup("ghost"), again["guild_id"])
        self.assertEqual((await self.create(A, "GHOST"))["code"], E.GUILD_NAME_TAKEN)

    async def test_guild_chat_members_only(self) -> None:
        gid = (await self.create(A, "Talk"))["guild_id"]
        chat = self.cluster.nodes["guild1"]["guildchat"]
        self.assertEqual(await chat.send(gid, A, {"text": "hi"}), E.OK)
        self.assertEqual(await chat.send(gid, B, {"text": "me too"}), E.CHAT_NOT_IN_GUILD)
        self.assertEqual(await chat.send(gid + (9 << 16), A, {"text": "?"}),
                         E.CHAT_NOT_IN_GUILD)
        self.assertEqual([m["text"] for m in await chat.history(gid, A)], ["hi"])
