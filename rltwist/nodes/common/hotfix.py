"""hotfix: the per-node service applying code fix lists and online data fixes (seed §13-14).

Code (``<root>/hotfix/codefix``, see its README and ``rltwist.ecs.hotfix``): at start the
node adopts the complete lists already there — it loads the fixed sources anyway — so its
``code_version`` equals that of nodes that applied them live, and brings back the old code
of lists recorded as rolled back in ``<root>/hotfix/rolledback``.  A poller applies new
lists every ``hotreload.hotfix_interval`` seconds; master's ``POST /hotfix`` calls
``apply`` on every node for an immediate pass and ``POST /hotfix/rollback`` calls
``rollback``.  A list is applied once per process, all modules or none, and only game code:
``rltwist.game``, the LRU actor modules (``ACTOR_MODULES``) and the packages of
``[hotfix] game_packages`` in the cluster config::

    [hotfix]
    game_packages = ["mygame"]   # more packages fix lists may name (never stdlib/twisted/rltwist)

After every pass that changed something the node sends its status to master at once, and
every heartbeat carries it (``GET /nodes`` shows it per node): ``code_version``
(``<version>+<fix id>…``); ``hotfix_errors``, one entry per list file rejected here, with
each failing module and its error (it goes away when that list applies after a repair, or
its file is removed); ``hotfix_lists``, the last lists handled here with their ``state``
(``adopted``, ``applied``, ``unchanged``: nothing here reaches its modules,
``rolled_back``) and the ``changed`` modules; ``hotfix_pending``, lists waiting for their
files to be complete; ``hotfix_rolled_back``, the lists rolled back here or recorded so.

Data (``<root>/hotfix/datafix/<kind>``, see ``rltwist.ecs.datafix``): a service holding
entities online registers where to find them, once, process-wide::

    from rltwist.nodes.common.hotfix import register_online_entities
    unregister = register_online_entities("role", lambda: [p.entity for p in players])

Master's ``POST /datafix`` calls ``datafix`` on every node: the scripts of each kind are
reloaded and every pending fix runs on every entity the providers return — at most once
per entity, as the entity's ``version`` records.  Services loading entities run the same
fixes with ``hotfix_of(node).fix_entity(kind, entity)`` (on login, on LRU load).

``call_system(module, method, args)`` is an operator and test tool: it calls a method of a
system module reached through ``import_system`` on this node, so a hotfix can be checked
from outside (``POST /call`` to ``hotfix.call_system``) and benchmarks can load a system.
It runs game code with the caller's arguments: the cluster secret and the GM token guard it
like every other handler.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist import __version__
from rltwist.cluster import ClusterError, Service, handler
from rltwist.ecs.datafix import DataFixer, DataFixError
from rltwist.ecs.entity import Entity
from rltwist.ecs.errors import describe_exception
from rltwist.ecs.hotfix import (
    APPLIED,
    PENDING,
    REJECTED,
    UNCHANGED,
    FixResult,
    HotFixer,
    check_game_package,
)
from rltwist.ecs.poller import PollingService
from rltwist.ecs.registry import REGISTRY, Registry

if TYPE_CHECKING:
    from rltwist.ecs.datafix import FixReport
    from rltwist.nodes.common.node import Node

__all__ = [
    "ACTOR_MODULES",
    "ONLINE",
    "HotfixService",
    "OnlineEntities",
    "game_packages_setting",
    "hotfix_of",
    "register_online_entities",
    "report_status",
]

log = Logger()

#: what can happen to a fix list on a node (the ``result`` of rl_hotfix_lists_total)
HOTFIX_OUTCOMES = (APPLIED, UNCHANGED, REJECTED, "rolled_back")

MASTER = "master"
KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
FIX_CHUNK = 1000  # entities fixed per reactor turn, so a big node keeps serving
FAILURES_LISTED = 20  # per kind in a datafix answer; the count is always complete
LISTS_SHOWN = 20  # newest lists in the heartbeat's hotfix_lists (it rides every heartbeat)

#: Game code outside ``rltwist.game`` that fix lists may name: the modules holding the LRU
#: actors' business logic (reached through the registry, see ``rltwist.nodes.common.lru``).
ACTOR_MODULES = (
    "rltwist.nodes.guild.actor",
    "rltwist.nodes.mail.service",
    "rltwist.nodes.rolecity.service",
)
SETTINGS_SECTION = "hotfix"

OnlineProvider = Callable[[], Iterable[Entity]]


# -- online entities ----------------------------------------------------------------------


class OnlineEntities:
    """Where this process's online entities are, per entity kind (role, guild …)."""

    def __init__(self) -> None:
        self._providers: dict[str, list[OnlineProvider]] = {}

    def register(self, kind: str, provider: OnlineProvider) -> Callable[[], None]:
        """Add *provider* (returns the entities of *kind* online now); return an undo."""
        if not KIND_RE.match(kind):
            raise ValueError(f"entity kind {kind!r} must match {KIND_RE.pattern}")
        self._providers.setdefault(kind, []).append(provider)

        def unregister() -> None:
            providers = self._providers.get(kind, [])
            if provider in providers:
                providers.remove(provider)
            if not providers:
                self._providers.pop(kind, None)

        return unregister

    def kinds(self) -> tuple[str, ...]:
        """Kinds with at least one provider, sorted."""
        return tuple(sorted(self._providers))

    def entities(self, kind: str) -> tuple[list[Entity], list[str]]:
        """Every entity of *kind* the providers return now, and the providers' errors."""
        found: list[Entity] = []
        errors: list[str] = []
        for provider in list(self._providers.get(kind, ())):
            try:
                found.extend(provider())
            except Exception as e:
                errors.append(f"provider {provider!r}: {describe_exception(e)}")
        return found, errors


