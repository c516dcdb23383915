"""Server side of the client protocol: one game client connection.

Used by the login node's loginserver and the role node's gateway. The
protocol turns upstream frames into protobuf requests and hands each one with
its session to ``requestReceived``; the node answers later with ``reply``
and sends unsolicited messages with ``push``. Anything malformed closes this
connection only, with a logged reason counted per reason for metrics.

Node policy (request before Auth, Auth twice, ...) lives in the node:
override ``requestReceived`` and raise ``ProtocolViolation`` or call
``closeWithReason``.

Every connection is bounded (``[client]`` config, :class:`ClientSettings`): the node must
call ``handshakeDone`` (Login or Auth answered OK) within ``handshake_timeout``; a frame
that has begun must be complete within ``frame_timeout``; at most ``max_inflight``
requests wait for their answer; a client that does not read is dropped once more than
``max_outbound`` bytes wait for it. The factory refuses connections past
``max_connections`` (and ``max_connections_per_ip``), counted by reason. A connection
closed for breaking the protocol is told so first: ``KickNotify{KICK_PROTOCOL_ERROR}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar, cast

from google.protobuf.message import Message
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rltwist.config import ClientSettings
from rltwist.protocols import pb
from rltwist.protocols.framing import (
    DOWN_HEADER,
    MAX_DOWN_BODY,
    MAX_UP_LENGTH,
    MIN_LENGTH,
    FrameDecoder,
    FrameError,
)
from rltwist.protocols.registry import REGISTRY, Registry, UnknownMessage


class CloseReason(StrEnum):
    """Why the server closed a client connection: log field and metric label."""

    FRAME_TOO_SHORT = "frame_too_short"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_PROTO = "unknown_proto"
    UNDECODABLE_BODY = "undecodable_body"
    ZERO_SESSION = "zero_session"
    HANDLER_ERROR = "handler_error"
    # Bounds of every connection (ClientSettings).
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    FRAME_TIMEOUT = "frame_timeout"
    TOO_MANY_REQUESTS = "too_many_requests"
    SLOW_READER = "slow_reader"
    # Policies the nodes enforce through ProtocolViolation / closeWithReason.
    REQUEST_BEFORE_AUTH = "request_before_auth"
    AUTH_TWICE = "auth_twice"
    KICKED = "kicked"


class RefuseReason(StrEnum):
    """Why the factory refused a new connection: log field and metric label."""

    MAX_CONNECTIONS = "max_connections"
    MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"


#: Closes for which the client broke the protocol: it is told so with
#: ``KickNotify{code: KICK_PROTOCOL_ERROR, reason: <close reason>}`` before the close.
#: Not ``slow_reader`` (it would not read the notice) nor ``handler_error`` (our fault).
PROTOCOL_ERRORS = frozenset({
    CloseReason.FRAME_TOO_SHORT, CloseReason.FRAME_TOO_LARGE, CloseReason.UNKNOWN_PROTO,
    CloseReason.UNDECODABLE_BODY, CloseReason.ZERO_SESSION, CloseReason.HANDSHAKE_TIMEOUT,
    CloseReason.FRAME_TIMEOUT, CloseReason.TOO_MANY_REQUESTS,
    CloseReason.REQUEST_BEFORE_AUTH, CloseReason.AUTH_TWICE,
})


class ProtocolViolation(Exception):
    """Raised by a request handler to close the connection with ``reason``.

    Extra keyword arguments become structured fields of the log event.
    """

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


RequestHandler = Callable[["ServerProtocol", Message, int], object]


def _default_clock() -> IReactorTime:
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


@implementer(IPushProducer)
class _OutboundMeter:
    """The connection's streaming producer. Its transport's ``bufferSize`` is set to
    ``max_outbound``, so the transport pauses it exactly when more than that waits for
    the client (Twisted calls ``pauseProducing`` on each write while the buffer is over
    ``bufferSize``): the client is not reading, and the connection is dropped."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: ServerProtocol) -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:
        self.protocol.closeWithReason(CloseReason.SLOW_READER, abort=True,
                                      limit=self.protocol.limits.max_outbound)

    def resumeProducing(self) -> None:
        """Never paused for long: a pause drops the connection."""

    def stopProducing(self) -> None:
        """The connection is going away; connectionLost follows."""


