"""Node-to-node links: the wire format, the HMAC handshake and the two link protocols.

Wire: a stream of msgpack arrays (msgpack is self-delimiting, so no length prefix and no
size cap other than ``max_message``). After the handshake a sender link carries

    CALL    [0, session, service, method, args]   sender -> agent
    SEND    [1, service, method, args]            sender -> agent
    REPLY   [2, session, result]                  agent -> sender
    ERROR   [3, session, kind, message]           agent -> sender
    PING    [4, token]                            sender -> agent
    PONG    [5, token]                            agent -> sender
    REFUSED [6, service, method]                  agent -> sender (a send it has no handler for)

The agent handles frames in order, so a PONG also tells the sender that every send written
before its PING was handed to its handler (see ``Sender`` for what that is used for).

Handshake (a stranger can invoke nothing; both ends prove they hold the cluster secret):

    agent  -> [HELLO, agent_name, nonce_a]
    sender -> [AUTH, sender_name, nonce_s, HMAC(secret, "S" | nonce_a | sender | agent)]
    agent  -> [OK, HMAC(secret, "A" | nonce_s | agent | sender)]

The agent switches to its large frame decoder before it answers OK, and the sender sends
nothing before it has checked OK, so no bytes are ever read by the wrong decoder.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import os
from collections.abc import Callable, Iterator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import msgpack
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IDelayedCall, IPullProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from rltwist.cluster.core import Cluster
    from rltwist.cluster.sender import Sender

log = Logger()

CALL, SEND, REPLY, ERROR, PING, PONG, REFUSED = 0, 1, 2, 3, 4, 5, 6
HELLO, AUTH, OK = 10, 11, 12
HANDSHAKE_MAX = 4096
# The decoder holds at most one partial frame plus one read from the socket (Twisted reads
# 64 KiB at a time): with this slack a frame of max_message bytes is always accepted.
READ_SLACK = 256 * 1024
ERROR_MESSAGE_MAX = 16 * 1024  # an error frame carries at most this much of the message
_CONNECTION_DONE = Failure(ConnectionError("connection closed"))
NONCE_BYTES = 16
# Results of these types are encoded and replied at once, without checking whether they
# are a coroutine or a Deferred (an isinstance check against Deferred, an ABC, is slow).
PLAIN_TYPES = frozenset({type(None), bool, int, float, str, bytes, list, dict, tuple})
_LATER = object()  # a handler's reply will be written when its Deferred fires

_packer = msgpack.Packer(use_bin_type=True)
pack: Callable[[Any], bytes] = _packer.pack


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _unpacker(max_buffer: int) -> msgpack.Unpacker:
    return msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=max_buffer)


def arguments_mismatch(fn: Callable[..., Any], args: Any) -> str | None:
    """Why calling *fn* with *args* is a TypeError of the call itself (wrong number or names
    of arguments, args not a list), or None if they fit and the TypeError came from inside.
    Only used once a handler raised TypeError, so the signature lookup is off the hot path."""
    try:
        inspect.signature(fn).bind(*args)
    except TypeError as e:
        return str(e)
    except ValueError:  # no signature to check against
        return None
    return None


def mac(secret: bytes, role: bytes, nonce: bytes, me: str, peer: str) -> bytes:
    msg = role + nonce + me.encode() + b"\0" + peer.encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()


class ProtocolViolation(Exception):
    """The peer sent something the link protocol does not allow."""


class _Link(Protocol):
    """What both ends share: incremental decoding, a handshake deadline, closing with a reason."""

    peer_name = "?"
    ready = False
    _handshake_timer: IDelayedCall | None = None

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._unpacker = _unpacker(HANDSHAKE_MAX)

    def connectionMade(self) -> None:
        # Without TCP_NODELAY a small frame written while earlier bytes are unacknowledged
        # waits for the peer's delayed ACK: a send, which gets no reply to carry that ACK,
        # then arrives ~40 ms late. Twisted already writes a reactor turn's frames together.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self._handshake_timer = self.cluster.reactor.callLater(
            self.cluster.settings.connect_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self.close_with_reason("handshake not completed in time")

    def _handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._unpacker = _unpacker(self.cluster.settings.max_message + READ_SLACK)
        self.ready = True

    def peer_address(self) -> str:
        try:
            p = self.transport.getPeer()  # type: ignore[union-attr]
            if isinstance(p, IPv4Address | IPv6Address):
                return f"{p.host}:{p.port}"
            return "?"  # no host:port (not TCP)
        except Exception:
            return "?"

    def close_with_reason(self, reason: str, label: str | None = None) -> None:
        """Abort the connection, log *reason* and count it (under *label* if given)."""
        log.warn("{node}: closing link with {peer} ({address}): {reason}",
                 node=self.cluster.name, peer=self.peer_name, address=self.peer_address(),
                 reason=reason)
        self.cluster.stats.link_closed(reason, label)
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        try:
            unpacker = self._unpacker
            unpacker.feed(data)
            if not self.ready:
                for msg in unpacker:
                    self.handshake(msg)
                    if self.ready or self.transport is None or self.transport.disconnecting:  # type: ignore[attr-defined]
                        break
                if not self.ready:
                    return
                # anything that came behind the handshake is frames; the old decoder holds it
            self.frames(unpacker)
        except (ProtocolViolation, ValueError, TypeError, IndexError, KeyError,
                msgpack.UnpackException, msgpack.BufferFull) as e:  # KeyError: a map frame
            self.close_with_reason(f"protocol violation: {type(e).__name__}: {e}")

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def handshake(self, msg: Any) -> None:
        raise NotImplementedError

    def frames(self, msgs: Iterator[Any]) -> None:
        """Handle every complete frame in *msgs* (the loop lives here: it is the hot path)."""
        raise NotImplementedError


class AgentLink(_Link):
    """Accepted link: authenticates the caller, then runs its calls and sends."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self._nonce = os.urandom(NONCE_BYTES)
        self.transport.write(pack([HELLO, self.cluster.name, self._nonce]))  # type: ignore[union-attr]

    def handshake(self, msg: Any) -> None:
        if type(msg) is not list or len(msg) != 4 or msg[0] != AUTH:
            raise ProtocolViolation("expected AUTH")
        _, name, nonce, their_mac = msg
        if not isinstance(name, str) or not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise ProtocolViolation("malformed AUTH")
        self.peer_name = name
        secret = self.cluster.settings.secret
        expected = mac(secret, b"S", self._nonce, name, self.cluster.name)
        if not isinstance(their_mac, bytes) or not hmac.compare_digest(expected, their_mac):
            self.cluster.stats.auth_failures += 1
            self.close_with_reason("authentication failed (wrong cluster secret?)")
            return
        self._handshake_done()
        self.cluster.agent_links.add(self)
        self.transport.write(pack([OK, mac(secret, b"A", nonce, self.cluster.name, name)]))  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        super().connectionLost(reason)
        self.cluster.agent_links.discard(self)

    def frames(self, msgs: Iterator[Any]) -> None:
        # Replies computed while handling one read are written together at the end: the
        # peer gets them in the same segments, and the per-write cost of the transport is
        # paid once per read instead of once per call.
        cluster = self.cluster
        if not self.ready:  # the handshake guarantees this never happens: prove it
            self._unauthenticated(msgs)
            return
        handlers = cluster.handlers
        calls_in = cluster.stats.calls_in
        max_message = cluster.settings.max_message
        replies: list[bytes] = []
        try:
            for msg in msgs:
                kind = msg[0]
                if kind == CALL:
                    _, session, service, method, args = msg
                    methods = handlers.get(service)
                    fn = methods.get(method) if methods is not None else None
                    if fn is None:
                        cluster.stats.unknown_in(calls_in, service, methods is not None)
                        self._error(session, *cluster.missing_target(service, method))
                        continue
                    calls_in[service][method] += 1  # registered: the counter exists
                    try:
                        result = fn(*args)
                        if type(result) not in PLAIN_TYPES:
                            result = self._settle(result, session, service, method)
                            if result is _LATER:
                                continue
                    except TypeError as e:
                        self._raised(e, fn, args, session, service, method)
                        continue
                    except Exception:
                        self._error_later(Failure(), session, (service, method))
                        continue
                    try:
                        replies.append(pack((REPLY, session, result)))
                    except (TypeError, ValueError, OverflowError):
                        self._reply(session, result)
                elif kind == SEND:
                    _, service, method, args = msg
                    if cluster.dispatch_send(self.peer_name, service, method, args):
                        replies.append(pack((REFUSED, service, method)))
                elif kind == PING:
                    replies.append(pack((PONG, msg[1])))
                else:
                    raise ProtocolViolation(f"frame kind {kind!r} not allowed towards an agent")
        finally:
            if replies and self.transport is not None:
                # One join and one write: writeSequence costs two Python loops per frame,
                # and the transport would join the frames anyway. One length check then
                # covers max_message for every reply of the read.
                data = b"".join(replies)
                if len(data) > max_message:
                    data = b"".join([self._fit(frame) for frame in replies])
                self.transport.write(data)

    def _unauthenticated(self, msgs: Iterator[Any]) -> None:
        """Frames reached dispatch on a link that never authenticated: run none of them,
        count the calls and sends (``rl_cluster_unauthenticated_dispatches``), close."""
        n = sum(1 for msg in msgs if type(msg) is list and msg and msg[0] in (CALL, SEND))
        self.cluster.stats.unauthenticated_dispatches += n
        log.critical("{node}: {n} calls/sends from unauthenticated peer {address} reached "
                     "dispatch; refused", node=self.cluster.name, n=n,
                     address=self.peer_address())
        self.close_with_reason("dispatch before authentication", "unauthenticated")

    def _fit(self, frame: bytes) -> bytes:
        """*frame*, or if it is larger than ``max_message`` the error frame saying so (the
        caller's decoder would otherwise take the whole link down)."""
        limit = self.cluster.settings.max_message
        if len(frame) <= limit:
            return frame
        header = msgpack.Unpacker(raw=False)
        header.feed(frame[:64])
        header.read_array_header()
        kind, session = header.unpack(), header.unpack()
        if kind != REPLY:
            raise ProtocolViolation(f"frame of {len(frame)} bytes of kind {kind}")
        self.cluster.stats.error("MessageTooLarge")
        return pack([ERROR, session, "MessageTooLarge",
                     f"reply of {len(frame)} bytes exceeds cluster.max_message ({limit})"])

    def _raised(self, e: TypeError, fn: Callable[..., Any], args: Any, session: int,
                service: str, method: str) -> None:
        """A handler raised TypeError: the caller's arguments (BadArguments, not logged as
        a handler failure) or a bug inside the handler (logged, sent as TypeError)."""
        why = arguments_mismatch(fn, args)
        if why is None:
            self._error_later(Failure(e), session, (service, method))
            return
        log.warn("{node}: call {service}.{method} from {caller} has bad arguments: {why}",
                 node=self.cluster.name, service=service, method=method,
                 caller=self.peer_name, why=why)
        self._error(session, "BadArguments", why)

    def _settle(self, result: Any, session: int, service: str, method: str) -> Any:
        """The value to reply now, or _LATER if *result* is a Deferred or a coroutine that
        has to wait (its reply or error is then written when it fires)."""
        if type(result) is CoroutineType:
            try:
                result.send(None)
            except StopIteration as done:
                return done.value
            result = defer.Deferred.fromCoroutine(result)
        if isinstance(result, defer.Deferred):
            result.addCallbacks(self._reply_later, self._error_later,
                                callbackArgs=(session,), errbackArgs=(session, (service, method)))
            return _LATER
        return result

    def _reply(self, session: int, result: Any) -> None:
        """Write the reply of *session*, or the typed error that says why it cannot be."""
        try:
            frame = self._fit(pack([REPLY, session, result]))
        except (TypeError, ValueError, OverflowError) as e:
            self.cluster.stats.error("BadArguments")
            frame = pack([ERROR, session, "BadArguments", f"result not encodable: {e}"])
        if self.transport is not None:
            self.transport.write(frame)

    def _reply_later(self, result: Any, session: int) -> None:
        self._reply(session, result)

    def _error_later(self, failure: Failure, session: int, key: tuple[str, str]) -> None:
        e = failure.value
        self.cluster.handler_failed(failure, key[0], key[1], self.peer_name)
        self._error(session, type(e).__name__, str(e))

    def _error(self, session: int, kind: str, message: str) -> None:
        self.cluster.stats.error(kind)
        if len(message) > ERROR_MESSAGE_MAX:
            message = message[:ERROR_MESSAGE_MAX] + "..."
        if self.transport is not None:
            self.transport.write(pack([ERROR, session, kind, message]))