#: The process-wide registry game services use (one node per process).
ONLINE = OnlineEntities()


def register_online_entities(kind: str, provider: OnlineProvider) -> Callable[[], None]:
    """Make the entities *provider* returns reachable by online data fixes (``POST
    /datafix``); return a function that unregisters it (call it when the service stops)."""
    return ONLINE.register(kind, provider)


# -- configuration ------------------------------------------------------------------------


def game_packages_setting(raw: Any, where: str = "cluster config") -> tuple[str, ...]:
    """The packages ``[hotfix] game_packages`` adds to what fix lists may name (*raw* is the
    config file's raw mapping); ``ValueError`` naming the key if it is wrong."""
    section = raw.get(SETTINGS_SECTION, {}) if isinstance(raw, Mapping) else {}
    if not isinstance(section, Mapping):
        raise ValueError(f"{where}: {SETTINGS_SECTION} must be a table")
    unknown = sorted(set(section) - {"game_packages"})
    if unknown:
        raise ValueError(f"{where}: {SETTINGS_SECTION}.{unknown[0]}: unknown key "
                         "(game_packages)")
    packages = section.get("game_packages", [])
    if not isinstance(packages, list):
        raise ValueError(f"{where}: {SETTINGS_SECTION}.game_packages must be a list of "
                         "package names")
    for name in packages:
        try:
            check_game_package(name)
        except ValueError as e:
            raise ValueError(f"{where}: {SETTINGS_SECTION}.game_packages: {e}") from None
    return tuple(packages)


# -- reporting ------------------------------------------------------------------------------


def report_status(node: Node) -> None:
    """Send this node's status to master now instead of waiting for the next heartbeat."""
    if node.slaveflow is None:  # master: GET /nodes reads its status directly
        return
    try:
        node.cluster.send(MASTER, "masterflow", "status_report", node.name, node.status())
    except ClusterError as e:
        log.warn("{node}: cannot report status to master: {error}", node=node.name, error=e)