class ServerProtocol(Protocol):
    """Accepts upstream frames from one game client; answers downstream.

    Subclass and override ``requestReceived``, or pass ``handler`` (called as
    ``handler(protocol, message, session)``). ``closes`` counts closes by
    reason; the factory shares one counter between its connections.
    ``limits`` bounds the connection (see the module docstring); its timers run
    on ``clock``.
    """

    log: ClassVar[Logger] = Logger()
    #: Largest accepted upstream length field; a node may lower it.
    max_length: ClassVar[int] = MAX_UP_LENGTH

    def __init__(
        self,
        handler: RequestHandler | None = None,
        *,
        registry: Registry = REGISTRY,
        closes: Counter[str] | None = None,
        limits: ClientSettings | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.closes: Counter[str] = Counter() if closes is None else closes
        self.limits = limits if limits is not None else ClientSettings()
        self.clock = clock if clock is not None else _default_clock()
        #: First reason this connection was closed for by the server, if any.
        self.close_reason: str | None = None
        self.peer: IAddress | None = None
        #: Requests received and not answered yet.
        self.inflight = 0
        self._open = False
        self._decoder = FrameDecoder(downstream=False, max_length=self.max_length)
        self._requests = registry.requests
        self._response_ids = registry.response_ids
        self._push_ids = registry.push_ids
        self._handshake_timer: IDelayedCall | None = None
        self._frame_timer: IDelayedCall | None = None
        self._meter: _OutboundMeter | None = None
        self._counted_host: str | None = None  # set by the factory that counted it
        self._released = False

    # -- Twisted callbacks --------------------------------------------------

    def connectionMade(self) -> None:
        self._open = True
        self.peer = self.transport.getPeer() if self.transport is not None else None
        self._handshake_timer = self.clock.callLater(
            self.limits.handshake_timeout, self._timed_out, CloseReason.HANDSHAKE_TIMEOUT)
        transport: Any = self.transport  # a consumer too (TCP, StringTransport)
        if hasattr(transport, "registerProducer"):
            if hasattr(transport, "bufferSize"):  # Twisted's FileDescriptor
                transport.bufferSize = self.limits.max_outbound
            self._meter = _OutboundMeter(self)
            transport.registerProducer(self._meter, True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open = False
        self._cancel_timers()
        factory = self.factory
        if isinstance(factory, ServerProtocolFactory) and not self._released:
            self._released = True
            factory.connectionClosed(self)

    def _cancel_timers(self) -> None:
        for timer in (self._handshake_timer, self._frame_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._handshake_timer = self._frame_timer = None

    def _timed_out(self, reason: CloseReason) -> None:
        if reason == CloseReason.HANDSHAKE_TIMEOUT:
            self._handshake_timer = None
            self.closeWithReason(reason, limit=self.limits.handshake_timeout)
        else:
            self._frame_timer = None
            self.closeWithReason(reason, limit=self.limits.frame_timeout,
                                 buffered=self._decoder.buffered)

    def handshakeDone(self) -> None:
        """The client completed Login (login node) or Auth (gateway): the handshake
        bound no longer applies to this connection."""
        timer, self._handshake_timer = self._handshake_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self.closeWithReason(e.reason, length=e.length, limit=e.limit)
            return
        if self._decoder.buffered:
            # a frame has begun: it must be complete within frame_timeout of its start
            # (a frame completed in this read means the partial one is a new frame)
            timer = self._frame_timer
            if timer is None:
                self._frame_timer = self.clock.callLater(
                    self.limits.frame_timeout, self._timed_out, CloseReason.FRAME_TIMEOUT)
            elif frames:
                timer.reset(self.limits.frame_timeout)
        elif self._frame_timer is not None:
            self._frame_timer.cancel()
            self._frame_timer = None
        requests = self._requests
        max_inflight = self.limits.max_inflight
        for proto, session, body in frames:
            cls = requests.get(proto)
            if cls is None:
                self.closeWithReason(CloseReason.UNKNOWN_PROTO, proto=proto, session=session)
                return
            if session == 0:
                # A response to session 0 would look like a push to the client.
                self.closeWithReason(CloseReason.ZERO_SESSION, proto=proto)
                return
            message = cls()
            try:
                message.ParseFromString(body)
            except Exception as e:
                # DecodeError with upb; the pure-Python runtime also raises
                # UnicodeDecodeError and friends for the same hostile bytes.
                self.closeWithReason(CloseReason.UNDECODABLE_BODY, proto=proto,
                                     session=session, error=str(e))
                return
            if self.inflight >= max_inflight:
                self.closeWithReason(CloseReason.TOO_MANY_REQUESTS, proto=proto,
                                     session=session, limit=max_inflight)
                return
            self.inflight += 1
            try:
                self.requestReceived(message, session)
            except ProtocolViolation as e:
                self.closeWithReason(e.reason, proto=proto, session=session, **e.fields)
                return
            except Exception:
                self.log.failure("request handler failed for proto {proto} session {session}",
                                 proto=proto, session=session, peer=self.peer)
                self.closeWithReason(CloseReason.HANDLER_ERROR, proto=proto, session=session)
                return
            if not self._open:
                return

    # -- what a node overrides or calls -------------------------------------

    def requestReceived(self, message: Message, session: int) -> None:
        """Handle one decoded request; answer later with ``reply(session, ...)``.

        The default calls the ``handler`` given to the constructor. Raise
        ``ProtocolViolation`` to close the connection with a reason.
        """
        if self.handler is None:
            raise NotImplementedError(f"{type(self).__qualname__} has no request handler")
        self.handler(self, message, session)

    @property
    def is_open(self) -> bool:
        """True until the connection is lost or the server decided to close it."""
        return self._open

    def reply(self, session: int, message: Message) -> bool:
        """Send the response ``message`` to request ``session``.

        The frame carries the request's id. Returns False (and sends
        nothing) once the connection is closed or closing, so late answers
        from slow handlers are harmless.
        """
        proto = self._response_ids.get(type(message))
        if proto is None:
            raise UnknownMessage(f"{type(message).__qualname__} is not a registered response")
        if session == 0:
            raise ValueError("session 0 is reserved for pushes")
        if self.inflight:
            self.inflight -= 1
        return self._send(proto, session, message)

    def replyError(self, session: int, request: Message | type[Message] | int,
                   code: int) -> bool:
        """Answer ``session`` with only an ``ErrorCode``, e.g. ``INTERNAL``.

        ``request`` is the request (instance, class or id) being answered;
        every ``Response`` starts with ``ErrorCode code = 1``, so this works
        for any request without knowing its response type.
        """
        proto = request if isinstance(request, int) else self.registry.id_of(request)
        response_cls = self.registry.response_class_of(proto)
        return self.reply(session, response_cls(code=code))

    def push(self, message: Message) -> bool:
        """Send an ``XxxNotify`` push (session 0); False if the connection is closed."""
        proto = self._push_ids.get(type(message))
        if proto is None:
            raise UnknownMessage(f"{type(message).__qualname__} is not a registered push")
        return self._send(proto, 0, message)

    def push_encoded(self, proto: int, body: bytes) -> bool:
        """Send a push already encoded (one encoding written to many players); *proto*
        must be a registered push id. False if the connection is closed."""
        if proto not in self.registry.pushes:
            raise UnknownMessage(f"message id {proto} is not a registered push")
        if not self._open or self.transport is None:
            return False
        if len(body) > MAX_DOWN_BODY:
            raise ValueError(f"push {proto}: body of {len(body)} bytes exceeds the "
                             "downstream frame limit")
        self.transport.write(DOWN_HEADER.pack(MIN_LENGTH + len(body), proto, 0) + body)
        return self._open

    def _send(self, proto: int, session: int, message: Message) -> bool:
        if not self._open or self.transport is None:
            return False
        body = message.SerializeToString()
        if len(body) > MAX_DOWN_BODY:
            raise ValueError(f"{type(message).__qualname__} body of {len(body)} bytes "
                             "exceeds the downstream frame limit")
        self.transport.write(DOWN_HEADER.pack(MIN_LENGTH + len(body), proto, session) + body)
        return self._open  # False when this write passed max_outbound (slow reader)

    def protocolErrorNotice(self, reason: str) -> Message | None:
        """What the client is told before a close for *reason*: a
        ``KickNotify{KICK_PROTOCOL_ERROR}`` for the reasons in ``PROTOCOL_ERRORS``."""
        if reason in PROTOCOL_ERRORS and pb.KickNotify in self._push_ids:
            return pb.KickNotify(reason=str(reason), code=pb.KickReason.KICK_PROTOCOL_ERROR)
        return None

    def closeWithReason(
        self, reason: str, *, notify: Message | None = None, abort: bool = False, **fields: Any
    ) -> None:
        """Close this connection, log why and count it under ``reason``.

        ``notify`` (e.g. a ``KickNotify``) is pushed first; without one, a
        protocol error pushes ``protocolErrorNotice(reason)``. ``abort`` drops
        the connection without flushing, for peers that do not read. Only the
        first call has an effect.
        """
        if not self._open:
            return
        if notify is None and not abort:
            notify = self.protocolErrorNotice(reason)
        if notify is not None:
            self.push(notify)
            if not self._open:
                return  # the notice itself passed max_outbound: closed as slow_reader
        self._open = False
        self._cancel_timers()
        self.close_reason = str(reason)
        self.closes[self.close_reason] += 1
        self.log.warn("closing client connection from {peer}: {reason}",
                      peer=self.peer, reason=self.close_reason, **fields)
        if self.transport is None:
            return
        if self._meter is not None:
            # a paused producer would keep the transport from ever closing
            self._meter = None
            cast(Any, self.transport).unregisterProducer()
        if abort:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()
        else:
            self.transport.loseConnection()


class ServerProtocolFactory(ServerFactory):
    """Builds ``protocol`` connections sharing one handler, close counter and limits.

    Refuses a connection (closed at once, nothing read) past ``limits.max_connections``
    open ones, or past ``limits.max_connections_per_ip`` from its source address when
    that is not 0; ``refused`` counts them by :class:`RefuseReason`.
    """

    protocol: type[ServerProtocol] = ServerProtocol
    log: ClassVar[Logger] = Logger()

    def __init__(self, handler: RequestHandler | None = None, *,
                 registry: Registry = REGISTRY, limits: ClientSettings | None = None,
                 clock: IReactorTime | None = None) -> None:
        self.handler = handler
        self.registry = registry
        self.limits = limits if limits is not None else ClientSettings()
        self.clock = clock if clock is not None else _default_clock()
        #: Server-side closes by reason, over all connections of this factory.
        self.closes: Counter[str] = Counter()
        #: Connections refused by reason.
        self.refused: Counter[str] = Counter()
        #: Open connections, in all and per source host.
        self.open_connections = 0
        self.per_host: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress | None) -> ServerProtocol | None:
        limits = self.limits
        host = getattr(addr, "host", None)
        if self.open_connections >= limits.max_connections:
            self._refuse(RefuseReason.MAX_CONNECTIONS, addr, limits.max_connections)
            return None
        per_ip = limits.max_connections_per_ip
        if per_ip and host is not None and self.per_host[host] >= per_ip:
            self._refuse(RefuseReason.MAX_CONNECTIONS_PER_IP, addr, per_ip)
            return None
        protocol = self.protocol(self.handler, registry=self.registry, closes=self.closes,
                                 limits=limits, clock=self.clock)
        protocol.factory = self
        # counted now: the transport connects it before it reads anything else
        self.open_connections += 1
        if host is not None:
            self.per_host[host] += 1
        protocol._counted_host = host
        return protocol

    def _refuse(self, reason: RefuseReason, addr: IAddress | None, limit: int) -> None:
        """Count a refusal (``buildProtocol`` then returns None: the listening port closes
        the socket at once)."""
        self.refused[reason] += 1
        n = self.refused[reason]
        if n & (n - 1) == 0:  # logged the 1st, 2nd, 4th, 8th ... time: no log flood
            self.log.warn("refusing client connection from {peer}: {reason} (limit "
                          "{limit}; {n} refused so far)", peer=addr, reason=str(reason),
                          limit=limit, n=self.refused[reason])

    def connectionClosed(self, protocol: ServerProtocol) -> None:
        """A connection this factory built went away: it no longer counts."""
        self.open_connections -= 1
        host = protocol._counted_host
        if host is not None:
            left = self.per_host[host] - 1
            if left > 0:
                self.per_host[host] = left
            else:
                del self.per_host[host]
