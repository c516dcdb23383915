"""sharedatad: the process's game config tables and their atomic reload (seed §12-13).

Every table of ``<root>/etc/game`` is loaded once per process into one ``ShareData``
(``rltwist.ecs.sharedata``) checked by ``rltwist.game.tables.VALIDATORS``; every service of
the process reads the same frozen objects through ``sharedata()``::

    tables = sharedata().snapshot        # once per request: all-old or all-new tables
    code = rolesystem.rename(entity, name, tables)

A reload builds and checks a complete new snapshot and swaps it in with one assignment, so
a request never sees one new table next to an old one.  It happens on master's
``POST /config/reload`` (the ``reload`` handler on every node) and, every
``hotreload.config_interval`` seconds, when the files changed.  After a reload that changed
the tables ``node.config_version`` is the snapshot label ``<n>-<digest>`` (n counts the
loads of this process, the digest is equal on every node that loaded the same files) and
the node tells master at once.  A rejected reload keeps the old tables serving; its
problems (file and key) are in the answer and, until a reload succeeds, in every heartbeat
as ``config_errors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from rltwist.cluster import Service, handler
from rltwist.ecs.poller import PollingService
from rltwist.ecs.sharedata import ConfigError, ConfigSnapshot, ShareData, shared
from rltwist.game.tables import VALIDATORS
from rltwist.nodes.common.hotfix import report_status

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

__all__ = ["Sharedatad", "sharedata"]

log = Logger()

_CURRENT: ShareData | None = None


def sharedata() -> ShareData:
    """This process's game config tables (RuntimeError before sharedatad is installed)."""
    if _CURRENT is None:
        raise RuntimeError("no game config tables in this process: sharedatad is not "
                           "installed (rltwist.nodes.common.services.install_common)")
    return _CURRENT


def tables_or_none() -> Mapping[str, Any] | None:
    """The game tables in force in this process, or None where none are loaded (a unit
    test's process, a tool): callers fall back to their defaults."""
    try:
        return sharedata().snapshot
    except RuntimeError:
        return None


class Sharedatad(Service):
    """Cluster service ``sharedatad``: reload the tables now, or tell what is loaded."""

    name = "sharedatad"

    def __init__(self, node: Node, sd: ShareData) -> None:
        self.node = node
        self.sd = sd
        self.problems: tuple[str, ...] = ()  # of the last failed reload, until one succeeds
        node.config_version = sd.snapshot.label
        # table reloads here by result (rl_config_reloads_total)
        self.outcomes: dict[str, int] = {"ok": 0, "rejected": 0}

    @classmethod
    def install(cls, node: Node, directory: Path, interval: float) -> Sharedatad:
        """Load *directory* (``ConfigError`` if bad), register the service on *node*, add
        its heartbeat fields and, if *interval* > 0, the change poller."""
        global _CURRENT
        sd = shared(directory, VALIDATORS)
        _CURRENT = sd
        svc = cls(node, sd)
        node.cluster.register(svc)
        node.status_providers.append(svc.status_fields)
        if interval > 0:
            PollingService(svc.poll, interval, clock=node.reactor,
                           name="sharedatad").setServiceParent(node)
        return svc

    def status_fields(self) -> dict[str, Any]:
        """Heartbeat fields (``config_version`` itself is the node attribute)."""
        return {"config_errors": list(self.problems)}

    def _loaded(self, snapshot: ConfigSnapshot) -> None:
        self.outcomes["ok"] += 1
        self.node.config_version = snapshot.label
        self.problems = ()
        log.info("{node}: config tables now {label}", node=self.node.name,
                 label=snapshot.label)

    def _failed(self, error: ConfigError) -> None:
        self.outcomes["rejected"] += 1
        self.problems = tuple(map(str, error.problems))
        log.error("{node}: config reload rejected, {label} keeps serving: {problems}",
                  node=self.node.name, label=self.sd.snapshot.label,
                  problems="; ".join(self.problems))

    def _reload(self) -> ConfigSnapshot | ConfigError | None:
        """Reload now; return the new snapshot, the error, or None if nothing changed
        (same files, and no failed reload to clear).  Master hears of every change."""
        old = self.sd.snapshot
        try:
            new = self.sd.reload()
        except ConfigError as e:
            if tuple(map(str, e.problems)) == self.problems:
                return None  # already logged and reported
            self._failed(e)
            report_status(self.node)
            return e
        if new is old and not self.problems:
            return None
        self._loaded(new)  # a change, or the files are back to what is loaded
        report_status(self.node)
        return new

    @handler
    def reload(self) -> dict[str, Any]:
        """Reload the tables now, all or nothing; answer with the version or the problems.

        ``changed`` is false when the files did not change since the last load.  The
        answer carries the node's ``status`` so master updates ``GET /nodes`` at once.
        """
        old = self.sd.snapshot
        self._reload()
        if self.problems:
            return {"node": self.node.name, "ok": False, "changed": False,
                    "config_version": old.label, "problems": list(self.problems),
                    "status": self.node.status()}
        new = self.sd.snapshot
        return {"node": self.node.name, "ok": True, "changed": new is not old,
                "config_version": new.label, "version": new.version, "digest": new.digest,
                "tables": sorted(new), "status": self.node.status()}

    @handler
    def info(self) -> dict[str, Any]:
        """What is loaded: label, digest, table names, the last reload problems."""
        snap = self.sd.snapshot
        return {"node": self.node.name, "directory": str(self.sd.directory),
                "config_version": snap.label, "version": snap.version, "digest": snap.digest,
                "tables": sorted(snap), "problems": list(self.problems)}

    def poll(self) -> Sequence[ConfigSnapshot | ConfigError]:
        """One change check for the poller (a failure is logged and reported once)."""
        result = self._reload()
        return [] if result is None else [result]
