"""Opening regions while the cluster runs (issue 14): the GM routes.

The state (which regions exist, which are open to new players) is logiccenter's
``regions`` service (``rltwist.nodes.logiccenter.regions``, registered by logiccenter's
build because ``account`` asks it for every new player). Master's GM routes forward to
it and add what only master knows: each region's nodes and their states, and how many of
its players are online (the rolecaches of its rolecity and map nodes):

    GET  /regions                  every known region: state, players, online, nodes
    POST /regions/<sid>/open       new players may be born there (it needs a node up)
    POST /regions/<sid>/close      new players may not; its players keep playing
    POST /regions/recommend        {"sid": N} the region RegionList recommends while it is
                                   open; {"sid": 0} back to the newest open region

The client's region list (``RegionList``, allowed on login nodes before Login) is served
by the login node (``rltwist.nodes.login.service``) from ``regions.public``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.web.iweb import IRequest

from rltwist.cluster import ClusterError
from rltwist.config import REGION_KINDS, parse_node_name
from rltwist.features.gmail import call_logiccenter, parse_sid
from rltwist.nodes.master.gm import GMApi, HTTPError

#: HTTP status of each refusal of the regions service
STATUS = {"bad_region": 400, "unknown_region": 404, "no_nodes": 409}
#: bound of each rolecache count asked for GET /regions (a region that does not answer
#: in time shows ``online: null``)
COUNT_TIMEOUT = 3.0


def _answer(answer: dict[str, Any]) -> dict[str, Any]:
    if not answer.get("ok"):
        error = str(answer.get("error"))
        raise HTTPError(STATUS.get(error, 400), error, str(answer.get("message")))
    answer = dict(answer)
    answer.pop("ok")
    return answer


def region_nodes(gm: GMApi) -> dict[int, dict[str, str]]:
    """``{sid: {node name: state}}`` of every region node master knows (registered) or
    has in its config (``not registered`` until it registers)."""
    found: dict[int, dict[str, str]] = {}
    for name in gm.node.config.nodes:
        kind, number = parse_node_name(name)
        if kind in REGION_KINDS and number is not None:
            found.setdefault(number, {})[name] = "not registered"
    for name, record in gm.flow.nodes.items():
        if record.kind in REGION_KINDS and record.number is not None:
            found.setdefault(record.number, {})[name] = record.state
    return found


async def _count(gm: GMApi, node: str) -> int | None:
    try:
        return int(await gm.node.cluster.call(node, "rolecache", "count",
                                              timeout=COUNT_TIMEOUT))
    except (ClusterError, TypeError, ValueError):
        return None


async def online(gm: GMApi, sid: int, nodes: dict[str, str]) -> dict[str, int | None]:
    """Players born in *sid* online now (its rolecity's rolecache) and players on its map
    (its map's rolecache); None where that node is not up or did not answer."""
    cluster = gm.node.cluster
    born, on_map = cluster.rolecity_node(sid), cluster.map_node(sid)
    asks = [_count(gm, n) if nodes.get(n) == "up" else _none() for n in (born, on_map)]
    counts = await defer.gatherResults([defer.Deferred.fromCoroutine(a) for a in asks])
    return {"online": counts[0], "online_on_map": counts[1]}


async def _none() -> None:
    return None


@GMApi.app.route("/regions", methods=["GET"])
async def gm_regions(self: GMApi, request: IRequest) -> bytes:
    """Every known region: ``state`` (open/closed to new players), ``players`` (accounts
    born there), ``online``, ``online_on_map``, ``nodes`` ({name: state}), times; and
    ``recommended``."""
    async def listing() -> dict[str, Any]:
        answer = await call_logiccenter(self, "regions", "list")
        nodes = region_nodes(self)
        regions = answer["regions"]
        counts = await defer.gatherResults([
            defer.Deferred.fromCoroutine(online(self, r["sid"], nodes.get(r["sid"], {})))
            for r in regions])
        out = []
        for region, count in zip(regions, counts, strict=True):
            region_nodes_ = nodes.get(region["sid"], {})
            out.append({**region, **count, "nodes": dict(sorted(region_nodes_.items())),
                        "nodes_up": sum(s == "up" for s in region_nodes_.values())})
        return {"regions": out, "recommended": answer["recommended"]}
    return await self._guard(request, listing)


@GMApi.app.route("/regions/<sid>/open", methods=["POST"])
async def gm_open_region(self: GMApi, request: IRequest, sid: str) -> bytes:
    """Open region *sid* to new players; 200 once saved. 404 unknown, 409 no nodes."""
    async def open_() -> dict[str, Any]:
        return _answer(await call_logiccenter(self, "regions", "open", parse_sid(sid)))
    return await self._guard(request, open_)


@GMApi.app.route("/regions/<sid>/close", methods=["POST"])
async def gm_close_region(self: GMApi, request: IRequest, sid: str) -> bytes:
    """Close region *sid* to new players (its players keep playing); 200 once saved."""
    async def close() -> dict[str, Any]:
        return _answer(await call_logiccenter(self, "regions", "close", parse_sid(sid)))
    return await self._guard(request, close)


@GMApi.app.route("/regions/recommend", methods=["POST"])
async def gm_recommend_region(self: GMApi, request: IRequest) -> bytes:
    """``{"sid": N}``: the region RegionList recommends while it is open (0: the newest
    open region)."""
    async def recommend() -> dict[str, Any]:
        body = self._body(request, ("sid",))
        sid = body["sid"]
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise HTTPError(400, "bad_region", f"field 'sid' must be a region id or 0, got "
                            f"{sid!r}", field="sid")
        return _answer(await call_logiccenter(self, "regions", "recommend", sid))
    return await self._guard(request, recommend)
