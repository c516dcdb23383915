"""Hot code reload driven by fix lists in the codefix directory (seed §13.4).

A fix list is a TOML or JSON file::

    id = "20250301-01-rename-length"
    modules = ["rltwist.game.names", "rltwist.game.rolesystem"]
    description = "allow 14-character names"

``HotFixer.apply_pending()`` applies every list it has not seen yet, in file-name order.
For one list it recompiles each module from its source file into a *fresh* module object,
runs it, and only when every module compiled and ran does it install them all at once:
system modules by retargeting their registry proxies (see ``rltwist.ecs.registry`` for why
proxies), every module in ``sys.modules`` so later plain imports agree.  Modules loaded but
not through the registry (helpers) are run before the system modules, so a system re-run
in the same list already imports the new helper.  Modules the process has not loaded are
only compiled — the next import reads the new file anyway — which still rejects a list with
a syntax error the same way in every process.

A list is applied once per process, remembered by its ``id`` in memory; the file is never
edited.  A rejected list (bad file, or any module failing to compile or run) changes
nothing, and is retried only when the list file or one of its module sources changes.
``rollback()`` reinstalls the modules the last applied list replaced; its id stays
remembered so the poller does not re-apply it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import linecache
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rltwist.ecs.errors import describe_exception
from rltwist.ecs.poller import PollingService
from rltwist.ecs.registry import REGISTRY, Registry, install_module, system_of

__all__ = [
    "FixList",
    "FixListError",
    "FixResult",
    "HotFixer",
    "ModuleError",
    "hotfix_poller",
    "parse_fix_list",
]

log = Logger()

LIST_SUFFIXES = (".toml", ".json")
# Swapping these would split the process between two System base classes and registries.
FRAMEWORK_PREFIXES = ("rltwist.ecs",)


class FixListError(ValueError):
    """A fix list file that cannot be used (unreadable, bad syntax, bad keys)."""


@attrs.frozen
class FixList:
    """One parsed fix list."""

    id: str
    modules: tuple[str, ...]
    description: str
    path: Path


@attrs.frozen
class ModuleError:
    """Why one module of a fix list could not be compiled or run."""

    module: str
    message: str


@attrs.frozen
class FixResult:
    """Outcome of one fix list in this process, ready to report to master.

    ``swapped`` modules now run new code; ``compiled_only`` were checked but are not
    loaded here.  ``services`` are the registry users of the swapped system modules.
    """

    fix_id: str
    path: str
    applied: bool
    swapped: tuple[str, ...] = ()
    compiled_only: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    errors: tuple[ModuleError, ...] = ()
    code_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly form for the report to master."""
        doc = attrs.asdict(self, recurse=True)
        doc["errors"] = [attrs.asdict(e) for e in self.errors]
        return doc


def parse_fix_list(path: Path) -> FixList:
    """Read and check a ``.toml`` or ``.json`` fix list; raise ``FixListError`` if bad."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as e:
        raise FixListError(f"{path.name}: cannot read fix list: {e}") from e
    if not isinstance(data, dict):
        raise FixListError(f"{path.name}: a fix list must be a table/object")
    unknown = set(data) - {"id", "modules", "description"}
    if unknown:
        raise FixListError(f"{path.name}: unknown key(s) {', '.join(sorted(unknown))}")
    fix_id = data.get("id")
    if not isinstance(fix_id, str) or not fix_id.strip() or "+" in fix_id:
        raise FixListError(f"{path.name}: key 'id' must be a non-empty string without '+'")
    modules = data.get("modules")
    if (
        not isinstance(modules, list)
        or not modules
        or not all(isinstance(m, str) and m for m in modules)
    ):
        raise FixListError(f"{path.name}: key 'modules' must be a non-empty list of names")
    if len(set(modules)) != len(modules):
        raise FixListError(f"{path.name}: key 'modules' lists a module twice")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise FixListError(f"{path.name}: key 'description' must be a string")
    return FixList(fix_id.strip(), tuple(modules), description, path)


def _module_source(name: str) -> tuple[importlib.machinery.ModuleSpec, bytes]:
    """Locate module ``name``'s source file and read it."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None:
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(name)
    if spec is None:
        raise ImportError(f"no module named {name}")
    origin = spec.origin
    if not spec.has_location or origin is None or not origin.endswith(".py"):
        raise ImportError(f"module {name} has no Python source file to recompile")
    return spec, Path(origin).read_bytes()


@attrs.define
class _Applied:
    fix_id: str
    previous: dict[str, ModuleType]
    registry_names: frozenset[str]


