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

from rltwist.cluster.routing import birth_region
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
    #: a second request built from the first one's answer (a lookup, then the action):
    #: both are timed under the action's name; the first must answer OK, the second one
    #: of ``ok_codes``; None from it ends the step after the lookup (nothing to act on
    #: yet; counted in the report's ``nothing to act on`` line)
    then: Callable[[BotIdentity, Message], Message | None] | None = None


ACTIONS: dict[str, Action] = {}


def action(name: str, help: str, ok_codes: frozenset[int] = frozenset({pb.ErrorCode.OK}),
           then: Callable[[BotIdentity, Message], Message | None] | None = None,
           ) -> Callable[[Callable[[BotIdentity], Message]], Callable[[BotIdentity], Message]]:
    """Register a script action ``name`` whose request ``build(identity)`` returns (and,
    with *then*, a follow-up request built from its answer)."""

    def register(build: Callable[[BotIdentity], Message]) -> Callable[[BotIdentity], Message]:
        if name in ACTIONS:
            raise ValueError(f"script action {name!r} registered twice")
        ACTIONS[name] = Action(name=name, help=help, build=build, ok_codes=ok_codes,
                               then=then)
        return build

    return register


@action("rename", "Rename to a unique valid name b<index>x<hex> (NAME_TAKEN is a failure)")
def _rename(bot: BotIdentity) -> Message:
    return pb.Rename(name=bot.unique_name())


@action("heartbeat", "Send one Heartbeat now (besides the periodic ones)")
def _heartbeat(bot: BotIdentity) -> Message:
    return pb.Heartbeat()


@action("activity_list", "List the activities running for the bot's region")
def _activity_list(bot: BotIdentity) -> Message:
    return pb.ActivityList()


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


# -- guilds ----------------------------------------------------------------------------


def guild_name(userid: int) -> str:
    """The guild a bot creates: ``g<userid in hex>`` — unique in the bot's region, valid
    under the name rules (only ``g``, digits and ``a-f``: no forbidden word)."""
    return f"g{userid:x}"


@action("guild_create", "Create an open guild g<userid hex> (already in a guild counts "
        "as done: a rerun of the same bots)",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.GUILD_ALREADY_IN_GUILD}))
def _guild_create(bot: BotIdentity) -> Message:
    return pb.GuildCreate(name=guild_name(bot.userid), open=True)


def _pick_guild(bot: BotIdentity, listed: Message) -> Message | None:
    """From a GuildList answer: the peer's guild if listed, else the first open one with
    room that this bot does not lead, else one it leads (answered GUILD_ALREADY_IN_GUILD:
    the bot is in a guild already); None when nothing is listed."""
    every = list(getattr(listed, "guilds", ()))
    guilds = [g for g in every
              if g.open and g.members < g.max_members and g.leader_id != bot.userid]
    peer = bot.peer()
    peers = [g for g in guilds if g.leader_id == peer]
    own = [g for g in every if g.leader_id == bot.userid]
    chosen = (peers or guilds or own or [None])[0]
    return None if chosen is None else pb.GuildJoin(guild_id=chosen.guild_id)


@action("guild_join", "GuildList of the peer bot's region, then join a guild another bot "
        "made there (the peer's if listed); nothing to join fails the bot; a bot in a guild "
        "already (it ran guild_create, as in the all-actions demo) is answered "
        "GUILD_ALREADY_IN_GUILD, which counts as done",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.GUILD_ALREADY_IN_GUILD}),
        then=_pick_guild)
def _guild_join(bot: BotIdentity) -> Message:
    return pb.GuildList(region=birth_region(bot.peer()))


@action("guild_info", "GuildInfo of the bot's own guild (members with online flags); "
        "GUILD_NOT_IN_GUILD counts as done",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.GUILD_NOT_IN_GUILD}))
def _guild_info(bot: BotIdentity) -> Message:
    return pb.GuildInfo()


# -- friends ---------------------------------------------------------------------------

_E = pb.ErrorCode


@action("friend_request", "Ask identity.peer() to be friends (already friends, a full "
        "list or a refusal are not failures)",
        ok_codes=frozenset({_E.OK, _E.FRIEND_ALREADY, _E.FRIEND_LIST_FULL,
                            _E.FRIEND_REFUSED, _E.FRIEND_SELF}))
def _friend_request(bot: BotIdentity) -> Message:
    return pb.FriendRequest(to_userid=bot.peer())


@action("friend_accept_all", "Accept every friend request waiting (a full list is not a "
        "failure)", ok_codes=frozenset({_E.OK, _E.FRIEND_LIST_FULL}))
def _friend_accept_all(bot: BotIdentity) -> Message:
    return pb.FriendAccept(all=True)


@action("friend_list", "List friends, requests and blocked players")
def _friend_list(bot: BotIdentity) -> Message:
    return pb.FriendList()


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


# -- marches ---------------------------------------------------------------------------

#: a march start a busy map may refuse without the bot failing: the player's marches are at
#: the cap, another player took the point, no city yet (the world part places it at Auth)
_MARCH_OK = frozenset({_E.OK, _E.MARCH_TOO_MANY, _E.MARCH_BAD_TARGET, _E.MARCH_NO_CITY,
                       _E.MARCH_NOT_ENOUGH_TROOPS})
#: troops one bot march takes (a small part of the initial troops of etc/game/troops.toml)
BOT_MARCH_TROOPS = {"infantry": 20, "cavalry": 10}


