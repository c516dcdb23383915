"""Network details rltwist's nodes and tools share: the accept backlog of every listening
socket, the kernel's count of connections dropped because a backlog was full, a bounded
read of an HTTP response body, and how a client-chosen string goes into a log line.

Twisted's default backlog is 50. A burst of new connections larger than that (200 bots
logging in at once, each login asking the SDK over a new HTTP connection; a scrape of many
targets; a region's nodes all connecting at start) overflows the accept queue: the kernel
drops the SYN and the client retries after its 1 s retransmit timeout, which shows up as a
1 s tail in every latency figure. The kernel caps any backlog at
``net.core.somaxconn`` (4096 on current Linux).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

#: the SDK, GM, metrics and cluster listeners
LISTEN_BACKLOG = 1024
#: game client listeners (login, role): a login storm opens thousands of connections
CLIENT_BACKLOG = 4096


LOGGED_TEXT = 80
"""Characters of a client-chosen string (an openid) that a log line quotes."""


def loggable(text: Any, limit: int = LOGGED_TEXT) -> str:
    """*text* as a log line may quote it: ``repr`` (control characters and newlines
    escaped, so a client cannot forge log lines) of at most *limit* characters."""
    if not isinstance(text, str):
        return repr(text)[:limit]
    if len(text) > limit:
        return repr(text[:limit]) + f"...({len(text)} chars)"
    return repr(text)


def listen_overflows() -> int | None:
    """The kernel's ``TcpExt ListenOverflows`` counter for this network namespace (what
    ``nstat TcpExtListenOverflows`` shows), or None where /proc/net/netstat is missing."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            if "ListenOverflows" in row:
                return int(row["ListenOverflows"])
    return None


class BodyTooLarge(Exception):
    """A response body passed the limit of ``read_body``."""


class _BoundedBody(protocol.Protocol):
    """Collects a response body up to ``limit`` bytes; past it, or when the read is
    cancelled (a timeout), hangs up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.producer: Any = None
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self._abort())

    def makeConnection(self, transport: Any) -> None:
        # a response body's transport is a producer; stopping it closes the connection
        self.producer = transport
        super().makeConnection(transport)

    def _abort(self) -> None:
        if self.producer is not None:
            self.producer.stopProducing()

    def refuse(self, size: int) -> None:
        """Fail with BodyTooLarge and stop the transfer (the connection closes)."""
        if not self.done.called:
            self.done.errback(BodyTooLarge(size))
        self._abort()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.refuse(self.size)
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def read_body(response: Any, limit: int) -> defer.Deferred[bytes]:
    """The body of ``response`` (an ``IResponse``), or BodyTooLarge as soon as it passes
    *limit* bytes (at once when its Content-Length says so). Cancelling the Deferred (as
    ``addTimeout`` does) closes the connection: a peer that stops sending half-way leaves
    nothing open behind."""
    reader = _BoundedBody(limit)
    response.deliverBody(reader)
    if isinstance(response.length, int) and response.length > limit:
        reader.refuse(response.length)
    return reader.done
