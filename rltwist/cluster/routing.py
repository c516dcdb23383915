"""Which node serves a region service for an id: the routing helpers of the cluster API.

A player's birth region is the low 16 bits of its userid, a guild's region the low 16
bits of its guildid, and a map's id is its region's sid. Every piece of code reaches a
region service through these helpers (on the node's :class:`~rltwist.cluster.Cluster`)::

    cluster.rolecity_node(userid)   # "rolecity<sid>": the player's offline part
    cluster.mail_node(userid)       # "mail<sid>": its mailbox
    cluster.guild_node(guildid)     # "guild<sid>"
    cluster.map_node(mapid)         # "map<sid>": the map holding a city

never by formatting node names itself, because a region can be served by another
region's nodes: after a server merge an *alias table* (``{merged sid: target sid}``,
cluster config that master broadcasts) sends the merged region's ids to the target
region's nodes, with the ids unchanged. :meth:`Routing.set_aliases` installs such a table;
every helper resolves through it.
"""

from __future__ import annotations

from collections.abc import Mapping

#: region ids (sids) are the low 16 bits of userids and guildids; 0 is no region
REGION_BITS = 16
REGION_MASK = (1 << REGION_BITS) - 1
MAX_SID = REGION_MASK


def birth_region(id: int) -> int:
    """The region encoded in a userid or guildid (its low 16 bits), before any alias."""
    return id & REGION_MASK


class Routing:
    """Node names for region services, through the region alias table (empty until a
    merge). One per :class:`~rltwist.cluster.Cluster`."""

    __slots__ = ("_aliases",)

    def __init__(self, aliases: Mapping[int, int] | None = None) -> None:
        self._aliases: dict[int, int] = {}
        if aliases:
            self.set_aliases(aliases)

    @property
    def aliases(self) -> dict[int, int]:
        """The alias table in force, chains resolved: ``{merged sid: serving sid}``."""
        return dict(self._aliases)

    def set_aliases(self, aliases: Mapping[int, int]) -> None:
        """Replace the alias table (as master broadcasts it after a merge).

        A region merged into one that was itself merged later resolves to the last
        target. Raises ``ValueError`` (and keeps the old table) for a sid outside
        1..65535, a region aliased to itself, or a cycle.
        """
        table: dict[int, int] = {}
        for merged, target in aliases.items():
            for sid in (merged, target):
                if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= MAX_SID:
                    raise ValueError(f"region alias {merged!r} -> {target!r}: a sid is "
                                     f"1..{MAX_SID}")
            if merged == target:
                raise ValueError(f"region alias {merged} -> {target}: a region cannot be "
                                 "merged into itself")
            table[merged] = target
        resolved: dict[int, int] = {}
        for merged in table:
            seen = {merged}
            sid = table[merged]
            while sid in table:
                if sid in seen:
                    raise ValueError(f"region aliases form a cycle through {sorted(seen)}")
                seen.add(sid)
                sid = table[sid]
            resolved[merged] = sid
        self._aliases = resolved

    def region(self, sid: int) -> int:
        """The region whose nodes serve region *sid* (itself unless it was merged)."""
        return self._aliases.get(sid, sid)

    def map_node(self, mapid: int) -> str:
        """The map node holding map *mapid* (a region's sid)."""
        return f"map{self.region(mapid)}"

    def rolecity_node(self, userid: int) -> str:
        """The rolecity node of a player: its birth region's."""
        return f"rolecity{self.region(userid & REGION_MASK)}"

    def mail_node(self, userid: int) -> str:
        """The mail node of a player's mailbox: its birth region's."""
        return f"mail{self.region(userid & REGION_MASK)}"

    def guild_node(self, guildid: int) -> str:
        """The guild node of a guild: the region in the guildid's low 16 bits."""
        return f"guild{self.region(guildid & REGION_MASK)}"
