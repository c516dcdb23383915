"""The players of ``rl-chaos run``: in-process clients that stay online through faults.

``rl-bot``'s swarm measures logins and gives a bot up at its first failure; a chaos bot
instead logs in again after every kick, lost connection or refused answer (with a short
jittered backoff), because what is measured is how fast players get back and whether what
they were told is true. Each bot heartbeats every ``tick`` seconds and, unless the run is
quiet, renames itself now and then and (``social_p`` > 0, as in ``rl-chaos run``) does one
of the social operations that are durable at their OK: claims the food of a GM mail,
gives oil to another bot, creates (every ``CREATOR_EVERY``-th bot, once), joins or leaves a
guild, asks another bot to be friends or accepts a request, or sends one infantry to gather
at a resource point (``MarchTargets`` + ``MarchStart``) and recalls it after a random hold
in ``MARCH_HOLD`` (``MarchRecall``: its answer tells the final load, what the ledger
expects credited when it is home). Every such operation goes into
the :class:`Ledger` with its outcome. Errors are counted by code (``RETRY_LATER``,
``timeout``, ``kicked:...``) per fault window.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer, error, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from rltwist.chaos.ledger import FAILED, OK, UNKNOWN, Ledger
from rltwist.protocols import ClientProtocol, pb
from rltwist.sdk import dev_token

E = pb.ErrorCode
DEV_SDK_SECRET = "dev-only-sdk-secret-change-me"
#: rename answers that say for sure nothing changed
DEFINITE_RENAME_FAILURES = frozenset({E.NAME_TAKEN, E.NAME_INVALID})
#: answers of the social requests that say for sure nothing changed (every other non-OK
#: answer — RETRY_LATER, INTERNAL, NOT_AVAILABLE, no answer — leaves the outcome unknown)
DEFINITE_FAILURES = {
    "claim": frozenset({E.MAIL_NOT_FOUND, E.MAIL_NO_ATTACHMENTS, E.MAIL_ALREADY_CLAIMED}),
    "gift": frozenset({E.GIFT_INVALID, E.GIFT_NOT_ENOUGH, E.GIFT_DAILY_LIMIT,
                       E.NO_SUCH_PLAYER, E.BAD_REQUEST}),
    "guild": frozenset({E.GUILD_NAME_INVALID, E.GUILD_NAME_TAKEN, E.GUILD_ALREADY_IN_GUILD,
                        E.GUILD_NOT_ENOUGH_RESOURCES, E.GUILD_NOT_FOUND, E.GUILD_CLOSED,
                        E.GUILD_FULL, E.GUILD_NOT_IN_GUILD, E.GUILD_LEADER_CANNOT_LEAVE}),
    "friend": frozenset({E.FRIEND_SELF, E.FRIEND_ALREADY, E.FRIEND_LIST_FULL,
                         E.FRIEND_REFUSED, E.FRIEND_NO_REQUEST, E.FRIEND_YOU_BLOCK,
                         E.NO_SUCH_PLAYER, E.BAD_REQUEST}),
    "march": frozenset({E.BAD_REQUEST, E.MARCH_NOT_ENOUGH_TROOPS, E.MARCH_TOO_MANY,
                        E.MARCH_BAD_TARGET, E.MARCH_TOO_FAR, E.MARCH_NO_CITY,
                        E.MARCH_NOT_FOUND}),
}
#: a chaos march: one infantry (capacity 10: what a march whose load was never answered
#: may add, ``rltwist.chaos.ledger.MARCH_CAPACITY``) to a resource point this far at most
MARCH_TROOPS = {"infantry": 1}
MARCH_RADIUS = 30
#: s a march is out before its bot recalls it, drawn in this range (infantry: 1 tile/s,
#: so a far one is recalled on its way out, a near one once it gathered and turned home)
MARCH_HOLD = (2.0, 15.0)
#: marches a bot keeps out at once
MAX_MARCHES = 2
#: chance per tick of a social operation while a fault hits some of them (``Env.focus``)
FOCUS_SOCIAL_P = 0.5
#: every CREATOR_EVERY-th bot creates one guild (the others join and leave them)
CREATOR_EVERY = 8
#: gifts a bot sends at most (etc/game/gifts.toml max_per_day is 10: no daily-limit noise)
MAX_GIFTS = 8
#: titles of the GM mails whose attachments (food) the bots claim (rltwist.chaos.run)
CLAIM_PREFIX = "chaos-"


def code_name(code: int) -> str:
    try:
        return str(E.Name(code))
    except ValueError:
        return f"code {code}"


class SessionEnd(Exception):
    """The bot's session is over; ``reason`` is what the error table counts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    if isinstance(exc, SessionEnd):
        return exc.reason
    if isinstance(exc, defer.TimeoutError):
        return "timeout"
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (error.ConnectionLost, error.ConnectionDone)):
        return "connection lost"
    if isinstance(exc, error.ConnectError):
        return "connect failed"
    return type(exc).__name__


