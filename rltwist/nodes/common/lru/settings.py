"""``[lru.<worker>]`` in the cluster config: workers and capacity of one LRU service.

The section is parsed and checked with the rest of the config (rltwist/config.py, where a
typo fails the node's start with one line naming the key); this is the LRU side's view.
"""

from __future__ import annotations

from rltwist.config import LRU_DEFAULTS, Config, LruSettings

#: ``{worker: {"workers": n, "capacity": n}}`` when the config says nothing
DEFAULTS: dict[str, dict[str, int]] = {
    worker: {"workers": s.workers, "capacity": s.capacity} for worker, s in LRU_DEFAULTS.items()}


def lru_settings(config: Config, worker: str) -> tuple[int, int]:
    """``(workers, capacity)`` of the LRU service *worker* from ``[lru.<worker>]``.

    Example::

        [lru.agent]          # rolecity: agent0..agent7 behind rolerouter
        workers = 8
        capacity = 1000      # entities per worker
    """
    s = config.lru.get(worker) or LRU_DEFAULTS.get(worker) or LruSettings(4)
    return s.workers, s.capacity
