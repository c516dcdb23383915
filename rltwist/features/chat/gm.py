"""GM: ``POST /players/<userid>/mute {"seconds": N, "reason": "..."}`` (0 lifts it).

The mute is stored in the player's birth-region rolecity entity before the answer and
applied at once to an online instance; a player who logs in later gets it at Auth.

    curl -H "Authorization: Bearer $TOKEN" -d '{"seconds": 600, "reason": "spam"}' \\
        http://127.0.0.1:8900/players/65537/mute
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError
from rltwist.nodes.master.gm import GMApi, HTTPError, _cluster_error, _parse_userid
from rltwist.protocols import pb

#: a mute longer than a year is a ban, which is not chat's business
MAX_MUTE_SECONDS = 366 * 24 * 3600
MAX_MUTE_REASON = 200
MUTE_TIMEOUT = 10.0


@GMApi.app.route("/players/<userid>/mute", methods=["POST"])
async def mute_player(self: GMApi, request: IRequest, userid: str) -> bytes:
    async def mute() -> dict[str, Any]:
        uid = _parse_userid(userid)
        body = self._body(request, required=("seconds",))
        seconds = body["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int) \
                or not 0 <= seconds <= MAX_MUTE_SECONDS:
            raise HTTPError(400, "bad_field", f"field 'seconds' must be an integer 0-"
                            f"{MAX_MUTE_SECONDS} (0 lifts the mute)", field="seconds")
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_MUTE_REASON:
            raise HTTPError(400, "bad_field", f"field 'reason' must be a string of at most "
                            f"{MAX_MUTE_REASON} characters", field="reason")
        cluster = self.node.cluster
        node = cluster.rolecity_node(uid)
        if node not in cluster.addresses:
            raise HTTPError(404, "unknown_player", f"no player {uid}: region of it has no "
                            "rolecity node", userid=uid)
        try:
            result = await cluster.call(node, "privatechat", "mute", uid, seconds, reason,
                                        timeout=MUTE_TIMEOUT)
        except ClusterError as e:
            status, payload = _cluster_error(e)
            raise HTTPError(status, payload.pop("error"), payload.pop("message"),
                            **payload) from None
        if result.get("code") == pb.ErrorCode.NO_SUCH_PLAYER:
            raise HTTPError(404, "unknown_player", f"no player {uid}", userid=uid)
        return {"userid": uid, "muted_until_ms": result["muted_until_ms"],
                "reason": result["reason"], "online": result["online"],
                "applied": result["applied"]}
    return await self._guard(request, mute)
