"""Validation, msgpack encoding and field matching shared by the backends.

The rules here are the portable subset of what SQLite and MongoDB both accept,
so code tested against the embedded backend does not break on MongoDB.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import msgpack

from rltwist.storage.errors import InvalidDocument
from rltwist.storage.interface import Document, Key

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_COLLECTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}\Z")
_SCALARS = (type(None), bool, int, float, str, bytes)
MISSING: Any = object()


def check_collection(collection: str) -> str:
    """Collections are ``[A-Za-z][A-Za-z0-9_]*`` (≤ 63 chars): valid everywhere."""
    if not isinstance(collection, str) or not _COLLECTION_RE.match(collection):
        raise InvalidDocument(f"bad collection name {collection!r}")
    return collection


def check_key(id: Key) -> Key:
    """An id is a str or an int in the signed 64-bit range (not a bool)."""
    if isinstance(id, bool) or not isinstance(id, (int, str)):
        raise InvalidDocument(f"bad id {id!r}: must be int or str")
    if isinstance(id, int) and not INT64_MIN <= id <= INT64_MAX:
        raise InvalidDocument(f"bad id {id!r}: int outside signed 64 bits")
    return id


def check_generation(generation: int) -> int:
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise InvalidDocument(f"bad generation {generation!r}: must be int")
    if not 0 <= generation <= INT64_MAX:
        raise InvalidDocument(f"bad generation {generation!r}: must be 0..2**63-1")
    return generation


def check_doc(doc: Document) -> Document:
    if not isinstance(doc, dict):
        raise InvalidDocument(f"document must be a dict, not {type(doc).__name__}")
    return doc


def split_path(field: str) -> list[str]:
    """Split a dotted field path; every segment must be non-empty and not start with ``$``."""
    if not isinstance(field, str):
        raise InvalidDocument(f"bad field {field!r}: must be str")
    parts = field.split(".")
    if any(not p or p.startswith("$") for p in parts):
        raise InvalidDocument(f"bad field path {field!r}")
    return parts


def check_query(query: Mapping[str, Any]) -> dict[str, Any]:
    """A query maps field paths to scalars (lists and dicts are not matchable)."""
    if not isinstance(query, Mapping):
        raise InvalidDocument("query must be a mapping")
    for field, value in query.items():
        split_path(field)
        if not isinstance(value, _SCALARS):
            raise InvalidDocument(
                f"query value for {field!r} must be a scalar, not {type(value).__name__}"
            )
    return dict(query)


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(fields, Mapping):
        raise InvalidDocument("update fields must be a mapping")
    for field in fields:
        split_path(field)
    return dict(fields)


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidDocument(f"bad limit {limit!r}")
    return limit or None


def encode(doc: Document) -> bytes:
    """Pack a document to msgpack; raise ``InvalidDocument`` if it cannot be packed.

    Called on the caller's thread so the stored bytes are a snapshot of the
    document at call time, whatever the game logic does to the dict afterwards.
    """
    check_doc(doc)
    try:
        blob: bytes = msgpack.packb(doc, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidDocument(f"document cannot be stored: {e}") from e
    return blob


def decode(blob: bytes) -> Document:
    result: Document = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    return result


def lookup(doc: Any, parts: list[str]) -> Any:
    """The value at a dotted path, or ``MISSING``."""
    for part in parts:
        if not isinstance(doc, dict) or part not in doc:
            return MISSING
        doc = doc[part]
    return doc


def scalar_equal(stored: Any, wanted: Any) -> bool:
    """MongoDB-like equality: numbers compare by value, bools only with bools,
    ``None`` also matches a missing field, other types must match exactly."""
    if wanted is None:
        return stored is None or stored is MISSING
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(wanted, (int, float)):
        return isinstance(stored, (int, float)) and stored == wanted
    return type(stored) is type(wanted) and stored == wanted


def matches(doc: Document, query: Mapping[str, Any]) -> bool:
    return all(scalar_equal(lookup(doc, split_path(f)), v) for f, v in query.items())


def index_key(value: Any) -> bytes | None:
    """Bytes under which ``value`` is indexed, equal for values that ``scalar_equal``.

    ``None`` for values that are not indexed (``None``, containers, NaN); a
    query on them falls back to a scan.
    """
    if isinstance(value, bool):
        return b"b1" if value else b"b0"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
        else:
            return b"f" + repr(value).encode()
    if isinstance(value, int):
        return b"n" + str(value).encode()
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"y" + value
    return None


def set_path(doc: Document, field: str, value: Any) -> None:
    """Assign ``value`` at a dotted path, creating intermediate dicts (like ``$set``)."""
    parts = split_path(field)
    node: Any = doc
    for part in parts[:-1]:
        child = node.get(part, MISSING)
        if child is MISSING:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise InvalidDocument(f"cannot set {field!r}: {part!r} is not a dict")
        node = child
    node[parts[-1]] = value
