"""slaveflow: a node's side of the master protocol (seed §7, §11).

Once the node's services are up it registers with master's masterflow, then heartbeats.
The heartbeat reply says whether the node's predecessors in the start order are all up;
until they are the node is "waiting" (it logs once what it waits for) and its
"cluster ready" hooks (client listeners, for instance) have not run. Master broadcasts
every node that registers; slaveflow applies those updates to the node's name table.

At shutdown master calls ``slaveflow.shutdown``: every registered shutdown handler runs
(kick players, save everything), slaveflow answers when all finished, then the process
stops by itself.

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

    def _tick(self) -> None:
        if self._shutting_down:
            return
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
                self._apply_table(reply["nodes"])
                self.node.login_open = reply.get("login_open", True)
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
        if not self.node.proceeded:
            waiting = tuple(reply.get("waiting_for", ()))
            if waiting:
                if waiting != self._waiting_logged:
                    log.info("{node}: waiting for {nodes} to be up before proceeding",
                             node=self.node.name, nodes=", ".join(waiting))
                    self._waiting_logged = waiting
                return
            await self._proceed()

    async def _proceed(self) -> None:
        await self.node.run_ready_hooks()
        await self.cluster.call(MASTER, "masterflow", "ready", self.node.name)
        log.info("{node}: up (start-order predecessors are up)", node=self.node.name)

    def _apply_table(self, nodes: dict[str, list[Any]]) -> None:
        for name, (host, port) in nodes.items():
            if name != self.node.name:
                self.cluster.set_address(name, host, port)

    # -- handlers master calls -----------------------------------------------------------

    @handler
    def node_added(self, name: str, host: str, port: int) -> None:
        """Master's scale-out broadcast: *name* is now at host:port."""
        if name != self.node.name:
            self.cluster.set_address(name, host, port)

    @handler
    def set_login_open(self, is_open: bool) -> None:
        self.node.login_open = bool(is_open)
        log.info("{node}: logins {state} by GM", node=self.node.name,
                 state="opened" if is_open else "closed")

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
        self.stop()
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
    """Starts the register/heartbeat loop once every other service of the node is up."""

    def __init__(self, flow: Slaveflow) -> None:
        self.flow = flow

    def startService(self) -> None:
        super().startService()
        self.flow.start()

    def stopService(self) -> None:
        super().stopService()
        self.flow.stop()
