"""masterflow: the cluster's registry, health monitor and start conductor.

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
* Orderly stops: a node that stops (master's shutdown, SIGTERM) heartbeats as
  "stopping" until its services have stopped, then reports "stopped". Neither runs the
  down hooks; the stopping and stopped hooks run instead (a stopping role node leaves the
  login pick at once, its players are cleared from Redis once it stopped). A node that
  goes silent while stopping crashed: it is marked down.
* Start order (``rltwist.config.starts_after``): a node proceeds once the global nodes,
  and for a region node the earlier kinds of its own region, are up. Pool nodes (role,
  login) wait for the global nodes only.
* Scale-out and catch-up: a node that registers is broadcast to every registered node;
  every change of the name table (a node registered or moved, a node decommissioned with
  ``DELETE /nodes/<name>``) bumps its version, which every heartbeat reply carries with
  ``login_open``, so a node that missed a broadcast fetches the table (``table``).
* Region aliases (``{merged sid: target sid}``, after ``rl-merge``): part of the name
  table. Master loads them from globaldb at start (``rltwist.merge.aliases``); until then
  it hands out no alias table, so nodes keep theirs. A change is persisted first, then
  bumps the table version and is broadcast (``slaveflow.set_aliases``); nodes that missed
  it fetch the table like any other change.
* Versions: every heartbeat carries the node's status (``code_version``,
  ``config_version``, ``hotfix_errors``, ``config_errors`` …); a node also sends it at once
  through ``status_report`` after a hotfix or config reload.  The status with the highest
  ``status_seq`` wins, so a heartbeat built before a hotfix never hides the hotfix's report.
* Broadcasts: ``broadcast`` calls one handler on master and every live node at once, each
  call bounded (the GM API's hotfix, rollback, config reload and data fix).
* Shutdown of the whole cluster: ``rltwist.nodes.master.shutdown``.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import ClusterError, Service, handler
from rltwist.config import REGION_KINDS, parse_node_name, starts_after
from rltwist.nodes.master.shutdown import PHASES, Shutdown, ShutdownRunner

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

WAITING, UP, DOWN, STOPPING, STOPPED = "waiting", "up", "down", "stopping", "stopped"
#: states in which a node is expected to heartbeat
HEARTBEATING = (WAITING, UP, STOPPING)

__all__ = ["DOWN", "PHASES", "STOPPED", "STOPPING", "UP", "WAITING", "Answer", "Masterflow",
           "NodeRecord", "Shutdown"]


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
            "sid": self.number if self.kind in REGION_KINDS else None,
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


Hook = Callable[["NodeRecord"], Awaitable[None] | None]


class Masterflow(Service):
    name = "masterflow"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.config.cluster
        self.nodes: dict[str, NodeRecord] = {}
        self.login_open = True
        # orders login_open changes: a node takes a value only if it is newer than the one
        # it has (the broadcast and a heartbeat reply travel on different links)
        self.login_seq = 0
        # run when a node is marked down (it crashed, froze or was cut off)
        self.down_hooks: list[Hook] = []
        # run when a node registers, or comes back after it was marked down
        self.register_hooks: list[Hook] = []
        # run when a node begins an orderly stop, and when it has stopped
        self.stopping_hooks: list[Hook] = []
        self.stopped_hooks: list[Hook] = []
        # asked about a registering node that had already proceeded: True if the cluster
        # moved on without it (it must drop what it holds), e.g. RoleRegistry after a
        # write-back of online players that this node was not part of
        self.drop_checks: list[Callable[[NodeRecord], bool]] = []
        self.started_at: float | None = None  # reactor time of start()
        # the name table's version: this master's epoch (a restarted master never repeats
        # an older one's versions) and a counter bumped by every change
        self._epoch = secrets.token_hex(4)
        self._table_changes = 0
        # decommissioned nodes: left out of start order and role lists, removed from
        # every node's name table, until such a node registers again
        self.removed: set[str] = set()
        #: region alias table ({merged sid: target sid}); None until loaded from globaldb
        #: (rltwist.merge.aliases): nodes are sent no table before that
        self.aliases: dict[int, int] | None = None
        self.runner = ShutdownRunner(self)
        self._monitor = LoopingCall(self._check_heartbeats)
        self._monitor.clock = node.reactor

    def _now(self) -> float:
        return float(self.node.reactor.seconds())

    @property
    def shutdown(self) -> Shutdown | None:
        """The cluster shutdown, once started (``rltwist.nodes.master.shutdown``)."""
        return self.runner.shutdown

    def start_shutdown(self, force: bool = False) -> Shutdown:
        """Start the ordered shutdown, or act on a stuck one (retry, or force past it)."""
        return self.runner.start(force)

    # -- the name table -------------------------------------------------------------------

    @property
    def table_version(self) -> str:
        return f"{self._epoch}-{self._table_changes}"

    def _table_changed(self) -> None:
        self._table_changes += 1

    @handler
    def table(self) -> dict[str, Any]:
        """The name table as master knows it, with its version and ``login_open``: what a
        node that missed broadcasts fetches (slaveflow's catch-up)."""
        return {"version": self.table_version, "nodes": self._addresses(),
                "removed": sorted(self.removed), "login_open": self.login_open,
                "login_seq": self._login_seq(), **self._alias_entry()}

    def _alias_entry(self) -> dict[str, Any]:
        """``{"aliases": [[merged, target], ...]}`` once loaded, else nothing."""
        if self.aliases is None:
            return {}
        return {"aliases": sorted([m, t] for m, t in self.aliases.items())}

    def set_aliases(self, aliases: dict[int, int]) -> None:
        """Install the region alias table (already persisted by the caller): master's own
        routing, the name table's version (the heartbeats' catch-up) and a broadcast to
        every node. ValueError (nothing changes) for a table routing refuses."""
        self.node.cluster.routing.set_aliases(aliases)
        changed = self.aliases != aliases
        self.aliases = dict(aliases)
        if not changed:
            return
        self._table_changed()
        entry = self._alias_entry()["aliases"]
        log.info("region aliases {aliases} (table version {version})", aliases=entry,
                 version=self.table_version)
        for record in self.nodes.values():
            if record.state in HEARTBEATING:
                try:
                    self.node.cluster.send(record.name, "slaveflow", "set_aliases", entry)
                except ClusterError as e:
                    log.warn("cannot tell {name} the region aliases: {e} (it catches up at "
                             "its next heartbeat)", name=record.name, e=e)

    def _addresses(self) -> dict[str, list[Any]]:
        table: dict[str, list[Any]] = {n: [r.host, r.port] for n, r in self.nodes.items()}
        table[self.node.me.name] = [self.node.me.host, self.node.me.port]
        return table

    def configured(self, kind: str | None = None) -> set[str]:
        """Nodes named in master's config (of *kind*), less the decommissioned ones."""
        return {n for n, c in self.node.config.nodes.items()
                if (kind is None or c.kind == kind) and n not in self.removed}

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
        if name in self.removed:
            self.removed.discard(name)
            moved = True
            log.info("{name} registered again after it was decommissioned", name=name)
        self.node.cluster.set_address(name, record.host, record.port)
        log.info("{name} registered ({kind}, pid {pid}, {host}:{port}){how}", name=name,
                 kind=kind, pid=record.pid, host=record.host, port=record.port,
                 how=" again" if old is not None else "")
        if moved or (old is not None and old.pid != record.pid):
            self._table_changed()
            self._broadcast(record)
        for hook in self.register_hooks:
            await _maybe_await(hook(record))
        if info.get("stopping"):  # it was stopping when master restarted
            self.mark_stopping(name)
        reply = {"nodes": self._addresses(), "removed": sorted(self.removed),
                 "table_version": self.table_version, "login_open": self.login_open,
                 "login_seq": self._login_seq(), **self._alias_entry()}
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
        reply: dict[str, Any] = {"known": True, "table_version": self.table_version,
                                 "login_open": self.login_open, "login_seq": self._login_seq()}
        if record.state == DOWN:
            # The same process, alive again (it was frozen, or its network was cut): the
            # cluster moved on without it (a role node's players were cleared), so it
            # must drop what it held; then it is used again.
            record.state = UP if status.get("proceeded") else WAITING
            reply["was_down"] = True
            log.warn("{name} is back ({state}) after being marked down; it drops what it "
                     "held", name=name, state=record.state)
            self._run_hooks("register", self.register_hooks, record)
        elif record.state == WAITING and status.get("proceeded"):
            record.state = UP
        self._follow_stopping(record, status)
        if record.state == WAITING:
            reply["waiting_for"] = self.waiting_for(name)
        return reply

    @handler
    def status_report(self, name: str, status: dict[str, Any]) -> None:
        """A node's status sent at once after a hotfix, a config reload or the start of
        an orderly stop (not a heartbeat: liveness and start order are left alone)."""
        record = self.nodes.get(name)
        if record is not None and isinstance(status, dict) and record.take_status(status):
            self._follow_stopping(record, status)

    def _follow_stopping(self, record: NodeRecord, status: dict[str, Any]) -> None:
        if status.get("stopping") and record.state in (WAITING, UP):
            self.mark_stopping(record.name)

    def mark_stopping(self, name: str) -> None:
        """*name* began an orderly stop: it keeps heartbeating until ``stopped``."""
        record = self.nodes.get(name)
        if record is None or record.state not in (WAITING, UP):
            return
        record.state = STOPPING
        log.info("{name} is stopping (pid {pid})", name=name, pid=record.pid)
        self._run_hooks("stopping", self.stopping_hooks, record)

    @handler
    def stopped(self, name: str) -> None:
        """*name* finished an orderly stop (its last message before it exits)."""
        self.mark_stopped(name)

    def mark_stopped(self, name: str) -> None:
        """*name* stopped in order: no down hooks, the stopped hooks instead."""
        record = self.nodes.get(name)
        if record is None or record.state in (DOWN, STOPPED):
            return
        record.state = STOPPED
        log.info("{name} stopped (pid {pid})", name=name, pid=record.pid)
        self._run_hooks("stopped", self.stopped_hooks, record)

    def _run_hooks(self, what: str, hooks: list[Hook],
                   record: NodeRecord) -> defer.Deferred[None]:
        """Start *hooks* for *record* beside the caller (a heartbeat handler or the
        heartbeat monitor never waits for one); the Deferred fires when all finished."""
        def failed(f: Failure) -> None:
            log.failure("{what} hook for {name} failed", f, what=what, name=record.name)

        calls = [defer.maybeDeferred(hook, record).addErrback(failed) for hook in hooks]
        return defer.DeferredList(calls).addCallback(lambda _: None)

    @handler
    def ready(self, name: str) -> None:
        record = self.nodes.get(name)
        if record is not None and record.state in (WAITING, DOWN):
            record.state = UP
            log.info("{name} is up", name=name)

    def waiting_for(self, name: str) -> list[str]:
        """The nodes *name* waits for that are not up (``rltwist.config.starts_after``):
        those in master's config and those registered at run time, less the
        decommissioned ones (master itself counts as up)."""
        expected = self.configured() | set(self.nodes)
        return sorted(n for n in expected if starts_after(name, n)
                      and (n not in self.nodes or self.nodes[n].state != UP))

    def _check_heartbeats(self) -> None:
        limit = self.settings.heartbeat_interval * self.settings.heartbeat_misses
        now = self._now()
        for record in list(self.nodes.values()):
            if record.state in HEARTBEATING and now - record.last_seen > limit:
                what = " while stopping" if record.state == STOPPING else ""
                self.mark_down(record.name,
                               f"no heartbeat for {now - record.last_seen:.1f}s{what}")

    def mark_down(self, name: str, why: str) -> defer.Deferred[None]:
        """Mark *name* down and start the down hooks (a role node's players are cleared);
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
        return self._run_hooks("down", self.down_hooks, record)

    def decommission(self, name: str) -> NodeRecord | None:
        """Remove *name* from the cluster: from master's table and, by a broadcast and
        the heartbeats' catch-up, from every node's. Only a node that is not running
        (down, stopped, or never seen) can go; ``ValueError`` says why not. Returns its
        last record, if master had one."""
        if name == self.node.name:
            raise ValueError("master cannot decommission itself")
        record = self.nodes.get(name)
        if record is not None and record.state in HEARTBEATING:
            raise ValueError(f"{name} is {record.state}: stop it first (SIGTERM), then "
                             "decommission it")
        if record is None and name not in self.node.config.nodes \
                and name not in self.node.cluster.addresses:
            raise KeyError(name)
        self.nodes.pop(name, None)
        self.removed.add(name)
        self._table_changed()
        self.node.cluster.remove_node(name)
        log.warn("{name} decommissioned: removed from the name table of every node",
                 name=name)
        for other in self.nodes.values():
            if other.state in HEARTBEATING:
                try:
                    self.node.cluster.send(other.name, "slaveflow", "node_removed", name)
                except ClusterError as e:
                    log.warn("cannot tell {other} that {name} was removed: {e} (it catches "
                             "up at its next heartbeat)", other=other.name, name=name, e=e)
        return record

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
        skipped with the reason (down, stopping or stopped: they are not waited for).  A
        result that is a dict with a ``status`` entry updates that node's record at once
        (the entry is taken out of the answer).
        """
        targets: list[str] = [self.node.me.name]
        skipped: dict[str, str] = {}
        for name, record in sorted(self.nodes.items()):
            if record.state in (DOWN, STOPPING, STOPPED):
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

    def _login_seq(self) -> list[Any]:
        return [self._epoch, self.login_seq]

    def set_login_open(self, is_open: bool) -> None:
        self.login_open = is_open
        self.login_seq += 1
        for record in self.nodes.values():
            if record.kind == "login" and record.state in HEARTBEATING:
                try:
                    self.node.cluster.send(record.name, "slaveflow", "set_login_open",
                                           is_open, self._login_seq())
                except ClusterError as e:
                    log.warn("cannot tell {name} that logins are {state}: {e} (it catches "
                             "up at its next heartbeat)", name=record.name,
                             state="open" if is_open else "closed", e=e)
        log.info("logins {state} by GM", state="opened" if is_open else "closed")


async def _maybe_await(value: Any) -> Any:
    if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
        return await value
    return value
