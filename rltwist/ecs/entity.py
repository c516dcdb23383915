"""Entities: plain data with components, a data-fix version and dirty tracking.

An entity is what the seed (§13) draws as a Lua table: basic attributes (gold, food, name …)
plus ``components``, one dict per system.  It holds no logic, so code can be hot swapped
without touching it.

Dirty tracking is a pair of counters rather than a flag: every change bumps ``revision``;
``snapshot()`` hands the saver a deep copy together with the revision it was taken at, and
only ``saved(token)`` with that revision moves ``saved_revision`` forward.  A failed save
never calls ``saved``, and a change made while the save was in flight bumps ``revision``
past the token, so in both cases the entity stays dirty.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Entity", "plain_copy"]

_SCALARS = (str, int, float, bool, bytes, type(None))


def plain_copy(value: Any) -> Any:
    """Deep-copy msgpack-friendly data (dicts, lists, tuples and scalars).

    Much faster than ``copy.deepcopy`` for the shapes entities hold, and it refuses
    anything that would not serialize cleanly, so a bad value is caught where it is stored
    rather than in the saver five minutes later.  Tuples come back as lists (as msgpack
    would return them).
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {k: plain_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_copy(v) for v in value]
    raise TypeError(f"entity data must be plain (dict/list/scalar), got {type(value).__name__}")


class Entity:
    """A game object's data: ``id``, ``version``, basic attributes and components.

    Basic attributes are read with ``entity["gold"]``/``get()`` and written with
    ``entity["gold"] = 5``/``set()``/``incr()``, which mark the entity dirty.  Components
    are dicts owned by their system; a system that mutates one in place calls
    ``mark_dirty()`` (``component()`` hands out the live dict, there is no copy-on-read).
    """

    __slots__ = ("attrs", "components", "id", "revision", "saved_revision", "version")

    def __init__(
        self,
        id: Any,
        version: int = 0,
        attrs: dict[str, Any] | None = None,
        components: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.id = id
        self.version = version
        self.attrs: dict[str, Any] = attrs if attrs is not None else {}
        self.components: dict[str, dict[str, Any]] = (
            components if components is not None else {}
        )
        # A new entity has never been stored, so it starts dirty.
        self.revision = 1
        self.saved_revision = 0

    def __repr__(self) -> str:
        return f"<Entity id={self.id!r} version={self.version} dirty={self.dirty}>"

    # -- basic attributes ------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.attrs[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.attrs[key] = value
        self.revision += 1

    def __contains__(self, key: object) -> bool:
        return key in self.attrs

    def __iter__(self) -> Iterator[str]:
        return iter(self.attrs)

    def get(self, key: str, default: Any = None) -> Any:
        """Return basic attribute ``key``, or ``default`` when it is not set."""
        return self.attrs.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set basic attribute ``key`` and mark the entity dirty."""
        self.attrs[key] = value
        self.revision += 1

    def incr(self, key: str, delta: int) -> int:
        """Add ``delta`` to the numeric attribute ``key`` (missing counts as 0); return it."""
        value = self.attrs.get(key, 0) + delta
        self.attrs[key] = value
        self.revision += 1
        return value

    # -- components --------------------------------------------------------------------

    def component(self, name: str) -> dict[str, Any]:
        """Return the live component dict of system ``name``, creating an empty one."""
        comp = self.components.get(name)
        if comp is None:
            comp = self.components[name] = {}
            self.revision += 1
        return comp

    def set_component(self, name: str, data: dict[str, Any]) -> None:
        """Replace component ``name`` wholesale and mark the entity dirty."""
        self.components[name] = data
        self.revision += 1

    # -- dirty tracking ----------------------------------------------------------------

    def mark_dirty(self) -> None:
        """Record a change made in place (e.g. inside a component dict)."""
        self.revision += 1

    @property
    def dirty(self) -> bool:
        """True while some change has not been confirmed saved by ``saved()``."""
        return self.revision != self.saved_revision

    def snapshot(self) -> tuple[int, dict[str, Any]]:
        """Return ``(token, doc)`` for a save: a detached copy and the revision it shows.

        Pass the token to ``saved()`` once storage confirmed the write.
        """
        return self.revision, self.to_doc()

    def saved(self, token: int) -> None:
        """Confirm that the snapshot taken at ``token`` is stored.

        The entity stays dirty if it changed after that snapshot.  An older token than one
        already confirmed (two saves finishing out of order) never moves the mark back.
        """
        if token > self.saved_revision:
            self.saved_revision = token

    # -- (de)serialization -------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        """Return a detached msgpack/BSON-friendly dict (``_id`` as MongoDB wants it)."""
        return {
            "_id": self.id,
            "version": self.version,
            "attrs": plain_copy(self.attrs),
            "components": plain_copy(self.components),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Entity:
        """Build an entity from ``to_doc()`` output as read back from storage.

        A loaded entity equals what is stored, so it starts clean.
        """
        entity = cls(
            doc["_id"],
            int(doc.get("version", 0)),
            plain_copy(doc.get("attrs") or {}),
            plain_copy(doc.get("components") or {}),
        )
        entity.saved_revision = entity.revision
        return entity

    def copy(self) -> Entity:
        """Return a deep, detached copy (same id, version and dirty state)."""
        clone = Entity(
            self.id, self.version, plain_copy(self.attrs), plain_copy(self.components)
        )
        clone.revision = self.revision
        clone.saved_revision = self.saved_revision
        return clone

    def replace_data(self, other: Entity) -> None:
        """Take over ``other``'s attributes, components and version; mark dirty.

        Used to commit work done on a ``copy()`` (data fixes) in one step.
        """
        self.attrs = other.attrs
        self.components = other.components
        self.version = other.version
        self.revision += 1
