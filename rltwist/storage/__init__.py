"""Storage backends behind dbproxy: an embedded SQLite file and MongoDB.

Import from here: ``open_backend(StorageSettings(...))`` gives a
:class:`Backend`; the errors and batch ops are re-exported.
"""

from rltwist.storage.embedded import EmbeddedBackend
from rltwist.storage.errors import (
    BackendClosed,
    DuplicateKey,
    InvalidDocument,
    StaleGeneration,
    StorageError,
    StorageTimeout,
)
from rltwist.storage.interface import (
    Backend,
    Delete,
    Document,
    Key,
    Scalar,
    StoredEntity,
    Update,
    Upsert,
    WriteOp,
)
from rltwist.storage.settings import StorageSettings, open_backend

__all__ = [
    "Backend",
    "BackendClosed",
    "Delete",
    "Document",
    "DuplicateKey",
    "EmbeddedBackend",
    "InvalidDocument",
    "Key",
    "Scalar",
    "StaleGeneration",
    "StorageError",
    "StorageSettings",
    "StorageTimeout",
    "StoredEntity",
    "Update",
    "Upsert",
    "WriteOp",
    "open_backend",
]
