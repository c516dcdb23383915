"""Role nodes in Redis, kept by master: the least-loaded pick logins use, and the role
nodes' online players after a Redis loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.cluster import ClusterError
from rltwist.config import parse_node_name
from rltwist.nodes.master.masterflow import DOWN, STOPPED, UP, Masterflow, NodeRecord

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()

ROLECACHE_KINDS = frozenset({"rolecity", "mail", "map"})
"""Node kinds that run a rolecache (told ``node_down`` when a role node goes)."""


class RoleRegistry(service.Service):
    """Keeps role nodes in Redis for login's least-loaded pick (seed §11).

    A registering role node is added (fresh: a restarted process starts empty); a role
    node marked down is removed and its players' state cleared, so they can log in again
    at once. A role node that begins an orderly stop leaves the pick at once but keeps its
    players (it is saving and logging them out); once it stopped, whatever it left is
    cleared. Redis being unreachable never delays registration: the work runs in the
    background and failures are logged.

    Redis lost its keys (``is_available`` unset; logins answer NOT_AVAILABLE): every role
    node must write its online players back before logins resume, or the next login of an
    online player would put it online a second time. A master that has just started knows
    no role nodes yet, so it first waits ``cluster.reregister_wait`` from its start for them
    to register again — unless every role node named in the config, and every other one
    that registered, is a new process (it had not proceeded): nobody can hold players then
    (a cold start, or the whole cluster restarted), so it goes on at once. Then it asks,
    all at once, every role node named in the config and every one that registered (not
    down or stopped), each within ``ask_timeout()``; one that registers meanwhile is asked
    in another round. A node that does not answer in time (or fails) is marked down: its
    players are cleared as after a crash, and if it turns out to be alive it is told to
    drop them. Then ``is_available`` is set. A role node that had already proceeded and
    registers only after that write-back was left out of it: it is told to drop what it
    holds too.
    """

    def __init__(self, node: Node, flow: Masterflow) -> None:
        self.state = node.redis_state()
        self.flow = flow
        self.node = node
        flow.register_hooks.append(self.registered)
        flow.down_hooks.append(self.down)
        flow.stopping_hooks.append(self.stopping)
        flow.stopped_hooks.append(self.down)
        flow.drop_checks.append(self._missed_write_back)
        self.checker = LoopingCall(self.check_available)
        self.checker.clock = node.reactor
        self._checking = False
        self._wait_logged = False
        self.started_at: float | None = None  # when master's reactor ran its ready hooks
        # role nodes that wrote their players back in the last write-back this master ran
        # (None: none ran, or one is running)
        self.restored: set[str] | None = None
        # role nodes that registered with this master as new processes (they hold no
        # players: logins are refused until is_available is set)
        self.new_processes: set[str] = set()
        self.unavailable = False  # the last check found is_available unset
        node.add_ready_hook(self._start)
        self.setServiceParent(node)

    def _start(self) -> None:
        self.started_at = float(self.node.reactor.seconds())
        self.checker.start(self.node.config.cluster.heartbeat_interval, now=True)

    def stopService(self) -> Any:
        if self.checker.running:
            self.checker.stop()
        return super().stopService()

    def ask_timeout(self) -> float:
        """How long each role node has to write its players back after a Redis loss."""
        s = self.node.config.cluster
        return max(s.reregister_wait, s.heartbeat_interval * s.heartbeat_misses)

    def check_available(self) -> None:
        if not self._checking:
            self._checking = True
            d = defer.Deferred.fromCoroutine(self._check_available())
            d.addErrback(lambda f: log.warn("master: Redis availability check failed: "
                                            "{error}", error=f.getErrorMessage()))
            d.addBoth(lambda _: setattr(self, "_checking", False))

    async def _check_available(self) -> None:
        """Seed §11: after a Redis restart ``is_available`` is unset and logins are refused
        until every role node has written its online players back; then set it."""
        if await self.state.get_available():
            self._wait_logged = self.unavailable = False
            return
        self.unavailable = True
        assert self.started_at is not None
        left = self.started_at + self.node.config.cluster.reregister_wait - float(
            self.node.reactor.seconds())
        if left > 0 and self._nobody_holds_players():
            log.info("master: Redis is_available is unset and every role node registered "
                     "as a new process (a cold start): no players to wait for")
        elif left > 0:
            if not self._wait_logged:
                self._wait_logged = True
                log.warn("master: Redis is_available is unset (Redis lost its keys); "
                         "waiting {left:.1f}s more (cluster.reregister_wait) for role nodes "
                         "to register before asking them for their online players",
                         left=left)
            return
        await self._write_back()

    def _nobody_holds_players(self) -> bool:
        configured = self.flow.configured("role")
        registered = {n for n, r in self.flow.nodes.items() if r.kind == "role"
                      and not r.placeholder and r.state not in (DOWN, STOPPED)}
        return configured <= registered <= self.new_processes

    def role_nodes(self) -> list[str]:
        """Role nodes that may hold players: those in the config and those registered,
        less those down or stopped."""
        names = self.flow.configured("role")
        names |= {n for n, r in self.flow.nodes.items() if r.kind == "role"}
        return sorted(n for n in names if n not in self.flow.nodes
                      or self.flow.nodes[n].state not in (DOWN, STOPPED))

    async def _write_back(self) -> None:
        self.restored = None
        timeout = self.ask_timeout()
        asked: set[str] = set()
        restored: set[str] = set()
        players = 0
        while True:
            todo = [n for n in self.role_nodes() if n not in asked]
            if not todo:
                break
            asked.update(todo)
            log.warn("master: Redis is_available unset; asking role nodes {nodes} to write "
                     "their online players back (each within {t:g}s)",
                     nodes=", ".join(todo), t=timeout)
            results = await defer.DeferredList(
                [defer.Deferred.fromCoroutine(self._ask(n, timeout)) for n in todo],
                consumeErrors=True)
            for name, (ok, count) in zip(todo, results, strict=True):
                if ok:
                    restored.add(name)
                    players += count
        # from here on (no wait in between) a role node that proceeded and registers is
        # one that was left out: it drops what it holds (Masterflow.drop_checks)
        self.restored = restored
        await self.state.set_available()
        lost = sorted(asked - restored)
        log.info("master: Redis is_available set; logins allowed ({players} players written "
                 "back by {n} role nodes{lost})", players=players, n=len(restored),
                 lost=f"; marked down: {', '.join(lost)}" if lost else "")

    async def _ask(self, name: str, timeout: float) -> int:
        try:
            count = await self.node.cluster.call(name, "gateway", "reregister",
                                                 timeout=timeout)
        except ClusterError as e:
            log.warn("master: role node {node} did not write its players back ({error}); "
                     "marking it down: its players are cleared as after a crash",
                     node=name, error=e)
            await self.flow.mark_down(name, f"did not write its players back after a Redis "
                                            f"loss ({type(e).__name__})")
            raise
        log.info("master: {node} wrote {count} players back", node=name, count=count)
        return int(count)

    def _missed_write_back(self, record: NodeRecord) -> bool:
        return (record.kind == "role" and self.restored is not None
                and record.name not in self.restored)

    def registered(self, record: NodeRecord) -> None:
        if record.kind != "role":
            return
        if record.state == UP:  # it had proceeded: it may hold players
            self.new_processes.discard(record.name)
        else:
            self.new_processes.add(record.name)
        if record.client_port is not None:
            self._background(self.state.register_role(record.name, record.host,
                                                      record.client_port,
                                                      fresh=record.state != UP),
                             f"record role node {record.name} in Redis")
        if self.unavailable and self.started_at is not None:
            self.check_available()  # this may be the one the write-back waits for

    def stopping(self, record: NodeRecord) -> defer.Deferred[Any] | None:
        if record.kind == "role":
            return self._background(self.state.withdraw_role(record.name),
                                    f"take stopping role node {record.name} out of the pick")
        return None

    def down(self, record: NodeRecord) -> defer.Deferred[Any] | None:
        if record.kind == "role":
            self._forget_in_rolecaches(record.name)
            return self._background(self.state.unregister_role(record.name),
                                    f"clear role node {record.name} from Redis")
        return None

    def _forget_in_rolecaches(self, role: str) -> None:
        """Tell every rolecache (rolecity, mail and map nodes) that *role*'s players are
        gone, so no push or forward goes to a dead node."""
        cluster = self.node.cluster
        for name in sorted(cluster.addresses):
            try:
                kind, _ = parse_node_name(name)
            except ValueError:
                continue
            if kind in ROLECACHE_KINDS:
                try:
                    cluster.send(name, "rolecache", "node_down", role)
                except ClusterError as e:
                    log.warn("master: cannot tell {node} that {role} is down: {e}",
                             node=name, role=role, e=e)

    def _background(self, work: Any, what: str) -> defer.Deferred[Any]:
        def failed(f: Failure) -> None:
            log.warn("master: could not {what}: {error}", what=what, error=f.getErrorMessage())

        def done(result: Any) -> None:
            log.info("master: {what} ({result})", what=what, result=result)

        return defer.ensureDeferred(work).addCallbacks(done, failed)
