"""Hot code reload driven by fix lists in the codefix directory (seed §13.4).

A fix list is a TOML or JSON file naming game modules and the sha256 of each one's
source, as shipped::

    id = "20250301-01-rename-length"
    modules = ["rltwist.game.names", "rltwist.game.rolesystem"]
    description = "allow 14-character names"

    [sha256]
    "rltwist.game.names" = "9f2c…"
    "rltwist.game.rolesystem" = "41ab…"

(``make_fix_list`` / ``python -m rltwist.ecs.makefix`` write one.)  What a list may do and
what the process reports:

* **Scope.**  Only game code: modules of ``rltwist.game`` and of the packages the process
  was given (``game_packages``).  A list naming anything else (``json``,
  ``twisted.internet.defer``, the rltwist framework) is rejected whole, naming the module.
* **Complete packages only.**  A list is applied only when every module's source file is
  there and hashes to the list's sha256 — a half-unpacked package is *pending*: nothing
  runs, nothing is remembered, and it is applied on the first pass that finds it complete.
  Lists apply in file-name order, so a later list waits behind a pending one.  A module
  whose file already holds the version of a later list (both packages unpacked before one
  pass) counts as present: the later list follows in the same pass.
* **All or nothing.**  Each module is recompiled from the verified bytes into a *fresh*
  module object and run; only when every module ran are they installed at once — system
  modules by retargeting their registry proxies (see ``rltwist.ecs.registry``), modules the
  registry tracks (LRU actor modules) after their required classes are checked, and every
  module in ``sys.modules``.
* **Dependents.**  A game module that imported a fixed module by name (``from x import
  f``) holds the old objects; it is re-run too, from the source it is running, after the
  modules it imports (so it binds the new ``f``).  Framework modules are never re-run: one
  that imported a game helper keeps the version it imported.
* **Truthful results.**  ``changed`` lists the modules the registry reaches (systems,
  tracked modules) that now run new code.  A list that changes none of them here is
  ``unchanged`` — valid and remembered, but nothing in this process runs differently.
* **Rollback.**  ``rollback()`` reinstalls the modules the last list replaced.  With a
  ``state_dir`` it first records the rollback on disk with the old sources, so a process
  started later imports those instead of the rolled-back files (``adopt_existing``).

A list is handled once per process, remembered by its ``id``; the file is never edited.  A
rejected list changes nothing and is retried only when the list file or a source changes.
"""

from __future__ import annotations

import ast
import base64
import builtins
import importlib
import importlib.machinery
import importlib.util
import json
import linecache
import os
import re
import sys
import time
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from rltwist.ecs.errors import describe_exception
from rltwist.ecs.poller import PollingService
from rltwist.ecs.registry import REGISTRY, Registry, install_module
from rltwist.ecs.sources import BUILTIN_GAME_PACKAGES, GAME_CODE, in_packages, sha256_hex

__all__ = [
    "FixList",
    "FixListError",
    "FixResult",
    "HotFixer",
    "ModuleError",
    "check_game_package",
    "hotfix_poller",
    "make_fix_list",
    "parse_fix_list",
    "write_fix_list",
]

log = Logger()

LIST_SUFFIXES = (".toml", ".json")
APPLIED, UNCHANGED, REJECTED, PENDING = "applied", "unchanged", "rejected", "pending"
ADOPTED, ROLLED_BACK = "adopted", "rolled_back"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
# Never game code, whatever a configuration says: re-running them splits the process.
_FRAMEWORK_TOPS = frozenset({"rltwist", "twisted", "__main__"})


class FixListError(ValueError):
    """A fix list file that cannot be used (unreadable, bad syntax, bad keys)."""


def check_game_package(name: str) -> None:
    """Raise ``ValueError`` unless *name* may be configured as a game package: a dotted
    module name outside the standard library, Twisted and rltwist (whose game code,
    ``rltwist.game``, is always included)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a dotted module name")
    top = name.split(".")[0]
    if top in _FRAMEWORK_TOPS or top in sys.stdlib_module_names:
        raise ValueError(f"{name} cannot be a game package: it is (part of) the standard "
                         "library, Twisted or rltwist, which a hotfix must never re-run")


@attrs.frozen
class FixList:
    """One parsed fix list: its modules in order and the sha256 of each one's source."""

    id: str
    modules: tuple[str, ...]
    description: str
    path: Path
    sha256: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen
