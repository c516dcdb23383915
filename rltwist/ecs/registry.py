"""The ``import`` registry (seed §13.3): how game code reaches systems.

``import_system("rltwist.game.rolesystem", service="agent")`` loads the module once per
process and returns a ``SystemProxy`` — a stable handle whose target is the module's
``system`` instance.  The registry remembers which modules the process uses and which
services asked for them (what the seed's hotfix service tallies), and it is the one place a
hotfix swaps code.

Why proxies rather than patching the old classes' functions in place: a proxy swap is one
reference assignment per module, so a fix list of several modules goes live all together
and ``rollback`` is the same assignment backwards.  The old module object is left intact,
so a coroutine that started under the old code keeps running against the old module's
globals and helpers until it finishes, while every new call through any proxy — including
proxies fetched long before the fix — uses the new code.  Patching ``__code__`` in place
would also reach bound methods saved elsewhere, but breaks when a fix adds a closure
variable, default or helper, and leaves a half-patched class if one module of a list fails.
The one thing a proxy cannot reach is a bound method copied out of it
(``cb = rolesystem.rename``): such a reference keeps the old code, so game code keeps the
proxy and looks methods up at call time.

Modules without a system can be reached through the registry too: ``track`` records a
module (the LRU layer tracks the module of each group's ``Actor`` class) with the classes a
new version must still define; a hotfix checks those before it swaps anything, and every
swap bumps ``version`` so holders re-resolve what they took from the module at call time.
What the registry reaches is what a hotfix reports as changed.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from twisted.logger import Logger

from rltwist.ecs.sources import GAME_CODE
from rltwist.ecs.system import System

__all__ = ["REGISTRY", "Registry", "SystemProxy", "import_system", "resolve", "system_of"]

log = Logger()


class SystemProxy:
    """A stable handle to the current ``system`` of one module.

    Attribute lookups go to whatever system the registry installed last, so holding the
    proxy across a hotfix is safe.
    """

    __slots__ = ("_module_name", "_target")

    def __init__(self, module_name: str, target: System) -> None:
        self._module_name = module_name
        self._target = target

    def __getattr__(self, attr: str) -> Any:
        # Only reached for names that are not slots, i.e. everything the system offers.
        return getattr(self._target, attr)

    def __repr__(self) -> str:
        return f"<SystemProxy {self._module_name} -> {type(self._target).__qualname__}>"


def system_of(module: ModuleType) -> System:
    """Return ``module.system``, checking that it is a ``System`` instance."""
    system = getattr(module, "system", None)
    if not isinstance(system, System):
        raise TypeError(
            f"module {module.__name__} must define 'system', an instance of "
            f"rltwist.ecs.System (got {type(system).__name__})"
        )
    return system


def resolve(module: ModuleType, qualname: str) -> Any:
    """``module.<qualname>`` (dotted for nested classes); AttributeError if missing."""
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Entry:
    __slots__ = ("module", "proxy", "requires", "services")

    def __init__(self, module: ModuleType, proxy: SystemProxy | None) -> None:
        self.module = module
        self.proxy = proxy  # None: a tracked module without a system (an actor module)
        self.services: set[str] = set()
        self.requires: dict[str, type] = {}  # qualname -> base class it must subclass


class Registry:
    """Modules loaded through ``import_system`` or ``track`` in this process, and who uses
    them.

    One process-wide instance (``REGISTRY``) is what game code uses; tests build their own.
    ``version`` grows by one on every swap.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self.version = 0

    def import_system(self, name: str, service: str | None = None) -> SystemProxy:
        """Load module ``name`` once and return the stable proxy to its ``system``.

        ``service`` names the caller (e.g. ``"agent"``) so the registry can tell which
        services a hotfix of ``name`` affects.  Import errors propagate unchanged.
        """
        entry = self._entries.get(name)
        if entry is None or entry.proxy is None:
            module = entry.module if entry is not None else importlib.import_module(name)
            proxy = SystemProxy(name, system_of(module))
            if entry is None:
                entry = _Entry(module, proxy)
                self._entries[name] = entry
            entry.proxy = proxy
            GAME_CODE.remember_loaded(name, module)
            log.debug("system {module} imported", module=name)
        if service is not None:
            entry.services.add(service)
        assert entry.proxy is not None
        return entry.proxy

    def track(self, name: str, service: str | None = None,
              requires: Mapping[str, type] | None = None) -> ModuleType:
        """Reach module ``name`` (no system needed) through the registry; return it.

        ``requires`` maps class qualnames to a base class: a hotfix of ``name`` is refused
        unless the new module still defines each as a subclass of its base (a running LRU
        group needs its actor class).
        """
        entry = self._entries.get(name)
        if entry is None:
            module = importlib.import_module(name)
            entry = self._entries[name] = _Entry(module, None)
            GAME_CODE.remember_loaded(name, module)
            log.debug("module {module} tracked", module=name)
        if service is not None:
            entry.services.add(service)
        for qualname, base in (requires or {}).items():
            entry.requires[qualname] = base
        return entry.module

    def is_loaded(self, name: str) -> bool:
        """True if ``name`` was imported through this registry (system or tracked)."""
        return name in self._entries

    def has_system(self, name: str) -> bool:
        """True if ``name`` is loaded here as a system module (it has a proxy)."""
        entry = self._entries.get(name)
        return entry is not None and entry.proxy is not None

    def module(self, name: str) -> ModuleType:
        """Return the module object currently serving ``name`` (KeyError if not loaded)."""
        return self._entries[name].module

    def modules(self) -> tuple[str, ...]:
        """Names of all modules loaded through this registry, sorted."""
        return tuple(sorted(self._entries))

    def services(self, name: str) -> frozenset[str]:
        """Services that imported module ``name`` (empty if none or not loaded)."""
        entry = self._entries.get(name)
        return frozenset(entry.services) if entry else frozenset()

    def modules_of(self, service: str) -> tuple[str, ...]:
        """Modules that ``service`` imported, sorted."""
        return tuple(sorted(n for n, e in self._entries.items() if service in e.services))

    def check(self, name: str, module: ModuleType) -> None:
        """Raise unless *module* can replace ``name``: it defines ``system`` if ``name`` is a
        system module, and every class ``track`` required (TypeError naming what is
        missing)."""
        entry = self._entries.get(name)
        if entry is None:
            raise KeyError(f"module {name} is not loaded through this registry")
        if entry.proxy is not None:
            system_of(module)
        for qualname, base in entry.requires.items():
            try:
                obj = resolve(module, qualname)
            except AttributeError:
                raise TypeError(f"module {name} must still define {qualname} (a running "
                                f"{base.__name__} uses it)") from None
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise TypeError(f"{name}.{qualname} must be a subclass of {base.__name__}")

    def swap(self, new_modules: Mapping[str, ModuleType]) -> dict[str, ModuleType]:
        """Install ``new_modules`` (name -> module) all at once; return the replaced ones.

        Every module is checked before anything changes, so a bad one leaves all proxies
        on their old targets.  ``sys.modules`` and the parent package attribute follow, so
        a plain import made later sees the same code as the proxies.
        """
        for name, module in new_modules.items():
            self.check(name, module)
        old: dict[str, ModuleType] = {}
        for name, module in new_modules.items():
            entry = self._entries[name]
            old[name] = entry.module
            entry.module = module
            if entry.proxy is not None:
                entry.proxy._target = system_of(module)
            install_module(name, module)
        if new_modules:
            self.version += 1
        return old

    def forget(self, names: Iterable[str]) -> None:
        """Drop modules from the registry (tests and tooling; proxies keep their target)."""
        for name in names:
            self._entries.pop(name, None)


def install_module(name: str, module: ModuleType) -> None:
    """Make ``module`` what ``import name`` returns, as importlib itself would."""
    sys.modules[name] = module
    parent_name, _, child = name.rpartition(".")
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None:
        setattr(parent, child, module)


REGISTRY = Registry()


def import_system(name: str, service: str | None = None) -> SystemProxy:
    """Return the process-wide proxy to system module ``name`` (see ``Registry``)."""
    return REGISTRY.import_system(name, service)
