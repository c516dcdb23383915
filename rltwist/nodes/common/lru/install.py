"""Node wiring: put an LRU group on a node (services, saver, shutdown save, data fixes)
and reach an entity behind a router from anywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from rltwist.nodes.common.lru.actor import Actor
from rltwist.nodes.common.lru.group import LRUGroup, LRURouter
from rltwist.nodes.common.lru.settings import lru_settings
from rltwist.storage import Key

if TYPE_CHECKING:
    from rltwist.cluster import Cluster
    from rltwist.nodes.common.node import Node


def install_lru(node: Node, actor: Actor, *, router: str, worker: str, db: str,
                router_cls: Callable[[LRUGroup], LRURouter] = LRURouter) -> LRUGroup:
    """Build an LRU group on *node*: services registered, saver running with the node, a
    shutdown handler that saves everything, and the data fixes of ``actor.kind`` from the
    node's hotfix service (``<root>/hotfix/datafix/<kind>``): run on every load (seed §14),
    and on the resident entities by GM's ``POST /datafix`` (which also reloads the scripts
    later loads use).
    """
    from rltwist.ecs.datafix import DataFixError
    from rltwist.nodes.common.hotfix import HotfixService, register_online_entities
    from rltwist.nodes.common.node import StartupError

    workers, capacity = lru_settings(node.config, worker)
    group = LRUGroup(actor, node.database(db), router=router, worker=worker, workers=workers,
                     capacity=capacity, interval=node.config.storage.save_interval,
                     clock=node.reactor, registry=node.registry, router_cls=router_cls)
    hotfix = node.cluster.services.get("hotfix")
    if isinstance(hotfix, HotfixService):
        try:
            group.set_fixer(hotfix.data_fixer(actor.kind))
        except DataFixError as e:
            # loading entities without their fixes would save them unfixed: refuse to start
            raise StartupError(f"{node.name}: {e}") from None
        group.on_stop.append(register_online_entities(actor.kind, group.entities))
    group.setServiceParent(node)
    group.register(node.cluster)

    async def save_all() -> None:
        report = await group.flush()
        if not report.ok:
            raise RuntimeError(f"{router}: {report.to_dict()} at shutdown")

    node.add_shutdown_handler(router, save_all)
    return group


def lru_call(cluster: Cluster, node: str, router: str, id: Key, method: str, *args: Any,
             timeout: float | None = None) -> defer.Deferred[Any]:
    """Call business method *method* of entity *id* behind *router* on *node*."""
    return cluster.call(node, router, "call", id, method, *args, timeout=timeout)
