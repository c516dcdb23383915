"""Issue 12 item "code shape": the mailbox rules are a system (rltwist.game.mailsystem)
reached through the import registry, so ``POST /hotfix`` changes what a running mail node
does with the mailboxes it holds, without a restart. The nodes import a copy of
``rltwist`` (first on their PYTHONPATH), so the test changes the system's source without
touching the checkout."""

from __future__ import annotations

import shutil
from pathlib import Path

from rltwist.ecs.hotfix import write_fix_list
from tests.test_hotreload import REPO, HotReloadCase

UID = 9 << 16 | 1


class MailSystemFix(HotReloadCase):
    node_names = ["master", "mail1"]
    MODULE = "rltwist.game.mailsystem"

    async def mailbox(self, method: str, *args: object) -> object:
        return await self.me.call("mail1", "mailrouter", "call", UID, method, *args,
                                  timeout=10)

    async def test_a_hotfix_of_the_mail_system_changes_a_running_mail_node(self) -> None:
        code = Path(self.mktemp()).absolute()
        shutil.copytree(REPO / "rltwist", code / "rltwist",
                        ignore=shutil.ignore_patterns("__pycache__"))
        source_path = code / "rltwist" / "game" / "mailsystem.py"
        await self.start({}, code=code, hotfix_interval=0)
        await self.mailbox("deliver", {"title": "before", "body": "b"})
        [before] = await self.mailbox("list")  # type: ignore[misc]
        self.assertNotIn("fixed", before)

        old = '"claimed": mail.get("claim") is not None and mail["claim"] not in pending}'
        source = source_path.read_text()
        self.assertEqual(source.count(old), 1, "MailSystem.summary changed; adapt the test")
        source_path.write_text(source.replace(old, old[:-1] + ', "fixed": True}'))
        fix_id = "20261201-01-mail-summary"
        write_fix_list(self.codefix, fix_id, [self.MODULE],
                       sources={self.MODULE: source_path.read_bytes()})
        answer = await self.gm("POST", "/hotfix")
        self.assertEqual(answer["nodes"]["mail1"]["changes"], {fix_id: [self.MODULE]})

        # the same mailbox, still in memory, answers through the new code
        await self.mailbox("deliver", {"title": "after", "body": "b"})
        listed = await self.mailbox("list")
        self.assertEqual([(m["title"], m.get("fixed")) for m in listed],  # type: ignore[attr-defined]
                         [("after", True), ("before", True)])

        answer = await self.gm("POST", "/hotfix/rollback")
        self.assertEqual(answer["nodes"]["mail1"]["rolled_back"], fix_id)
        listed = await self.mailbox("list")
        self.assertEqual([m.get("fixed") for m in listed], [None, None])  # type: ignore[attr-defined]
