"""Player names by region: names are unique within a region (the seed's server merge
renames duplicates), so a lookup by name always takes the region too::

    userid = await userid_by_name(cluster, region, "Alice")   # None if nobody has it

The region's name index lives on its rolecity (``rolerouter.lookup_name``), keyed by
``RoleSystem.name_key(name)`` (equal up to case and width). The region's rolecity is found
through the routing helpers, so a merged region's alias applies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rltwist.cluster.routing import MAX_SID
from rltwist.ecs import import_system

if TYPE_CHECKING:
    from rltwist.cluster import Cluster

__all__ = ["LOOKUP_TIMEOUT", "NoSuchRegion", "userid_by_name"]

LOOKUP_TIMEOUT = 5.0

role = import_system("rltwist.game.rolesystem", service="names")


class NoSuchRegion(LookupError):
    """The region is not a valid sid or no rolecity serves it."""


async def userid_by_name(cluster: Cluster, region: int, name: str,
                         timeout: float = LOOKUP_TIMEOUT) -> int | None:
    """The userid of the player named *name* in region *region*, or None if nobody there
    has that name. Raises :class:`NoSuchRegion` for a region no node serves, and the
    cluster's errors (``NodeUnreachable``, ``CallTimeout``) when the region's rolecity does
    not answer within *timeout*."""
    if isinstance(region, bool) or not isinstance(region, int) or not 0 < region <= MAX_SID:
        raise NoSuchRegion(f"region {region!r} is not a sid 1..{MAX_SID}")
    if not isinstance(name, str) or not name.strip():
        return None
    node = cluster.rolecity_node(region)  # a sid is the low 16 bits of its userids
    if node not in cluster.addresses:
        raise NoSuchRegion(f"no rolecity serves region {region}")
    key = role.name_key(role.normalize_name(name.strip()))
    if len(key) > 256:
        return None
    userid = await cluster.call(node, "rolerouter", "lookup_name", key, timeout=timeout)
    return None if userid is None else int(userid)
