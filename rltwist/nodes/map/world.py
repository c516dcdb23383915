"""world: the region's map on ``map<sid>`` (seed §5 map/world).

The one :class:`World` service of a map node holds the map's :class:`WorldState`; the
other map services (aoiscene, aoibroadcast, march, battle) reach it in-process with
:func:`world_of` (features install in name order, so whichever comes first creates it).
``world.ready`` fires once the stored world is loaded; handlers that read the state await
it first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer

from rltwist.cluster import Service
from rltwist.nodes.map.state import WorldState

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

DEFAULT_WIDTH = DEFAULT_HEIGHT = 512
DEFAULT_BLOCK = 16


class World(Service):
    """The ``world`` service: the map's state, loaded at start and saved periodically."""

    name = "world"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.map_id = int(node.me.number or 0)
        self.state = WorldState(self.map_id, DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_BLOCK)
        #: fires once the stored world is loaded (handlers reading the state await it)
        self.ready: defer.Deferred[None] = defer.succeed(None)


def world_of(node: Node) -> World:
    """The map node's World service (created and registered at the first call)."""
    world = node.cluster.services.get(World.name)
    if world is None:
        world = World(node)
        node.cluster.register(world)
    return world  # type: ignore[return-value]
