"""ECS core: entities (data), systems (logic), the import registry, hot code reload,
shared config tables and data fixes (seed §12-14).

Game code uses ``import_system`` to reach systems and ``Entity`` for data; node services
drive ``HotFixer``, ``ShareData`` and ``DataFixer``; ``write_fix_list`` (or ``python -m
rltwist.ecs.makefix``) writes a fix list with the checksums of the shipped sources.
"""

from rltwist.ecs.datafix import DataFixer, DataFixError, FixReport
from rltwist.ecs.entity import Entity
from rltwist.ecs.hotfix import FixResult, HotFixer, make_fix_list, write_fix_list
from rltwist.ecs.registry import REGISTRY, Registry, SystemProxy, import_system
from rltwist.ecs.sharedata import ConfigError, ConfigSnapshot, ShareData, shared
from rltwist.ecs.system import System

__all__ = [
    "REGISTRY",
    "ConfigError",
    "ConfigSnapshot",
    "DataFixError",
    "DataFixer",
    "Entity",
    "FixReport",
    "FixResult",
    "HotFixer",
    "Registry",
    "ShareData",
    "System",
    "SystemProxy",
    "import_system",
    "make_fix_list",
    "shared",
    "write_fix_list",
]
