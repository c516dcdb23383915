"""The Cluster: one per node. It owns the name table, the senders, the listening agent
and the local services, and offers the one API: ``call`` and ``send``.

A call to a service on this very node takes the same path semantically as a remote one:
arguments and results are copied through msgpack, and errors arrive as the same types
(:mod:`rltwist.cluster.errors`). A local call may complete before ``call`` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort, IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from rltwist.cluster.errors import (
    BadArguments,
    NodeUnreachable,
    RemoteError,
    UnknownNode,
    remote_error,
)
from rltwist.cluster.link import PLAIN_TYPES, SEND, AgentLink, pack, unpack
from rltwist.cluster.metrics import ClusterCollector, Stats
from rltwist.cluster.sender import Sender
from rltwist.cluster.service import Service
from rltwist.config import ClusterSettings

log = Logger()


class ListenError(Exception):
    """The node could not open its cluster port; str() says which address and why."""


class _AgentFactory(Factory):
    noisy = False

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def buildProtocol(self, addr: Any) -> AgentLink:
        return AgentLink(self.cluster)


class Cluster(service.Service):
    """call/send for one node, plus the machinery behind them."""

    def __init__(self, name: str, settings: ClusterSettings,
                 addresses: Mapping[str, tuple[str, int]] | None = None,
                 listen: tuple[str, int] | None = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor: IReactorTCP & IReactorTime & IReactorCore = reactor  # type: ignore[valid-type]
        self.name = name
        self.settings = settings
        self.listen_address = listen
        self.addresses: dict[str, tuple[str, int]] = dict(addresses or {})
        self.services: dict[str, Service] = {}
        self.handlers: dict[str, dict[str, Callable[..., Any]]] = {}
        self.senders: dict[str, Sender] = {}
        self.agent_links: set[AgentLink] = set()
        self.stats = Stats()
        self._calls_out = self.stats.calls_out  # the hot paths skip one attribute lookup
        self._sends_out = self.stats.sends_out
        self.collector = ClusterCollector(self.stats, lambda: self.senders)
        self.pack = pack
        self.port: IListeningPort | None = None
        self._sweeper = LoopingCall(self._expire)
        self._sweeper.clock = reactor

    # -- the public API ------------------------------------------------------------------

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        """Call *method* of *service* on *node*; the Deferred fires with its result.

        Fails with a :class:`ClusterError`: UnknownNode, NodeUnreachable/LinkLost,
        CallTimeout (default ``cluster.call_timeout``), or RemoteError naming node,
        service and method.
        """
        per = self._calls_out[service]
        out = per.get(method) or self.stats.out_calls(service, method)
        out.made += 1
        if timeout is None:
            timeout = self.settings.call_timeout
        sender = self.senders.get(node)
        if sender is None:
            if node == self.name:
                return self._local_call(service, method, args)
            sender = self._sender(node)
            if sender is None:
                self.stats.error("UnknownNode")
                return defer.fail(UnknownNode(node, service, method))
        try:
            return sender.call(out, args, timeout)
        except (TypeError, ValueError, OverflowError) as e:
            self.stats.error("BadArguments")
            return defer.fail(BadArguments(node, service, method, "BadArguments",
                                           f"arguments not encodable: {e}"))
        except NodeUnreachable as e:
            return defer.fail(NodeUnreachable(node, service, method, e.detail))

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        """Deliver *method* of *service* on *node* without waiting for a result.

        Order is kept per target node. Raises UnknownNode or BadArguments at once; a send
        that cannot be delivered within ``cluster.unreachable_after`` is counted and logged.
        """
        per = self._sends_out[service]
        per[method] = per.get(method, 0) + 1
        try:
            frame = pack((SEND, service, method, args))
        except (TypeError, ValueError, OverflowError) as e:
            self.stats.error("BadArguments")
            raise BadArguments(node, service, method, "BadArguments",
                               f"arguments not encodable: {e}") from None
        sender = self.senders.get(node)
        if sender is None:
            if node == self.name:
                self.dispatch_send(self.name, service, method, unpack(frame)[3])
                return
            sender = self._sender(node)
            if sender is None:
                self.stats.error("UnknownNode")
                raise UnknownNode(node, service, method)
        sender.send(frame)

    def register(self, svc: Service) -> Service:
        """Make *svc* reachable as ``svc.name`` on this node."""
        if not svc.name:
            raise ValueError(f"{type(svc).__name__} has no name")
        if svc.name in self.services:
            raise ValueError(f"{self.name}: service {svc.name!r} registered twice")
        svc.cluster = self
        self.services[svc.name] = svc
        self.handlers[svc.name] = svc.handlers()
        svc.attached(self)
        return svc

    # -- name table ----------------------------------------------------------------------

    def set_address(self, node: str, host: str, port: int) -> None:
        """Add or change a node's address; a live sender is re-targeted at once."""
        address = (host, port)
        old = self.addresses.get(node)
        self.addresses[node] = address
        if old != address:
            sender = self.senders.get(node)
            if sender is not None:
                sender.retarget(address)

    def remove_node(self, node: str) -> None:
        """Forget a node: its sender's pending calls fail, queued sends are dropped."""
        self.addresses.pop(node, None)
        sender = self.senders.pop(node, None)
        if sender is not None:
            sender.close(UnknownNode(node, detail="removed from the name table"))

    def _sender(self, node: str) -> Sender | None:
        address = self.addresses.get(node)
        if address is None or node == self.name:  # this node is reached without a link
            return None
        sender = self.senders[node] = Sender(self, node, address)
        return sender

    # -- serving -------------------------------------------------------------------------

    def missing_target(self, service: str, method: str) -> tuple[str, str]:
        if service not in self.handlers:
            return "UnknownService", f"node {self.name} has no service {service!r}"
        return "UnknownMethod", f"service {service!r} on {self.name} has no handler {method!r}"

    def handler_failed(self, failure: Failure, service: str, method: str, caller: str) -> None:
        log.failure("{node}: handler {service}.{method} (called by {caller}) failed",
                    failure, level=LogLevel.error, node=self.name, service=service,
                    method=method, caller=caller)

    def dispatch_send(self, caller: str, service: str, method: str, args: list[Any]) -> None:
        stats = self.stats
        per = stats.sends_in[service]
        per[method] = per.get(method, 0) + 1
        handlers = self.handlers.get(service)
        fn = handlers.get(method) if handlers is not None else None
        if fn is None:
            kind, message = self.missing_target(service, method)
            stats.error(kind)
            log.warn("{node}: send from {caller} dropped: {message}", node=self.name,
                     caller=caller, message=message)
            return
        try:
            result = fn(*args)
            if type(result) in PLAIN_TYPES:
                return
            if type(result) is CoroutineType:
                try:
                    result.send(None)
                except StopIteration:
                    return
                result = defer.Deferred.fromCoroutine(result)
            if isinstance(result, defer.Deferred):
                result.addErrback(self._send_failed, service, method, caller)
        except Exception:
            self._send_failed(Failure(), service, method, caller)

    def _send_failed(self, failure: Failure, service: str, method: str, caller: str) -> None:
        self.stats.error(type(failure.value).__name__)
        self.handler_failed(failure, service, method, caller)

    def _local_call(self, service: str, method: str, args: tuple[Any, ...]) -> defer.Deferred[Any]:
        stats = self.stats
        per = stats.calls_in[service]
        per[method] = per.get(method, 0) + 1
        try:
            copied = unpack(pack(list(args)))
        except (TypeError, ValueError, OverflowError) as e:
            stats.error("BadArguments")
            return defer.fail(BadArguments(self.name, service, method, "BadArguments",
                                           f"arguments not encodable: {e}"))
        handlers = self.handlers.get(service)
        fn = handlers.get(method) if handlers is not None else None
        if fn is None:
            kind, message = self.missing_target(service, method)
            stats.error(kind)
            return defer.fail(remote_error(self.name, service, method, kind, message))

        def copy_result(result: Any) -> Any:
            try:
                return unpack(pack(result))
            except (TypeError, ValueError, OverflowError) as e:
                stats.error("BadArguments")
                raise BadArguments(self.name, service, method, "BadArguments",
                                   f"result not encodable: {e}") from None

        def to_remote_error(failure: Failure) -> Failure:
            if isinstance(failure.value, RemoteError):
                return failure
            self.handler_failed(failure, service, method, self.name)
            stats.error(type(failure.value).__name__)
            return Failure(RemoteError(self.name, service, method, type(failure.value).__name__,
                                       str(failure.value)))

        d = defer.maybeDeferred(fn, *copied)
        return d.addCallbacks(copy_result, to_remote_error)

    # -- service lifecycle ---------------------------------------------------------------

    def listen(self) -> None:
        """Open the cluster port now; raise ListenError with a clear message on failure."""
        if self.listen_address is None or self.port is not None:
            return
        host, port = self.listen_address
        try:
            self.port = self.reactor.listenTCP(port, _AgentFactory(self), interface=host)
        except error.CannotListenError as e:
            raise ListenError(f"{self.name}: cannot listen on {host}:{port}: "
                              f"{e.socketError}") from None

    def startService(self) -> None:
        self.listen()
        super().startService()
        self._sweeper.start(self.settings.timeout_tick, now=False)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        if self._sweeper.running:
            self._sweeper.stop()
        senders, self.senders = self.senders, {}
        for sender in senders.values():
            sender.close(NodeUnreachable(sender.node, detail=f"{self.name} is stopping"))
        for link in list(self.agent_links):
            if link.transport is not None:
                link.transport.loseConnection()
        port, self.port = self.port, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None

    def _expire(self) -> None:
        now = self.reactor.seconds()
        for sender in list(self.senders.values()):
            sender.expire(now)
