"""Game code: which modules are game code, the exact source each loaded game module ran,
and the sources a restarted process must run instead of what is on disk.

A hotfix needs three facts no plain import keeps:

* **Scope.**  Only game code may be re-run by a fix list: ``rltwist.game`` and the packages
  a deployment adds (``GameCode.add``).  Re-running ``json`` or ``twisted.internet.defer``
  would create a second ``JSONDecodeError`` or ``Deferred`` class inside a live process.
* **What runs.**  A module's source file can change on disk (a fix package being unpacked)
  while the process keeps running what it loaded at start.  The import hook below reads
  each game module's source once, compiles those very bytes (never a ``.pyc`` that may
  belong to other bytes) and remembers them, so a hotfix knows the old source it replaces
  (to persist a rollback) and the imports the running code really makes (to find the
  modules that imported a fixed helper).
* **Overrides.**  A list rolled back on a node is recorded with the old sources; a process
  started later imports those instead of the rolled-back files still on disk.

One process-wide instance, ``GAME_CODE``, installed in ``sys.meta_path`` on first use.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["BUILTIN_GAME_PACKAGES", "GAME_CODE", "GameCode", "in_packages", "sha256_hex"]

#: Game code every process has: the game systems.
BUILTIN_GAME_PACKAGES = ("rltwist.game",)


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of *data* (what fix lists carry per module source)."""
    return hashlib.sha256(data).hexdigest()


def in_packages(name: str, packages: Iterable[str]) -> bool:
    """True if module *name* is one of *packages* or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in packages)


class _GameLoader(importlib.machinery.SourceFileLoader):
    """Loads a game module from its source bytes (or an override), remembering them."""

    def __init__(self, fullname: str, path: str, code: GameCode) -> None:
        super().__init__(fullname, path)
        self._code = code

    def get_code(self, fullname: str) -> Any:
        source = self._code.override_of(fullname)
        if source is None:
            source = self.get_data(self.path)
        # Compile exactly the bytes recorded: a cached .pyc might stem from other bytes.
        code = self.source_to_code(source, self.path)
        self._code.record(fullname, source)
        return code


class _GameFinder(importlib.abc.MetaPathFinder):
    def __init__(self, code: GameCode) -> None:
        self._code = code

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if not self._code.is_game(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if (spec is None or spec.origin is None
                or not isinstance(spec.loader, importlib.machinery.SourceFileLoader)):
            return spec
        spec.loader = _GameLoader(fullname, spec.origin, self._code)
        return spec


class GameCode:
    """The game packages of this process, the sources their modules ran, and overrides."""

    def __init__(self, packages: Iterable[str] = BUILTIN_GAME_PACKAGES) -> None:
        self._packages: set[str] = set(packages)
        self._sources: dict[str, bytes] = {}
        self._overrides: dict[str, bytes] = {}
        self._finder = _GameFinder(self)
        self._lock = threading.Lock()

    # -- scope ----------------------------------------------------------------------------

    def add(self, packages: Iterable[str]) -> None:
        """Treat *packages* (dotted names) as game code from now on; install the hook."""
        self._packages.update(packages)
        self.install()

    def packages(self) -> frozenset[str]:
        """The game packages known in this process."""
        return frozenset(self._packages)

    def is_game(self, name: str) -> bool:
        """True if module *name* belongs to a game package of this process."""
        return in_packages(name, self._packages)

    def install(self) -> None:
        """Put the import hook first in ``sys.meta_path`` (once)."""
        with self._lock:
            if self._finder not in sys.meta_path:
                sys.meta_path.insert(0, self._finder)

    # -- sources --------------------------------------------------------------------------

    def record(self, name: str, source: bytes) -> None:
        """Remember that module *name* now runs *source*."""
        self._sources[name] = source

    def source_of(self, name: str) -> bytes | None:
        """The source module *name* runs, if known."""
        return self._sources.get(name)

    def remember_loaded(self, name: str, module: ModuleType | None = None) -> None:
        """Record the source of a module loaded before the hook saw it, read from its file
        now (best effort: a module imported before the hook was installed)."""
        if name in self._sources:
            return
        module = module if module is not None else sys.modules.get(name)
        origin = getattr(getattr(module, "__spec__", None), "origin", None)
        if not origin or not origin.endswith(".py"):
            return
        try:
            self._sources[name] = Path(origin).read_bytes()
        except OSError:
            pass

    def remember_all_loaded(self) -> None:
        """``remember_loaded`` for every game module already in ``sys.modules``."""
        for name, module in list(sys.modules.items()):
            if module is not None and self.is_game(name):
                self.remember_loaded(name, module)

    def forget(self, names: Iterable[str]) -> None:
        """Drop what is known about *names* (tests simulating a fresh process)."""
        for name in names:
            self._sources.pop(name, None)
            self._overrides.pop(name, None)

    # -- overrides --------------------------------------------------------------------------

    def override(self, name: str, source: bytes) -> None:
        """Import *name* from *source* instead of its file (a rolled-back fix)."""
        self._overrides[name] = source

    def clear_override(self, name: str) -> None:
        """Import *name* from its file again (a newer fix replaced it)."""
        self._overrides.pop(name, None)

    def override_of(self, name: str) -> bytes | None:
        """The source *name* is imported from instead of its file, if any."""
        return self._overrides.get(name)

    def overrides(self) -> tuple[str, ...]:
        """Modules imported from an override, sorted."""
        return tuple(sorted(self._overrides))


GAME_CODE = GameCode()
