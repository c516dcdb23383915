"""Server side of the client protocol: one game client connection.

Used by the login node's loginserver and the role node's gateway. The
protocol turns upstream frames into protobuf requests and hands each one with
its session to ``requestReceived``; the node answers later with ``reply``
and sends unsolicited messages with ``push``. Anything malformed closes this
connection only, with a logged reason counted per reason for metrics.

Node policy (request before Auth, Auth twice, ...) lives in the node:
override ``requestReceived`` and raise ``ProtocolViolation`` or call
``closeWithReason``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ClassVar

from google.protobuf.message import Message
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

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
    # Policies the nodes enforce through ProtocolViolation / closeWithReason.
    REQUEST_BEFORE_AUTH = "request_before_auth"
    AUTH_TWICE = "auth_twice"
    KICKED = "kicked"


class ProtocolViolation(Exception):
    """Raised by a request handler to close the connection with ``reason``.

    Extra keyword arguments become structured fields of the log event.
    """

    def __init__(self, reason: str, **fields: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields


RequestHandler = Callable[["ServerProtocol", Message, int], object]


class ServerProtocol(Protocol):
    """Accepts upstream frames from one game client; answers downstream.

    Subclass and override ``requestReceived``, or pass ``handler`` (called as
    ``handler(protocol, message, session)``). ``closes`` counts closes by
    reason; the factory shares one counter between its connections.
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
    ) -> None:
        self.handler = handler
        self.registry = registry
        self.closes: Counter[str] = Counter() if closes is None else closes
        #: First reason this connection was closed for by the server, if any.
        self.close_reason: str | None = None
        self.peer: IAddress | None = None
        self._open = False
        self._decoder = FrameDecoder(downstream=False, max_length=self.max_length)
        self._requests = registry.requests
        self._response_ids = registry.response_ids
        self._push_ids = registry.push_ids

    # -- Twisted callbacks --------------------------------------------------

    def connectionMade(self) -> None:
        self._open = True
        self.peer = self.transport.getPeer() if self.transport is not None else None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._open = False

    def dataReceived(self, data: bytes) -> None:
        if not self._open:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as e:
            self.closeWithReason(e.reason, length=e.length, limit=e.limit)
            return
        requests = self._requests
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

    def _send(self, proto: int, session: int, message: Message) -> bool:
        if not self._open or self.transport is None:
            return False
        body = message.SerializeToString()
        if len(body) > MAX_DOWN_BODY:
            raise ValueError(f"{type(message).__qualname__} body of {len(body)} bytes "
                             "exceeds the downstream frame limit")
        self.transport.write(DOWN_HEADER.pack(MIN_LENGTH + len(body), proto, session) + body)
        return True

    def closeWithReason(
        self, reason: str, *, notify: Message | None = None, abort: bool = False, **fields: Any
    ) -> None:
        """Close this connection, log why and count it under ``reason``.

        ``notify`` (e.g. a ``KickNotify``) is pushed first. ``abort`` drops
        the connection without flushing, for peers that do not read. Only the
        first call has an effect.
        """
        if not self._open:
            return
        if notify is not None:
            self.push(notify)
        self._open = False
        self.close_reason = str(reason)
        self.closes[self.close_reason] += 1
        self.log.warn("closing client connection from {peer}: {reason}",
                      peer=self.peer, reason=self.close_reason, **fields)
        if self.transport is None:
            return
        if abort:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()
        else:
            self.transport.loseConnection()


class ServerProtocolFactory(ServerFactory):
    """Builds ``protocol`` connections sharing one handler and close counter."""

    protocol: type[ServerProtocol] = ServerProtocol

    def __init__(self, handler: RequestHandler | None = None, *,
                 registry: Registry = REGISTRY) -> None:
        self.handler = handler
        self.registry = registry
        #: Server-side closes by reason, over all connections of this factory.
        self.closes: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress | None) -> ServerProtocol:
        protocol = self.protocol(self.handler, registry=self.registry, closes=self.closes)
        protocol.factory = self
        return protocol
