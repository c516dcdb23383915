"""Running many simulated clients in one reactor: ``BotSwarm`` and ``run_bots``.

Each bot is one coroutine: connect to a login node, ``Login``, close, connect to the role
gateway from the answer, ``Auth``, run the script, hold the session, close. Nothing is
per-bot but the coroutine and its sockets: one shared timer sends every held session's
heartbeats and ends holds (sessions sit in two deques ordered by due time), a
``DeferredSemaphore`` bounds bots in their login phase, and host names are resolved once.
Every network wait is bounded by ``options.timeout``.
"""

from __future__ import annotations

import random
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, cast

from google.protobuf.message import Message
from twisted.internet import defer, error, task
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.bot.actions import ACTIONS, BotIdentity
from rltwist.bot.options import BotOptions
from rltwist.bot.report import BotReport, Recorder
from rltwist.protocols import ClientProtocol, ResponseError, pb
from rltwist.sdk import dev_token

log = Logger()

OK = pb.ErrorCode.OK
#: Answers that mean "not now": retried with a bounded backoff, counted in ``retries``.
RETRYABLE = frozenset({pb.ErrorCode.RETRY_LATER, pb.ErrorCode.LOGIN_IN_PROGRESS})
_OK_ONLY = frozenset({OK})


def code_name(code: int) -> str:
    try:
        return pb.ErrorCode.Name(code)
    except ValueError:
        return f"code {code}"


def kick_name(code: int) -> str:
    try:
        return pb.KickReason.Name(code)
    except ValueError:
        return f"kick {code}"


def short_reason(exc: BaseException) -> str:
    """A failure reason short and stable enough to group bots by."""
    if isinstance(exc, (defer.TimeoutError, error.TimeoutError)):
        return "timeout"
    if isinstance(exc, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, error.DNSLookupError):
        return "DNS lookup failed"
    if isinstance(exc, (error.ConnectionLost, error.ConnectionDone)):
        return "connection lost"
    if isinstance(exc, ResponseError):
        return "bad response"
    if isinstance(exc, error.ConnectError):
        return "connect failed"
    return f"error {type(exc).__name__}"


