"""``[lru.<worker>]`` in the cluster config: workers and capacity of one LRU service."""

from __future__ import annotations

from collections.abc import Mapping

from rltwist.config import Config, ConfigError

DEFAULTS: dict[str, dict[str, int]] = {
    "agent": {"workers": 8, "capacity": 1000},
    "mail": {"workers": 4, "capacity": 1000},
    "guildhandler": {"workers": 2, "capacity": 1000},
}


def lru_settings(config: Config, worker: str) -> tuple[int, int]:
    """``(workers, capacity)`` of the LRU service *worker* from ``[lru.<worker>]``.

    Example::

        [lru.agent]          # rolecity: agent0..agent7 behind rolerouter
        workers = 8
        capacity = 1000      # entities per worker
    """
    section = config.raw.get("lru", {})
    table = section.get(worker, {}) if isinstance(section, Mapping) else {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{config.path}: lru.{worker} must be a table")
    unknown = sorted(set(table) - {"workers", "capacity"})
    if unknown:
        raise ConfigError(f"{config.path}: lru.{worker}.{unknown[0]}: unknown key "
                          f"(workers, capacity)")
    values = dict(DEFAULTS.get(worker, {"workers": 4, "capacity": 1000}))
    for key in ("workers", "capacity"):
        if key in table:
            v = table[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
                raise ConfigError(f"{config.path}: lru.{worker}.{key} must be an integer "
                                  f"1-1000000, got {v!r}")
            values[key] = v
    return values["workers"], values["capacity"]
