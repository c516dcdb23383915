"""Services: objects living in a node whose named handlers any node can call.

A service subclasses :class:`Service`, sets ``name`` and marks handlers with
:func:`handler`::

    class World(Service):
        name = "world"

        @handler
        async def march(self, userid, target):
            ...

Handlers may be ``async def`` (preferred) or plain functions; they receive the call's
positional arguments after msgpack copying, exactly as a remote caller would send them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from rltwist.cluster.core import Cluster

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "_rl_handler_name"


def handler(fn: F | None = None, *, name: str | None = None) -> Any:
    """Mark a method as callable through the cluster, under its own name or *name*."""

    def mark(f: F) -> F:
        setattr(f, _MARK, name or f.__name__)
        return f

    return mark(fn) if fn is not None else mark


class Service:
    """Base class of every service; a node registers instances with its Cluster."""

    name: str = ""
    cluster: Cluster

    def handlers(self) -> dict[str, Callable[..., Any]]:
        """The bound handler methods by wire name (computed once at registration)."""
        found: dict[str, Callable[..., Any]] = {}
        for attr in dir(type(self)):
            fn = getattr(type(self), attr, None)
            wire = getattr(fn, _MARK, None)
            if wire is not None:
                found[wire] = getattr(self, attr)
        return found

    def attached(self, cluster: Cluster) -> None:
        """Called once the service is registered; ``self.cluster`` is set before."""
