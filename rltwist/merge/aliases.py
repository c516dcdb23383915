"""The region alias table after server merges: ``{merged sid: target sid}``.

It is cluster configuration owned by master: persisted in globaldb (collection
``cluster``, document ``region_aliases``) so a restarted master keeps it, loaded by master
at start (retried until globaldb answers; until then master hands no table out and the
nodes keep theirs), and spread as part of master's name table: a change bumps the table's
version and is broadcast (``slaveflow.set_aliases``); a node that missed the broadcast
fetches the table at its next heartbeat. Every node installs it in its routing
(``cluster.routing.set_aliases``), so ``rolecity_node``, ``mail_node``, ``guild_node`` and
``map_node`` of a merged region's ids name the target region's nodes.

GM routes (master)::

    GET  /regions/aliases                      -> {"aliases": {"2": 1}, "loaded": true}
    POST /regions/aliases {"from": 2, "into": 1} -> {"aliases": {"2": 1}}  (durable at 200)

``rl-merge`` posts the alias once the merged data is written.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.logger import Logger

from rltwist.cluster.routing import Routing
from rltwist.nodes.common.keylock import FifoLock
from rltwist.nodes.master.gm import GMApi, HTTPError
from rltwist.storage import Backend

if TYPE_CHECKING:
    from twisted.web.iweb import IRequest

    from rltwist.nodes.common.node import Node
    from rltwist.nodes.master.masterflow import Masterflow

log = Logger()

GLOBALDB = "globaldb"
COLLECTION = "cluster"
DOC = "region_aliases"
LOAD_RETRY = 1.0


async def load(db: Backend) -> dict[int, int]:
    """The persisted alias table (empty if none was ever stored)."""
    doc = await db.get(COLLECTION, DOC)
    if not doc:
        return {}
    return {int(m): int(t) for m, t in doc.get("aliases", [])}


async def store(db: Backend, aliases: dict[int, int]) -> None:
    """Persist *aliases* (the whole table)."""
    await db.upsert(COLLECTION, DOC, {"aliases": sorted([m, t] for m, t in aliases.items()),
                                      "updated_ms": int(time.time() * 1000)})


def as_json(aliases: dict[int, int]) -> dict[str, int]:
    return {str(m): t for m, t in sorted(aliases.items())}


class AliasKeeper:
    """Master's side: loads the table at start, persists and installs changes (one at a
    time)."""

    def __init__(self, node: Node, flow: Masterflow) -> None:
        self.node = node
        self.flow = flow
        self.lock = FifoLock()
        self.loaded = False

    @property
    def db(self) -> Backend:
        return self.node.database(GLOBALDB)

    async def load_loop(self) -> None:
        """Load the table from globaldb, retrying every ``LOAD_RETRY`` s until it answers
        (each try bounded by the storage timeout)."""
        attempt = 0
        while not self.loaded:
            attempt += 1
            try:
                async with self.lock:
                    table = await load(self.db)
                    self.flow.set_aliases(table)
                    self.loaded = True
                log.info("region aliases loaded from globaldb: {aliases}",
                         aliases=as_json(table))
                return
            except Exception as e:
                if attempt == 1 or attempt % 30 == 0:
                    log.warn("cannot load the region aliases from globaldb yet ({e}); "
                             "retrying every {t}s (nodes keep theirs meanwhile)", e=e,
                             t=LOAD_RETRY)
                await task.deferLater(self.node.reactor, LOAD_RETRY, lambda: None)

    async def add(self, merged: int, target: int) -> dict[int, int]:
        """Alias *merged* to *target*: checked, persisted, then installed and broadcast."""
        async with self.lock:
            if not self.loaded:
                raise HTTPError(503, "not_loaded", "the region aliases are not loaded from "
                                "globaldb yet; retry")
            table = dict(self.flow.aliases or {})
            table[merged] = target
            try:
                table = Routing(table).aliases  # sids, self-alias, cycles; chains resolved
            except ValueError as e:
                raise HTTPError(400, "bad_alias", str(e)) from None
            await store(self.db, table)
            self.flow.set_aliases(table)
            return table


_keepers: dict[int, AliasKeeper] = {}


def keeper_of(gm: GMApi) -> AliasKeeper:
    keeper = _keepers.get(id(gm.node))
    if keeper is None:
        raise HTTPError(503, "not_loaded", "region aliases are not set up on this master")
    return keeper


def _sid(body: dict[str, Any], field: str) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 0xFFFF:
        raise HTTPError(400, "bad_field", f"{field} must be a region id 1..65535",
                        field=field)
    return value


@GMApi.app.route("/regions/aliases", methods=["GET"])
async def get_aliases(self: GMApi, request: IRequest) -> bytes:
    """The region alias table in force on master."""
    def view() -> dict[str, Any]:
        keeper = _keepers.get(id(self.node))
        return {"aliases": as_json(self.flow.aliases or {}),
                "loaded": bool(keeper and keeper.loaded)}
    return await self._guard(request, view)


@GMApi.app.route("/regions/aliases", methods=["POST"])
async def post_alias(self: GMApi, request: IRequest) -> bytes:
    """Route region ``from``'s ids to region ``into``'s nodes (after its data was merged
    there): persisted in globaldb before the answer, then broadcast."""
    async def add() -> dict[str, Any]:
        body = self._body(request, ("from", "into"))
        table = await keeper_of(self).add(_sid(body, "from"), _sid(body, "into"))
        return {"aliases": as_json(table)}
    return await self._guard(request, add)


def install(node: Node) -> None:
    """On master: load the alias table from globaldb once the reactor runs."""
    if node.me.kind != "master":
        return
    flow = node.cluster.services["masterflow"]
    keeper = _keepers[id(node)] = AliasKeeper(node, flow)  # type: ignore[arg-type]
    node.reactor.callWhenRunning(
        lambda: defer.Deferred.fromCoroutine(keeper.load_loop()).addErrback(
            lambda f: log.failure("loading region aliases failed", f)))
