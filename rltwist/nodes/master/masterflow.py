"""masterflow: the cluster's registry, health monitor and start/stop conductor (seed §7, §11).

* Registration: every slave's slaveflow registers (name, kind, number, addresses, pid,
  versions, start time) and then heartbeats. A node that misses ``heartbeat_misses``
  heartbeats is marked down; a heartbeat or re-registration brings it back. A restarted
  master knows nobody: heartbeats get ``known: False`` and the slaves re-register, so the
  table rebuilds without restarting anyone.
* Marked down while alive: a node that comes back (heartbeat, or registration of a process
  that had already proceeded) after master marked it down gets ``was_down`` and drops what
  it held, since the cluster moved on without it (a role node's players were cleared). A
  configured node master has never heard from can be marked down too (a *placeholder*
  record, e.g. a role node that did not answer the write-back after a Redis loss); its
  heartbeats get ``known: False`` until it registers.
* Start order: master -> logiccenter -> map -> guild -> mail -> rolecity -> role -> login.
  A node proceeds once every node of an earlier kind (those in master's config, and those
  that registered at run time) is up.
* Scale-out: a node that registers is broadcast to every registered node.
* Shutdown: logins close, then phases login -> role -> rolecity -> mail -> guild -> map ->
  logiccenter -> master; a phase ends when every node of its kind reported done. A node
  that does not report within ``phase_timeout`` is named; the operator retries or forces.
* Versions: every heartbeat carries the node's status (``code_version``,
  ``config_version``, ``hotfix_errors``, ``config_errors`` …); a node also sends it at once
  through ``status_report`` after a hotfix or config reload.  The status with the highest
  ``status_seq`` wins, so a heartbeat built before a hotfix never hides the hotfix's report.
* Broadcasts: ``broadcast`` calls one handler on master and every live node at once, each
  call bounded (the GM API's hotfix, rollback, config reload and data fix).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import ClusterError, Service, handler
from rltwist.config import SHUTDOWN_ORDER, START_ORDER, parse_node_name

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

WAITING, UP, DOWN, STOPPED = "waiting", "up", "down", "stopped"
# Login nodes are closed first and stop before the seed's phases (they hold no data).
PHASES = ("login", *SHUTDOWN_ORDER)


@attrs.define
class NodeRecord:
    name: str
    kind: str
    number: int | None
    host: str
    port: int
    metrics_port: int
    client_port: int | None
    pid: int
    code_version: str
    config_version: str
    started_at: float
    registered_at: float
    last_seen: float
    state: str = WAITING
    status: dict[str, Any] = attrs.Factory(dict)
    #: made by master for a configured node it had to mark down before the node ever
    #: registered with it; the node's registration replaces it
    placeholder: bool = False

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "number": self.number,
            "sid": self.number if self.kind in ("map", "guild", "mail", "rolecity") else None,
            "host": self.host, "port": self.port, "metrics_port": self.metrics_port,
            "client_port": self.client_port, "pid": self.pid, "state": self.state,
            "code_version": self.code_version, "config_version": self.config_version,
            "started_at": self.started_at, "registered_at": self.registered_at,
            "last_heartbeat_age": round(now - self.last_seen, 3),
            "hotfix_errors": self.status.get("hotfix_errors", []),
            "config_errors": self.status.get("config_errors", []), "status": self.status,
        }

    def take_status(self, status: dict[str, Any]) -> bool:
        """Keep *status* unless an already received one is newer; True if taken."""
        seq, have = status.get("status_seq"), self.status.get("status_seq")
        if isinstance(seq, int) and isinstance(have, int) and seq < have:
            return False
        self.status = status
        self.code_version = str(status.get("code_version", self.code_version))
        self.config_version = str(status.get("config_version", self.config_version))
        return True


@attrs.frozen
class Answer:
    """One node's part of a broadcast: its handler's result, or why there is none."""

    ok: bool
    result: Any = None
    error: str = ""


@attrs.define
class Phase:
    kind: str
    state: str = "pending"  # pending | running | stuck | done
    nodes: dict[str, str] = attrs.Factory(dict)  # name -> pending|running|done|timeout|...
    started_at: float | None = None
    finished_at: float | None = None


@attrs.define
class Shutdown:
    state: str = "running"  # running | stuck | done
    phases: list[Phase] = attrs.Factory(list)
    reports: list[dict[str, Any]] = attrs.Factory(list)  # in arrival order
    started_at: float = attrs.Factory(time.time)
    finished_at: float | None = None
    resume: defer.Deferred[bool] | None = None  # fired by retry (False) or force (True)

    def to_json(self) -> dict[str, Any]:
        current = next((p.kind for p in self.phases if p.state in ("running", "stuck")), None)
        return {
            "state": self.state, "phase": current, "started_at": self.started_at,
            "finished_at": self.finished_at,
            "phases": [{"kind": p.kind, "state": p.state, "nodes": p.nodes,
                        "started_at": p.started_at, "finished_at": p.finished_at}
                       for p in self.phases],
            "reports": self.reports,
        }


class Masterflow(Service):
    name = "masterflow"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.config.cluster
        self.nodes: dict[str, NodeRecord] = {}
        self.login_open = True
        self.shutdown: Shutdown | None = None
        self.down_hooks: list[Callable[[NodeRecord], Awaitable[None] | None]] = []
        self.register_hooks: list[Callable[[NodeRecord], Awaitable[None] | None]] = []
        # asked about a registering node that had already proceeded: True if the cluster
        # moved on without it (it must drop what it holds), e.g. RoleRegistry after a
        # write-back of online players that this node was not part of
        self.drop_checks: list[Callable[[NodeRecord], bool]] = []
        self.exit_delay = 0.5  # lets a GM poller see the finished shutdown before exit
        self.started_at: float | None = None  # reactor time of start()
        self._monitor = LoopingCall(self._check_heartbeats)
        self._monitor.clock = node.reactor

    def _now(self) -> float:
        return float(self.node.reactor.seconds())

    # -- registration and heartbeats ------------------------------------------------------

    @handler
    async def register(self, info: dict[str, Any]) -> dict[str, Any]:
        name = info["name"]
        kind, number = parse_node_name(name)
        now = self._now()
        old = self.nodes.get(name)
        record = NodeRecord(
            name=name, kind=kind, number=number, host=info["host"], port=info["port"],
            metrics_port=info["metrics_port"], client_port=info.get("client_port"),
            pid=info["pid"], code_version=str(info.get("code_version", "")),
            config_version=str(info.get("config_version", "")),
            started_at=info.get("started_at", now), registered_at=now, last_seen=now,
            state=WAITING)
        if info.get("proceeded"):
            record.state = UP  # a node that was up before master restarted stays up
        self.nodes[name] = record
        # a process that already proceeded may hold what the cluster has given up on
        must_drop = bool(info.get("proceeded")) and (
            (old is not None and old.state == DOWN)
            or any(check(record) for check in self.drop_checks))
        moved = old is None or (old.host, old.port) != (record.host, record.port)
        self.node.cluster.set_address(name, record.host, record.port)
        log.info("{name} registered ({kind}, pid {pid}, {host}:{port}){how}", name=name,
                 kind=kind, pid=record.pid, host=record.host, port=record.port,
                 how=" again" if old is not None else "")
        if moved or (old is not None and old.pid != record.pid):
            self._broadcast(record)
        for hook in self.register_hooks:
            await _maybe_await(hook(record))
        reply = {"nodes": {n: [r.host, r.port] for n, r in self.nodes.items()} | {
            self.node.name: [self.node.me.host, self.node.me.port]},
            "login_open": self.login_open}
        if must_drop:
            reply["was_down"] = True
            log.warn("{name} registered while master counts it as gone (marked down, or left "
                     "out of a write-back); it drops what it held", name=name)
        return reply

    def _broadcast(self, record: NodeRecord) -> None:
        for other in self.nodes.values():
            if other.name != record.name and other.state != DOWN:
                try:
                    self.node.cluster.send(other.name, "slaveflow", "node_added", record.name,
                                           record.host, record.port)
                except ClusterError as e:
                    log.warn("cannot tell {other} about {name}: {e}", other=other.name,
                             name=record.name, e=e)

    @handler
    def heartbeat(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        record = self.nodes.get(name)
        if record is None or record.placeholder:
            return {"known": False}  # register first (a placeholder learns "was_down" then)
        record.last_seen = self._now()
        record.take_status(status)
        reply: dict[str, Any] = {"known": True}
        if record.state == DOWN:
            # The same process, alive again (it was frozen, or its network was cut): the
            # cluster moved on without it (a role node's players were cleared), so it
            # must drop what it held; then it is used again.
            record.state = UP if status.get("proceeded") else WAITING
            reply["was_down"] = True
            log.warn("{name} is back ({state}) after being marked down; it drops what it "
                     "held", name=name, state=record.state)

            def failed(f: Failure) -> None:
                log.failure("register hook for {name} failed", f, name=name)

            for hook in self.register_hooks:
                defer.maybeDeferred(hook, record).addErrback(failed)
        elif record.state == WAITING and status.get("proceeded"):
            record.state = UP
        if record.state == WAITING:
            reply["waiting_for"] = self.waiting_for(record.kind)
        return reply

    @handler
    def status_report(self, name: str, status: dict[str, Any]) -> None:
        """A node's status sent at once after a hotfix or config reload (not a heartbeat:
        liveness and start order are left alone)."""
        record = self.nodes.get(name)
        if record is not None and isinstance(status, dict):
            record.take_status(status)

    @handler
    def ready(self, name: str) -> None:
        record = self.nodes.get(name)
        if record is not None and record.state in (WAITING, DOWN):
            record.state = UP
            log.info("{name} is up", name=name)

    def waiting_for(self, kind: str) -> list[str]:
        """Nodes of earlier start-order kinds that are not up (master counts as up)."""
        earlier = set(START_ORDER[1:START_ORDER.index(kind)])
        expected = {n for n, c in self.node.config.nodes.items() if c.kind in earlier}
        expected |= {n for n, r in self.nodes.items() if r.kind in earlier}
        return sorted(n for n in expected
                      if n not in self.nodes or self.nodes[n].state != UP)

    def _check_heartbeats(self) -> None:
        limit = self.settings.heartbeat_interval * self.settings.heartbeat_misses
        now = self._now()
        for record in list(self.nodes.values()):
            if record.state in (WAITING, UP) and now - record.last_seen > limit:
                self.mark_down(record.name, f"no heartbeat for {now - record.last_seen:.1f}s")

    def mark_down(self, name: str, why: str) -> defer.Deferred[None]:
        """Mark *name* down and run the down hooks (a role node's players are cleared);
        the Deferred fires when the hooks have finished (their failures are logged).

        A node named in the config that never registered with this master gets a
        placeholder record, so that when it turns out to be alive it is told to drop what
        it held. A node already down or stopped is left alone.
        """
        record = self.nodes.get(name)
        if record is None:
            conf = self.node.config.nodes[name]
            kind, number = parse_node_name(name)
            now = self._now()
            record = self.nodes[name] = NodeRecord(
                name=name, kind=kind, number=number, host=conf.host, port=conf.port,
                metrics_port=conf.metrics_port, client_port=conf.client_port, pid=0,
                code_version="", config_version="", started_at=0.0, registered_at=0.0,
                last_seen=now, state=DOWN, placeholder=True)
        elif record.state in (DOWN, STOPPED):
            return defer.succeed(None)
        record.state = DOWN
        log.warn("{name} is down: {why} (pid {pid})", name=name, why=why, pid=record.pid)

        def failed(f: Failure) -> None:
            log.failure("down hook for {name} failed", f, name=name)

        calls = [defer.maybeDeferred(hook, record).addErrback(failed)
                 for hook in self.down_hooks]
        return defer.DeferredList(calls).addCallback(lambda _: None)

    def start(self) -> None:
        self.started_at = self._now()
        self._monitor.start(self.settings.heartbeat_interval, now=False)

    def startup_grace_over(self) -> bool:
        """True once a live node had time to (re-)register with this master: a configured
        node still missing then is not running (or cannot reach master)."""
        s = self.settings
        return (self.started_at is not None
                and self._now() - self.started_at > s.heartbeat_interval * s.heartbeat_misses)

    def stop(self) -> None:
        if self._monitor.running:
            self._monitor.stop()

    # -- broadcasts -----------------------------------------------------------------------

    async def broadcast(self, service: str, method: str, *args: Any,
                        timeout: float) -> tuple[dict[str, Answer], dict[str, str]]:
        """Call *service*.*method* on master and every registered node at once.

        Each call is bounded by *timeout*.  Returns the answers by node name, and the nodes
        skipped with the reason (down or stopped: they are not waited for).  A result that
        is a dict with a ``status`` entry updates that node's record at once (the entry is
        taken out of the answer).
        """
        targets: list[str] = [self.node.me.name]
        skipped: dict[str, str] = {}
        for name, record in sorted(self.nodes.items()):
            if record.state in (DOWN, STOPPED):
                skipped[name] = record.state
            else:
                targets.append(name)
        calls = [self.node.cluster.call(name, service, method, *args, timeout=timeout)
                 for name in targets]
        outcomes = await defer.DeferredList(calls, consumeErrors=True)
        answers: dict[str, Answer] = {}
        for name, (ok, value) in zip(targets, outcomes, strict=True):
            if not ok:
                error = value.value
                text = f"{type(error).__name__}: {error}"  # ClusterErrors name node+method
                log.warn("broadcast {service}.{method}: {name} failed: {error}",
                         service=service, method=method, name=name, error=text)
                answers[name] = Answer(False, error=text)
                continue
            if isinstance(value, dict) and isinstance(value.get("status"), dict):
                status = value.pop("status")
                known = self.nodes.get(name)
                if known is not None:
                    known.take_status(status)
            answers[name] = Answer(True, value)
        return answers, skipped

    # -- logins ---------------------------------------------------------------------------

    def set_login_open(self, is_open: bool) -> None:
        self.login_open = is_open
        for record in self.nodes.values():
            if record.kind == "login" and record.state != DOWN:
                self.node.cluster.send(record.name, "slaveflow", "set_login_open", is_open)
        log.info("logins {state} by GM", state="opened" if is_open else "closed")

    # -- shutdown -------------------------------------------------------------------------

    def start_shutdown(self, force: bool = False) -> Shutdown:
        """Start the ordered shutdown, or act on a stuck one (retry, or force past it)."""
        if self.shutdown is None:
            self.shutdown = Shutdown(phases=[Phase(kind=k) for k in PHASES])
            defer.Deferred.fromCoroutine(self._run_shutdown()).addErrback(
                lambda f: log.failure("shutdown flow failed", f))
        elif self.shutdown.state == "stuck" and self.shutdown.resume is not None:
            resume, self.shutdown.resume = self.shutdown.resume, None
            resume.callback(force)
        return self.shutdown

    async def _run_shutdown(self) -> None:
        assert self.shutdown is not None
        sd = self.shutdown
        log.info("shutdown started: closing logins, then phases {phases}",
                 phases=" -> ".join(PHASES))
        self.set_login_open(False)
        for phase in sd.phases:
            phase.state, phase.started_at = "running", time.time()
            if phase.kind == "master":
                phase.nodes = {self.node.me.name: "running"}
                await self.node.run_shutdown_handlers()
                phase.nodes[self.node.me.name] = "done"
                sd.reports.append({"node": self.node.me.name, "kind": "master",
                                   "finished_at": time.time(), "failed": []})
            else:
                await self._run_phase(phase)
            phase.state, phase.finished_at = "done", time.time()
            log.info("shutdown phase {kind} done", kind=phase.kind)
        sd.state, sd.finished_at = "done", time.time()
        log.info("shutdown complete; master exits")
        self.node.reactor.callLater(self.exit_delay, self.node.exit_process)

    async def _run_phase(self, phase: Phase) -> None:
        assert self.shutdown is not None
        for record in self.nodes.values():
            if record.kind == phase.kind:
                phase.nodes.setdefault(record.name,
                                       "skipped (down)" if record.state == DOWN else "pending")
        log.info("shutdown phase {kind}: {nodes}", kind=phase.kind,
                 nodes=", ".join(phase.nodes) or "no nodes")
        while True:
            todo = [n for n, s in phase.nodes.items() if s not in ("done", "forced")
                    and not s.startswith("skipped")]
            if not todo:
                return
            for n in todo:
                phase.nodes[n] = "running"
            await defer.DeferredList([defer.Deferred.fromCoroutine(self._stop_node(phase, n))
                                      for n in todo])
            stuck = [n for n in todo if phase.nodes[n] != "done"]
            if not stuck:
                return
            phase.state = self.shutdown.state = "stuck"
            log.warn("shutdown phase {kind} stuck: {nodes} did not report; POST /shutdown "
                     "to retry, or with {{\"force\": true}} to go on without them",
                     kind=phase.kind, nodes=", ".join(f"{n} ({phase.nodes[n]})" for n in stuck))
            self.shutdown.resume = defer.Deferred()
            force = await self.shutdown.resume
            phase.state = self.shutdown.state = "running"
            if force:
                for n in stuck:
                    phase.nodes[n] = "forced"
                log.warn("shutdown phase {kind}: forced past {nodes}", kind=phase.kind,
                         nodes=", ".join(stuck))

    async def _stop_node(self, phase: Phase, name: str) -> None:
        assert self.shutdown is not None
        try:
            report = await self.node.cluster.call(name, "slaveflow", "shutdown",
                                                  timeout=self.settings.phase_timeout)
        except ClusterError as e:
            phase.nodes[name] = f"{type(e).__name__}: {e.detail or e}"
            return
        phase.nodes[name] = "done"
        record = self.nodes.get(name)
        if record is not None:
            record.state = STOPPED
        self.shutdown.reports.append(report)


async def _maybe_await(value: Any) -> Any:
    if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
        return await value
    return value