class HotFixer:
    """Applies codefix lists from one directory to one registry; remembers what it did.

    ``base_version`` is the code version the process started with (the package version or
    a build id); ``code_version()`` appends each applied fix id to it.
    """

    def __init__(
        self,
        codefix_dir: str | Path,
        registry: Registry = REGISTRY,
        base_version: str = "0",
    ) -> None:
        self.codefix_dir = Path(codefix_dir)
        self.registry = registry
        self.base_version = base_version
        self._applied_ids: list[str] = []  # live, in order (rolled back ones removed)
        self._seen_ids: dict[str, Path] = {}  # every id handled, never forgotten
        self._rejected: dict[Path, str] = {}  # path -> fingerprint when it was rejected
        self._undo: list[_Applied] = []

    # -- versions --------------------------------------------------------------------

    def applied_ids(self) -> tuple[str, ...]:
        """Ids of the fix lists live in this process, in the order applied."""
        return tuple(self._applied_ids)

    def code_version(self) -> str:
        """``base_version`` plus ``+id`` for each live fix list, e.g. ``0.1.0+fix1+fix2``."""
        return "".join([self.base_version, *("+" + i for i in self._applied_ids)])

    # -- scanning --------------------------------------------------------------------

    def _list_files(self) -> list[Path]:
        if not self.codefix_dir.is_dir():
            return []
        return sorted(
            p for p in self.codefix_dir.iterdir() if p.suffix in LIST_SUFFIXES and p.is_file()
        )

    def _fingerprint(self, path: Path, fix: FixList | None) -> str:
        digest = hashlib.sha256()
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
        for name in fix.modules if fix else ():
            try:
                digest.update(_module_source(name)[1])
            except Exception:
                digest.update(b"\0missing:" + name.encode())
        return digest.hexdigest()

    def adopt_existing(self) -> tuple[str, ...]:
        """Record lists already in the directory as applied, without running them.

        Call once at process start, before services import systems: a fresh process
        loads the fixed source files anyway, and this keeps its ``code_version()`` equal to
        that of processes that applied the lists live.  Unreadable lists are left for
        ``apply_pending`` to report.
        """
        adopted = []
        for path in self._list_files():
            try:
                fix = parse_fix_list(path)
            except FixListError:
                continue
            if fix.id not in self._seen_ids:
                self._seen_ids[fix.id] = path
                self._applied_ids.append(fix.id)
                adopted.append(fix.id)
        if adopted:
            log.info("hotfix: adopted {ids} at start", ids=", ".join(adopted))
        return tuple(adopted)

    def apply_pending(self) -> list[FixResult]:
        """Apply every list not seen before (file-name order); return their results.

        Lists already applied, rolled back, or rejected and unchanged since are skipped,
        so calling this on every poll is cheap and idempotent.
        """
        results = []
        for path in self._list_files():
            fix_id = ""
            try:
                fix: FixList | None = parse_fix_list(path)
                error = ""
            except FixListError as e:
                fix, error = None, str(e)
            if fix is not None and self._seen_ids.get(fix.id) == path:
                continue
            if fix is not None and fix.id in self._seen_ids:
                fix_id = fix.id
                fix, error = None, (
                    f"{path.name}: duplicate fix id {fix_id!r} "
                    f"(already used by {self._seen_ids[fix_id].name})"
                )
            fingerprint = self._fingerprint(path, fix)
            if self._rejected.get(path) == fingerprint:
                continue
            if fix is None:
                log.error("hotfix: rejected {path}: {error}", path=str(path), error=error)
                result = self._result(fix_id, path, errors=(ModuleError("", error),))
            else:
                result = self.apply(fix)
            if result.applied:
                self._rejected.pop(path, None)
            else:
                self._rejected[path] = fingerprint
            results.append(result)
        return results

    # -- applying --------------------------------------------------------------------

    def _result(self, fix_id: str, path: Path, **kwargs: Any) -> FixResult:
        return FixResult(
            fix_id, str(path), applied=False, code_version=self.code_version(), **kwargs
        )

    def apply(self, fix: FixList) -> FixResult:
        """Apply one fix list now, all modules or none; return what happened.

        A list whose id was already handled in this process is reported as not applied
        with no errors and changes nothing.
        """
        if fix.id in self._seen_ids and self._seen_ids[fix.id] != fix.path:
            return self._result(fix.id, fix.path, errors=(
                ModuleError("", f"duplicate fix id {fix.id!r}"),))
        if fix.id in self._seen_ids:
            return self._result(fix.id, fix.path)

        errors: list[ModuleError] = []
        specs: dict[str, importlib.machinery.ModuleSpec] = {}
        codes: dict[str, Any] = {}
        for name in fix.modules:
            if name.startswith(FRAMEWORK_PREFIXES):
                errors.append(ModuleError(name, "framework modules cannot be hot swapped"))
                continue
            try:
                spec, source = _module_source(name)
                codes[name] = compile(
                    importlib.util.decode_source(source), spec.origin or name, "exec",
                    dont_inherit=True,
                )
                specs[name] = spec
            except Exception as e:
                errors.append(ModuleError(name, describe_exception(e)))

        loaded = [n for n in fix.modules if n in sys.modules or self.registry.is_loaded(n)]
        # Helpers first, so systems re-run in this list import the new helpers.
        order = [n for n in loaded if not self.registry.is_loaded(n)] + [
            n for n in loaded if self.registry.is_loaded(n)
        ]
        previous: dict[str, ModuleType] = {}
        fresh: dict[str, ModuleType] = {}
        if not errors:
            for name in order:
                previous[name] = (
                    self.registry.module(name)
                    if self.registry.is_loaded(name)
                    else sys.modules[name]
                )
                try:
                    fresh[name] = self._run_fresh(name, specs[name], codes[name])
                    if self.registry.is_loaded(name):
                        system_of(fresh[name])
                except Exception as e:
                    errors.append(ModuleError(name, describe_exception(e)))

        if errors:
            # Put back whatever the staged modules displaced in sys.modules.
            for name, module in previous.items():
                install_module(name, module)
            result = self._result(fix.id, fix.path, errors=tuple(errors))
            log.error(
                "hotfix {fix_id} rejected, old code keeps running: {errors}",
                fix_id=fix.id,
                errors="; ".join(f"{e.module}: {e.message}" for e in errors),
            )
            return result

        registry_names = frozenset(n for n in fresh if self.registry.is_loaded(n))
        self.registry.swap({n: fresh[n] for n in order if n in registry_names})
        for name in order:
            if name not in registry_names:
                install_module(name, fresh[name])
        self._undo.append(_Applied(fix.id, previous, registry_names))
        self._seen_ids[fix.id] = fix.path
        self._applied_ids.append(fix.id)
        services = sorted({s for n in registry_names for s in self.registry.services(n)})
        result = FixResult(
            fix.id,
            str(fix.path),
            applied=True,
            swapped=tuple(order),
            compiled_only=tuple(n for n in fix.modules if n not in fresh),
            services=tuple(services),
            code_version=self.code_version(),
        )
        log.info(
            "hotfix {fix_id} applied: swapped {swapped}; code version {version}",
            fix_id=fix.id,
            swapped=", ".join(order) or "(none loaded)",
            version=result.code_version,
        )
        return result

    def _run_fresh(
        self, name: str, spec: importlib.machinery.ModuleSpec, code: Any
    ) -> ModuleType:
        """Run ``code`` as a new module object for ``name``, left installed in sys.modules.

        It is installed while running because module code (dataclasses, attrs, relative
        imports) looks itself up there; the caller restores the old one on rejection.
        """
        new_spec = importlib.util.spec_from_file_location(
            name, spec.origin, submodule_search_locations=spec.submodule_search_locations
        )
        if new_spec is None:
            raise ImportError(f"cannot build a module spec for {name}")
        module = importlib.util.module_from_spec(new_spec)
        # A re-run package keeps its already imported submodules as attributes.
        current = sys.modules.get(name)
        if current is not None and new_spec.submodule_search_locations is not None:
            for key, value in vars(current).items():
                if isinstance(value, ModuleType) and value.__name__ == f"{name}.{key}":
                    setattr(module, key, value)
        if spec.origin:
            linecache.checkcache(spec.origin)
        install_module(name, module)
        exec(code, module.__dict__)
        return module

    def rollback(self) -> str | None:
        """Reinstall the modules the last applied list replaced; return its id.

        Returns None when there is nothing to roll back (lists adopted at start have no
        old code in this process).  The rolled-back id leaves ``code_version()`` but stays
        remembered, so the same list is not applied again; ship a new list to re-fix.
        """
        if not self._undo:
            return None
        undo = self._undo.pop()
        self.registry.swap(
            {n: m for n, m in undo.previous.items() if n in undo.registry_names}
        )
        for name, module in undo.previous.items():
            if name not in undo.registry_names:
                install_module(name, module)
        self._applied_ids.remove(undo.fix_id)
        log.info(
            "hotfix {fix_id} rolled back; code version {version}",
            fix_id=undo.fix_id,
            version=self.code_version(),
        )
        return undo.fix_id


def hotfix_poller(
    hotfixer: HotFixer,
    interval: float = 5.0,
    clock: IReactorTime | None = None,
    on_results: Any = None,
) -> PollingService[FixResult]:
    """A service polling ``hotfixer``'s codefix directory every ``interval`` seconds."""
    return PollingService(
        hotfixer.apply_pending, interval, clock=clock, on_results=on_results, name="hotfix"
    )
