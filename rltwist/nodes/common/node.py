"""The common shape of every node process: a MultiService holding the cluster layer,
the metrics endpoint and the node kind's own services.

Ports are opened in ``privilegedStartService`` so that a clash is reported before the
reactor runs, as one line naming the node, address and config key, and the process exits
non-zero instead of running half-started.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.twisted import MetricsResource
from twisted.application import service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from rltwist import __version__, crashpoint, features
from rltwist.cluster import Cluster, ListenError
from rltwist.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    NodeConfig,
    default_config_path,
    insecure_defaults,
    load_config,
    node_name,
)
from rltwist.net import CLIENT_BACKLOG, LISTEN_BACKLOG
from rltwist.nodes.common.clientmetrics import ClientPortCollector
from rltwist.nodes.common.diag import diag_service
from rltwist.nodes.common.services import install_common
from rltwist.nodes.common.slaveflow import Slaveflow, SlaveflowService
from rltwist.readiness import notify_ready
from rltwist.redis import OnlineState, RedisClient
from rltwist.redis.metrics import RedisMetrics
from rltwist.redis.service import RedisClientService
from rltwist.storage import Backend, StorageSettings, open_backend

log = Logger()
SHUTDOWN_NAG = 10.0
"""While shutdown handlers run, every this many seconds the ones still running are logged."""



class StartupError(Exception):
    """A node cannot start; str() is the one line shown to the operator."""


def fail_startup(message: str) -> None:
    """Print one clear line and leave with status 1 (no traceback for config mistakes)."""
    sys.stderr.write(f"rltwist: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)


class Node(service.MultiService):
    """One rltwist node process: cluster + metrics + the kind's services."""

    # twisted's Service declares ``name = None`` untyped, so mypy infers the type None; a
    # node always has its configured name from __init__ on.
    name: str  # type: ignore[assignment]

    def __init__(self, config: Config, me: NodeConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.config = config
        self.me = me
        self.name = me.name
        self.started_at = time.time()
        self.cluster = Cluster(
            me.name, config.cluster,
            addresses={n.name: (n.host, n.port) for n in config.nodes.values()},
            listen=(me.host, me.port), reactor=reactor)
        self.cluster.setServiceParent(self)
        # no <counter>_created series: they would double every counter's series (the
        # series budget, rltwist.metrics) and nothing here reads them
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(self.cluster.collector)
        self.cluster.register(diag_service(self))
        self.metrics_port: IListeningPort | None = None
        self.login_open = True
        self.proceeded = False
        self.config_version = ""
        self.shutdown_handlers: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        self.ready_hooks: list[Callable[[], Awaitable[Any] | Any]] = []
        # run when master says it had marked this node down (frozen, cut off) meanwhile
        self.marked_down_hooks: list[Callable[[], Awaitable[Any] | Any]] = []
        # run once when master has not answered for cluster.fence_after (see add_fence_hook)
        self.fence_hooks: list[Callable[[], Awaitable[Any] | Any]] = []
        # run once when master begins an ordered cluster shutdown (before this node's phase)
        self.cluster_stopping_hooks: list[Callable[[], Any]] = []
        self.cluster_stopping = False
        # extra fields for heartbeats (code/config versions, hotfix errors, ...)
        self.status_providers: list[Callable[[], dict[str, Any]]] = []
        self.slaveflow: Slaveflow | None = None
        self._databases: dict[str, Backend] = {}
        self._redis: OnlineState | None = None
        self._client_factory: Any = None
        self.client_listener: Any = None
        if me.kind != "master":
            self.slaveflow = Slaveflow(self)
            self.cluster.register(self.slaveflow)

    # -- shared resources of the node's services ---------------------------------------

    def database(self, name: str) -> Backend:
        """The storage backend for database *name* (globaldb, region<sid>, roledb), shared
        by every service of this node and closed when the node stops."""
        db = self._databases.get(name)
        if db is None:
            s = self.config.storage
            settings = StorageSettings(backend=s.backend, db_name=name, data_dir=s.path,
                                       mongo_uri=s.mongo_uri, timeout=s.timeout,
                                       synchronous=s.synchronous,
                                       write_concern=s.write_concern)
            if s.backend == "embedded":
                os.makedirs(s.path, exist_ok=True)
            # the node closes it in _stop, after its services (and their final saves)
            db = self._databases[name] = open_backend(settings, reactor=self.reactor,
                                                      close_at_shutdown=False)
        return db

    def redis_state(self) -> OnlineState:
        """The node's Redis client wrapped in the login/online state API (one per node)."""
        if self._redis is None:
            r = self.config.redis
            client = RedisClient(r.url, prefix=r.prefix, name=f"{self.name}-redis",
                                 command_timeout=r.timeout, reactor=self.reactor,
                                 metrics=RedisMetrics(self.registry))
            RedisClientService(client).setServiceParent(self)
            self._redis = OnlineState(client)
        return self._redis

    def listen_clients(self, factory: Any) -> None:
        """Open the node's client port now (clashes are start-up errors) but accept
        connections only once its start-order predecessors are up."""
        if self.me.client_port is None:
            raise StartupError(f"{self.name}: nodes.{self.name}.client_port is missing in "
                               f"{self.config.path}")
        self._client_factory = factory
        self.registry.register(ClientPortCollector(factory))

    def _listen_clients_now(self) -> None:
        try:
            # a login storm opens thousands of connections at once (rltwist.net)
            self.client_listener = self.reactor.listenTCP(
                self.me.client_port, self._client_factory, backlog=CLIENT_BACKLOG,
                interface=self.me.host)
        except error.CannotListenError as e:
            fail_startup(f"{self.me.name}: cannot listen for clients on {self.me.host}:"
                         f"{self.me.client_port} (nodes.{self.me.name}.client_port in "
                         f"{self.config.path}): {e.socketError}")
        self.client_listener.stopReading()  # accept() waits for the ready hooks

        def accept() -> None:
            self.client_listener.startReading()
            log.info("{node}: accepting game clients on {host}:{port}", node=self.name,
                     host=self.me.host, port=self.me.client_port)

        self.add_ready_hook(accept)

    def add_shutdown_handler(self, name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        """Run *fn* when master shuts this node down (kick players, save everything)."""
        self.shutdown_handlers.append((name, fn))

    def add_ready_hook(self, fn: Callable[[], Awaitable[Any] | Any]) -> None:
        """Run *fn* once the node's start-order predecessors are all up."""
        self.ready_hooks.append(fn)

    async def run_ready_hooks(self) -> None:
        for fn in self.ready_hooks:
            result = fn()
            if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
                await result
        self.proceeded = True

    async def run_shutdown_handlers(self) -> list[str]:
        """Run every shutdown handler concurrently; return the names of those that failed."""
        handlers = list(self.shutdown_handlers)
        started = time.monotonic()
        running: dict[str, float] = {}

        async def one(name: str, fn: Callable[[], Awaitable[Any] | Any]) -> Any:
            running[name] = time.monotonic()
            try:
                return await _call(fn)
            finally:
                running.pop(name, None)
                log.info("{node}: shutdown handler {name} ended after {s:.2f}s",
                         node=self.name, name=name, s=time.monotonic() - started)

        def still_running() -> None:
            # an operator looking at a stuck shutdown phase reads here which part waits
            log.warn("{node}: shutdown handlers still running after {s:.0f}s: {names}",
                     node=self.name, s=time.monotonic() - started,
                     names=", ".join(sorted(running)))

        nag = LoopingCall(still_running)
        nag.clock = self.reactor
        nag.start(SHUTDOWN_NAG, now=False)
        try:
            results = await defer.DeferredList(
                [defer.Deferred.fromCoroutine(one(name, fn)) for name, fn in handlers],
                consumeErrors=True)
        finally:
            nag.stop()
        failed = []
        for (name, _), (ok, failure) in zip(handlers, results, strict=True):
            if not ok:
                failed.append(name)
                log.failure("{node}: shutdown handler {name} failed", failure, node=self.name,
                            name=name)
        return failed

    def add_cluster_stopping_hook(self, fn: Callable[[], Any]) -> None:
        """Run *fn* (synchronous) once master begins an ordered shutdown of the cluster,
        at its first phase, long before this node's own phase: a map node pauses its
        timed events there, because the nodes its events would reach stop first."""
        self.cluster_stopping_hooks.append(fn)

    def run_cluster_stopping_hooks(self) -> None:
        """Master began the cluster shutdown: run the hooks once (a failing one is logged
        and does not stop the others)."""
        if self.cluster_stopping:
            return
        self.cluster_stopping = True
        for fn in self.cluster_stopping_hooks:
            try:
                fn()
            except Exception:
                log.failure("{node}: cluster-stopping hook {name} failed", node=self.name,
                            name=_hook_name(fn))

    def add_fence_hook(self, fn: Callable[[], Awaitable[Any] | Any]) -> None:
        """Run *fn* once when master has not answered this node for ``cluster.fence_after``.

        By then master has long marked the node down and another node may own what it
        holds (a role node saves, fenced, and kicks its players). The hooks run beside the
        heartbeats, never inside them; they run again only after master answered and was
        then lost again.
        """
        self.fence_hooks.append(fn)

    @property
    def writes_allowed(self) -> bool:
        """False while this node may have been fenced off: master has not answered a
        heartbeat for ``heartbeat_misses`` x ``heartbeat_interval``, or master said it had
        marked the node down and the marked-down hooks are still dropping what it held.
        Client requests that write are answered RETRY_LATER meanwhile. Master itself
        always writes."""
        return self.slaveflow is None or self.slaveflow.writes_allowed

    def run_marked_down_hooks(self, warn_after: float = 60.0) -> defer.Deferred[None]:
        """Start the marked-down hooks (see ``start_hooks``)."""
        return self.start_hooks("marked-down", self.marked_down_hooks, warn_after)

    def start_hooks(self, what: str, hooks: list[Callable[[], Awaitable[Any] | Any]],
                    warn_after: float) -> defer.Deferred[None]:
        """Start every hook in *hooks* at once; the Deferred fires when all have finished.

        A hook that fails is logged and does not stop the others. Hooks still running after
        *warn_after* seconds are named in a warning but not cancelled: they save players,
        and a save cut off half-way loses more than a late one.
        """
        started = self.reactor.seconds()
        running: dict[int, Callable[..., Any]] = {}

        def finished(result: Any, index: int, fn: Callable[..., Any]) -> None:
            running.pop(index, None)
            if isinstance(result, Failure):
                log.failure("{node}: {what} hook {hook} failed", result, node=self.name,
                            what=what, hook=_hook_name(fn))

        calls = []
        for index, fn in enumerate(list(hooks)):
            running[index] = fn
            d = defer.Deferred.fromCoroutine(_call(fn))
            d.addBoth(finished, index, fn)
            calls.append(d)

        def late() -> None:
            log.warn("{node}: {what} hooks still running after {t:g}s: {hooks} (not "
                     "cancelled)", node=self.name, what=what, t=warn_after,
                     hooks=", ".join(_hook_name(fn) for fn in running.values()))

        watchdog = self.reactor.callLater(warn_after, late) if running else None

        def done(_: Any) -> None:
            if watchdog is not None and watchdog.active():
                watchdog.cancel()
            log.info("{node}: {what} hooks done in {t:.1f}s", node=self.name, what=what,
                     t=self.reactor.seconds() - started)

        return defer.DeferredList(calls).addCallback(done)

    def exit_process(self) -> None:
        """Leave the process once a shutdown is complete (status 0)."""
        if self.reactor.running:
            self.reactor.stop()

    def status(self) -> dict[str, Any]:
        """What every heartbeat carries to master."""
        status = {"code_version": __version__, "config_version": self.config_version,
                  "proceeded": self.proceeded, "login_open": self.login_open,
                  "stopping": self.slaveflow is not None and self.slaveflow.stopping}
        for provider in self.status_providers:
            status.update(provider())
        return status

    def finish(self) -> None:
        """Called once the kind's services are added: slaveflow starts last, so a node
        registers with master only when everything else in it is up."""
        if self.slaveflow is not None:
            SlaveflowService(self.slaveflow).setServiceParent(self)

    def info(self) -> dict[str, Any]:
        """What this node tells master and operators about itself."""
        return {
            "name": self.me.name, "kind": self.me.kind, "number": self.me.number,
            "host": self.me.host, "port": self.me.port, "metrics_port": self.me.metrics_port,
            "client_port": self.me.client_port, "pid": os.getpid(),
            "code_version": __version__, "config_version": self.config_version,
            "started_at": self.started_at,
        }

    def _listen_metrics(self) -> None:
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry=self.registry))
        try:
            self.metrics_port = self.reactor.listenTCP(
                self.me.metrics_port, Site(root), backlog=LISTEN_BACKLOG,
                interface=self.me.host)
        except error.CannotListenError as e:
            raise ListenError(f"{self.me.name}: cannot listen on {self.me.host}:"
                              f"{self.me.metrics_port} (nodes.{self.me.name}.metrics_port in "
                              f"{self.config.path}): {e.socketError}") from None

    def privilegedStartService(self) -> None:
        try:
            self.cluster.listen()
            self._listen_metrics()
            if self._client_factory is not None:
                self._listen_clients_now()
        except ListenError as e:
            msg = str(e)
            if "metrics_port" not in msg:
                msg += f" (nodes.{self.me.name}.port in {self.config.path})"
            fail_startup(msg)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        # Both run once the reactor has installed its own signal handlers ("during
        # startup"): callWhenRunning is an "after startup" trigger before the reactor
        # runs (twistd starts services first), and runs at once after.
        self.reactor.callWhenRunning(self._handle_sigterm)
        self.reactor.callWhenRunning(self._announce_ready)

    def _handle_sigterm(self) -> None:
        """Stop on SIGTERM with status 0.

        The reactor's own handler records the signal, and twistd then ends the process by
        re-raising it (status -15) even after a clean stop. For supervisors and operators
        an orderly stop after SIGTERM is a success, so this handler just stops the reactor
        (the service tree stops as for any other stop).
        """
        def on_sigterm(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self._stop_on_signal)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _stop_on_signal(self) -> None:
        log.info("{node}: SIGTERM received; stopping", node=self.name)
        if self.reactor.running:
            self.reactor.stop()

    def _announce_ready(self) -> None:
        if crashpoint.test_flag("diag"):
            log.warn("{node}: TEST diag helpers served (sleep, note, tally): "
                     "RLTWIST_TEST_FLAGS has diag", node=self.name)
        points = crashpoint.armed()
        if points:
            log.warn("{node}: TEST crash points armed (process dies at them): {points}",
                     node=self.name, points=", ".join(f"{k}@{v}" for k, v in points.items()))
        if self.slaveflow is None:  # master: first in the start order, nothing to wait for
            defer.Deferred.fromCoroutine(self.run_ready_hooks()).addErrback(
                lambda f: log.failure("{node}: ready hooks failed", f, node=self.name))
        log.info("rltwist node {node} ({kind}) ready: cluster {host}:{port}, "
                 "metrics http://{host}:{metrics}/metrics, pid {pid}",
                 node=self.me.name, kind=self.me.kind, host=self.me.host, port=self.me.port,
                 metrics=self.me.metrics_port, pid=os.getpid())
        notify_ready({"node": self.name, "pid": os.getpid()})

    async def _stop(self) -> None:
        """Stop the node's services; the cluster layer and the heartbeats last.

        While the services stop (a role node logs its players out and saves them, which may
        take minutes) the node goes on heartbeating as "stopping", so master does not take
        the orderly stop for a crash; once they are done it tells master it stopped, then
        closes its links.
        """
        listener, self.client_listener = self.client_listener, None
        if listener is not None:
            await defer.maybeDeferred(listener.stopListening)
        if self.slaveflow is not None:
            self.slaveflow.begin_stopping()
        service.Service.stopService(self)
        others = [s for s in reversed(list(self)) if s is not self.cluster]
        await defer.DeferredList([defer.maybeDeferred(s.stopService) for s in others])
        if self.slaveflow is not None:
            await self.slaveflow.report_stopped()
        await defer.maybeDeferred(self.cluster.stopService)
        port, self.metrics_port = self.metrics_port, None
        if port is not None:
            await defer.maybeDeferred(port.stopListening)
        for db in self._databases.values():
            try:
                await db.close()
            except Exception:
                log.failure("{node}: closing a database failed", node=self.name)
        log.info("rltwist node {node} stopped", node=self.me.name)

    def stopService(self) -> Any:
        return defer.Deferred.fromCoroutine(self._stop())


