"""Data fixes: versioned scripts that repair entity data once each (seed §14).

A data-fix directory holds one Python script per fix::

    # hotfix/datafix/role/0003_fill_missing_oil.py
    TARGET_VERSION = 3
    DESCRIPTION = "players created before 2025-03-01 have no oil"   # optional

    def fix(entity):
        if "oil" not in entity:
            entity["oil"] = 0

``DataFixer.apply_fixes(entity)`` runs every fix whose ``TARGET_VERSION`` is above
``entity.version``, in version order, and sets ``entity.version`` to each fix's version as
it succeeds, so a fix runs at most once per entity however many times the entity is loaded.
Each fix works on a deep copy that is committed only if it returns normally; a fix that
raises leaves the entity exactly as the previous fix left it, at that fix's version, and
the fixes after it wait for the next attempt (running them would skip the failed one
forever).  Entity kinds (role, guild, mailbox …) have separate version lines, so use one
``DataFixer`` per kind, each on its own directory.

``load()`` is all-or-nothing: if any script is broken, duplicated or malformed the
previously loaded set stays in force, for the same reason — a hole in the sequence must
never let later versions run.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rltwist.ecs.entity import Entity
from rltwist.ecs.errors import describe_exception
from rltwist.ecs.poller import PollingService

__all__ = ["DataFix", "DataFixError", "DataFixer", "FixFailure", "FixReport", "datafix_poller"]

log = Logger()


@attrs.frozen
class DataFix:
    """One loaded fix script."""

    version: int
    fix: Callable[[Entity], None]
    path: str
    description: str = ""


@attrs.frozen
class FixFailure:
    """A fix that raised, or a script that could not be loaded."""

    version: int
    path: str
    message: str


@attrs.frozen
class FixReport:
    """What ``apply_fixes`` did to one entity."""

    entity_id: Any
    from_version: int
    to_version: int
    applied: tuple[int, ...] = ()
    failed: FixFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    def to_dict(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly form for reports to GM tools."""
        return attrs.asdict(self, recurse=True)


class DataFixError(Exception):
    """The data-fix directory could not be loaded; ``failures`` says which scripts."""

    def __init__(self, failures: Sequence[FixFailure]) -> None:
        self.failures = tuple(failures)
        super().__init__(
            "data fixes rejected: "
            + "; ".join(f"{Path(f.path).name}: {f.message}" for f in self.failures)
        )


def _load_script(path: Path, source: bytes, kind: str) -> DataFix:
    """Compile and run one script; raise ValueError/SyntaxError/anything it raised."""
    module = ModuleType(f"rltwist_datafix.{kind}.{path.stem}")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec", dont_inherit=True), module.__dict__)
    version = getattr(module, "TARGET_VERSION", None)
    if type(version) is not int or version < 1:
        raise ValueError("TARGET_VERSION must be an integer >= 1")
    fix = getattr(module, "fix", None)
    if not callable(fix):
        raise ValueError("missing function fix(entity)")
    if inspect.iscoroutinefunction(fix):
        raise ValueError("fix(entity) must be a plain function, not async")
    description = getattr(module, "DESCRIPTION", "")
    return DataFix(version, fix, str(path), str(description))


