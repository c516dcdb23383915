"""The error types every caller of ``call``/``send`` can see, local or remote alike.

Each error names the node, service and method involved, so a log line is enough to find
the failing piece. They all derive from :class:`ClusterError`.
"""

from __future__ import annotations


class ClusterError(Exception):
    """Base of every error raised by the cluster layer."""

    def __init__(self, node: str, service: str = "", method: str = "", detail: str = "") -> None:
        self.node = node
        self.service = service
        self.method = method
        self.detail = detail
        super().__init__(self._describe())

    def _target(self) -> str:
        if self.service:
            return f"{self.node}.{self.service}.{self.method}"
        return self.node

    def _describe(self) -> str:
        return f"{self._target()}: {self.detail}" if self.detail else self._target()


class UnknownNode(ClusterError):
    """The name table has no address for the node."""

    def _describe(self) -> str:
        return f"{self._target()}: unknown node {self.node!r} (not in the name table)"


class NodeUnreachable(ClusterError):
    """The message was not sent: no link to the node within the bound, or the node was
    removed or this node stopped. A call that fails with exactly this type never ran.
    (Its subclass :class:`LinkLost` is the exception: that call was sent.)"""

    def _describe(self) -> str:
        return f"{self._target()}: node {self.node} unreachable: {self.detail}"


class LinkLost(NodeUnreachable):
    """The connection carrying the call broke (or the peer stopped answering) before the
    reply came back; the call was sent and may have run."""

    def _describe(self) -> str:
        return f"{self._target()}: link to {self.node} lost before the reply: {self.detail}"


class OutboundFull(NodeUnreachable):
    """The bytes waiting for this node reached ``cluster.max_outbound`` (it is not reading
    fast enough, or not at all): the call was refused before it was sent."""

    def _describe(self) -> str:
        return f"{self._target()}: not sent: {self.detail}"


class CallTimeout(ClusterError):
    """The call was sent but no reply came within its timeout; it may have run."""

    def __init__(self, node: str, service: str, method: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(node, service, method, f"no reply within {timeout:g}s")


class RemoteError(ClusterError):
    """The handler raised; ``kind`` is the exception's class name on the serving node."""

    def __init__(self, node: str, service: str, method: str, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(node, service, method, f"{kind}: {message}")


class UnknownService(RemoteError):
    """The target node has no service of that name."""


class UnknownMethod(RemoteError):
    """The service has no handler of that name."""


class BadArguments(RemoteError):
    """Arguments could not be encoded, or did not fit the handler's signature."""


class MessageTooLarge(BadArguments):
    """The encoded call, send or reply is larger than ``cluster.max_message``; it was not
    written, and the link and the other calls on it are unaffected."""


# Error kinds with a dedicated class; any other handler exception arrives as RemoteError.
REMOTE_KINDS: dict[str, type[RemoteError]] = {
    "UnknownService": UnknownService,
    "UnknownMethod": UnknownMethod,
    "BadArguments": BadArguments,
    "MessageTooLarge": MessageTooLarge,
}


def remote_error(node: str, service: str, method: str, kind: str, message: str) -> RemoteError:
    """Rebuild the typed error for an error frame."""
    return REMOTE_KINDS.get(kind, RemoteError)(node, service, method, kind, message)
