"""slaveflow: a node's side of the master protocol (seed §7, §11).

Once the node's services are up it registers with master's masterflow, then heartbeats.
The heartbeat reply says whether the node's predecessors in the start order are all up;
until they are the node is "waiting" (it logs once what it waits for) and its
"cluster ready" hooks (client listeners, for instance) have not run. Master broadcasts
every node that registers; slaveflow applies those updates to the node's name table.

At shutdown master calls ``slaveflow.shutdown``: every registered shutdown handler runs
(kick players, save everything), slaveflow answers when all finished, then the process
stops by itself.

An orderly stop is not a crash. From the moment a node begins to stop (master's shutdown,
or SIGTERM) until its services have stopped, it goes on heartbeating with ``stopping`` in
its status, so master does not mark it down (a role node saving its players would
otherwise see them cleared and logged in elsewhere meanwhile); at the end it tells master
``stopped``. A node that goes silent while stopping did crash, and is marked down.

Catch-up. Master's broadcasts (a node registered or moved, a node was decommissioned,
logins opened or closed) are sends: a node that was down, frozen or cut off misses them.
So every heartbeat reply also carries master's name-table version and ``login_open``; a
node whose table is older fetches the table (``masterflow.table``) and applies it. The
table includes the region aliases (``{merged sid: target sid}`` after a server merge),
which the node's routing helpers resolve through (``cluster.routing.set_aliases``).

Losing master (issue 10 item 5). Master marks a node down when it has not received a
heartbeat for ``heartbeat_misses`` x ``heartbeat_interval``; a role node's players are then
cleared and may log in elsewhere. So the node refuses writes (``writes_allowed`` False,
clients get RETRY_LATER) once the last heartbeat master answered was *sent* longer ago than
that bound: it was received no earlier than it was sent, so the node stops no later than
master can mark it down (same clock rate assumed). When master answers again, writes
resume. Only after ``fence_after`` without master does the node run its fence hooks (a role
node saves and kicks its players), once; a master restarted within ``fence_after`` kicks
nobody. A "was_down" answer (master had marked this node down while it was alive) runs the
marked-down hooks; writes stay refused until they finished. Both kinds of hooks run beside
the heartbeat loop, never inside it, so a slow hook cannot make the node miss heartbeats.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import ClusterError, Service, handler

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

MASTER = "master"


class Slaveflow(Service):
    """Handlers master calls on this node, and the register/heartbeat loop."""

    name = "slaveflow"
    #: hooks (fence, marked-down) still running after this many seconds are logged
    hook_warn_after = 60.0

    def __init__(self, node: Node) -> None:
        self.node = node
        self.registered = False
        # send time (node's reactor clock) of the last register/heartbeat master answered;
        # None until master first answered
        self.last_answer: float | None = None
        self._writes_stopped_logged = False
        self._fenced = False  # fence hooks ran during the current loss of master
        self._dropping = False  # marked-down hooks are running
        self._drop_again = False  # another "was_down" came while they ran
        self._waiting_logged: tuple[str, ...] | None = None
        self._master_lost_logged = False
        self._busy = False
        self._shutting_down = False
        self.stopping = False  # the node is stopping: heartbeats say so
        # master's name-table version this node has applied (None: none yet)
        self.table_version: str | None = None
        self._login_seq: tuple[str, int] | None = None  # of the login_open taken last
        self._shutdown_waiters: list[defer.Deferred[dict[str, Any]]] = []
        self._shutdown_result: dict[str, Any] | None = None
        self.loop = LoopingCall(self._tick)
        self.loop.clock = node.reactor

    # -- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        self.loop.start(self.node.config.cluster.heartbeat_interval, now=True)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    @property
    def writes_allowed(self) -> bool:
        """See the module docstring: master answered recently and nothing is being
        dropped."""
        if self._dropping or self.last_answer is None:
            return False
        return self.node.reactor.seconds() - self.last_answer < self._write_bound()

    def _write_bound(self) -> float:
        s = self.node.config.cluster
        return s.heartbeat_interval * s.heartbeat_misses

    def begin_stopping(self) -> None:
        """The node begins an orderly stop: heartbeats go on, saying "stopping", until
        ``report_stopped``; master is told at once."""
        if self.stopping:
            return
        self.stopping = True
        log.info("{node}: stopping; heartbeats go on until the services have stopped",
                 node=self.node.name)
        if self.registered:
            try:
                self.cluster.send(MASTER, "masterflow", "status_report", self.node.name,
                                  self.node.status())
            except ClusterError as e:
                log.warn("{node}: cannot tell master it is stopping: {error}",
                         node=self.node.name, error=e)

    async def report_stopped(self) -> None:
        """The node's services have stopped: end the heartbeats and tell master (bounded;
        a master that does not hear it sees the heartbeats end and marks the node down)."""
        self.stop()
        if not self.registered:
            return
        timeout = max(self.node.config.cluster.heartbeat_interval * 2, 1.0)
        try:
            await self.cluster.call(MASTER, "masterflow", "stopped", self.node.name,
                                    timeout=timeout)
        except ClusterError as e:
            log.warn("{node}: could not tell master it stopped ({error}); it will mark this "
                     "node down when the heartbeats are missing", node=self.node.name,
                     error=e)

    def _tick(self) -> None:
        self._watch_master()
        if self._busy:
            return
        self._busy = True
        d = defer.Deferred.fromCoroutine(self._step())
        d.addBoth(self._step_done)

    def _watch_master(self) -> None:
        """Log when writes stop, and fence once ``fence_after`` has passed without master.

        Runs on every tick, also while a heartbeat call is still waiting for its answer."""
        if self.last_answer is None:
            return
        s = self.node.config.cluster
        silent = self.node.reactor.seconds() - self.last_answer
        if silent >= self._write_bound() and not self._writes_stopped_logged:
            self._writes_stopped_logged = True
            log.warn("{node}: master has not answered for {age:.1f}s (heartbeat_misses x "
                     "heartbeat_interval = {bound:g}s): refusing writes (RETRY_LATER) until "
                     "it answers; fencing at {fence:g}s", node=self.node.name, age=silent,
                     bound=self._write_bound(), fence=s.fence_after)
        if silent >= s.fence_after and not self._fenced:
            self._fenced = True
            hooks = self.node.fence_hooks
            log.warn("{node}: FENCING: master has not answered for {age:.1f}s "
                     "(cluster.fence_after = {fence:g}s); another node may own what this one "
                     "holds: running {n} fence hooks", node=self.node.name, age=silent,
                     fence=s.fence_after, n=len(hooks))
            self.node.start_hooks("fence", hooks, self.hook_warn_after)

    def _answered(self, sent: float) -> None:
        """Master answered a call sent at *sent*."""
        if self.last_answer is None or sent > self.last_answer:
            self.last_answer = sent
        if self._writes_stopped_logged or self._fenced:
            log.info("{node}: master answers again; writes allowed{fenced}",
                     node=self.node.name,
                     fenced=" (this node had fenced itself)" if self._fenced else "")
        self._writes_stopped_logged = False
        self._fenced = False

    def _marked_down(self) -> None:
        """Master had marked this node down while it was alive: drop what it held, in the
        background (writes stay refused until done); a second "was_down" meanwhile runs
        the hooks once more afterwards."""
        log.warn("{node}: master had marked this node down; dropping what it held "
                 "(writes refused until done)", node=self.node.name)
        if self._dropping:
            self._drop_again = True
            return
        self._dropping = True
        d = defer.Deferred.fromCoroutine(self._drop())
        d.addErrback(lambda f: log.failure("{node}: dropping after mark-down failed", f,
                                           node=self.node.name))

    async def _drop(self) -> None:
        try:
            while True:
                self._drop_again = False
                await self.node.run_marked_down_hooks(self.hook_warn_after)
                if not self._drop_again:
                    break
        finally:
            self._dropping = False

    def _step_done(self, result: Any) -> None:
        self._busy = False
        if isinstance(result, Failure) and not result.check(ClusterError):
            log.failure("{node}: slaveflow step failed", result, node=self.node.name)

    async def _step(self) -> None:
        timeout = max(self.node.config.cluster.heartbeat_interval * 2, 1.0)
        clock = self.node.reactor
        try:
            if not self.registered:
                sent = clock.seconds()
                reply = await self.cluster.call(MASTER, "masterflow", "register",
                                                self.node.info() | self.node.status(),
                                                timeout=timeout)
                self._apply_table(reply["nodes"], reply.get("removed", ()))
                self._take_aliases(reply.get("aliases"))
                self.table_version = reply.get("table_version")
                self._login_seq = None  # a restarted master starts a new sequence
                self._take_login_open(reply.get("login_open", True), reply.get("login_seq"))
                self.registered = True
                log.info("{node}: registered with master", node=self.node.name)
                if reply.get("was_down"):
                    self._marked_down()
                self._answered(sent)
            sent = clock.seconds()
            reply = await self.cluster.call(MASTER, "masterflow", "heartbeat", self.node.name,
                                            self.node.status(), timeout=timeout)
        except ClusterError as e:
            if not self._master_lost_logged:
                log.warn("{node}: cannot reach master ({error}); retrying every {t}s",
                         node=self.node.name, error=e,
                         t=self.node.config.cluster.heartbeat_interval)
                self._master_lost_logged = True
            return
        if self._master_lost_logged:
            log.info("{node}: master reachable again", node=self.node.name)
            self._master_lost_logged = False
        if reply.get("was_down"):
            self._marked_down()  # before _answered: no moment with writes allowed
        self._answered(sent)
        if not reply.get("known", False):
            # master restarted (or marked us gone): register again on the next tick
            self.registered = False
            return
        await self._catch_up(reply, timeout)
        if not self.node.proceeded and not self.stopping:
            waiting = tuple(reply.get("waiting_for", ()))
            if waiting:
                if waiting != self._waiting_logged:
                    log.info("{node}: waiting for {nodes} to be up before proceeding",
                             node=self.node.name, nodes=", ".join(waiting))
                    self._waiting_logged = waiting
                return
            await self._proceed()

    async def _catch_up(self, reply: dict[str, Any], timeout: float) -> None:
        """Apply what a missed broadcast would have told: logins open or closed, and the
        name table when master's version differs from the one applied here."""
        if "login_open" in reply:
            self._take_login_open(reply["login_open"], reply.get("login_seq"),
                                  "caught up from a heartbeat")
        version = reply.get("table_version")
        if version is None or version == self.table_version:
            return
        table = await self.cluster.call(MASTER, "masterflow", "table", timeout=timeout)
        self._take_aliases(table.get("aliases"))
        if self._apply_table(table["nodes"], table.get("removed", ())):
            log.info("{node}: name table caught up to master's version {version} (a "
                     "broadcast was missed)", node=self.node.name, version=table["version"])
        self.table_version = table["version"]

    async def _proceed(self) -> None:
        await self.node.run_ready_hooks()
        await self.cluster.call(MASTER, "masterflow", "ready", self.node.name)
        log.info("{node}: up (start-order predecessors are up)", node=self.node.name)

    def _apply_table(self, nodes: dict[str, list[Any]], removed: Any = ()) -> int:
        """Take master's addresses and removals; returns how many entries changed."""
        changed = 0
        for name, (host, port) in nodes.items():
            if name != self.node.name and self.cluster.addresses.get(name) != (host, port):
                self.cluster.set_address(name, host, port)
                changed += 1
        for name in removed:
            if name != self.node.name and name in self.cluster.addresses:
                self.cluster.remove_node(name)
                changed += 1
                log.info("{node}: {name} was decommissioned; removed from the name table",
                         node=self.node.name, name=name)
        return changed

    # -- handlers master calls -----------------------------------------------------------

    @handler
    def node_added(self, name: str, host: str, port: int) -> None:
        """Master's scale-out broadcast: *name* is now at host:port."""
        if name != self.node.name:
            self.cluster.set_address(name, host, port)

    @handler
    def node_removed(self, name: str) -> None:
        """Master's broadcast: *name* was decommissioned (``DELETE /nodes/<name>``)."""
        self._apply_table({}, [name])

    def _take_aliases(self, pairs: Any) -> None:
        """Install master's region alias table (``[[merged, target], ...]``); None (a
        master that has not loaded it yet) keeps the one in force."""
        if pairs is None:
            return
        table = {int(m): int(t) for m, t in pairs}
        if table == self.cluster.routing.aliases:
            return
        try:
            self.cluster.routing.set_aliases(table)
        except ValueError as e:
            log.error("{node}: master's region aliases {table} refused: {e}",
                      node=self.node.name, table=table, e=e)
            return
        log.info("{node}: region aliases now {table}", node=self.node.name, table=table)

    @handler
    def set_aliases(self, pairs: list[list[int]]) -> None:
        """Master's broadcast after a server merge: the region alias table."""
        self._take_aliases(pairs)

    @handler
    def aliases(self) -> dict[str, int]:
        """The region alias table this node routes through (operators, tests)."""
        return {str(m): t for m, t in sorted(self.cluster.routing.aliases.items())}

    @handler
    def cluster_stopping(self) -> None:
        """Master began an ordered cluster shutdown (its first phase): run the node's
        cluster-stopping hooks once."""
        log.info("{node}: the cluster is shutting down", node=self.node.name)
        self.node.run_cluster_stopping_hooks()

    @handler
    def set_login_open(self, is_open: bool, seq: Any = None) -> None:
        """Master's broadcast: GM opened or closed logins."""
        self._take_login_open(is_open, seq, "by GM")

    def _take_login_open(self, is_open: Any, seq: Any, how: str = "") -> None:
        """Take master's ``login_open`` unless this node already has a newer one: the
        broadcast and a heartbeat reply travel on different links, so an older value can
        arrive last. *seq* is master's ``[epoch, counter]``; another epoch (a restarted
        master) always wins."""
        if isinstance(seq, list) and len(seq) == 2:
            have = self._login_seq
            if have is not None and have[0] == seq[0] and seq[1] <= have[1]:
                return
            self._login_seq = (seq[0], seq[1])
        if bool(is_open) != self.node.login_open and how:
            log.info("{node}: logins {state} {how}", node=self.node.name,
                     state="opened" if is_open else "closed", how=how)
        self.node.login_open = bool(is_open)

    @handler
    async def shutdown(self) -> dict[str, Any]:
        """Run every shutdown handler, answer when all are done, then stop the process.

        A repeated call (an operator's retry) waits for the same run and gets its result.
        """
        if self._shutdown_result is not None:
            return self._shutdown_result
        if self._shutting_down:
            waiter: defer.Deferred[dict[str, Any]] = defer.Deferred()
            self._shutdown_waiters.append(waiter)
            return await waiter
        self._shutting_down = True
        self.begin_stopping()  # heartbeats go on while the handlers run
        started = time.time()
        log.info("{node}: shutdown requested by master; running {n} handlers",
                 node=self.node.name, n=len(self.node.shutdown_handlers))
        failed = await self.node.run_shutdown_handlers()
        result = self._shutdown_result = {
            "node": self.node.name, "kind": self.node.me.kind, "started_at": started,
            "finished_at": time.time(), "failed": failed}
        waiters, self._shutdown_waiters = self._shutdown_waiters, []
        for w in waiters:
            w.callback(result)
        self.node.reactor.callLater(0.1, self.node.exit_process)
        return result


class SlaveflowService(service.Service):
    """Starts the register/heartbeat loop once every other service of the node is up.

    Its end is the node's business (``Node._stop``): the heartbeats go on while the other
    services stop, then ``report_stopped`` ends them."""

    def __init__(self, flow: Slaveflow) -> None:
        self.flow = flow

    def startService(self) -> None:
        super().startService()
        self.flow.start()

    def stopService(self) -> None:
        super().stopService()
        self.flow.begin_stopping()
