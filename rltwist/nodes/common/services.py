"""Services every node kind gets on top of the cluster layer, diag and slaveflow.

``install_common`` runs for every node before its kind adds its own services:

* ``sharedatad`` — the process's game config tables (``<root>/etc/game``), reloaded
  atomically by GM or when the files change (``rltwist.nodes.common.sharedatad``);
* ``hotfix`` — code fix lists from ``<root>/hotfix/codefix`` and online data fixes from
  ``<root>/hotfix/datafix/<kind>`` (``rltwist.nodes.common.hotfix``).

The root holding ``etc/game`` and ``hotfix/`` comes from the ``[hotreload]`` section of the
cluster config::

    [hotreload]
    root = ".."              # relative to the config file's directory; default: see below
    hotfix_interval = 2.0    # seconds between codefix/datafix directory scans; 0 = GM only
    config_interval = 10.0   # seconds between config table change checks; 0 = GM only

Without ``root`` the first of these that has ``etc/game`` is used: the directory two levels
above the config file (``<checkout>/etc/cluster.toml`` -> ``<checkout>``), the current
directory, the source tree the ``rltwist`` package was imported from (or, installed, the
tables shipped inside it).  None of them having ``etc/game`` is a start-up error: a node
must not run without its game tables.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from rltwist.config import packaged_root
from rltwist.ecs.sharedata import ConfigError as TablesError
from rltwist.nodes.common.dbproxy import install_dbproxy
from rltwist.nodes.common.hotfix import HotfixService
from rltwist.nodes.common.nodemetrics import NodeCollector
from rltwist.nodes.common.sharedatad import Sharedatad

if TYPE_CHECKING:
    from rltwist.config import Config
    from rltwist.nodes.common.node import Node

SECTION = "hotreload"


class HotReloadConfigError(Exception):
    """``[hotreload]`` is wrong or no root with ``etc/game`` exists; str() is one line."""


@attrs.frozen
class HotReloadSettings:
    """Where the game tables and fix directories are, and how often they are scanned."""

    root: Path
    hotfix_interval: float = 2.0
    config_interval: float = 10.0

    @property
    def tables_dir(self) -> Path:
        return self.root / "etc" / "game"


def hotreload_settings(config: Config) -> HotReloadSettings:
    """Resolve ``[hotreload]`` of *config* (typed and checked by rltwist.config): the root
    per the module docstring, and the scan intervals."""
    section = config.hotreload
    configured = section.root
    config_dir = Path(config.path).absolute().parent
    if configured:
        root = (config_dir / configured).resolve()
    else:
        candidates = [config_dir.parent, Path.cwd()]
        shipped = packaged_root()
        if shipped is not None:  # the checkout rltwist runs from, or the installed copy
            candidates.append(shipped)
        found = next((c for c in candidates if (c / "etc" / "game").is_dir()), None)
        if found is None:
            tried = ", ".join(str(c) for c in candidates)
            raise HotReloadConfigError(
                f"{config.path}: no game tables found: none of {tried} has etc/game; set "
                f"{SECTION}.root to the directory holding etc/game and hotfix/")
        root = found.resolve()
    return HotReloadSettings(root, hotfix_interval=section.hotfix_interval,
                             config_interval=section.config_interval)


def install_common(node: Node) -> None:
    """Add the common services (sharedatad, hotfix; dbproxy as it lands) to *node*.

    A bad ``[hotreload]`` section, a missing root or broken game tables end the process
    with one line naming the file and key (``fail_startup``).
    """
    from rltwist.nodes.common.node import fail_startup  # node.py imports this module

    try:
        settings = hotreload_settings(node.config)
        tables = Sharedatad.install(node, settings.tables_dir, settings.config_interval)
    except HotReloadConfigError as e:
        fail_startup(str(e))
        raise  # unreachable; keeps type checkers happy
    except TablesError as e:
        fail_startup(f"{node.name}: game config tables in {settings.tables_dir} (root: "
                     f"{SECTION}.root in {node.config.path}) rejected: "
                     + "; ".join(map(str, e.problems)))
        raise
    hotfix = HotfixService.install(node, settings.root, settings.hotfix_interval)
    node.registry.register(NodeCollector(node, hotfix, tables))
    install_dbproxy(node)
    # Orders the status a node sends: master keeps the newest when a heartbeat built before
    # a hotfix arrives after the hotfix's own report (they travel on different links).
    seq = itertools.count(1)
    node.status_providers.append(lambda: {"status_seq": next(seq)})
