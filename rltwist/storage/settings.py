"""Which backend a node uses, and ``open_backend`` to build it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from rltwist.storage.interface import Backend

BACKENDS = ("embedded", "mongodb")


def _positive(instance: Any, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"storage {attribute.name} must be > 0, not {value!r}")


SYNC_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")


def _sync_mode(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or value.upper() not in SYNC_MODES:
        raise ValueError(f"storage synchronous must be one of {SYNC_MODES}, not {value!r}")


def _write_concern(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not (
        value == "majority" or (value.isdigit() and int(value) >= 1)
    ):
        raise ValueError(
            f'storage write_concern must be "majority" or a member count >= 1, not {value!r}'
        )


@attrs.frozen
class StorageSettings:
    """Storage section of a node's config.

    ``db_name`` names the database on both backends: the MongoDB database, or
    the SQLite file ``<data_dir>/<db_name>.sqlite3`` (``path`` overrides the
    file). One region's processes use the same ``db_name`` (e.g. ``region1``)
    and so share one regiondb.
    """

    backend: str = attrs.field(default="embedded", validator=attrs.validators.in_(BACKENDS))
    db_name: str = "rltwist"
    data_dir: str = "run/data"
    path: str | None = None
    mongo_uri: str = "mongodb://127.0.0.1:27017"
    timeout: float = attrs.field(default=10.0, validator=_positive)
    busy_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: embedded only, SQLite ``PRAGMA synchronous``: NORMAL keeps every commit across a
    #: process crash, FULL also across power loss (one fsync per commit)
    synchronous: str = attrs.field(default="NORMAL", validator=_sync_mode)
    pool_size: int = 1
    #: MongoDB write concern ``w``: "majority" or a member count as a string; writes are
    #: also journaled (``j``)
    write_concern: str = attrs.field(default="majority", validator=_write_concern)

    @property
    def sqlite_path(self) -> str:
        if self.path is not None:
            return self.path
        return os.path.join(self.data_dir, f"{self.db_name}.sqlite3")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> StorageSettings:
        """Build from a config table (e.g. ``[storage]`` in TOML); unknown keys are errors."""
        known = {a.name for a in attrs.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown storage settings: {', '.join(unknown)}")
        return cls(**dict(section))


def open_backend(settings: StorageSettings, *, reactor: Any = None,
                 close_at_shutdown: bool = True) -> Backend:
    """Create the backend ``settings`` describe (connections are opened lazily).

    ``close_at_shutdown=False``: the caller closes it (after its own services stopped)."""
    if settings.backend == "mongodb":
        from rltwist.storage.mongodb import MongoBackend

        return MongoBackend(
            settings.mongo_uri,
            settings.db_name,
            timeout=settings.timeout,
            pool_size=settings.pool_size,
            write_concern=settings.write_concern,
        )
    from rltwist.storage.embedded import EmbeddedBackend

    return EmbeddedBackend(
        settings.sqlite_path,
        timeout=settings.timeout,
        busy_timeout=settings.busy_timeout,
        synchronous=settings.synchronous,
        reactor=reactor,
        close_at_shutdown=close_at_shutdown,
    )
