"""Server merge (issue 14): master keeps the region alias table (``rltwist.merge.aliases``:
globaldb, GM ``/regions/aliases``, broadcast); every node takes it through slaveflow."""

from __future__ import annotations

from typing import Any

from rltwist.merge import aliases


def install(node: Any) -> None:
    aliases.install(node)
