"""Game features wired into the nodes: one module (or package) per feature here.

A feature module may define ``install(node)``; every node calls the ``install`` of every
feature once its own services are built (``rltwist.nodes.common.node.make_node``), and
the feature registers what it needs on that node's kind (``node.me.kind``): services on
region or global nodes, client requests on role nodes (through
:func:`rltwist.nodes.role.requests.request`, at import), GM routes on master. Adding a
feature is adding a module here; no node's ``build`` changes.

Business rules live in game systems (``rltwist/game/``) reached through
:func:`rltwist.ecs.import_system`, so ``POST /hotfix`` changes them in running nodes; the
feature modules are the wiring.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

__all__ = ["install", "modules"]


def modules() -> list[ModuleType]:
    """Every feature module, by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{info.name}"))
    return found


def install(node: Any) -> None:
    """Let every feature add what it needs to *node*."""
    for module in modules():
        fn = getattr(module, "install", None)
        if fn is not None:
            fn(node)
