"""Scripted requests a bot sends after Auth: the ``--script`` vocabulary.

A script is a comma-separated list of action names, each optionally repeated with
``*N`` (``rename,heartbeat*3``). An action builds one request from the bot's identity;
the runner sends it, times it under the action's name, and treats any code outside
``ok_codes`` as a failure (RETRY_LATER / LOGIN_IN_PROGRESS are retried first). Adding a
request kind is one ``@action`` function here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs
from google.protobuf.message import Message

from rltwist.protocols import pb

#: Longest role name the name rules accept (etc/game/name_rules.toml max_length).
MAX_NAME_LENGTH = 14
#: Longest script once repetitions are expanded; a typo like heartbeat*100000 is refused.
MAX_SCRIPT_STEPS = 1000


@attrs.frozen
class BotIdentity:
    """What an action may use to build its request."""

    index: int
    openid: str
    userid: int
    #: Random hex chosen once per run; makes names unique across runs.
    run_token: str
    #: userids of the bots of this run that are logged in (this one included), in login
    #: order: social actions pick their partners here
    online: Sequence[int] = ()

    def peer(self, step: int = 1) -> int:
        """Another logged-in bot's userid (the one *step* places after this bot in login
        order, wrapping); this bot's own userid when it is alone."""
        others = [u for u in self.online if u != self.userid]
        if not others:
            return self.userid
        return others[(self.index + step - 1) % len(others)]

    def unique_name(self) -> str:
        """A valid role name unique to this bot in this run: ``b<index>x<hex>``.

        The index makes it unique within the run, the run token across runs. It only
        uses ``b``, ``x``, digits and ``a-f``, so it never contains a forbidden word.
        """
        base = f"b{self.index}x"
        return base + self.run_token[: max(0, MAX_NAME_LENGTH - len(base))]


@attrs.frozen
class Action:
    name: str
    help: str
    build: Callable[[BotIdentity], Message]
    ok_codes: frozenset[int] = frozenset({pb.ErrorCode.OK})


ACTIONS: dict[str, Action] = {}


def action(name: str, help: str, ok_codes: frozenset[int] = frozenset({pb.ErrorCode.OK})
           ) -> Callable[[Callable[[BotIdentity], Message]], Callable[[BotIdentity], Message]]:
    """Register a script action ``name`` whose request ``build(identity)`` returns."""

    def register(build: Callable[[BotIdentity], Message]) -> Callable[[BotIdentity], Message]:
        if name in ACTIONS:
            raise ValueError(f"script action {name!r} registered twice")
        ACTIONS[name] = Action(name=name, help=help, build=build, ok_codes=ok_codes)
        return build

    return register


@action("rename", "Rename to a unique valid name b<index>x<hex> (NAME_TAKEN is a failure)")
def _rename(bot: BotIdentity) -> Message:
    return pb.Rename(name=bot.unique_name())


@action("heartbeat", "Send one Heartbeat now (besides the periodic ones)")
def _heartbeat(bot: BotIdentity) -> Message:
    return pb.Heartbeat()


def parse_script(text: str) -> tuple[str, ...]:
    """Expand ``"rename,heartbeat*3"`` into action names; ValueError names the bad part."""
    steps: list[str] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        name, star, times = part.partition("*")
        name = name.strip()
        repeat = 1
        if star:
            try:
                repeat = int(times)
            except ValueError:
                raise ValueError(f"script step {part!r}: repeat count must be an integer")
            if repeat < 1:
                raise ValueError(f"script step {part!r}: repeat count must be >= 1")
        if name not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise ValueError(f"script step {part!r}: unknown action {name!r} (known: {known})")
        steps.extend([name] * repeat)
        if len(steps) > MAX_SCRIPT_STEPS:
            raise ValueError(f"script has more than {MAX_SCRIPT_STEPS} steps")
    return tuple(steps)


def describe_actions() -> str:
    """One line per action, for ``--help``."""
    return "; ".join(f"{a.name}: {a.help}" for a in ACTIONS.values())


# -- mail and gifts (issue 12) ---------------------------------------------------------------


#: a bot that is the only one logged in yet has no peer: its mail or gift goes to itself,
#: which the server refuses with BAD_REQUEST (the builders cannot send anything else)
_ALONE = pb.ErrorCode.BAD_REQUEST


@action("mail_send", "Send a mail to another logged-in bot (peer), of any region; "
        "BAD_REQUEST (no peer yet: to itself) counts as answered",
        ok_codes=frozenset({pb.ErrorCode.OK, _ALONE}))
def _mail_send(bot: BotIdentity) -> Message:
    return pb.MailSend(to_userid=bot.peer(), title=f"hi from bot {bot.index}",
                       body=f"run {bot.run_token[:6]}")


@action("mail_list", "List the bot's mailbox (newest first)")
def _mail_list(bot: BotIdentity) -> Message:
    return pb.MailList()


@action("mail_claim_all", "Claim the attachments of every mail (MailClaim mail_id 0); "
        "MAIL_NO_ATTACHMENTS (nothing to claim) counts as answered",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.MAIL_NO_ATTACHMENTS}))
def _mail_claim_all(bot: BotIdentity) -> Message:
    return pb.MailClaim(mail_id=0)


@action("gift_send", "Give 1 gold to another logged-in bot (peer); GIFT_DAILY_LIMIT and "
        "BAD_REQUEST (no peer yet: to itself) count as answered",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.GIFT_DAILY_LIMIT, _ALONE}))
def _gift_send(bot: BotIdentity) -> Message:
    return pb.GiftSend(to_userid=bot.peer(), items={"gold": 1})
