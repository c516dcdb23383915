"""The LRU actor API a game programmer writes against: an :class:`Actor` subclass with
business methods marked :func:`action`, and the errors callers see (their class names are
the ``RemoteError`` kinds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from rltwist.ecs.entity import Entity
from rltwist.storage import Key

F = TypeVar("F", bound=Callable[..., Any])

_ACTION = "_rl_lru_action"


# -- errors (their class names are the RemoteError kinds callers see) ------------------------


class UnknownAction(Exception):
    """The actor has no business method of that name."""


class EntityNotFound(Exception):
    """The id does not exist and this action may not create it."""


class LoadFailed(Exception):
    """Storage could not load the entity; nothing was changed and the next message retries."""


class WrongWorker(Exception):
    """A worker was called directly for an id that another worker owns."""


class SaveFailed(Exception):
    """An ``@action(save=True)`` ran but its save was not acknowledged by storage.

    The change stays applied in memory and dirty (the periodic save retries it); the
    caller must not take it as durable. Callers that retry need an idempotency key."""


def action(fn: F | None = None, *, creates: bool = False, save: bool = False) -> Any:
    """Mark an :class:`Actor` method as a business method reachable through the router.

    The method is called as ``fn(entity, *args)`` (plain or ``async``) and its result goes
    back to the caller. ``creates``: on an id that does not exist yet the worker hands it
    a new entity (kept only if the method changed it and did not raise). ``save``: the
    entity is saved before the reply (if storage fails it stays dirty and the periodic
    save retries) and the caller gets :class:`SaveFailed` instead of the result: an OK
    from a ``save=True`` action means the change is durable.
    """

    def mark(f: F) -> F:
        setattr(f, _ACTION, (creates, save))
        return f

    return mark(fn) if fn is not None else mark


class Fixer(Protocol):
    """What the LRU needs of a data fixer (``rltwist.ecs.datafix.DataFixer`` fits)."""

    @property
    def latest_version(self) -> int: ...

    def apply_fixes(self, entity: Entity) -> Any: ...


class Actor:
    """Business methods of one entity kind; subclass, set the class attributes and mark
    methods with :func:`action`. Holds no per-entity state (that is the entity's)."""

    kind: str = ""
    """Entity kind, for logs (and the data-fix line of this kind)."""
    collection: str = ""
    """Collection of the node's database where the entities live."""
    auto_create: bool = True
    """An id never stored gets a new entity on its first message (False: EntityNotFound
    unless the action ``creates``)."""

    def new_entity(self, id: Key) -> Entity:
        """A new entity for *id* (stored only once an action changes it)."""
        return Entity(id)

    def actions(self) -> dict[str, tuple[Callable[..., Any], bool, bool]]:
        """Bound business methods by name, with their (creates, save) flags."""
        found: dict[str, tuple[Callable[..., Any], bool, bool]] = {}
        for attr in dir(type(self)):
            flags = getattr(getattr(type(self), attr, None), _ACTION, None)
            if flags is not None:
                found[attr] = (getattr(self, attr), *flags)
        return found