async def _call(fn: Callable[[], Awaitable[Any] | Any]) -> Any:
    result = fn()
    if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
        result = await result
    return result


def _hook_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class NodeOptions(usage.Options):
    """Options every node kind takes; kinds add --sid or --index."""

    optParameters: list[list[Any]] = [
        ["config", "c", None, f"Cluster config file (TOML); default {DEFAULT_CONFIG}, or "
         "the one shipped with rltwist when there is none."],
    ]
    optFlags: list[list[Any]] = [
        ["insecure-dev", None, "Start even though this node listens on a non-loopback "
         "address with a development default secret (cluster secret, GM token, dev SDK "
         "secret): for a test network only."],
    ]


def options_for(kind: str) -> type[usage.Options]:
    """The twistd Options class for *kind* (region kinds take --sid, pools --index)."""
    from rltwist.config import POOL_KINDS, REGION_KINDS

    params: list[list[Any]] = list(NodeOptions.optParameters)
    if kind in REGION_KINDS:
        params.append(["sid", "s", None, "Region (server) id this node serves: map<sid>.", int])
    elif kind in POOL_KINDS:
        params.append(["index", "i", None, f"Index of this node in the pool: {kind}<index>.",
                       int])

    class Options(NodeOptions):
        optParameters = params
        synopsis = f"[options]   (starts an rltwist {kind} node)"

        def postOptions(self) -> None:
            for opt in ("sid", "index"):
                if any(p[0] == opt for p in params):
                    v = self[opt]
                    if v is None:
                        raise usage.UsageError(f"--{opt} N is required for {kind} nodes")
                    if v < 1:
                        raise usage.UsageError(f"--{opt} must be >= 1, got {v}")

    Options.__name__ = f"{kind.capitalize()}Options"
    return Options


