"""Global activities (issue 12, seed §5 logiccenter gactivitymgr): the wiring.

* logiccenter: the ``activities`` service (``rltwist.nodes.logiccenter.activities``),
  loaded and its timer armed once the node may proceed (and again after a restart).
* role nodes: the client request ``ActivityList`` (the activities running for the
  player's region, asked of logiccenter).
* master: GM ``POST /activities``, ``GET /activities``, ``DELETE /activities/<id>``,
  ``POST /activities/<id>/extend``.

Rules: ``rltwist.game.activitysystem``; kinds: the game table ``activities``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError, birth_region
from rltwist.features.gmail import LOGICCENTER, call_logiccenter
from rltwist.nodes.common.sharedatad import sharedata
from rltwist.nodes.logiccenter.activities import activity_pb
from rltwist.nodes.master.gm import GMApi, HTTPError
from rltwist.nodes.role.requests import request
from rltwist.protocols import pb

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

log = Logger()
E = pb.ErrorCode
CALL_TIMEOUT = 10.0
#: HTTP status of each refusal of the activities service
STATUS = {"bad_field": 400, "unknown_activity": 404, "ended": 409}


def install(node: Node) -> None:
    """Register the activities service on logiccenter."""
    if node.me.kind == "logiccenter":
        from rltwist.nodes.logiccenter.account import Account
        from rltwist.nodes.logiccenter.activities import Activities

        account = node.cluster.services["account"]
        assert isinstance(account, Account)
        service = Activities(node, account)
        node.cluster.register(service)
        node.add_ready_hook(service.start)


# -- role nodes -------------------------------------------------------------------------


@request(pb.ActivityList)
async def activity_list(gw: Gateway, player: Player,
                        msg: pb.ActivityList) -> pb.ActivityList.Response:
    """The activities running now for the player's region (its birth region and the
    region of its map)."""
    regions = sorted({birth_region(player.userid), player.mapid})
    try:
        docs = await gw.cluster.call(LOGICCENTER, "activities", "current", regions,
                                     timeout=CALL_TIMEOUT)
    except ClusterError as e:
        log.warn("{userid}: activity list unavailable: {e}", userid=player.userid, e=e)
        return pb.ActivityList.Response(code=E.RETRY_LATER)
    tables = sharedata().snapshot
    return pb.ActivityList.Response(code=E.OK,
                                    activities=[activity_pb(d, tables) for d in docs])


# -- GM routes on master ----------------------------------------------------------------


def _activity_id(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 2**63:
        raise HTTPError(400, "bad_activity", f"{text!r} is not an activity id")
    return int(text)


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        error = str(answer.get("error"))
        raise HTTPError(STATUS.get(error, 400), error, str(answer.get("message")))
    return {"activity": answer["activity"]}


@GMApi.app.route("/activities", methods=["POST"])
async def gm_create_activity(self: GMApi, request: IRequest) -> bytes:
    """Schedule an activity: ``{"kind", "start_ms" | "start_in", "end_ms" | "duration",
    "regions", "params"}``; 200 ``{"activity"}`` once saved."""
    async def create() -> dict[str, Any]:
        body = self._body(request, ("kind",))
        return _answer(await call_logiccenter(self, "activities", "create", body))
    return await self._guard(request, create)


@GMApi.app.route("/activities", methods=["GET"])
async def gm_list_activities(self: GMApi, request: IRequest) -> bytes:
    """Every activity stored, oldest first, with its state."""
    async def listing() -> dict[str, Any]:
        return {"activities": await call_logiccenter(self, "activities", "list")}
    return await self._guard(request, listing)


@GMApi.app.route("/activities/<activity_id>", methods=["DELETE"])
async def gm_stop_activity(self: GMApi, request: IRequest, activity_id: str) -> bytes:
    """Stop an activity: a running one ends now, a scheduled one never starts."""
    async def stop() -> dict[str, Any]:
        return _answer(await call_logiccenter(self, "activities", "stop",
                                              _activity_id(activity_id)))
    return await self._guard(request, stop)


@GMApi.app.route("/activities/<activity_id>/extend", methods=["POST"])
async def gm_extend_activity(self: GMApi, request: IRequest, activity_id: str) -> bytes:
    """Move an activity's end later: ``{"end_ms"}`` or ``{"by": seconds}``."""
    async def extend() -> dict[str, Any]:
        body = self._body(request)
        return _answer(await call_logiccenter(self, "activities", "extend",
                                              _activity_id(activity_id), body))
    return await self._guard(request, extend)
