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


# -- chat (issue 12) -------------------------------------------------------------------------

#: chat answers a bot script accepts: over the per-player rate (1/s, burst 5 by default) a
#: message is refused with RATE_LIMITED, which is the server doing its job
_CHAT_OK = frozenset({pb.ErrorCode.OK, pb.ErrorCode.RATE_LIMITED})


def _chat_text(bot: BotIdentity, channel: str) -> str:
    return f"{channel} from bot {bot.index} ({bot.run_token[:6]})"


@action("chat_world", "Send a world chat message (RATE_LIMITED counts as answered)",
        ok_codes=_CHAT_OK)
def _chat_world(bot: BotIdentity) -> Message:
    return pb.ChatSend(channel=pb.ChatChannel.CHAT_WORLD, text=_chat_text(bot, "world"))


@action("chat_region", "Send a chat message to the bot's region (RATE_LIMITED counts as "
        "answered)", ok_codes=_CHAT_OK)
def _chat_region(bot: BotIdentity) -> Message:
    return pb.ChatSend(channel=pb.ChatChannel.CHAT_REGION, text=_chat_text(bot, "region"))


@action("chat_private", "Send a private chat message to another logged-in bot (peer); "
        "RATE_LIMITED counts as answered. A bot alone (no other bot online yet) fetches "
        "its private history instead: a message to oneself is NO_SUCH_PLAYER",
        ok_codes=_CHAT_OK)
def _chat_private(bot: BotIdentity) -> Message:
    peer = bot.peer()
    if peer == bot.userid:
        return pb.ChatHistory(channel=pb.ChatChannel.CHAT_PRIVATE, peer_userid=peer)
    return pb.ChatSend(channel=pb.ChatChannel.CHAT_PRIVATE, text=_chat_text(bot, "private"),
                       to_userid=peer)


@action("chat_history", "Fetch the world chat history (the last 50 messages)")
def _chat_history(bot: BotIdentity) -> Message:
    return pb.ChatHistory(channel=pb.ChatChannel.CHAT_WORLD)