def check_secrets(config: Config, name: str, *, insecure_dev: bool = False) -> None:
    """End the start (one line, status 1) when node *name* would listen on a non-loopback
    address with a development default secret, naming the keys; with *insecure_dev* only
    warn. The shipped defaults are public: on a reachable address anyone could join the
    cluster, drive the GM API or mint login tokens."""
    keys, hosts = insecure_defaults(config, name)
    if not keys:
        return
    what = (f"{name} listens on {', '.join(hosts)} (not loopback) with the development "
            f"default {', '.join(keys)} in {config.path}")
    if not insecure_dev:
        fail_startup(f"{what}: set your own secret (or start with --insecure-dev on a "
                     f"test network)")
    log.warn("{what}: started anyway (--insecure-dev)", what=what)


def make_node(kind: str, options: usage.Options,
              build: Callable[[Node], None] | None = None) -> Node:
    """Load the config, create the Node for *kind* and let *build* add its services.

    A config problem ends the process with one line on stderr and status 1.
    """
    number = options.get("sid") or options.get("index")
    name = node_name(kind, number)
    try:
        config = load_config(options["config"] or default_config_path())
        me = config.node(name)
    except ConfigError as e:
        fail_startup(str(e))
        raise  # unreachable; keeps type checkers happy
    check_secrets(config, name, insecure_dev=bool(options.get("insecure-dev")))
    node = Node(config, me)
    install_common(node)
    if build is not None:
        try:
            build(node)
            features.install(node)
        except (ConfigError, StartupError) as e:
            fail_startup(str(e))
    node.finish()
    return node