class DataFixer:
    """The data fixes of one entity kind, loaded from one directory.

    The constructor loads the directory (raising ``DataFixError`` if it is bad); call
    ``load()`` again, or run ``datafix_poller``, to pick up scripts shipped later.
    """

    def __init__(self, directory: str | Path, kind: str = "role") -> None:
        self.directory = Path(directory)
        self.kind = kind
        self._fixes: tuple[DataFix, ...] = ()
        self._cache: dict[Path, tuple[str, DataFix]] = {}
        self._last_failure: str | None = None
        self.load()

    @property
    def fixes(self) -> tuple[DataFix, ...]:
        """Loaded fixes in version order."""
        return self._fixes

    @property
    def latest_version(self) -> int:
        """Version a newly created entity should get (so no fix runs on fresh data)."""
        return self._fixes[-1].version if self._fixes else 0

    def load(self) -> tuple[DataFix, ...]:
        """Rescan the directory and replace the fix set; return it.

        Raises ``DataFixError`` listing every bad script (the old set stays in force).
        Unchanged scripts are not run again.
        """
        failures: list[FixFailure] = []
        loaded: dict[int, DataFix] = {}
        cache: dict[Path, tuple[str, DataFix]] = {}
        paths = (
            sorted(
                p
                for p in self.directory.iterdir()
                if p.suffix == ".py" and not p.name.startswith("_")
            )
            if self.directory.is_dir()
            else []
        )
        for path in paths:
            try:
                source = path.read_bytes()
                digest = hashlib.sha256(source).hexdigest()
                cached = self._cache.get(path)
                if cached is not None and cached[0] == digest:
                    datafix = cached[1]
                else:
                    datafix = _load_script(path, source, self.kind)
            except Exception as e:
                failures.append(FixFailure(0, str(path), describe_exception(e)))
                continue
            other = loaded.get(datafix.version)
            if other is not None:
                failures.append(
                    FixFailure(
                        datafix.version,
                        str(path),
                        f"TARGET_VERSION {datafix.version} also used by "
                        f"{Path(other.path).name}",
                    )
                )
                continue
            loaded[datafix.version] = datafix
            cache[path] = (digest, datafix)
        if failures:
            error = DataFixError(failures)
            log.error("{kind} data fixes not reloaded: {error}", kind=self.kind, error=error)
            raise error
        old_versions = [f.version for f in self._fixes]
        self._fixes = tuple(loaded[v] for v in sorted(loaded))
        self._cache = cache
        if [f.version for f in self._fixes] != old_versions:
            log.info(
                "{kind} data fixes loaded, versions {versions}",
                kind=self.kind,
                versions=[f.version for f in self._fixes],
            )
        return self._fixes

    def poll(self) -> list[tuple[DataFix, ...] | DataFixError]:
        """``load()`` for a poller: ``[fixes]`` if the set changed, ``[error]`` once, or ``[]``."""
        before = self._fixes
        try:
            after = self.load()
        except DataFixError as e:
            if str(e) == self._last_failure:
                return []
            self._last_failure = str(e)
            return [e]
        self._last_failure = None
        return [] if after == before else [after]

    def pending(self, entity: Entity) -> tuple[DataFix, ...]:
        """Fixes that ``apply_fixes`` would run on ``entity``, in order."""
        return tuple(f for f in self._fixes if f.version > entity.version)

    def apply_fixes(self, entity: Entity) -> FixReport:
        """Run the pending fixes on ``entity`` in version order; stop at the first failure.

        Each fix runs on a copy that replaces the entity's data only when the fix returned
        normally, so the entity is never left half-fixed.  Returns what was applied and,
        if one failed, which one and why.
        """
        start = entity.version
        applied: list[int] = []
        for datafix in self.pending(entity):
            work = entity.copy()
            try:
                datafix.fix(work)
            except Exception as e:
                failure = FixFailure(datafix.version, datafix.path, describe_exception(e))
                log.error(
                    "{kind} {entity_id}: data fix {version} ({path}) failed, entity stays "
                    "at version {at}: {message}",
                    kind=self.kind,
                    entity_id=entity.id,
                    version=datafix.version,
                    path=Path(datafix.path).name,
                    at=entity.version,
                    message=failure.message,
                )
                return FixReport(entity.id, start, entity.version, tuple(applied), failure)
            work.version = datafix.version
            entity.replace_data(work)
            applied.append(datafix.version)
        return FixReport(entity.id, start, entity.version, tuple(applied))


def datafix_poller(
    fixer: DataFixer,
    interval: float = 5.0,
    clock: IReactorTime | None = None,
    on_results: Callable[[Sequence[Any]], Any] | None = None,
) -> PollingService[tuple[DataFix, ...] | DataFixError]:
    """A service that reloads ``fixer``'s directory every ``interval`` seconds."""
    return PollingService(
        fixer.poll, interval, clock=clock, on_results=on_results, name=f"datafix-{fixer.kind}"
    )
