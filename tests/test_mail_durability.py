"""Mail delivery is durable at its OK (issue 10 item 9): in process over real SQLite, and a
real mail node killed with SIGKILL right after it answered a delivery."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.internet import defer, task
from twisted.trial import unittest

from rltwist.launcher import LocalCluster
from rltwist.nodes.common.lru import LRUGroup, SaveFailed
from rltwist.nodes.mail.service import MailActor, MailRouter
from rltwist.storage import EmbeddedBackend, StorageTimeout

UID = 7 << 16 | 1


class FailingSaves:
    def __init__(self, backend: EmbeddedBackend) -> None:
        self.backend = backend
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    async def save_entities(self, collection: str, items: Any) -> Any:
        if self.fail:
            raise StorageTimeout("test: saves fail")
        return await self.backend.save_entities(collection, items)


class RecordingRouter(MailRouter):
    """Records the MailNotify pushes it would send to online players."""

    def __init__(self, group: LRUGroup) -> None:
        super().__init__(group)
        self.sent: list[tuple[Any, dict[str, Any]]] = []

    def notify(self, userid: Any, summary: dict[str, Any]) -> bool:
        self.sent.append((userid, summary))
        return True


class DeliverSavesFirst(unittest.TestCase):
    timeout = 30

    def setUp(self) -> None:
        path = os.path.join(self.mktemp(), "region1.sqlite3")
        os.makedirs(os.path.dirname(path))
        self.backend = EmbeddedBackend(path)
        self.addCleanup(lambda: defer.ensureDeferred(self.backend.close()))
        self.db = FailingSaves(self.backend)
        self.group = LRUGroup(MailActor(), self.db,  # type: ignore[arg-type]
                              router="mailrouter", worker="mail", workers=2, capacity=100,
                              interval=300.0, clock=task.Clock(), registry=CollectorRegistry(),
                              generation=1, router_cls=RecordingRouter)
        assert isinstance(self.group.router, RecordingRouter)
        self.pushes = self.group.router
        self.group.startService()
        self.addCleanup(lambda: self.group.running and self.group.stopService())

    async def stored_titles(self) -> list[str]:
        doc = await self.backend.get("mailbox", UID)
        return [] if doc is None else [m["title"] for m in doc["components"]["mail"]["mails"]]

    async def test_a_delivered_mail_is_in_storage_when_deliver_answers(self) -> None:
        r = await self.group.router.call(UID, "deliver", {"title": "hi", "body": "b"})
        self.assertEqual(r, {"mailid": 1, "duplicate": False})
        self.assertEqual(await self.stored_titles(), ["hi"])
        # and the online player is told after the save, with the stored mail's summary
        self.assertEqual([(u, s["id"], s["title"]) for u, s in self.pushes.sent],
                         [(UID, 1, "hi")])

    async def test_an_unsaved_delivery_answers_save_failed_and_notifies_nobody(self) -> None:
        self.db.fail = True
        with self.assertRaises(SaveFailed):
            await self.group.router.call(UID, "deliver", {"title": "lost?", "key": "k1"})
        self.assertEqual(self.pushes.sent, [])
        self.assertEqual(await self.stored_titles(), [])
        # the sender retries with its key once storage is back: stored once, told once
        self.db.fail = False
        r = await self.group.router.call(UID, "deliver", {"title": "lost?", "key": "k1"})
        self.assertEqual(r, {"mailid": 1, "duplicate": True})
        await self.group.flush()
        self.assertEqual(await self.stored_titles(), ["lost?"])

    async def test_a_duplicate_delivery_is_not_pushed_again(self) -> None:
        await self.group.router.call(UID, "deliver", {"title": "once", "key": "k"})
        await self.group.router.call(UID, "deliver", {"title": "once", "key": "k"})
        self.assertEqual(len(self.pushes.sent), 1)


class MailNodeKilled(unittest.TestCase):
    """A real mail1, SIGKILLed right after it answered a delivery."""

    timeout = 120

    async def call(self, lc: LocalCluster, *args: Any) -> Any:
        status, body = await lc.gm("POST", "/call", {
            "node": "mail1", "service": "mailrouter", "method": "call", "args": list(args)},
            timeout=20)
        self.assertEqual(status, 200, body)
        return body["result"]

    async def test_a_delivered_mail_survives_a_sigkill_right_after_the_answer(self) -> None:
        names = ["master", "mail1"]
        # save_interval is the default 300 s: only a save before the answer can keep it
        lc = LocalCluster(self.mktemp(), names)
        self.addCleanup(lc.stop_all)
        await lc.start(*names)
        await lc.wait_up(names)
        r = await self.call(lc, UID, "deliver", {"from": 0, "title": "welcome", "body": "hi"})
        self.assertEqual(r["duplicate"], False)
        self.assertLess(await lc.nodes["mail1"].kill(), 0)
        await lc.start("mail1")
        await lc.wait_up(names)
        mails = await self.call(lc, UID, "list")
        self.assertEqual([m["title"] for m in mails], ["welcome"])


class StaleInstanceCannotClaim(unittest.TestCase):
    """A claim and its take carry the instance's generation: once a newer instance claimed
    the player (Auth elsewhere), the old one can neither record nor take a claim."""

    timeout = 30

    async def test_an_old_generation_is_refused_and_the_new_one_takes(self) -> None:
        from rltwist.nodes.common.playerfence import PlayerFence
        from rltwist.nodes.role.agent import PLAYERS
        from rltwist.storage import StaleGeneration

        path = os.path.join(self.mktemp(), "db.sqlite3")
        os.makedirs(os.path.dirname(path))
        backend = EmbeddedBackend(path)
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))
        group = LRUGroup(MailActor(None, PlayerFence(backend)), backend,
                         router="mailrouter", worker="mail", workers=1, capacity=10,
                         interval=300.0, clock=task.Clock(), registry=CollectorRegistry(),
                         generation=1, router_cls=MailRouter)
        group.startService()
        self.addCleanup(group.stopService)
        await backend.claim_generation(PLAYERS, UID, 1, {})
        await group.call(UID, "deliver", {"title": "gold", "attachments": {"gold": 3}})
        recorded = await group.call(UID, "claim", 1, 1)
        self.assertEqual(recorded["code"], 0)
        await backend.claim_generation(PLAYERS, UID, 2, {})  # a newer login
        with self.assertRaises(StaleGeneration):
            await group.call(UID, "take_transfers", 1)
        with self.assertRaises(StaleGeneration):
            await group.call(UID, "claim", 1, 1)
        [entry] = await group.call(UID, "take_transfers", 2)
        self.assertEqual((entry["id"], entry["items"]), (recorded["transfer_id"], {"gold": 3}))
        with self.assertRaises(StaleGeneration):
            await group.call(UID, "confirm_transfers", 1, [entry["id"]])
        self.assertEqual(await group.call(UID, "confirm_transfers", 2, [entry["id"]]), 1)


class ExpiredMailsDropOnLoad(unittest.TestCase):
    timeout = 30

    async def test_a_mailbox_loaded_again_has_no_expired_mail(self) -> None:
        from rltwist.nodes.mail.service import ExpireOnLoad

        path = os.path.join(self.mktemp(), "db.sqlite3")
        os.makedirs(os.path.dirname(path))
        backend = EmbeddedBackend(path)
        self.addCleanup(lambda: defer.ensureDeferred(backend.close()))

        def group(generation: int) -> LRUGroup:
            g = LRUGroup(MailActor(), backend, router="mailrouter", worker="mail", workers=1,
                         capacity=10, interval=300.0, clock=task.Clock(),
                         registry=CollectorRegistry(), generation=generation,
                         router_cls=MailRouter)
            g.set_fixer(ExpireOnLoad(g.fixer))
            return g

        first = group(1)
        await first.call(UID, "deliver", {"title": "stale", "expire_ms": 1})
        await first.call(UID, "deliver", {"title": "fresh"})
        await first.flush()
        again = group(2)  # a restarted mail node loads the mailbox
        self.assertIsNone(await again.call(UID, "summary", 1))  # gone at load, unread
        self.assertEqual((await again.call(UID, "summary", 2))["title"], "fresh")
        await again.flush()
        doc = await backend.get("mailbox", UID)
        self.assertEqual([m["title"] for m in doc["components"]["mail"]["mails"]], ["fresh"])
