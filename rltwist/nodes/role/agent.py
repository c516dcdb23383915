"""agent: where online player instances live (many players per agent; seed §5).

A player instance is an :class:`Entity` (data) plus its session bookkeeping. The agent
loads the entity from the role database at Auth, answers the player's requests through
the game systems, and saves the entity with the instance's fencing generation.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from rltwist.cluster import birth_region
from rltwist.ecs.entity import Entity
from rltwist.nodes.role.requests import REQUESTS
from rltwist.protocols import pb
from rltwist.storage import StaleGeneration

if TYPE_CHECKING:
    from rltwist.nodes.role.gateway import Gateway, GatewayConnection

log = Logger()

ROLEDB = "roledb"
PLAYERS = "player"
E = pb.ErrorCode

ONLINE, LOGGING_OUT, GONE = "online", "logging_out", "gone"


def new_player_doc(userid: int) -> dict[str, Any]:
    """The data of a player who never played before."""
    return {"_id": userid, "version": 0, "components": {}, "attrs": {
        "name": "", "level": 1, "exp": 0, "gold": 1000, "food": 1000, "oil": 500,
        "server_id": birth_region(userid), "create_time_ms": int(time.time() * 1000)}}


class Player:
    """One online instance: entity + connection + in-flight requests."""

    __slots__ = ("agent", "blocked", "conn", "entity", "generation", "inflight",
                 "last_heartbeat", "logout_waiters", "settle_waiters", "settled", "state",
                 "userid", "waiters")

    def __init__(self, agent: Agent, userid: int, entity: Entity, generation: int,
                 now: float) -> None:
        self.agent = agent
        self.userid = userid
        self.entity = entity
        self.generation = generation
        self.conn: GatewayConnection | None = None
        self.inflight = 0
        self.waiters: list[defer.Deferred[None]] = []
        self.last_heartbeat = now
        self.state = ONLINE
        self.logout_waiters: list[defer.Deferred[None]] = []
        #: userids this player blocks (the friends feature fills it): pushes sent on
        #: their behalf (chat) are not written to this player
        self.blocked: set[int | None] = set()
        #: False while the after-Auth steps run (auth.py): requests wait for them, so a
        #: step and a request never work on the same state at once
        self.settled = True
        self.settle_waiters: list[defer.Deferred[None]] = []

    @property
    def mapid(self) -> int:
        """The map holding the player's city: the player's ``mapid`` attribute, set when
        the world placed the city (docs/world.md "Cities"); the birth region's map
        until then."""
        mapid = self.entity.get("mapid")
        return int(mapid) if mapid else birth_region(self.userid)

    def request_done(self) -> None:
        self.inflight -= 1
        if not self.inflight and self.waiters:
            waiters, self.waiters = self.waiters, []
            for w in waiters:
                w.callback(None)

    def settle(self) -> None:
        """The after-Auth steps are done: let the requests that waited run."""
        self.settled = True
        waiters, self.settle_waiters = self.settle_waiters, []
        for w in waiters:
            w.callback(None)

    def idle(self) -> defer.Deferred[None]:
        """Fires once no request of this player is in flight."""
        if not self.inflight:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.waiters.append(d)
        return d

    def basics(self) -> Any:
        e = self.entity
        return pb.PlayerBasics(level=e.get("level", 1), exp=e.get("exp", 0),
                               gold=e.get("gold", 0), food=e.get("food", 0),
                               oil=e.get("oil", 0), guild_id=e.get("guildid", 0),
                               create_time_ms=e.get("create_time_ms", 0))


class Agent:
    """Holds the players with ``userid mod n_agents == index``."""

    def __init__(self, gateway: Gateway, index: int) -> None:
        self.gateway = gateway
        self.index = index
        self.players: dict[int, Player] = {}
        self.db = gateway.node.database(ROLEDB)

    async def load(self, userid: int, ticket: int) -> Player:
        """Claim the player's data for a new generation, then load it (seed §14: data
        fixes run at login). The generation is ``max(ticket, stored + 1)``: the ticket is
        the Redis counter drawn at Auth, the stored one survives Redis losing its keys.
        The claim is a compare-and-set in storage, so it is the arbiter between two
        instances; the document it returns is the one stored at the claim, after which no
        older instance can write any more. Raises StaleGeneration when a newer instance
        claimed meanwhile."""
        initial = new_player_doc(userid)
        initial["version"] = self.gateway.datafix_version()
        generation = ticket
        for _ in range(3):
            try:
                stored = await self.db.claim_generation(PLAYERS, userid, generation, initial)
                break
            except StaleGeneration as e:
                if e.stored is None or e.stored < generation:
                    raise
                generation = e.stored + 1  # Redis forgot: continue above what storage has
        else:
            raise StaleGeneration(PLAYERS, userid, generation, None)
        doc = stored.doc if "attrs" in stored.doc else initial  # {}: claimed, never saved
        entity = Entity.from_doc({**doc, "_id": userid})
        self.gateway.fix_entity(entity)
        player = Player(self, userid, entity, generation, self.gateway.now())
        self.players[userid] = player
        return player

    def forget(self, player: Player) -> None:
        if self.players.get(player.userid) is player:
            del self.players[player.userid]

    async def handle(self, player: Player, message: Any) -> Any:
        """Answer one request of an authenticated player."""
        handle = REQUESTS.get(type(message))
        if handle is None:
            return type(message).Response(code=E.BAD_REQUEST)
        if not player.settled:  # the after-Auth steps first (each one bounded)
            waiter: defer.Deferred[None] = defer.Deferred()
            player.settle_waiters.append(waiter)
            await waiter
        return await handle(self.gateway, player, message)