class BotFailed(Exception):
    """One bot failed: ``reason`` groups it (``"login: BAD_TOKEN"``), ``detail`` explains."""

    def __init__(self, step: str, why: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = f"{step}: {why}"
        self.detail = detail


class _Kicked(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BotProtocol(ClientProtocol):
    """``ClientProtocol`` that tells its bot when it connects and when it closes."""

    def __init__(self, connected: defer.Deferred[BotProtocol], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connected: defer.Deferred[BotProtocol] | None = connected
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.on_lost: Callable[[Failure], None] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        d, self._connected = self._connected, None
        if d is not None:
            d.callback(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.on_lost is not None:
            self.on_lost(reason)
        if not self.closed.called:
            self.closed.callback(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed.called:
            self.transport.loseConnection()


class _ConnectFactory(ClientFactory):
    noisy = False

    def __init__(self, protocol: BotProtocol, connected: defer.Deferred[BotProtocol]) -> None:
        self._protocol = protocol
        self._connected = connected

    def buildProtocol(self, addr: Any) -> BotProtocol:
        return self._protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self._connected.called:
            self._connected.errback(reason)


class _Bot:
    """One simulated client's state; the logic lives in ``BotSwarm``."""

    __slots__ = ("ended", "failure", "hb_pending", "index", "kick", "openid", "proto")

    def __init__(self, index: int, openid: str) -> None:
        self.index = index
        self.openid = openid
        self.proto: BotProtocol | None = None
        #: KickNotify reason, once one arrived.
        self.kick: str | None = None
        #: First failure seen outside the bot's own coroutine (heartbeat, lost connection).
        self.failure: BotFailed | None = None
        #: Fires once the session must end: by hold expiry, release, kick or failure.
        self.ended: defer.Deferred[None] | None = None
        self.hb_pending = False

    def end(self) -> None:
        if self.ended is not None and not self.ended.called:
            self.ended.callback(None)

    def fail(self, failure: BotFailed) -> None:
        """Record ``failure`` unless something came first; end the session."""
        if self.failure is None and self.kick is None:
            self.failure = failure
        self.end()
        if self.proto is not None:
            self.proto.close()

    def on_push(self, message: Message) -> None:
        if isinstance(message, pb.KickNotify):
            if self.kick is None and self.failure is None:
                self.kick = kick_name(message.code)
            self.end()
            if self.proto is not None:
                self.proto.close()


class _SessionClock:
    """The one timer of a swarm: periodic heartbeats and hold expiry for every session.

    With a fixed interval, appending ``now + interval`` keeps each deque ordered by due
    time, so a tick only looks at the sessions that are due. Ended sessions are dropped
    when they come up.
    """

    def __init__(self, clock: IReactorTime, heartbeat: float,
                 beat: Callable[[_Bot], None]) -> None:
        self.clock = clock
        self.heartbeat = heartbeat
        self._beat = beat
        self._beats: deque[tuple[float, _Bot]] = deque()
        self._holds: deque[tuple[float, _Bot]] = deque()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = clock
        # short ticks: with 10,000 sessions at 10 s a 0.1 s tick sent 100 heartbeats in one
        # burst, and the last of them waited behind the others (p99 measured the burst)
        self.tick = max(0.005, min(0.02, heartbeat / 4))

    def start(self) -> None:
        if not self._loop.running:
            self._loop.start(self.tick, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._beats.clear()
        self._holds.clear()

    def add_heartbeats(self, bot: _Bot) -> None:
        self._beats.append((self.clock.seconds() + self.heartbeat, bot))

    def add_hold(self, bot: _Bot, seconds: float) -> None:
        self._holds.append((self.clock.seconds() + seconds, bot))

    def _tick(self) -> None:
        now = self.clock.seconds()
        holds = self._holds
        while holds and holds[0][0] <= now:
            holds.popleft()[1].end()
        beats = self._beats
        while beats and beats[0][0] <= now:
            bot = beats.popleft()[1]
            if bot.ended is not None and bot.ended.called:
                continue
            if bot.proto is None or bot.proto.closed.called:
                continue
            beats.append((now + self.heartbeat, bot))
            if not bot.hb_pending:
                self._beat(bot)


class BotSwarm:
    """Runs ``options.count`` bots in this reactor and reports on them.

    ``await swarm.run()`` runs them all to the end (``hold`` included) and returns the
    final ``BotReport``. To hold sessions while measuring something else, build it with
    ``hold=None``, ``await swarm.login()`` (returns once every bot is logged in and has
    run its script, or failed), then ``await swarm.release()``. ``snapshot()`` reports
    at any time; ``stop()`` interrupts (no new bots, held sessions released).
    """

    log: ClassVar[Logger] = log

    def __init__(self, options: BotOptions, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.options = options
        self.reactor = reactor
        self.clock = cast(IReactorTime, reactor)
        self.recorder = Recorder(options.count, options.openid_prefix, options.expect_kicks)
        #: Random hex of this run, for unique role names.
        self.run_token = secrets.token_hex(7)
        #: userids of this run's bots that passed Auth, in order (social actions' partners)
        self.online_userids: list[int] = []
        self._slots = defer.DeferredSemaphore(options.concurrency)
        self._sessions = _SessionClock(self.clock, options.heartbeat, self._heartbeat)
        self._held: set[_Bot] = set()
        self._resolved: dict[str, str] = {}
        self._releasing = False
        self._stopping = False
        self._started = False
        self._settled_waiters: list[defer.Deferred[None]] = []
        self._finished_waiters: list[defer.Deferred[None]] = []

    # -- public API ------------------------------------------------------------

    def start(self) -> None:
        """Start launching bots (idempotent); ``login()`` and ``run()`` call it."""
        if self._started:
            return
        self._started = True
        self.recorder.first_start = self.clock.seconds()
        self._sessions.start()
        defer.ensureDeferred(self._schedule()).addErrback(
            lambda f: self.log.failure("rl-bot scheduler crashed", f))

    async def login(self) -> BotReport:
        """Start, then wait until every bot is logged in and scripted (or failed)."""
        self.start()
        if self.recorder.settled < self.options.count:
            d: defer.Deferred[None] = defer.Deferred()
            self._settled_waiters.append(d)
            await d
        return self.snapshot()

    async def release(self) -> BotReport:
        """Log every held session out, wait for all bots to end; the final report."""
        self._releasing = True
        for bot in list(self._held):
            bot.end()
        if not self._started:
            return self.snapshot()
        return await self._wait_finished()

    async def run(self) -> BotReport:
        """Run every bot to its end and return the final report."""
        self.start()
        return await self._wait_finished()

    def stop(self) -> None:
        """Interrupt: start no more bots, release held sessions as they come."""
        if not self._stopping:
            self._stopping = True
            self.recorder.interrupted = True
        self._releasing = True
        for bot in list(self._held):
            bot.end()

    def snapshot(self) -> BotReport:
        return self.recorder.report(self.clock.seconds())

    # -- scheduling --------------------------------------------------------------

    async def _wait_finished(self) -> BotReport:
        if self.recorder.finished < self.options.count:
            d: defer.Deferred[None] = defer.Deferred()
            self._finished_waiters.append(d)
            await d
        self._sessions.stop()
        return self.snapshot()

    async def _schedule(self) -> None:
        o = self.options
        start = self.clock.seconds()
        for n in range(o.count):
            await self._slots.acquire()
            if o.rate is not None:
                delay = start + n / o.rate - self.clock.seconds()
                if delay > 0.001:
                    await task.deferLater(self.clock, delay)
            if self._stopping:
                self._slots.release()
                self._cancel(o.count - n)
                return
            defer.ensureDeferred(self._run_bot(o.first + n)).addErrback(
                lambda f: self.log.failure("rl-bot: a bot crashed", f))

    def _cancel(self, remaining: int) -> None:
        rec = self.recorder
        for _ in range(remaining):
            rec.failure("not started: interrupted", "run interrupted before this bot started")
            rec.failed += 1
            rec.settled += 1
        self._check_waiters()

    def _check_waiters(self) -> None:
        rec, count = self.recorder, self.options.count
        if rec.settled >= count and self._settled_waiters:
            waiters, self._settled_waiters = self._settled_waiters, []
            for d in waiters:
                d.callback(None)
        if rec.finished >= count and self._finished_waiters:
            waiters, self._finished_waiters = self._finished_waiters, []
            for d in waiters:
                d.callback(None)

    # -- one bot -----------------------------------------------------------------

    async def _run_bot(self, index: int) -> None:
        o, rec, clock = self.options, self.recorder, self.clock
        bot = _Bot(index, o.openid(index))
        rec.started += 1
        settled = False
        try:
            t0 = clock.seconds()
            userid, host, port, secret = await self._login(bot)
            gateway = await self._connect(bot, host, port, "gateway")
            bot.proto = gateway
            gateway.on_lost = lambda reason: bot.fail(BotFailed(
                "session", "connection lost",
                f"{bot.openid}: gateway {host}:{port} closed the connection: "
                f"{reason.getErrorMessage()}"))
            await self._call(bot, gateway, pb.Auth(userid=userid, secret=secret), "auth")
            now = clock.seconds()
            rec.sample("total", now - t0)
            rec.logins += 1
            if rec.last_login is None or now > rec.last_login:
                rec.last_login = now
            bot.ended = defer.Deferred()
            self._sessions.add_heartbeats(bot)
            self.online_userids.append(userid)
            identity = BotIdentity(index=index, openid=bot.openid, userid=userid,
                                   run_token=self.run_token, online=self.online_userids)
            for step in o.script:
                act = ACTIONS[step]
                if act.then is None:
                    await self._call(bot, gateway, act.build(identity), step, act.ok_codes)
                    continue
                first = await self._call(bot, gateway, act.build(identity), step)
                follow = act.then(identity, first)
                if follow is None:
                    # nothing to act on yet (bots run concurrently: no other bot's guild
                    # in that region so far): the lookup was answered, the step is done
                    rec.nothing_to_do[step] = rec.nothing_to_do.get(step, 0) + 1
                    continue
                await self._call(bot, gateway, follow, step, act.ok_codes)
            hold = o.hold != 0 and not self._releasing and not bot.ended.called
            if hold:
                self._held.add(bot)
                rec.online += 1
                if o.hold is not None:
                    self._sessions.add_hold(bot, o.hold)
            settled = True
            self._settle()
            if hold:
                try:
                    await bot.ended
                finally:
                    rec.online -= 1
                    self._held.discard(bot)
            bot.end()
            self._raise_recorded(bot)
            gateway.on_lost = None
            await self._close(gateway)
            rec.ok += 1
        except Exception as e:
            self._record_end(bot, e)
        finally:
            if bot.proto is not None:
                bot.proto.on_lost = None
                bot.proto.close()
            if not settled:
                self._settle()
            self._check_waiters()

    def _raise_recorded(self, bot: _Bot) -> None:
        if bot.kick is not None:
            raise _Kicked(bot.kick)
        if bot.failure is not None:
            raise bot.failure

    def _record_end(self, bot: _Bot, exc: Exception) -> None:
        rec = self.recorder
        # What happened first (a kick, a failed heartbeat) explains later errors.
        if bot.kick is not None or isinstance(exc, _Kicked):
            rec.kicked += 1
            rec.kick(bot.kick or str(exc))
            return
        failure = bot.failure or exc
        if isinstance(failure, BotFailed):
            rec.failure(failure.reason, failure.detail)
        else:
            self.log.failure("rl-bot: unexpected error in bot {openid}", Failure(failure),
                             openid=bot.openid)
            rec.failure(f"internal: {type(failure).__name__}", f"{bot.openid}: {failure!r}")
        rec.failed += 1

    def _settle(self) -> None:
        self.recorder.settled += 1
        self._slots.release()
        self._check_waiters()

    async def _login(self, bot: _Bot) -> tuple[int, str, int, str]:
        o = self.options
        request = pb.Login(openid=bot.openid, token=self._token(bot.openid),
                           device_id=f"bot-device-{bot.index}", os=o.os,
                           server_id=o.server_of(bot.index), version=o.client_version)
        attempt = 0
        while True:
            host, port = o.logins[(bot.index + attempt) % len(o.logins)]
            proto = await self._connect(bot, host, port, "connect")
            bot.proto = proto
            try:
                if o.recommended_region:  # the region list a client shows before Login
                    listing = cast(pb.RegionList.Response,
                                   await self._exchange(bot, proto, pb.RegionList(),
                                                        "region_list",
                                                        f"login node {host}:{port}"))
                    if listing.code == OK and listing.recommended:
                        request.server_id = listing.recommended
                response = cast(pb.Login.Response,
                                await self._exchange(bot, proto, request, "login",
                                                     f"login node {host}:{port}"))
            finally:
                bot.proto = None
                proto.close()
            if response.code == OK:
                # An empty host means "the address you reached me on".
                return response.userid, response.host or host, response.port, response.secret
            attempt = await self._retry_or_fail(bot, "login", response.code, attempt,
                                                f"login node {host}:{port}")

    def _token(self, openid: str) -> str:
        return dev_token(self.options.dev_sdk_secret, openid)

    async def _call(self, bot: _Bot, proto: BotProtocol, message: Message, step: str,
                    ok_codes: frozenset[int] = _OK_ONLY) -> Message:
        attempt = 0
        while True:
            response = await self._exchange(bot, proto, message, step, "gateway")
            code: int = response.code  # type: ignore[attr-defined]
            if code in ok_codes:
                return response
            attempt = await self._retry_or_fail(bot, step, code, attempt, "gateway")

    async def _exchange(self, bot: _Bot, proto: BotProtocol, message: Message, step: str,
                        peer: str) -> Message:
        clock = self.clock
        t = clock.seconds()
        try:
            response = await proto.request(message, timeout=self.options.timeout)
        except Exception as e:
            self._raise_recorded(bot)
            raise BotFailed(step, short_reason(e), f"{bot.openid}: {step} to {peer}: {e}")
        self.recorder.sample(step, clock.seconds() - t)
        return response

    async def _retry_or_fail(self, bot: _Bot, step: str, code: int, attempt: int,
                             peer: str) -> int:
        o = self.options
        if code not in RETRYABLE or attempt >= o.retries:
            after = f" after {attempt} retries" if attempt else ""
            raise BotFailed(step, code_name(code),
                            f"{bot.openid}: {peer} answered {step} with {code_name(code)}{after}")
        attempt += 1
        self.recorder.retries += 1
        delay = min(o.retry_max_delay, o.retry_delay * 2 ** (attempt - 1))
        await task.deferLater(self.clock, delay * random.uniform(0.5, 1.0))
        self._raise_recorded(bot)
        return attempt

    async def _connect(self, bot: _Bot, host: str, port: int, step: str) -> BotProtocol:
        o, clock = self.options, self.clock
        t = clock.seconds()
        try:
            address = await self._resolve(host)
            connected: defer.Deferred[BotProtocol] = defer.Deferred()
            proto = BotProtocol(connected, clock=clock, timeout=o.timeout, on_push=bot.on_push)
            cast(IReactorTCP, self.reactor).connectTCP(
                address, port, _ConnectFactory(proto, connected), timeout=o.timeout)
            await connected
        except Exception as e:
            raise BotFailed(step, short_reason(e), f"{bot.openid}: connect to {host}:{port}: {e}")
        self.recorder.sample(step, clock.seconds() - t)
        return proto

    async def _resolve(self, host: str) -> str:
        if isIPAddress(host) or isIPv6Address(host):
            return host
        address = self._resolved.get(host)
        if address is None:
            address = await self.reactor.resolve(host, timeout=(self.options.timeout,))
            self._resolved[host] = address
        return address

    async def _close(self, proto: BotProtocol) -> None:
        """Close and wait (bounded) until the connection is gone."""
        if proto.closed.called:
            return
        proto.close()
        d = proto.closed
        timer = self.clock.callLater(self.options.timeout, self._abort, proto)
        await d
        if timer.active():
            timer.cancel()

    @staticmethod
    def _abort(proto: BotProtocol) -> None:
        transport = proto.transport
        if transport is not None and not proto.closed.called:
            getattr(transport, "abortConnection", transport.loseConnection)()

    # -- heartbeats ----------------------------------------------------------------

    def _heartbeat(self, bot: _Bot) -> None:
        proto = bot.proto
        if proto is None:
            return
        bot.hb_pending = True
        t = self.clock.seconds()
        try:
            d = proto.request(pb.Heartbeat(), timeout=self.options.timeout)
        except Exception as e:  # cannot be sent at all: a bug, not the network
            bot.hb_pending = False
            bot.fail(BotFailed("heartbeat", short_reason(e), f"{bot.openid}: heartbeat: {e}"))
            return

        def answered(response: Message) -> None:
            bot.hb_pending = False
            if bot.ended is not None and bot.ended.called:
                return
            self.recorder.sample("heartbeat", self.clock.seconds() - t)
            code: int = response.code  # type: ignore[attr-defined]
            if code != OK:
                bot.fail(BotFailed("heartbeat", code_name(code),
                                   f"{bot.openid}: gateway answered heartbeat with "
                                   f"{code_name(code)}"))

        def failed(f: Failure) -> None:
            bot.hb_pending = False
            if bot.ended is not None and bot.ended.called:
                return  # the session is closing; its requests fail on purpose
            bot.fail(BotFailed("heartbeat", short_reason(f.value),
                               f"{bot.openid}: heartbeat: {f.getErrorMessage()}"))

        d.addCallbacks(answered, failed)


async def run_bots(options: BotOptions, *, reactor: Any = None) -> BotReport:
    """Run ``options.count`` bots in this reactor to the end; their ``BotReport``."""
    return await BotSwarm(options, reactor=reactor).run()


__all__ = ["RETRYABLE", "BotFailed", "BotProtocol", "BotSwarm", "run_bots"]
