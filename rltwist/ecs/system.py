"""The base class of systems: stateless logic that works on entities.

A system module defines one ``System`` subclass and a module-level instance named
``system``; game code reaches it through ``rltwist.ecs.registry.import_system`` (never a
plain ``import``) so a hotfix can swap it.  Methods take the entity as first argument and
keep nothing per player on ``self`` — whatever a system remembers lives in the entity's
component ``entity.components[self.name]``, which survives any code swap.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rltwist.ecs.entity import Entity

__all__ = ["System"]


class System:
    """Base class of all systems.

    ``name`` is the component key this system owns (defaults to the lower-cased class
    name).  Subclasses may override ``__init__`` for cheap, derived set-up — it runs again
    each time the module is hot swapped, so it must not hold state worth keeping.
    """

    name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__.lower()

    def component(self, entity: Entity) -> dict[str, Any]:
        """Return this system's live component dict on ``entity`` (created if missing)."""
        return entity.component(self.name)