def _march_to(kind: int, march_type: int) -> Callable[[BotIdentity, Message],
                                                      Message | None]:
    def pick(bot: BotIdentity, found: Message) -> Message | None:
        targets = [t for t in getattr(found, "targets", ()) if t.kind == kind]
        if not targets:
            return None
        # spread the bots over the nearby targets instead of all on the nearest
        t = targets[bot.index % len(targets)]
        return pb.MarchStart(type=march_type, target_x=t.x, target_y=t.y,  # type: ignore[arg-type]
                             troops=[pb.TroopCount(type=k, count=n)
                                     for k, n in BOT_MARCH_TROOPS.items()])
    return pick


@action("march_gather", "MarchTargets around the bot's city, then send a small gather march "
        "to a resource point there (a full march cap, a taken point or no city yet count "
        "as answered; no point nearby ends the step)",
        ok_codes=_MARCH_OK,
        then=_march_to(pb.MapEntityKind.MAP_RESOURCE, pb.MarchType.MARCH_GATHER))
def _march_gather(bot: BotIdentity) -> Message:
    return pb.MarchTargets(around_city=True, radius=40)


@action("march_attack", "MarchTargets around the bot's city, then send a small attack march "
        "to a monster there (as march_gather)",
        ok_codes=_MARCH_OK,
        then=_march_to(pb.MapEntityKind.MAP_MONSTER, pb.MarchType.MARCH_ATTACK))
def _march_attack(bot: BotIdentity) -> Message:
    return pb.MarchTargets(around_city=True, radius=40)


def _pick_recall(bot: BotIdentity, listed: Message) -> Message | None:
    out = [m for m in getattr(listed, "marches", ())
           if m.line.state != pb.MarchState.MARCH_RETURNING]
    return None if not out else pb.MarchRecall(march_id=out[0].line.march_id)


@action("march_recall", "MarchList, then recall the bot's first march not on its way home "
        "(none: the step ends; one that turned meanwhile counts as answered)",
        ok_codes=frozenset({_E.OK, _E.MARCH_ALREADY_RETURNING, _E.MARCH_NOT_FOUND}),
        then=_pick_recall)
def _march_recall(bot: BotIdentity) -> Message:
    return pb.MarchList()

# -- world map viewport (issue 13) -----------------------------------------------------------

#: the view a bot pans with (a phone screen of tiles)
_VIEW_W, _VIEW_H = 30, 20


def _random_view(bot: BotIdentity) -> Message:
    import random

    rng = random.Random(f"{bot.run_token}/{bot.index}/{random.random()}")
    return pb.MapView(x=rng.randrange(0, 512 - _VIEW_W), y=rng.randrange(0, 512 - _VIEW_H),
                      width=_VIEW_W, height=_VIEW_H)


def _pan(bot: BotIdentity, answer: Message) -> Message | None:
    """The same view moved by up to one block in each direction (clamped to the map)."""
    import random

    blocks = list(getattr(answer, "blocks", ()))
    info = getattr(answer, "info", None)
    if not blocks or info is None or not info.width:
        return None
    per_row = -(-info.width // info.block)
    x = min(b % per_row for b in blocks) * info.block
    y = min(b // per_row for b in blocks) * info.block
    dx, dy = random.randint(-info.block, info.block), random.randint(-info.block, info.block)
    return pb.MapView(x=max(0, min(info.width - 1, x + dx)),
                      y=max(0, min(info.height - 1, y + dy)), width=_VIEW_W, height=_VIEW_H)


@action("map_pan", "Watch a 30x20-tile view at a random place of the bot's map, then pan it "
        "by up to a block (MapView twice); MapNotify pushes that follow are read",
        then=_pan)
def _map_pan(bot: BotIdentity) -> Message:
    return _random_view(bot)


@action("map_clear", "Stop watching the map (MapViewClear)")
def _map_clear(bot: BotIdentity) -> Message:
    return pb.MapViewClear()


@action("map_my_city", "Ask for the bot's city and its map (placed at the first entry)")
def _map_my_city(bot: BotIdentity) -> Message:
    return pb.MapMyCity()


# -- regions: moving a city --


def _move_target(bot: BotIdentity, answer: Message) -> Message | None:
    """MoveCity to the other of regions 1 and the bot's birth region (region 2 for bots
    born in region 1): a bot born in region 2 moves to map 1 and back, one born in
    region 1 to map 2 and back; any free tile."""
    info = getattr(answer, "info", None)
    if info is None or not info.map_id:
        return None
    from rltwist.cluster.routing import birth_region

    birth = birth_region(bot.userid)
    away = 1 if birth != 1 else 2
    return pb.MoveCity(target_sid=away if info.map_id == birth else birth)


@action("move_city", "Move the bot's city between its birth region's map and map 1 (map 2 "
        "for bots of region 1), any free tile (MapMyCity, then MoveCity); a move costs "
        "etc/game/movecity.toml's cost, so MOVE_NO_RESOURCES is expected for bots without "
        "it and RETRY_LATER while a target map is unreachable",
        ok_codes=frozenset({pb.ErrorCode.OK, pb.ErrorCode.MOVE_NO_RESOURCES,
                            pb.ErrorCode.RETRY_LATER}),
        then=_move_target)
def _move_city(bot: BotIdentity) -> Message:
    return pb.MapMyCity()