class Env:
    """What every bot of a run shares: addresses, the ledger, the current fault window."""

    def __init__(self, reactor: Any, logins: Sequence[tuple[str, int]],
                 role_by_port: dict[int, str], ledger: Ledger, *, tick: float = 1.0,
                 timeout: float = 3.0, rename_p: float = 0.2, social_p: float = 0.0,
                 seed: int | None = None, dev_sdk_secret: str = DEV_SDK_SECRET) -> None:
        self.reactor = reactor
        self.logins = list(logins)
        self.role_by_port = role_by_port
        self.ledger = ledger
        self.tick = tick
        self.timeout = timeout
        self.rename_p = rename_p
        self.social_p = social_p
        #: userids of the bots of the run (gift and friend partners)
        self.players: list[int] = []
        #: guilds created by the bots (acknowledged GuildCreate): what the others join
        self.guilds: list[int] = []
        #: the operations the current fault hits (its node keeps their state): bots pick
        #: them more often while it lasts
        self.focus: tuple[str, ...] = ()
        #: whether bots send gather marches (the "march" social operation)
        self.marches = True
        self.rng = random.Random(seed)
        self.secret = dev_sdk_secret
        self.token = secrets.token_hex(4)  # names unique across runs on one database
        self.fault = "start"
        self.quiet = False
        self.stopping = False
        self.inflight = 0  # ledger operations waiting for their answer
        self.errors: Counter[str] = Counter()

    def error(self, reason: str) -> None:
        self.errors[reason] += 1

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        return task.deferLater(self.reactor, seconds)