@attrs.frozen
class ListError:
    """A fix list this node rejected: the file, its id (if readable), what failed."""

    list: str
    fix_id: str
    errors: tuple[dict[str, str], ...]
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"list": self.list, "fix_id": self.fix_id, "errors": list(self.errors),
                "at": self.at}


# -- the service ----------------------------------------------------------------------------


class HotfixService(Service):
    """Cluster service ``hotfix`` of one node: code fix lists and online data fixes."""

    name = "hotfix"

    def __init__(self, node: Node, root: Path, *, registry: Registry = REGISTRY,
                 online: OnlineEntities = ONLINE, base_version: str = __version__,
                 game_packages: tuple[str, ...] = ()) -> None:
        self.node = node
        self.codefix_dir = root / "hotfix" / "codefix"
        self.datafix_dir = root / "hotfix" / "datafix"
        self.rolledback_dir = root / "hotfix" / "rolledback"
        self.registry = registry
        self.online = online
        self.hotfixer = HotFixer(self.codefix_dir, registry, base_version=base_version,
                                 game_packages=(*ACTOR_MODULES, *game_packages),
                                 state_dir=self.rolledback_dir, node_name=node.name)
        self.adopted = self.hotfixer.adopt_existing()
        self.live: list[str] = []  # ids applied live here, oldest first: what can roll back
        self.errors: dict[str, ListError] = {}  # list file name -> its rejection here
        self.fixers: dict[str, DataFixer] = {}
        # fix lists handled here by outcome (applied, unchanged, rejected, rolled_back):
        # rl_hotfix_lists_total
        self.outcomes: dict[str, int] = dict.fromkeys(HOTFIX_OUTCOMES, 0)

    @classmethod
    def install(cls, node: Node, root: Path, interval: float) -> HotfixService:
        """Register the service on *node*, add its heartbeat fields and, if *interval* > 0,
        the poller of the codefix and datafix directories.  A bad ``[hotfix]`` section ends
        the start with one line naming the key."""
        from rltwist.nodes.common.node import fail_startup  # node.py imports this module

        try:
            packages = game_packages_setting(node.config.raw, str(node.config.path))
        except ValueError as e:
            fail_startup(str(e))
            raise  # unreachable
        svc = cls(node, root, game_packages=packages)
        node.cluster.register(svc)
        node.status_providers.append(svc.status_fields)
        if interval > 0:
            PollingService(svc.poll, interval, clock=node.reactor,
                           name="hotfix").setServiceParent(node)
        return svc

    # -- status ---------------------------------------------------------------------------

    def status_fields(self) -> dict[str, Any]:
        """Heartbeat fields: the code version, the lists rejected here, the last lists
        handled (with what each changed), the pending and the rolled-back lists."""
        return {"code_version": self.hotfixer.code_version(),
                "hotfix_errors": self.error_list(),
                "hotfix_lists": self.hotfixer.list_states()[-LISTS_SHOWN:],
                "hotfix_pending": self.hotfixer.pending(),
                "hotfix_rolled_back": [r.to_dict() for r in self.hotfixer.rolled_back()]}

    def error_list(self) -> list[dict[str, Any]]:
        return [e.to_dict() for _, e in sorted(self.errors.items())]

    # -- code fixes -----------------------------------------------------------------------

    def _pass(self) -> list[FixResult]:
        """Apply the pending lists; record what happened; tell master if anything did."""
        results = self.hotfixer.apply_pending()
        changed = False
        for r in results:
            name = Path(r.path).name
            changed = True
            if r.state in self.outcomes:
                self.outcomes[r.state] += 1
            if r.accepted:
                self.live.append(r.fix_id)
                self.errors.pop(name, None)
            elif r.state == PENDING:
                self.errors.pop(name, None)  # no longer rejected: waiting for its files
            elif r.errors:
                self.errors[name] = ListError(
                    name, r.fix_id, tuple({"module": e.module, "message": e.message}
                                          for e in r.errors), time.time())
        for name in [n for n in self.errors if not (self.codefix_dir / n).exists()]:
            del self.errors[name]  # the operator removed the bad list
            changed = True
        if changed:
            report_status(self.node)
        return results

    def poll(self) -> Sequence[FixResult]:
        """One poller pass: new code fix lists, then changed data-fix scripts."""
        results = self._pass()
        for kind, fixer in list(self.fixers.items()):
            for outcome in fixer.poll():
                if isinstance(outcome, DataFixError):
                    log.error("{node}: {kind} data fixes not reloaded: {error}",
                              node=self.node.name, kind=kind, error=outcome)
        return results

    @handler
    def apply(self) -> dict[str, Any]:
        """Apply every new fix list now (what the poller would do next).

        ``applied`` (lists that changed code here), ``unchanged`` (accepted, but nothing
        here reaches their modules) and ``rejected`` are the lists handled by this pass;
        ``changes`` maps each accepted one to the modules that now run new code here
        (empty: nothing changed).  ``pending`` are the lists waiting for their files (any
        pass), ``errors`` all the lists rejected here and not repaired since, whichever
        pass met them; ``live`` the ids in force.  ``status`` lets master update ``GET
        /nodes`` at once.
        """
        results = self._pass()
        return {
            "node": self.node.name,
            "code_version": self.hotfixer.code_version(),
            "applied": [r.to_dict() for r in results if r.state == APPLIED],
            "unchanged": [r.to_dict() for r in results if r.state == UNCHANGED],
            "rejected": [r.to_dict() for r in results if r.state == REJECTED],
            "changes": {r.fix_id: list(r.changed) for r in results if r.accepted},
            "pending": self.hotfixer.pending(),
            "errors": self.error_list(),
            "live": list(self.hotfixer.applied_ids()),
            "status": self.node.status(),
        }

    @handler
    def rollback(self, fix_id: str | None = None) -> dict[str, Any]:
        """Undo the last list applied live here — only if it is *fix_id* when given.

        The rollback is recorded on disk first (``<root>/hotfix/rolledback``) with the old
        sources, so this node, restarted, runs the old code too; ``record`` says which
        modules run their old code (``restored``) and which had no old code here to record
        (``without_old_source``: not loaded when the list came).  ``ok`` is false when the
        node cannot do what was asked: *fix_id* is live but not last (roll back the later
        ones first), it was adopted at start (this process loaded the fixed sources; there
        is no old code to return to), or the record cannot be written.  A *fix_id* never
        applied here (rejected, already rolled back) is ``ok`` with nothing rolled back.
        """
        answer: dict[str, Any] = {"node": self.node.name, "fix_id": fix_id}
        last = self.live[-1] if self.live else None
        if fix_id is None:
            fix_id = answer["fix_id"] = last
        if fix_id is None:
            answer.update(ok=False, rolled_back=None,
                          error="nothing to roll back: no list was applied live here")
        elif fix_id == last:
            try:
                rolled = self.hotfixer.rollback()
            except OSError as e:
                # Not recorded means a restart would bring the code back: do not roll back.
                answer.update(ok=False, rolled_back=None,
                              error=f"cannot record the rollback in {self.rolledback_dir} "
                                    f"({e}); nothing was rolled back")
            else:
                assert rolled == fix_id, (rolled, fix_id)
                self.live.pop()
                self.outcomes["rolled_back"] += 1
                [record] = [r for r in self.hotfixer.rolled_back() if r.fix_id == rolled]
                answer.update(ok=True, rolled_back=rolled, record=record.to_dict())
                report_status(self.node)
        elif fix_id in self.live:
            answer.update(ok=False, rolled_back=None,
                          error=f"{fix_id} is not the last list applied here ({last} is); "
                                "roll that back first")
        elif fix_id in self.adopted and fix_id in self.hotfixer.applied_ids():
            answer.update(ok=False, rolled_back=None,
                          error=f"{fix_id} was adopted at start: this process loaded its "
                                "sources, there is no old code to return to; restore the "
                                "old sources and restart the node")
        else:
            answer.update(ok=True, rolled_back=None,
                          note=f"{fix_id} is not live here (rejected, or rolled back)")
        answer.update(code_version=self.hotfixer.code_version(), live=list(self.live),
                      status=self.node.status())
        return answer

    def last_live(self) -> str | None:
        """The id ``rollback()`` would undo here, or None."""
        return self.live[-1] if self.live else None

    @handler
    async def call_system(self, module: str, method: str, args: list[Any] | None = None) -> Any:
        """Operator/test tool: ``import_system(module).method(*args)`` on this node."""
        if not method or method.startswith("_"):
            raise ValueError(f"method {method!r}: only public system methods can be called")
        proxy = self.registry.import_system(module, service="hotfix")
        result = getattr(proxy, method)(*(args or ()))
        if isinstance(result, defer.Deferred) or hasattr(result, "__await__"):
            result = await result
        return result

    # -- data fixes -----------------------------------------------------------------------

    def data_fixer(self, kind: str) -> DataFixer:
        """The ``DataFixer`` of *kind* (``<root>/hotfix/datafix/<kind>``), loaded on first
        use; ``DataFixError`` if its scripts are broken, ``ValueError`` for a bad kind."""
        fixer = self.fixers.get(kind)
        if fixer is None:
            if not KIND_RE.match(kind):
                raise ValueError(f"entity kind {kind!r} must match {KIND_RE.pattern}")
            fixer = self.fixers[kind] = DataFixer(self.datafix_dir / kind, kind)
        return fixer

    def fix_entity(self, kind: str, entity: Entity) -> FixReport:
        """Run *kind*'s pending data fixes on one entity (on login, on LRU load)."""
        return self.data_fixer(kind).apply_fixes(entity)

    @handler
    async def datafix(self, kinds: list[str] | None = None) -> dict[str, Any]:
        """Reload the data-fix scripts of *kinds* (default: every kind with online
        entities here) and run the pending ones on every online entity of those kinds."""
        wanted = list(kinds) if kinds else list(self.online.kinds())
        report = {kind: await self._fix_online(kind) for kind in wanted}
        return {"node": self.node.name, "ok": all(r["ok"] for r in report.values()),
                "kinds": report}

    async def _fix_online(self, kind: str) -> dict[str, Any]:
        try:
            fixer = self.data_fixer(kind)
            fixer.load()
        except (DataFixError, ValueError) as e:
            return {"ok": False, "error": str(e), "entities": 0, "fixed": 0, "failed": 0}
        entities, provider_errors = self.online.entities(kind)
        fixed = failed = 0
        failures: list[dict[str, Any]] = []
        for i, entity in enumerate(entities):
            if i and i % FIX_CHUNK == 0:
                await task.deferLater(self.node.reactor, 0)
            result = fixer.apply_fixes(entity)
            if result.applied:
                fixed += 1
            if not result.ok:
                failed += 1
                if len(failures) < FAILURES_LISTED:
                    failures.append(result.to_dict())
        if fixed or failed or provider_errors:
            log.info("{node}: online {kind} data fixes: {fixed} of {n} entities fixed, "
                     "{failed} failed{errors}", node=self.node.name, kind=kind, fixed=fixed,
                     n=len(entities), failed=failed,
                     errors=f"; {'; '.join(provider_errors)}" if provider_errors else "")
        return {"ok": not failed and not provider_errors,
                "latest_version": fixer.latest_version, "entities": len(entities),
                "fixed": fixed, "failed": failed, "failures": failures,
                "provider_errors": provider_errors}


def hotfix_of(node: Node) -> HotfixService:
    """The node's ``hotfix`` service (installed for every node by ``install_common``)."""
    svc = node.cluster.services["hotfix"]
    assert isinstance(svc, HotfixService)
    return svc
