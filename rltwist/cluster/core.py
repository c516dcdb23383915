"""The Cluster: one per node. It owns the name table, the senders, the listening agent
and the local services, and offers the one API: ``call`` and ``send``.

A call to a service on this very node takes the same path semantically as a remote one:
arguments and results are copied through msgpack, errors arrive as the same types
(:mod:`rltwist.cluster.errors`) and the timeout applies. A local call may complete before
``call`` returns.

Link bounds (outbound bytes, liveness pings, message size) live in the senders, see
:mod:`rltwist.cluster.sender`; their settings are ``cluster.max_outbound``,
``ping_interval`` and ``ping_timeout`` (with defaults here until the config carries them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import CoroutineType
from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorCore,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from rltwist.cluster.errors import (
    BadArguments,
    CallTimeout,
    ClusterError,
    MessageTooLarge,
    NodeUnreachable,
    RemoteError,
    UnknownNode,
    remote_error,
)
from rltwist.cluster.link import (
    PLAIN_TYPES,
    SEND,
    AgentLink,
    arguments_mismatch,
    pack,
    unpack,
)
from rltwist.cluster.metrics import UNKNOWN, ClusterCollector, OutCalls, Stats, count
from rltwist.cluster.routing import Routing
from rltwist.cluster.sender import Sender
from rltwist.cluster.service import Service
from rltwist.config import ClusterSettings
from rltwist.net import LISTEN_BACKLOG

log = Logger()

# Defaults of the link bounds, used while ClusterSettings does not carry them.
DEFAULT_MAX_OUTBOUND = 64 * 1024 * 1024
DEFAULT_PING_INTERVAL = 1.0
DEFAULT_PING_TIMEOUT = 5.0


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

    # twisted's Service declares ``name = None`` untyped, so mypy infers the type None; the
    # cluster always has its node's name from __init__ on.
    name: str  # type: ignore[assignment]

    def __init__(self, name: str, settings: ClusterSettings,
                 addresses: Mapping[str, tuple[str, int]] | None = None,
                 listen: tuple[str, int] | None = None, reactor: Any = None, *,
                 max_outbound: int | None = None, ping_interval: float | None = None,
                 ping_timeout: float | None = None) -> None:
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
        # bytes waiting per peer; a silent link is pinged, and lost when nothing comes back
        self.max_outbound: int = (max_outbound if max_outbound is not None else
                                  getattr(settings, "max_outbound", DEFAULT_MAX_OUTBOUND))
        self.ping_interval: float = (ping_interval if ping_interval is not None else
                                     getattr(settings, "ping_interval", DEFAULT_PING_INTERVAL))
        self.ping_timeout: float = (ping_timeout if ping_timeout is not None else
                                    getattr(settings, "ping_timeout", DEFAULT_PING_TIMEOUT))
        #: region routing (map_node, rolecity_node, ...) through the region alias table
        self.routing = Routing()
        self.stats = Stats()
        self._calls_out = self.stats.calls_out  # the hot paths skip one attribute lookup
        self._call_timeout = settings.call_timeout
        self.collector = ClusterCollector(self.stats, lambda: self.senders, reactor.seconds)
        self.pack = pack
        self.port: IListeningPort | None = None
        self._stopped = False  # after stopService: no new links, calls fail at once
        # local calls still running: their result Deferred -> (deadline, service, method)
        self._local_waits: dict[defer.Deferred[Any], tuple[IDelayedCall, str, str]] = {}
        self._sweeper = LoopingCall(self._expire)
        self._sweeper.clock = reactor

    # -- the public API ------------------------------------------------------------------

    def map_node(self, mapid: int) -> str:
        """The node holding map *mapid*, through the region aliases (see
        :mod:`rltwist.cluster.routing`)."""
        return self.routing.map_node(mapid)

    def rolecity_node(self, userid: int) -> str:
        """The rolecity node of player *userid* (its birth region, after aliases)."""
        return self.routing.rolecity_node(userid)

    def mail_node(self, userid: int) -> str:
        """The mail node of player *userid* (its birth region, after aliases)."""
        return self.routing.mail_node(userid)

    def guild_node(self, guildid: int) -> str:
        """The guild node of guild *guildid* (its region, after aliases)."""
        return self.routing.guild_node(guildid)

    def call(self, node: str, service: str, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
        """Call *method* of *service* on *node*; the Deferred fires with its result.

        Fails with a :class:`ClusterError`: UnknownNode; NodeUnreachable (not sent, so it
        did not run) or its subclasses OutboundFull (too many bytes wait for the node) and
        LinkLost (sent, then the link broke or went silent); CallTimeout (sent, no reply
        within *timeout*, default ``cluster.call_timeout``); BadArguments (wrong arguments,
        MessageTooLarge) or another RemoteError naming node, service and method.
        """
        try:
            out = self._calls_out[service][method]
            sender = self.senders[node]
        except (KeyError, TypeError):
            return self._call_cold(node, service, method, args, timeout)
        out.made += 1
        if timeout is None:
            timeout = self._call_timeout
        try:
            return sender.call(out, args, timeout)
        except Exception as e:
            return self._not_sent(e, node, service, method)

    def _call_cold(self, node: str, service: str, method: str, args: tuple[Any, ...],
                   timeout: float | None) -> defer.Deferred[Any]:
        """``call`` for a first use of a name, this node, a new sender, or after stop."""
        bad = self._bad_names(node, service, method)
        if bad is not None:
            return defer.fail(bad)
        out = self.stats.out_calls(service, method)
        out.made += 1
        if timeout is None:
            timeout = self._call_timeout
        if node == self.name:
            return self._local_call(service, method, args, timeout, out)
        sender = self.senders.get(node)
        if sender is None:
            if self._stopped:
                self.stats.error("NodeUnreachable")
                return defer.fail(NodeUnreachable(node, service, method,
                                                  f"{self.name} is stopped"))
            sender = self._sender(node)
            if sender is None:
                self.stats.error("UnknownNode")
                return defer.fail(UnknownNode(node, service, method))
        try:
            return sender.call(out, args, timeout)
        except Exception as e:
            return self._not_sent(e, node, service, method)

    def _not_sent(self, e: Exception, node: str, service: str,
                  method: str) -> defer.Deferred[Any]:
        """A call that failed before it was written, as a failed Deferred."""
        if isinstance(e, (TypeError, ValueError, OverflowError)):
            e = BadArguments(node, service, method, "BadArguments",
                             f"arguments not encodable: {e}")
        elif not isinstance(e, ClusterError):
            raise e
        self.stats.error(type(e).__name__)
        return defer.fail(e)

    def _bad_names(self, node: str, service: Any, method: Any) -> BadArguments | None:
        # Names travel as labels and dictionary keys on both ends: only strings do.
        if type(service) is str and type(method) is str:
            return None
        self.stats.error("BadArguments")
        return BadArguments(node, str(service), str(method), "BadArguments",
                            "service and method names must be str")

    def send(self, node: str, service: str, method: str, *args: Any) -> None:
        """Deliver *method* of *service* on *node* without waiting for a result.

        Order is kept per target node. Raises UnknownNode, BadArguments or MessageTooLarge
        at once. A send that cannot be delivered within ``cluster.unreachable_after``, or
        finds ``cluster.max_outbound`` bytes already waiting, is dropped, counted and logged;
        one written to a link that breaks before the peer confirmed it is counted as lost.
        """
        try:
            frame = pack((SEND, service, method, args))
        except (TypeError, ValueError, OverflowError) as e:
            self.stats.error("BadArguments")
            raise BadArguments(node, service, method, "BadArguments",
                               f"arguments not encodable: {e}") from None
        try:
            sender = self.senders[node]
            sender.sends_out[service][method] += 1
        except (KeyError, TypeError):
            self._send_cold(node, service, method, frame)
            return
        n = sender.out_bytes + len(frame)
        if n > sender.limit:
            self._send_slow(sender, frame, service, method)
            return
        sender.out_bytes = n
        sender.write(frame)

    def _send_cold(self, node: str, service: str, method: str, frame: bytes) -> None:
        """``send`` for a first use of a name, this node, a new sender, or after stop."""
        bad = self._bad_names(node, service, method)
        if bad is not None:
            raise bad
        if node == self.name:
            handlers = self.handlers.get(service)
            known = handlers is not None and method in handlers
            count(self.stats.sends_out, service if known else UNKNOWN,
                  method if known else UNKNOWN)
            self.dispatch_send(self.name, service, method, unpack(frame)[3])
            return
        sender = self.senders.get(node)
        if sender is None:
            if self._stopped:
                count(self.stats.sends_out, service, method)
                self.stats.drop(node, "stopped")
                log.warn("{node}: send {service}.{method} to {peer} dropped: stopped",
                         node=self.name, service=service, method=method, peer=node)
                return
            sender = self._sender(node)
            if sender is None:
                count(self.stats.sends_out, service, method)
                self.stats.error("UnknownNode")
                raise UnknownNode(node, service, method)
        count(sender.sends_out, service, method)
        n = sender.out_bytes + len(frame)
        if n > sender.limit:
            self._send_slow(sender, frame, service, method)
            return
        sender.out_bytes = n
        sender.write(frame)

    def _send_slow(self, sender: Sender, frame: bytes, service: str, method: str) -> None:
        try:
            sender.send_slow(frame, service, method)
        except MessageTooLarge:
            self.stats.error("MessageTooLarge")
            raise

    def register(self, svc: Service) -> Service:
        """Make *svc* reachable as ``svc.name`` on this node."""
        if not svc.name:
            raise ValueError(f"{type(svc).__name__} has no name")
        if svc.name in self.services:
            raise ValueError(f"{self.name}: service {svc.name!r} registered twice")
        svc.cluster = self
        self.services[svc.name] = svc
        self.handlers[svc.name] = svc.handlers()
        self.stats.serve(svc.name, self.handlers[svc.name])
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
        if sender is not None:  # it hands its send counts to self.stats
            sender.close(UnknownNode(node, detail="removed from the name table"))
        # a decommissioned node's per-peer series go with it (label sets stay bounded by
        # the name table)
        self.stats.peers.pop(node, None)
        self.stats.links.pop(node, None)

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

    def dispatch_send(self, caller: str, service: str, method: str,
                      args: list[Any]) -> bool | None:
        """Run a send's handler; True if this node has no such handler (the agent then
        tells the caller, so it counts the send under unknown too)."""
        stats = self.stats
        handlers = self.handlers.get(service)
        fn = handlers.get(method) if handlers is not None else None
        if fn is None:
            stats.unknown_in(stats.sends_in, service, handlers is not None)
            kind, message = self.missing_target(service, method)
            stats.error(kind)
            log.warn("{node}: send from {caller} dropped: {message}", node=self.name,
                     caller=caller, message=message)
            return True
        stats.sends_in[service][method] += 1
        try:
            result = fn(*args)
            if type(result) in PLAIN_TYPES:
                return None
            if type(result) is CoroutineType:
                try:
                    result.send(None)
                except StopIteration:
                    return None
                result = defer.Deferred.fromCoroutine(result)
            if isinstance(result, defer.Deferred):
                result.addErrback(self._send_failed, service, method, caller)
        except TypeError:
            why = arguments_mismatch(fn, args)
            if why is None:
                self._send_failed(Failure(), service, method, caller)
            else:
                stats.error("BadArguments")
                log.warn("{node}: send {service}.{method} from {caller} has bad arguments: "
                         "{why}", node=self.name, service=service, method=method,
                         caller=caller, why=why)
        except Exception:
            self._send_failed(Failure(), service, method, caller)
        return None

    def _send_failed(self, failure: Failure, service: str, method: str, caller: str) -> None:
        self.stats.error(type(failure.value).__name__)
        self.handler_failed(failure, service, method, caller)

    def _local_call(self, service: str, method: str, args: tuple[Any, ...], timeout: float,
                    out: OutCalls) -> defer.Deferred[Any]:
        stats = self.stats
        handlers = self.handlers.get(service)
        fn = handlers.get(method) if handlers is not None else None
        if fn is None:
            stats.unknown_in(stats.calls_in, service, handlers is not None)
            stats.fold_out(out)
            kind, message = self.missing_target(service, method)
            stats.error(kind)
            return defer.fail(remote_error(self.name, service, method, kind, message))
        stats.calls_in[service][method] += 1
        try:
            copied = unpack(pack(list(args)))
        except (TypeError, ValueError, OverflowError) as e:
            stats.error("BadArguments")
            return defer.fail(BadArguments(self.name, service, method, "BadArguments",
                                           f"arguments not encodable: {e}"))

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
            if isinstance(failure.value, TypeError):
                why = arguments_mismatch(fn, copied)
                if why is not None:
                    stats.error("BadArguments")
                    return Failure(BadArguments(self.name, service, method, "BadArguments",
                                                why))
            self.handler_failed(failure, service, method, self.name)
            stats.error(type(failure.value).__name__)
            return Failure(RemoteError(self.name, service, method, type(failure.value).__name__,
                                       str(failure.value)))

        d = defer.maybeDeferred(fn, *copied).addCallbacks(copy_result, to_remote_error)
        if d.called:
            return d
        return self._local_deadline(d, timeout, service, method)

    def _local_deadline(self, d: defer.Deferred[Any], timeout: float, service: str,
                        method: str) -> defer.Deferred[Any]:
        """*d* or CallTimeout after *timeout*, whichever comes first. Like a remote handler,
        the local one is not cancelled: its late result is counted and dropped."""
        result: defer.Deferred[Any] = defer.Deferred()

        def expired() -> None:
            del self._local_waits[result]
            self.stats.error("CallTimeout")
            result.errback(CallTimeout(self.name, service, method, timeout))

        self._local_waits[result] = (self.reactor.callLater(timeout, expired), service, method)

        def done(value: Any) -> None:
            if result.called:
                self.stats.late_replies += 1  # a failure was logged by to_remote_error
                return
            self._local_waits.pop(result)[0].cancel()
            if isinstance(value, Failure):
                result.errback(value)
            else:
                result.callback(value)

        d.addBoth(done)
        return result

    # -- service lifecycle ---------------------------------------------------------------

    def listen(self) -> None:
        """Open the cluster port now; raise ListenError with a clear message on failure."""
        if self.listen_address is None or self.port is not None:
            return
        host, port = self.listen_address
        try:
            # a region's nodes all connect at once at start; see rltwist.net
            self.port = self.reactor.listenTCP(port, _AgentFactory(self),
                                               backlog=LISTEN_BACKLOG, interface=host)
        except error.CannotListenError as e:
            raise ListenError(f"{self.name}: cannot listen on {host}:{port}: "
                              f"{e.socketError}") from None

    def startService(self) -> None:
        self.listen()
        self._stopped = False
        super().startService()
        self._sweeper.start(self.settings.timeout_tick, now=False)

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        self._stopped = True
        if self._sweeper.running:
            self._sweeper.stop()
        senders, self.senders = self.senders, {}
        for sender in senders.values():
            sender.close(NodeUnreachable(sender.node, detail=f"{self.name} is stopping"))
        waits, self._local_waits = self._local_waits, {}
        for result, (timer, svc, method) in waits.items():
            timer.cancel()
            result.errback(NodeUnreachable(self.name, svc, method, f"{self.name} is stopping"))
        for link in list(self.agent_links):
            if link.transport is not None:
                link.transport.loseConnection()
        port, self.port = self.port, None
        if port is not None:
            # maybeDeferred flattens the Deferred stopListening may return, but its overloads
            # cannot express "Deferred[None] | None": mypy sees Deferred[Deferred[None] | None]
            return defer.maybeDeferred(port.stopListening)  # type: ignore[call-overload]
        return None

    def _expire(self) -> None:
        now = self.reactor.seconds()
        for sender in list(self.senders.values()):
            sender.expire(now)