class Conn(ClientProtocol):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.kick: str | None = None

    def connectionLost(self, reason: Any = None) -> None:
        super().connectionLost(reason)
        if not self.closed.called:
            self.closed.callback(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed.called:
            self.transport.loseConnection()


async def connect(env: Env, host: str, port: int, on_push: Any = None) -> Conn:
    conn = Conn(clock=env.reactor, timeout=env.timeout, on_push=on_push)
    d = connectProtocol(TCP4ClientEndpoint(env.reactor, host, port, timeout=env.timeout),
                        conn)
    await d.addTimeout(env.timeout + 1, env.reactor)
    return conn


async def login(env: Env, openid: str, server_id: int, first: int = 0) -> Any:
    """One Login on a login node (the next one after a connection failure); its answer."""
    last: BaseException | None = None
    for i in range(len(env.logins)):
        host, port = env.logins[(first + i) % len(env.logins)]
        try:
            conn = await connect(env, host, port)
        except Exception as e:
            last = e
            continue
        try:
            return await conn.request(pb.Login(
                openid=openid, token=dev_token(env.secret, openid), device_id="chaos",
                os="chaos", server_id=server_id, version="chaos"))
        finally:
            conn.close()
    assert last is not None
    raise last


async def probe_login(env: Env, openid: str, server_id: int = 1) -> str:
    """A fresh player logs in and authenticates, then leaves: "OK" or why not."""
    try:
        r = await login(env, openid, server_id)
        if r.code != E.OK:
            return code_name(r.code)
        conn = await connect(env, r.host, r.port)
        try:
            a: Any = await conn.request(pb.Auth(userid=r.userid, secret=r.secret))
            return code_name(a.code)
        finally:
            conn.close()
    except Exception as e:
        return reason_of(e)


class ChaosBot:
    """One player that keeps itself online and renames itself now and then."""

    def __init__(self, env: Env, index: int, openid: str, server_id: int) -> None:
        self.env = env
        self.index = index
        self.openid = openid
        self.server_id = server_id
        self.userid: int | None = None
        self.online = False
        self.node: str | None = None
        self.online_at = 0.0  # monotonic time of the last Auth OK
        self.last_heartbeat = 0.0  # monotonic time of the last answered heartbeat
        self.name = ""
        self.conn: Conn | None = None
        self.renames = 0
        self.sessions = 0
        self.gifts = 0
        #: the guild this bot believes it is in (0: none; None: not sure — leave next)
        self.guildid: int | None = 0
        self.creator = index % CREATOR_EVERY == 0
        self.created = False
        #: marches out whose final load no answer told yet: id -> monotonic time to recall
        self.marches: dict[int, float] = {}
        self.done: defer.Deferred[None] | None = None

    def start(self) -> None:
        self.done = defer.Deferred.fromCoroutine(self.run())

    async def run(self) -> None:
        env = self.env
        while not env.stopping:
            try:
                await self.session()
            except Exception as e:
                if not env.stopping:
                    env.error(reason_of(e))
            finally:
                self.online = False
                self.node = None
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
            if not env.stopping:
                await env.sleep(0.2 + env.rng.random() * 0.5)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def _on_push(self, message: Any) -> None:
        if isinstance(message, pb.KickNotify) and self.conn is not None:
            try:
                self.conn.kick = pb.KickReason.Name(message.code)
            except ValueError:
                self.conn.kick = str(message.code)

    async def session(self) -> None:
        env = self.env
        r = await login(env, self.openid, self.server_id, first=self.index + self.sessions)
        self.sessions += 1
        if r.code != E.OK:
            raise SessionEnd(f"login {code_name(r.code)}")
        self.userid = r.userid
        conn = self.conn = await connect(env, r.host, r.port, on_push=self._on_push)
        a: Any = await conn.request(pb.Auth(userid=r.userid, secret=r.secret))
        if a.code != E.OK:
            raise SessionEnd(f"auth {code_name(a.code)}")
        self.online = True
        self.node = env.role_by_port.get(r.port, f"?:{r.port}")
        self.online_at = self.last_heartbeat = time.monotonic()
        self.name = a.name
        if self.guildid is None or not self.creator:
            self.guildid = int(a.basics.guild_id)
        while not env.stopping:
            await env.sleep(env.tick)
            if conn.closed.called:
                raise SessionEnd(f"kicked {conn.kick}" if conn.kick else "connection lost")
            h: Any = await conn.request(pb.Heartbeat())
            if h.code != E.OK:
                raise SessionEnd(f"heartbeat {code_name(h.code)}")
            self.last_heartbeat = time.monotonic()
            if not env.quiet and env.rng.random() < env.rename_p:
                await self.rename(conn)
            social_p = FOCUS_SOCIAL_P if env.focus and env.social_p else env.social_p
            if not env.quiet and env.rng.random() < social_p:
                await self.social(conn)
            if not env.quiet and any(time.monotonic() >= t for t in self.marches.values()):
                await self.recall(conn)

    async def rename(self, conn: Conn) -> None:
        env = self.env
        assert self.userid is not None
        self.renames += 1
        name = f"c{self.index:x}x{self.renames:x}{env.token}"[:14]
        env.inflight += 1
        try:
            try:
                r: Any = await conn.request(pb.Rename(name=name))
            except Exception as e:
                env.ledger.record("rename", self.userid, name, UNKNOWN, env.fault, reason_of(e))
                raise
            if r.code == E.OK:
                env.ledger.record("rename", self.userid, name, OK, env.fault)
                self.name = name
                return
            outcome = FAILED if r.code in DEFINITE_RENAME_FAILURES else UNKNOWN
            env.ledger.record("rename", self.userid, name, outcome, env.fault,
                              code_name(r.code))
            env.error(f"rename {code_name(r.code)}")
        finally:
            env.inflight -= 1

    # -- social operations ---------------------------------------------------------------

    async def social(self, conn: Conn) -> None:
        """One social operation, picked at random among those that make sense now (three
        times in four among those of ``env.focus``, when one of them does)."""
        env = self.env
        choices = {"claim": self.claim, "friend": self.friend}
        if self.gifts < MAX_GIFTS and len(env.players) > 1:
            choices["gift"] = self.gift
        if (self.creator and not self.created) or (not self.creator and env.guilds):
            choices["guild"] = self.guild
        if env.marches and len(self.marches) < MAX_MARCHES:
            choices["march"] = self.march
        focused = [f for name, f in choices.items() if name in env.focus]
        if focused and env.rng.random() < 0.75:
            await env.rng.choice(focused)(conn)
        else:
            await env.rng.choice(list(choices.values()))(conn)

    async def _op(self, kind: str, value: Any, conn: Conn, msg: Any,
                  **extra: Any) -> Any:
        """Send *msg* and record the operation with its outcome (its ``extra`` is what
        the check needs); the answer. No answer: recorded unknown, and raised."""
        env = self.env
        assert self.userid is not None
        env.inflight += 1
        try:
            try:
                r: Any = await conn.request(msg)
            except Exception as e:
                env.ledger.record(kind, self.userid, value, UNKNOWN, env.fault, reason_of(e),
                                  **extra)
                raise
            if r.code == E.OK or (kind == "march" and r.code == E.MARCH_ALREADY_RETURNING):
                outcome = OK  # a recall that finds the march on its way home: load final
            elif r.code in DEFINITE_FAILURES[kind]:
                outcome = FAILED
            else:
                outcome = UNKNOWN
                env.error(f"{kind} {code_name(r.code)}")
            op = env.ledger.record(kind, self.userid, value, outcome, env.fault,
                                   "" if outcome == OK else code_name(r.code), **extra)
            if kind == "guild" and value == "create" and outcome == OK:
                op.extra["guildid"] = int(r.guild_id)  # known only from the answer
            if kind == "march" and r.code in (E.OK, E.MARCH_ALREADY_RETURNING) \
                    and r.HasField("march"):
                op.extra["march_id"] = int(r.march.line.march_id)
                if value == "recall":  # on its way home: the load is final
                    op.extra["load"] = {k: int(v) for k, v in r.march.load.items()}
            return r
        finally:
            env.inflight -= 1

    async def claim(self, conn: Conn) -> None:
        """Claim the food of one GM mail not claimed yet (MailList, then MailClaim)."""
        listed: Any = await conn.request(pb.MailList())
        if listed.code != E.OK:
            self.env.error(f"mail list {code_name(listed.code)}")
            return
        open_ = [m for m in listed.mails if m.title.startswith(CLAIM_PREFIX)
                 and m.has_attachments and not m.claimed]
        if open_:
            m = self.env.rng.choice(open_)
            await self._op("claim", m.title, conn, pb.MailClaim(mail_id=m.mail_id),
                           mail_id=int(m.mail_id))

    async def gift(self, conn: Conn) -> None:
        """Give 1-20 oil to another bot."""
        env = self.env
        to = env.rng.choice([u for u in env.players if u != self.userid])
        amount = env.rng.randint(1, 20)
        self.gifts += 1
        await self._op("gift", amount, conn, pb.GiftSend(to_userid=to, items={"oil": amount}),
                       to=to)

    async def guild(self, conn: Conn) -> None:
        """A creator creates its guild (once); the others join a guild or leave theirs."""
        env = self.env
        if self.creator:
            name = f"g{self.index:x}x{env.token}"[:14]
            r = await self._op("guild", "create", conn, pb.GuildCreate(name=name, open=True))
            if r.code == E.OK:
                self.guildid = int(r.guild_id)
                env.guilds.append(self.guildid)
            if r.code in (E.OK, E.GUILD_NAME_TAKEN, E.GUILD_ALREADY_IN_GUILD):
                self.created = True  # made (now or by an earlier unknown create)
            return
        if self.guildid == 0:
            gid = env.rng.choice(env.guilds)
            r = await self._op("guild", "join", conn, pb.GuildJoin(guild_id=gid), guildid=gid)
            self.guildid = gid if r.code == E.OK else (
                0 if r.code in DEFINITE_FAILURES["guild"]
                and r.code != E.GUILD_ALREADY_IN_GUILD else None)
        else:
            r = await self._op("guild", "leave", conn, pb.GuildLeave(),
                               guildid=self.guildid or 0)
            if r.code in (E.OK, E.GUILD_NOT_IN_GUILD):
                self.guildid = 0

    async def friend(self, conn: Conn) -> None:
        """Accept a request waiting, else ask another bot to be friends."""
        env = self.env
        listed: Any = await conn.request(pb.FriendList())
        if listed.code != E.OK:
            env.error(f"friend list {code_name(listed.code)}")
            return
        if listed.requests_in:
            peer = int(env.rng.choice(listed.requests_in).userid)
            await self._op("friend", "accept", conn, pb.FriendAccept(from_userid=peer),
                           peer=peer)
            return
        known = {int(f.userid) for part in (listed.friends, listed.requests_out)
                 for f in part}
        others = [u for u in env.players if u != self.userid and u not in known]
        if others:
            peer = env.rng.choice(others)
            await self._op("friend", "request", conn, pb.FriendRequest(to_userid=peer),
                           peer=peer)

    # -- marches ----------------------------------------------------------------------

    async def march(self, conn: Conn) -> None:
        """Send one infantry to gather at a resource point around the city (recalled after
        a random hold in ``MARCH_HOLD``: on its way out when the point is far, with what it
        gathered when it is near — both loads the recall answers)."""
        env = self.env
        found: Any = await conn.request(pb.MarchTargets(radius=MARCH_RADIUS,
                                                        around_city=True))
        if found.code != E.OK:
            env.error(f"march targets {code_name(found.code)}")
            return
        points = [t for t in found.targets if t.kind == pb.MapEntityKind.MAP_RESOURCE]
        if not points:
            return
        p = env.rng.choice(points)
        troops = [pb.TroopCount(type=t, count=n) for t, n in MARCH_TROOPS.items()]
        r = await self._op("march", "start", conn, pb.MarchStart(
            type=pb.MarchType.MARCH_GATHER, target_x=p.x, target_y=p.y, troops=troops),
            troops=dict(MARCH_TROOPS), resource=p.resource)
        if r.code == E.OK and r.march.line.march_id:
            self.marches[int(r.march.line.march_id)] = (time.monotonic()
                                                        + env.rng.uniform(*MARCH_HOLD))
        elif r.code != E.OK and r.code not in DEFINITE_FAILURES["march"]:
            # the start may have happened: MarchList (which sends it again) finds it
            await self.find_marches(conn)

    async def find_marches(self, conn: Conn) -> None:
        """Learn the marches out that no answer told (starts of unknown outcome)."""
        listed: Any = await conn.request(pb.MarchList())
        if listed.code != E.OK:
            self.env.error(f"march list {code_name(listed.code)}")
            return
        for m in listed.marches:
            if m.line.state != pb.MarchState.MARCH_RETURNING:
                self.marches.setdefault(int(m.line.march_id), 0.0)

    async def recall(self, conn: Conn) -> None:
        """Recall the marches whose hold is over; an answer that tells the final load
        (OK, MARCH_ALREADY_RETURNING) or that it is home (MARCH_NOT_FOUND) settles one."""
        now = time.monotonic()
        for mid, t in list(self.marches.items()):
            if now < t:
                continue
            r = await self._op("march", "recall", conn, pb.MarchRecall(march_id=mid),
                               march_id=mid)
            if r.code in (E.OK, E.MARCH_ALREADY_RETURNING, E.MARCH_NOT_FOUND):
                del self.marches[mid]
