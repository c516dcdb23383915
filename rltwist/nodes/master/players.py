"""``GET /players/<userid>`` on the GM API: what an operator asks first when a player
complains — is the player online, on which role node, born in which region, under which
name, with which generation (``mapid`` once the world map exists).

Three sources, each authoritative for its part: Redis' login state says where the player
is (GAME_STEP_FINISH on a node, LOGOUT while logging out, LOGIN_STEP_FINISH between login
and Auth); the role node holding the instance gives its live data; the player's document
in the role database gives name and generation of an offline player (and the stored
generation, which is the owner's: see docs/architecture.md, "One owner").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rltwist.cluster import ClusterError, birth_region
from rltwist.nodes.role.agent import PLAYERS, ROLEDB
from rltwist.redis import GAME_STEP_FINISH, LOGIN_STEP_FINISH, LOGOUT, RedisError
from rltwist.storage import StorageError

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

#: how long the GM waits for the role node's view of an online player
INFO_TIMEOUT = 5.0
_STATES = {GAME_STEP_FINISH: "online", LOGOUT: "logging_out", LOGIN_STEP_FINISH: "logging_in"}


class PlayerLookupError(Exception):
    """A source could not be read; ``what`` names it (redis, storage)."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"{what}: {detail}")
        self.what = what


async def player_view(node: Node, userid: int) -> dict[str, Any] | None:
    """The GM view of *userid*, or None when neither Redis nor storage knows the player.

    ``state`` is ``online``, ``logging_out``, ``logging_in`` (a login was answered, its
    Auth has not finished) or ``offline``; ``role_node`` is the node holding the instance
    (None offline or logging in); ``online`` is True only when that node has the player
    online right now. Raises PlayerLookupError when Redis or storage cannot be read.
    """
    try:
        user = await node.redis_state().get_user(userid)
    except RedisError as e:
        raise PlayerLookupError("redis", str(e)) from None
    try:
        stored = await node.database(ROLEDB).get_entity(PLAYERS, userid)
    except StorageError as e:
        raise PlayerLookupError("storage", str(e)) from None
    if user is None and stored is None:
        return None
    state = _STATES.get(user.state, "offline") if user is not None else "offline"
    role_node = user.node if user is not None and state in ("online", "logging_out") else None
    live: dict[str, Any] | None = None
    view: dict[str, Any] = {}
    if role_node is not None:
        try:
            live = await node.cluster.call(role_node, "gateway", "player_info", userid,
                                           timeout=INFO_TIMEOUT)
        except ClusterError as e:
            view["role_node_error"] = f"{type(e).__name__}: {e}"
    attrs = dict((stored.doc.get("attrs") or {}) if stored is not None else {})
    generation = stored.generation if stored is not None else 0
    if isinstance(live, dict):
        attrs.update(live.get("attrs") or {})
        generation = max(generation, int(live.get("generation") or 0))
        if live.get("state") != "online":
            state = "logging_out"
    elif role_node is not None and "role_node_error" not in view:
        # Redis names a node that does not hold the player: a stale state (the node
        # crashed and master has not cleared it yet, or a logout is finishing)
        view["stale_redis_state"] = True
    if user is not None:
        generation = max(generation, user.generation)
    view.update({
        "userid": userid, "online": isinstance(live, dict) and live.get("state") == "online",
        "state": state, "role_node": role_node, "birth_region": birth_region(userid),
        "name": str(attrs.get("name", "")), "generation": generation,
    })
    if "mapid" in attrs:  # the world map puts it there; absent until it exists
        view["mapid"] = attrs["mapid"]
    return view
