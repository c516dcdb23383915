"""The ordered shutdown of the whole cluster, run by master (``POST /shutdown``).

Logins close, then the phases login -> role -> rolecity -> mail -> guild -> map ->
logiccenter -> master run one after another. In each, master calls ``slaveflow.shutdown``
on every node of the kind at once; a node runs its shutdown handlers (kick players, save
everything), answers with its report, and exits 0. A phase ends when every node of its
kind reported. A node that does not report within ``cluster.phase_timeout`` is named and
the shutdown is "stuck": the operator retries (``POST /shutdown``) or goes on without it
(``{"force": true}``). Nodes marked down are skipped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import ClusterError
from rltwist.config import SHUTDOWN_ORDER

if TYPE_CHECKING:
    from rltwist.nodes.master.masterflow import Masterflow

log = Logger()

# Login nodes are closed first and stop before the other phases (they hold no data).
PHASES = ("login", *SHUTDOWN_ORDER)


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


class ShutdownRunner:
    """Runs one cluster shutdown over masterflow's node table."""

    #: lets a GM poller see the finished shutdown before master exits
    exit_delay = 0.5

    def __init__(self, flow: Masterflow) -> None:
        self.flow = flow
        self.node = flow.node
        self.shutdown: Shutdown | None = None

    def start(self, force: bool = False) -> Shutdown:
        """Start the ordered shutdown, or act on a stuck one (retry, or force past it)."""
        if self.shutdown is None:
            self.shutdown = Shutdown(phases=[Phase(kind=k) for k in PHASES])
            defer.Deferred.fromCoroutine(self._run()).addErrback(
                lambda f: log.failure("shutdown flow failed", f))
        elif self.shutdown.state == "stuck" and self.shutdown.resume is not None:
            resume, self.shutdown.resume = self.shutdown.resume, None
            resume.callback(force)
        return self.shutdown

    async def _run(self) -> None:
        assert self.shutdown is not None
        sd = self.shutdown
        log.info("shutdown started: closing logins, then phases {phases}",
                 phases=" -> ".join(PHASES))
        self.flow.set_login_open(False)
        self._announce()
        for phase in sd.phases:
            phase.state, phase.started_at = "running", time.time()
            if phase.kind == "master":
                me = self.node.me.name
                phase.nodes = {me: "running"}
                await self.node.run_shutdown_handlers()
                phase.nodes[me] = "done"
                sd.reports.append({"node": me, "kind": "master", "finished_at": time.time(),
                                   "failed": []})
            else:
                await self._run_phase(phase)
            phase.state, phase.finished_at = "done", time.time()
            log.info("shutdown phase {kind} done", kind=phase.kind)
        sd.state, sd.finished_at = "done", time.time()
        log.info("shutdown complete; master exits")
        self.node.reactor.callLater(self.exit_delay, self.node.exit_process)

    def _announce(self) -> None:
        """Tell every node that is up that the cluster shutdown began (``slaveflow.
        cluster_stopping``, a send): map nodes pause their timed events before the nodes
        those events reach stop. A node that misses it still pauses at its own phase."""
        for record in self.flow.nodes.values():
            if record.state == "down" or record.name == self.node.me.name:
                continue
            try:
                self.node.cluster.send(record.name, "slaveflow", "cluster_stopping")
            except ClusterError as e:
                log.warn("cannot tell {node} the cluster is stopping: {e}", node=record.name,
                         e=e)

    async def _run_phase(self, phase: Phase) -> None:
        assert self.shutdown is not None
        for record in self.flow.nodes.values():
            if record.kind == phase.kind:
                phase.nodes.setdefault(record.name, "skipped (down)"
                                       if record.state == "down" else "pending")
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
                                                  timeout=self.flow.settings.phase_timeout)
        except ClusterError as e:
            phase.nodes[name] = f"{type(e).__name__}: {e.detail or e}"
            return
        phase.nodes[name] = "done"
        self.flow.mark_stopped(name)
        self.shutdown.reports.append(report)