@implementer(IPullProducer)
class SenderLink(_Link):
    """Outgoing link owned by one Sender: authenticates, then carries its calls and sends.

    Once ready it is a pull producer of its transport: the transport calls
    ``resumeProducing`` each time it has handed everything written so far to the kernel,
    which is how the sender learns that the peer is reading (see ``Sender.drained``).
    """

    asked = False  # the transport has asked for data at least once

    def __init__(self, cluster: Cluster, sender: Sender, attempt: int) -> None:
        super().__init__(cluster)
        self.sender = sender
        self.attempt = attempt
        self.peer_name = sender.node
        self._nonce = os.urandom(NONCE_BYTES)

    def resumeProducing(self) -> None:
        self.asked = True
        self.sender.drained(self)

    def stopProducing(self) -> None:
        """The connection is going away; ``connectionLost`` tells the sender."""

    def handshake(self, msg: Any) -> None:
        if type(msg) is not list or not msg:
            raise ProtocolViolation("malformed handshake frame")
        secret = self.cluster.settings.secret
        if msg[0] == HELLO and len(msg) == 3:
            _, name, nonce = msg
            if name != self.sender.node:
                self.close_with_reason(
                    f"address {self.peer_address()} answered as node {name!r}, "
                    f"expected {self.sender.node!r} (stale name table?)")
                return
            if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
                raise ProtocolViolation("malformed HELLO")
            self.transport.write(pack([  # type: ignore[union-attr]
                AUTH, self.cluster.name, self._nonce,
                mac(secret, b"S", nonce, self.cluster.name, name)]))
        elif msg[0] == OK and len(msg) == 2:
            expected = mac(secret, b"A", self._nonce, self.sender.node, self.cluster.name)
            if not isinstance(msg[1], bytes) or not hmac.compare_digest(expected, msg[1]):
                self.close_with_reason("peer failed authentication (wrong cluster secret?)")
                return
            self._handshake_done()
            self.sender.link_ready(self)
        else:
            raise ProtocolViolation(f"unexpected handshake frame {msg[0]!r}")

    def frames(self, msgs: Iterator[Any]) -> None:
        self.sender.received(msgs)

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        super().connectionLost(reason)
        self.sender.link_lost(self, reason)