class ModuleError:
    """Why one module of a fix list could not be used (or, for a pending list, what it
    waits for)."""

    module: str
    message: str


@attrs.frozen
class FixResult:
    """Outcome of one fix list in this process, ready to report to master.

    ``state``: ``applied`` (``changed`` modules, reached through the registry, run new
    code), ``unchanged`` (accepted, but nothing here reaches its modules), ``rejected``
    (``errors``; nothing changed) or ``pending`` (``waiting``: files missing or not yet
    the list's version; nothing changed, retried every pass).  ``swapped`` are all modules
    re-run and installed (listed ones and ``dependents``), ``not_loaded`` the listed
    modules this process has not imported (only compiled), ``services`` the registry users
    of the changed modules.
    """

    fix_id: str
    path: str
    state: str
    changed: tuple[str, ...] = ()
    swapped: tuple[str, ...] = ()
    dependents: tuple[str, ...] = ()
    not_loaded: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    errors: tuple[ModuleError, ...] = ()
    waiting: tuple[ModuleError, ...] = ()
    code_version: str = ""

    @property
    def accepted(self) -> bool:
        """True if the list is now in force here (applied or unchanged)."""
        return self.state in (APPLIED, UNCHANGED)

    def to_dict(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly form for the report to master."""
        doc = {k: list(v) if isinstance(v, tuple) else v
               for k, v in attrs.asdict(self, recurse=False).items()}
        doc["errors"] = [attrs.asdict(e) for e in self.errors]
        doc["waiting"] = [attrs.asdict(e) for e in self.waiting]
        return doc


# -- fix list files ------------------------------------------------------------------------


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
    unknown = set(data) - {"id", "modules", "description", "sha256"}
    if unknown:
        raise FixListError(f"{path.name}: unknown key(s) {', '.join(sorted(unknown))}")
    fix_id = data.get("id")
    if not isinstance(fix_id, str) or not fix_id.strip() or "+" in fix_id or "/" in fix_id:
        raise FixListError(f"{path.name}: key 'id' must be a non-empty string without "
                           "'+' or '/'")
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
    sha = data.get("sha256")
    if not isinstance(sha, dict):
        raise FixListError(f"{path.name}: key 'sha256' (module -> sha256 of its source) is "
                           "missing; write lists with python -m rltwist.ecs.makefix")
    missing = [m for m in modules if m not in sha]
    extra = sorted(set(sha) - set(modules))
    bad = [m for m in modules if m in sha and not (isinstance(sha[m], str)
                                                   and _SHA_RE.match(sha[m].lower()))]
    if missing or extra or bad:
        problems = [f"no checksum for {', '.join(missing)}" if missing else "",
                    f"checksum of unlisted {', '.join(extra)}" if extra else "",
                    f"not a hex sha256 for {', '.join(bad)}" if bad else ""]
        raise FixListError(f"{path.name}: key 'sha256': "
                           + "; ".join(p for p in problems if p))
    return FixList(fix_id.strip(), tuple(modules), description, path,
                   {m: sha[m].lower() for m in modules})


def make_fix_list(fix_id: str, modules: Sequence[str], description: str = "",
                  sources: Mapping[str, bytes] | None = None) -> str:
    """The TOML text of a fix list for *modules*, with the sha256 of each module's source
    (taken from *sources*, else read from the file the module name resolves to now)."""
    lines = [f"id = {json.dumps(fix_id)}",
             "modules = [" + ", ".join(json.dumps(m) for m in modules) + "]"]
    if description:
        lines.append(f"description = {json.dumps(description)}")
    lines += ["", "[sha256]"]
    for name in modules:
        source = sources[name] if sources and name in sources else _module_source(name)[1]
        lines.append(f"{json.dumps(name)} = \"{sha256_hex(source)}\"")
    return "\n".join(lines) + "\n"


def write_fix_list(directory: str | Path, fix_id: str, modules: Sequence[str],
                   description: str = "", sources: Mapping[str, bytes] | None = None,
                   filename: str | None = None) -> Path:
    """Write ``make_fix_list(...)`` to ``<directory>/<filename or fix_id.toml>`` atomically
    (a temporary file renamed into place); return the path."""
    path = Path(directory) / (filename or f"{fix_id}.toml")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(make_fix_list(fix_id, modules, description, sources))
    os.replace(tmp, path)
    return path


# -- modules and their sources -----------------------------------------------------------------


def _module_spec(name: str) -> importlib.machinery.ModuleSpec:
    """Locate module ``name``'s spec (of the loaded module if any); ImportError if none."""
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
    return spec


def _module_source(name: str) -> tuple[importlib.machinery.ModuleSpec, bytes]:
    """Locate module ``name``'s source file and read it."""
    spec = _module_spec(name)
    assert spec.origin is not None
    return spec, Path(spec.origin).read_bytes()


_import_cache: dict[tuple[str, str], frozenset[str]] = {}


def _imports_of(name: str, source: bytes, is_package: bool) -> frozenset[str]:
    """Modules whose objects *source* (module *name*) binds at import time: ``import a.b``
    gives ``a`` and ``a.b``; ``from p import x`` gives ``p`` and ``p.x`` (x may be a
    submodule).  Imports inside functions run at call time and see the new module anyway."""
    key = (name, sha256_hex(source))
    found = _import_cache.get(key)
    if found is not None:
        return found
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()

    def visit(nodes: Iterable[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".") if package else []
                    if node.level - 1 > len(base):
                        continue
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                if target:
                    names.add(target)
                    names.update(f"{target}.{a.name}" for a in node.names if a.name != "*")
            visit(ast.iter_child_nodes(node))

    try:
        visit(ast.parse(source).body)
    except (SyntaxError, ValueError):
        pass
    found = _import_cache[key] = frozenset(names - {name})
    return found


def _is_package(module: ModuleType | None, spec: Any) -> bool:
    if module is not None and hasattr(module, "__path__"):
        return True
    return getattr(spec, "submodule_search_locations", None) is not None


def _encode_source(source: bytes | None) -> dict[str, Any]:
    if source is None:
        return {"old_source": None}
    try:
        return {"old_source": source.decode("utf-8")}
    except UnicodeDecodeError:
        return {"old_source_b64": base64.b64encode(source).decode()}


def _decode_source(doc: Mapping[str, Any]) -> bytes | None:
    if isinstance(doc.get("old_source"), str):
        return str(doc["old_source"]).encode("utf-8")
    if isinstance(doc.get("old_source_b64"), str):
        return base64.b64decode(doc["old_source_b64"])
    return None


# -- bookkeeping ---------------------------------------------------------------------------------


@attrs.define
class _Applied:
    fix: FixList
    previous: dict[str, ModuleType]
    old_sources: dict[str, bytes | None]
    registry_names: frozenset[str]


@attrs.define
class _Replaced:
    """What one all-or-nothing replacement did (or why it did nothing)."""

    order: list[str] = attrs.field(factory=list)
    dependents: list[str] = attrs.field(factory=list)
    changed: list[str] = attrs.field(factory=list)
    previous: dict[str, ModuleType] = attrs.field(factory=dict)
    old_sources: dict[str, bytes | None] = attrs.field(factory=dict)
    registry_names: frozenset[str] = frozenset()
    errors: list[ModuleError] = attrs.field(factory=list)


@attrs.define
class RolledBack:
    """A list rolled back here or recorded on disk as rolled back (``state_dir``)."""

    fix_id: str
    list: str
    at: float
    # builtins.list: the field ``list`` above shadows the builtin in this class body
    # modules running their old code here
    restored: builtins.list[str] = attrs.field(factory=builtins.list)
    # modules that would load the new code
    without_old_source: builtins.list[str] = attrs.field(factory=builtins.list)
    old: dict[str, tuple[str, bytes | None]] = attrs.field(factory=dict)  # name -> (fixed sha, old)

    def to_dict(self) -> dict[str, Any]:
        """The report form (``GET /nodes`` status, rollback answers): no sources."""
        return {"fix_id": self.fix_id, "list": self.list, "at": self.at,
                "restored": sorted(self.restored),
                "without_old_source": sorted(self.without_old_source)}


class HotFixer:
    """Applies codefix lists from one directory to one registry; remembers what it did.

    ``base_version`` is the code version the process started with (the package version or
    a build id); ``code_version()`` appends each list in force to it.  ``game_packages``
    are added to ``rltwist.game`` as what lists may name.  ``state_dir`` (optional) is
    where rollbacks are recorded, as ``<state_dir>/<fix id>/<node_name>.json``.
    """

    def __init__(
        self,
        codefix_dir: str | Path,
        registry: Registry = REGISTRY,
        base_version: str = "0",
        game_packages: Iterable[str] = (),
        state_dir: str | Path | None = None,
        node_name: str = "",
    ) -> None:
        self.codefix_dir = Path(codefix_dir)
        self.registry = registry
        self.base_version = base_version
        self.game_packages = tuple(dict.fromkeys([*BUILTIN_GAME_PACKAGES, *game_packages]))
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.node_name = node_name or f"pid{os.getpid()}"
        GAME_CODE.add(self.game_packages)
        GAME_CODE.remember_all_loaded()
        self._applied_ids: list[str] = []  # in force, in order (rolled back ones removed)
        self._seen_ids: dict[str, Path] = {}  # every id handled, never forgotten
        self._rejected: dict[Path, str] = {}  # path -> fingerprint when it was rejected
        self._pending: dict[Path, tuple[str, tuple[ModuleError, ...]]] = {}
        self._undo: list[_Applied] = []
        self._states: dict[str, dict[str, Any]] = {}  # fix id -> state for reports
        self._rolled_back: dict[str, RolledBack] = {}
        self._load_rollbacks()

    # -- versions and reports ------------------------------------------------------------

    def applied_ids(self) -> tuple[str, ...]:
        """Ids of the fix lists in force in this process, in the order applied."""
        return tuple(self._applied_ids)

    def code_version(self) -> str:
        """``base_version`` plus ``+id`` for each list in force, e.g. ``0.1.0+fix1+fix2``."""
        return "".join([self.base_version, *("+" + i for i in self._applied_ids)])

    def is_game(self, name: str) -> bool:
        """True if a fix list may name module *name* here."""
        return in_packages(name, self.game_packages)

    def rolled_back(self) -> list[RolledBack]:
        """Lists rolled back here or recorded on disk as rolled back, oldest first."""
        return sorted(self._rolled_back.values(), key=lambda r: (r.at, r.fix_id))

    def rolled_back_ids(self) -> tuple[str, ...]:
        """Ids of ``rolled_back()``."""
        return tuple(r.fix_id for r in self.rolled_back())

    def pending(self) -> list[dict[str, Any]]:
        """Lists waiting for their files: list file, id, and what each waits for."""
        return [{"list": path.name, "fix_id": fix_id,
                 "waiting": [attrs.asdict(w) for w in waiting]}
                for path, (fix_id, waiting) in sorted(self._pending.items())]

    def list_states(self) -> list[dict[str, Any]]:
        """Every list handled in this process, in order: ``fix_id``, ``list``, ``state``
        (adopted, applied, unchanged, rolled_back), ``changed`` modules, ``at``."""
        return list(self._states.values())

    def _set_state(self, fix_id: str, path: Path | str, state: str,
                   changed: Iterable[str] = ()) -> None:
        self._states.pop(fix_id, None)  # re-inserted last: the dict keeps handling order
        self._states[fix_id] = {"fix_id": fix_id, "list": Path(path).name, "state": state,
                                "changed": list(changed), "at": round(time.time(), 3)}

    # -- scanning ------------------------------------------------------------------------

    def _list_files(self) -> list[Path]:
        if not self.codefix_dir.is_dir():
            return []
        return sorted(
            p for p in self.codefix_dir.iterdir() if p.suffix in LIST_SUFFIXES and p.is_file()
        )

    def _parse_all(self) -> list[tuple[Path, FixList | None, str]]:
        parsed: list[tuple[Path, FixList | None, str]] = []
        for path in self._list_files():
            try:
                parsed.append((path, parse_fix_list(path), ""))
            except FixListError as e:
                parsed.append((path, None, str(e)))
        return parsed

    def _fingerprint(self, path: Path, sources: Mapping[str, bytes]) -> str:
        digest = [path.read_bytes() if path.exists() else b""]
        digest += [name.encode() + b"\0" + source for name, source in sorted(sources.items())]
        return sha256_hex(b"\0\0".join(digest))

    def _scope_errors(self, fix: FixList) -> list[ModuleError]:
        packages = ", ".join(self.game_packages)
        return [ModuleError(name, f"{name} is not game code: a fix list may name only "
                                  f"modules of {packages}")
                for name in fix.modules if not self.is_game(name)]

    def _read_sources(self, fix: FixList, later: Sequence[FixList]
                      ) -> tuple[dict[str, bytes], tuple[ModuleError, ...]]:
        """The verified source of each module of *fix*, or what is still missing."""
        sources: dict[str, bytes] = {}
        waiting: list[ModuleError] = []
        for name in fix.modules:
            try:
                _, source = _module_source(name)
            except (ImportError, OSError) as e:
                waiting.append(ModuleError(name, f"source file not found ({e})"))
                continue
            except Exception as e:  # e.g. its package's __init__ is broken (half unpacked)
                waiting.append(ModuleError(name, "cannot locate its source: "
                                                 + describe_exception(e)))
                continue
            digest = sha256_hex(source)
            if digest == fix.sha256[name]:
                sources[name] = source
            elif any(other.sha256.get(name) == digest for other in later):
                # A later list's version is already unpacked; that list follows at once.
                sources[name] = source
            else:
                waiting.append(ModuleError(name, f"sha256 of the source file is {digest[:12]}…,"
                                                 f" the list says {fix.sha256[name][:12]}… "
                                                 "(still being unpacked, or not this "
                                                 "list's version)"))
        return sources, tuple(waiting)

    def adopt_existing(self) -> tuple[str, ...]:
        """Record complete lists already in the directory as in force, without running them,
        and bring back the old code of lists recorded as rolled back.

        Call once at process start, before services import game code: a fresh process
        loads the fixed sources anyway, and this keeps its ``code_version()`` equal to
        that of processes that applied the lists live.  Adoption stops at the first list
        that is incomplete or out of scope; ``apply_pending`` handles it and the ones after.
        """
        adopted = []
        parsed = self._parse_all()
        fixes = [f for _, f, _ in parsed if f is not None]
        for i, fix in enumerate(fixes):
            if fix.id in self._seen_ids:
                continue
            if self._scope_errors(fix) or self._read_sources(fix, fixes[i + 1:])[1]:
                break
            self._seen_ids[fix.id] = fix.path
            self._applied_ids.append(fix.id)
            self._set_state(fix.id, fix.path, ADOPTED)
            adopted.append(fix.id)
        if adopted:
            log.info("hotfix: adopted {ids} at start", ids=", ".join(adopted))
        self._restore_rolled_back(fixes)
        return tuple(adopted)

    def apply_pending(self) -> list[FixResult]:
        """Apply every complete list not seen before (file-name order); return results.

        Lists already handled, rejected and unchanged since, or pending for the same
        reasons as last time are not reported again, so calling this on every poll is cheap
        and idempotent.
        """
        results: list[FixResult] = []
        parsed = self._parse_all()
        still_pending: set[Path] = set()
        blocked_by: Path | None = None
        for i, (path, fix, error) in enumerate(parsed):
            if fix is not None and self._seen_ids.get(fix.id) == path:
                continue
            if fix is not None and fix.id in self._seen_ids:
                error = (f"{path.name}: duplicate fix id {fix.id!r} (already "
                         f"used by {self._seen_ids[fix.id].name})")
                fix = None
            if fix is None:
                result = self._reject_once(path, "", {}, [ModuleError("", error)])
            elif scope_errors := self._scope_errors(fix):
                result = self._reject_once(path, fix.id, {}, scope_errors)
            else:
                if blocked_by is not None:
                    sources: dict[str, bytes] = {}
                    waiting: tuple[ModuleError, ...] = (
                        ModuleError("", f"waits for {blocked_by.name}, which is pending"),)
                else:
                    later = [f for _, f, _ in parsed[i + 1:] if f is not None]
                    sources, waiting = self._read_sources(fix, later)
                if waiting:
                    blocked_by = blocked_by or path
                    still_pending.add(path)
                    if self._pending.get(path) != (fix.id, waiting):
                        self._pending[path] = (fix.id, waiting)
                        log.info("hotfix {fix_id} pending: {waiting}", fix_id=fix.id,
                                 waiting="; ".join(f"{w.module}: {w.message}"
                                                   for w in waiting))
                        results.append(self._result(fix.id, path, PENDING, waiting=waiting))
                    continue
                fingerprint = self._fingerprint(path, sources)
                if self._rejected.get(path) == fingerprint:
                    continue
                result = self.apply(fix, sources)
                if result.state == REJECTED:
                    self._rejected[path] = fingerprint
                else:
                    self._rejected.pop(path, None)
            if result is not None:
                results.append(result)
        for path in set(self._pending) - still_pending:
            del self._pending[path]
        return results

    def _reject_once(self, path: Path, fix_id: str, sources: Mapping[str, bytes],
                     errors: Sequence[ModuleError]) -> FixResult | None:
        fingerprint = self._fingerprint(path, sources)
        if self._rejected.get(path) == fingerprint:
            return None
        self._rejected[path] = fingerprint
        log.error("hotfix: rejected {path}: {errors}", path=str(path),
                  errors="; ".join(f"{e.module}: {e.message}" if e.module else e.message
                                   for e in errors))
        return self._result(fix_id, path, REJECTED, errors=tuple(errors))

    # -- applying ------------------------------------------------------------------------

    def _result(self, fix_id: str, path: Path, state: str, **kwargs: Any) -> FixResult:
        return FixResult(fix_id, str(path), state, code_version=self.code_version(),
                         **kwargs)

    def apply(self, fix: FixList, sources: Mapping[str, bytes] | None = None) -> FixResult:
        """Apply one fix list now, all modules or none; return what happened.

        *sources* are the verified sources (``apply_pending`` passes them); without them the
        files are read and checked here, and an incomplete list comes back ``pending``.
        A list whose id was already handled in this process changes nothing.
        """
        if fix.id in self._seen_ids and self._seen_ids[fix.id] != fix.path:
            return self._result(fix.id, fix.path, REJECTED, errors=(
                ModuleError("", f"duplicate fix id {fix.id!r}"),))
        if fix.id in self._seen_ids:
            return self._result(fix.id, fix.path, UNCHANGED)
        scope_errors = self._scope_errors(fix)
        if scope_errors:
            return self._result(fix.id, fix.path, REJECTED, errors=tuple(scope_errors))
        if sources is None:
            sources, waiting = self._read_sources(fix, ())
            if waiting:
                return self._result(fix.id, fix.path, PENDING, waiting=waiting)

        done = self._replace(fix.modules, sources)
        if done.errors:
            log.error(
                "hotfix {fix_id} rejected, old code keeps running: {errors}",
                fix_id=fix.id,
                errors="; ".join(f"{e.module}: {e.message}" for e in done.errors),
            )
            return self._result(fix.id, fix.path, REJECTED, errors=tuple(done.errors))

        for name in fix.modules:
            GAME_CODE.clear_override(name)  # a newer fix of a rolled-back module wins
        self._undo.append(_Applied(fix, done.previous, done.old_sources, done.registry_names))
        self._seen_ids[fix.id] = fix.path
        self._applied_ids.append(fix.id)
        state = APPLIED if done.changed else UNCHANGED
        self._set_state(fix.id, fix.path, state, done.changed)
        services = sorted({s for n in done.changed for s in self.registry.services(n)})
        result = FixResult(
            fix.id,
            str(fix.path),
            state,
            changed=tuple(done.changed),
            swapped=tuple(done.order),
            dependents=tuple(done.dependents),
            not_loaded=tuple(n for n in fix.modules if n not in done.order),
            services=tuple(services),
            code_version=self.code_version(),
        )
        if state == APPLIED:
            log.info("hotfix {fix_id} applied: {changed} run new code (re-run: {swapped}); "
                     "code version {version}", fix_id=fix.id,
                     changed=", ".join(done.changed), swapped=", ".join(done.order),
                     version=result.code_version)
        else:
            log.info("hotfix {fix_id} accepted, nothing changed here: no module of it is "
                     "reached through the registry in this process (re-run: {swapped}); "
                     "code version {version}", fix_id=fix.id,
                     swapped=", ".join(done.order) or "none", version=result.code_version)
        return result

    def _current(self, name: str) -> ModuleType:
        return self.registry.module(name) if self.registry.is_loaded(name) else sys.modules[name]

    def _running_source(self, name: str, module: ModuleType) -> bytes | None:
        source = GAME_CODE.source_of(name)
        if source is None:
            GAME_CODE.remember_loaded(name, module)
            source = GAME_CODE.source_of(name)
        return source

    def _dependents(self, changed: set[str]) -> list[str]:
        """Loaded game modules that import (directly or through each other) one of
        *changed* by name, so hold its old objects; sorted."""
        candidates: dict[str, frozenset[str]] = {}
        names = {n for n, m in list(sys.modules.items()) if m is not None and self.is_game(n)}
        names |= {n for n in self.registry.modules() if self.is_game(n)}
        for name in names - changed:
            module = self._current(name) if (name in sys.modules
                                              or self.registry.is_loaded(name)) else None
            if module is None:
                continue
            source = self._running_source(name, module)
            if source is not None:
                candidates[name] = _imports_of(name, source, _is_package(module, None))
        found: set[str] = set()
        frontier = set(changed)
        while frontier:
            new = {n for n, imports in candidates.items()
                   if n not in found and imports & frontier}
            found |= new
            frontier = new
        return sorted(found)

    def _replace(self, listed: Sequence[str], sources: Mapping[str, bytes]) -> _Replaced:
        """Re-run the loaded modules of *listed* from *sources* and their dependents from
        the source they run, all or nothing; install them on success."""
        done = _Replaced()
        specs: dict[str, Any] = {}
        codes: dict[str, Any] = {}
        run_sources: dict[str, bytes] = {}
        for name in listed:
            try:
                spec = specs[name] = _module_spec(name)
                codes[name] = compile(sources[name], spec.origin or name, "exec",
                                      dont_inherit=True)
                run_sources[name] = sources[name]
            except Exception as e:
                done.errors.append(ModuleError(name, describe_exception(e)))
        if done.errors:
            return done
        loaded = [n for n in listed if n in sys.modules or self.registry.is_loaded(n)]
        done.dependents = self._dependents(set(loaded)) if loaded else []
        for name in done.dependents:
            module = self._current(name)
            try:
                spec = specs[name] = _module_spec(name)
                source = self._running_source(name, module)
                if source is None:
                    raise ImportError(f"the source of {name} is unknown")
                codes[name] = compile(source, spec.origin or name, "exec", dont_inherit=True)
                run_sources[name] = source
            except Exception as e:
                done.errors.append(ModuleError(name, "re-running it as a dependent failed: "
                                               + describe_exception(e)))
        if done.errors:
            return done
        run = loaded + done.dependents
        imports = {n: _imports_of(n, run_sources[n],
                                  _is_package(self._current(n), specs[n])) for n in run}
        # Ties: modules outside the registry (helpers) first, then the list's order.
        priority = {n: (self.registry.is_loaded(n), i) for i, n in enumerate(run)}
        done.order = _dependency_order(run, imports, priority)

        fresh: dict[str, ModuleType] = {}
        for name in done.order:
            done.previous[name] = self._current(name)
            done.old_sources[name] = GAME_CODE.source_of(name)
            try:
                fresh[name] = self._run_fresh(name, specs[name], codes[name])
                if self.registry.is_loaded(name):
                    self.registry.check(name, fresh[name])
            except Exception as e:
                done.errors.append(ModuleError(name, describe_exception(e)))
                break
        if done.errors:
            # Put back whatever the staged modules displaced in sys.modules.
            for name, module in done.previous.items():
                install_module(name, module)
            return done

        done.registry_names = frozenset(n for n in fresh if self.registry.is_loaded(n))
        self.registry.swap({n: fresh[n] for n in done.order if n in done.registry_names})
        for name in done.order:
            if name not in done.registry_names:
                install_module(name, fresh[name])
            GAME_CODE.record(name, run_sources[name])
        done.changed = [n for n in done.order if n in done.registry_names]
        return done

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

    # -- rollback ------------------------------------------------------------------------

    def rollback(self) -> str | None:
        """Reinstall the modules the last applied list replaced; return its id.

        Returns None when there is nothing to roll back (lists adopted at start have no
        old code in this process).  With a ``state_dir`` the rollback is recorded on disk
        first (an ``OSError`` there propagates and nothing is rolled back), so a restarted
        process does not load the rolled-back code.  The id leaves ``code_version()`` but
        stays remembered, so the same list is not applied again; ship a new list to re-fix.
        """
        if not self._undo:
            return None
        undo = self._undo[-1]
        fix = undo.fix
        record = RolledBack(fix.id, fix.path.name, round(time.time(), 3))
        for name in fix.modules:
            old = undo.old_sources.get(name)
            record.old[name] = (fix.sha256.get(name, ""), old)
            if name in undo.previous:
                record.restored.append(name)
            if old is None:  # not loaded here when applied: a restart loads the new code
                record.without_old_source.append(name)
        if self.state_dir is not None:
            self._write_rollback(record)
        self._undo.pop()
        self.registry.swap(
            {n: m for n, m in undo.previous.items() if n in undo.registry_names}
        )
        for name, module in undo.previous.items():
            if name not in undo.registry_names:
                install_module(name, module)
            old = undo.old_sources.get(name)
            if old is not None:
                GAME_CODE.record(name, old)
        self._applied_ids.remove(fix.id)
        self._rolled_back[fix.id] = record
        self._set_state(fix.id, fix.path, ROLLED_BACK, sorted(undo.registry_names))
        log.info(
            "hotfix {fix_id} rolled back{recorded}; code version {version}",
            fix_id=fix.id, version=self.code_version(),
            recorded=f" (recorded in {self.state_dir})" if self.state_dir else "",
        )
        return fix.id

    def _write_rollback(self, record: RolledBack) -> None:
        assert self.state_dir is not None
        directory = self.state_dir / record.fix_id
        directory.mkdir(parents=True, exist_ok=True)
        doc = {"fix_id": record.fix_id, "list": record.list, "at": record.at,
               "node": self.node_name,
               "modules": {name: {"fixed_sha256": sha, **_encode_source(old)}
                           for name, (sha, old) in record.old.items()}}
        path = directory / f"{self.node_name}.json"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)

    def _load_rollbacks(self) -> None:
        """Read the rollbacks recorded in ``state_dir`` (any node's, oldest first)."""
        if self.state_dir is None or not self.state_dir.is_dir():
            return
        for path in sorted(self.state_dir.glob("*/*.json")):
            try:
                doc = json.loads(path.read_text())
                fix_id, list_name = str(doc["fix_id"]), str(doc["list"])
                modules = dict(doc["modules"])
                at = float(doc.get("at", 0.0))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.error("hotfix: unreadable rollback record {path}: {e}", path=str(path),
                          e=e)
                continue
            record = self._rolled_back.setdefault(fix_id, RolledBack(fix_id, list_name, at))
            for name, entry in modules.items():
                old = _decode_source(entry) if isinstance(entry, dict) else None
                sha = str(entry.get("fixed_sha256", "")) if isinstance(entry, dict) else ""
                if old is not None or name not in record.old:
                    record.old[name] = (sha, old)
            self._seen_ids[fix_id] = self.codefix_dir / list_name
            self._set_state(fix_id, list_name, ROLLED_BACK)

    def _restore_rolled_back(self, fixes: Sequence[FixList]) -> None:
        """Serve the old source of each module of a rolled-back list whose file still holds
        the rolled-back version, and re-run the ones already loaded from it."""
        order = {f.path.name: i for i, f in enumerate(fixes)}
        restore: dict[str, bytes] = {}
        for record in self.rolled_back():
            record.restored, record.without_old_source = [], []
            mine = order.get(record.list, len(fixes))
            for name, (fixed_sha, old) in sorted(record.old.items()):
                try:
                    disk = sha256_hex(_module_source(name)[1])
                except (ImportError, OSError):
                    continue
                later = any(f.id not in self._rolled_back and f.sha256.get(name) == disk
                            for f in fixes[mine + 1:])
                if disk != fixed_sha or later:
                    continue  # the file holds other code now (restored, or a newer fix)
                if old is None:
                    record.without_old_source.append(name)
                    continue
                GAME_CODE.override(name, old)
                restore[name] = old
                record.restored.append(name)
        loaded = [n for n in restore if n in sys.modules or self.registry.is_loaded(n)]
        if loaded:
            done = self._replace(loaded, restore)
            if done.errors:
                log.error("hotfix: could not bring back the old code of rolled-back "
                          "modules {modules}: {errors}", modules=", ".join(loaded),
                          errors="; ".join(f"{e.module}: {e.message}" for e in done.errors))
        if restore:
            log.info("hotfix: rolled-back modules run their old code: {modules}",
                     modules=", ".join(sorted(restore)))


def _dependency_order(names: Sequence[str], imports: Mapping[str, frozenset[str]],
                      priority: Mapping[str, Any]) -> list[str]:
    """*names* ordered so a module comes after the modules of *names* it imports; ties (and
    import cycles) broken by *priority*."""
    remaining = set(names)
    order: list[str] = []
    while remaining:
        ready = [n for n in remaining if not (imports[n] & (remaining - {n}))]
        pick = min(ready or remaining, key=lambda n: priority[n])
        order.append(pick)
        remaining.discard(pick)
    return order


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
