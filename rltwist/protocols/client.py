"""Client side of the client protocol, for the rl-bot load client and tests.

``request(message)`` sends an upstream frame under a fresh session and
returns a Deferred that fires with the decoded ``Response``, fails with
``RequestTimeout`` after a bounded time, or fails with ``RequestConnectionLost``
when the connection goes away first (AMP's tag -> Deferred map, plus the
deadline AMP lacks). Pushes (session 0) go to ``pushReceived``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final, cast

from google.protobuf.message import Message
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.protocols.framing import (
    MAX_SESSION,
    MAX_UP_BODY,
    MIN_LENGTH,
    UP_HEADER,
    FrameDecoder,
    FrameError,
)
from rltwist.protocols.registry import REGISTRY, Registry, UnknownMessage

DEFAULT_TIMEOUT: Final = 30.0
#: Default cap on one downstream frame, so a broken server cannot make the
#: client allocate up to 4 GiB.
DEFAULT_MAX_DOWN_LENGTH: Final = 16 * 1024 * 1024


class RequestTimeout(defer.TimeoutError):
    """No response arrived within the request's timeout."""


class RequestConnectionLost(error.ConnectionLost):
    """The connection closed while the request was waiting for its response."""


class ResponseError(Exception):
    """The server answered, but the response could not be used."""


PushHandler = Callable[[Message], object]


class ClientProtocol(Protocol):
    """Sends requests, matches responses by session, dispatches pushes."""

    log: ClassVar[Logger] = Logger()

    def __init__(
        self,
        *,
        clock: IReactorTime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        on_push: PushHandler | None = None,
        registry: Registry = REGISTRY,
        max_length: int = DEFAULT_MAX_DOWN_LENGTH,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        self.clock = clock
        self.timeout = timeout
        self.on_push = on_push
        self.registry = registry
        self._decoder = FrameDecoder(downstream=True, max_length=max_length)
        self._request_ids = registry.request_ids
        self._responses = registry.responses
        self._pushes = registry.pushes
        # session -> (proto the response must carry, waiting Deferred)
        self._pending: dict[int, tuple[int, defer.Deferred[Message]]] = {}
        self._last_session = 0
        self._open = False

    @property
    def pending(self) -> int:
        """Requests still waiting for a response."""
        return len(self._pending)

    def connectionMade(self) -> None:
        self._open = True

    def request(self, message: Message, timeout: float | None = None) -> defer.Deferred[Message]:
        """Send ``message`` and return a Deferred for its ``Response``.

        Raises ``UnknownMessage`` or ``ValueError`` at once for a message that
        cannot be sent at all; the Deferred fails with ``RequestTimeout``
        after ``timeout`` seconds (default: the protocol's) or with
        ``RequestConnectionLost``. Cancelling it forgets the session.
        """
        cls = type(message)
        proto = self._request_ids.get(cls)
        if proto is None:
            raise UnknownMessage(f"{cls.__qualname__} is not a registered request")
        body = message.SerializeToString()
        if len(body) > MAX_UP_BODY:
            raise ValueError(f"{cls.__qualname__} body of {len(body)} bytes exceeds the "
                             f"upstream limit of {MAX_UP_BODY}")
        if not self._open or self.transport is None:
            return defer.fail(RequestConnectionLost(f"{cls.__qualname__}: not connected"))
        session = self._next_session()
        pending = self._pending

        def forget(_: defer.Deferred[Message]) -> None:
            pending.pop(session, None)

        d: defer.Deferred[Message] = defer.Deferred(forget)
        pending[session] = (proto, d)
        self.transport.write(UP_HEADER.pack(MIN_LENGTH + len(body), proto, session) + body)
        limit = self.timeout if timeout is None else timeout

        def timed_out(result: Message | Failure, after: float) -> Message:
            # Only called when the deadline cancelled ``d``; a reply would have won.
            raise RequestTimeout(f"{cls.__qualname__} (proto {proto}, session {session}) "
                                 f"got no response within {after}s")

        d.addTimeout(limit, self.clock, onTimeoutCancel=timed_out)
        return d

    def _next_session(self) -> int:
        # Sessions are u32 and never 0 (that is a push); skip ones in flight.
        session = self._last_session
        while True:
            session = session + 1 if session < MAX_SESSION else 1
            if session not in self._pending:
                self._last_session = session
                return session

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self.log.error("bad downstream frame from {peer}: {reason}", reason=e.reason,
                           length=e.length, peer=self.transport and self.transport.getPeer())
            self._open = False
            self._fail_pending(ResponseError(f"server sent a bad frame: {e}"))
            if self.transport is not None:
                self.transport.loseConnection()
            return
        for proto, session, body in frames:
            if session == 0:
                self._push(proto, body)
                continue
            entry = self._pending.pop(session, None)
            if entry is None:
                # Timed out or cancelled earlier; the answer has nobody to go to.
                self.log.debug("late response proto {proto} session {session}",
                               proto=proto, session=session)
                continue
            expected, d = entry
            if proto != expected:
                d.errback(ResponseError(f"response to session {session} has proto {proto}, "
                                        f"expected {expected}"))
                continue
            response = self._responses[proto]()
            try:
                response.ParseFromString(body)
            except Exception as e:  # DecodeError, or e.g. UnicodeDecodeError (pure Python)
                d.errback(ResponseError(f"undecodable response proto {proto} session "
                                        f"{session}: {e}"))
                continue
            d.callback(response)

    def _push(self, proto: int, body: bytes) -> None:
        cls = self._pushes.get(proto)
        if cls is None:
            self.log.warn("ignoring unknown push proto {proto}", proto=proto)
            return
        message = cls()
        try:
            message.ParseFromString(body)
        except Exception as e:  # DecodeError, or e.g. UnicodeDecodeError (pure Python)
            self.log.warn("ignoring undecodable push proto {proto}: {error}",
                          proto=proto, error=str(e))
            return
        try:
            self.pushReceived(message)
        except Exception:
            self.log.failure("push handler failed for proto {proto}", proto=proto)

    def pushReceived(self, message: Message) -> None:
        """Handle one push; the default calls ``on_push`` if it was given."""
        if self.on_push is not None:
            self.on_push(message)
        else:
            self.log.debug("unhandled push {name}", name=message.DESCRIPTOR.full_name)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open = False
        self._fail_pending(RequestConnectionLost(
            f"connection closed before the response arrived: {reason.getErrorMessage()}"))

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for _, d in pending.values():
            d.errback(exc)
