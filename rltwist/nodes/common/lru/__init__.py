"""LRU actor services (seed §5): rolecity agent/rolerouter, mail mail/mailrouter,
guild guildhandler/guildrouter.

A group is one router service plus ``n`` worker services (``agent0`` … ``agent<n-1>``).
The router sends each entity id to its fixed worker (``id mod n``; a str id by CRC32), so
one entity lives in exactly one worker of one process. A worker loads an entity on its
first message — concurrent first messages share one load — runs the message through the
group's :class:`Actor` (the business methods), keeps at most ``capacity`` entities and
evicts the least recently used one after saving it (an eviction whose save fails keeps the
entity). Messages to one entity run one at a time, in arrival order (an actor's mailbox).
Dirty entities are saved by the group's :class:`~rltwist.nodes.common.saver.Saver` every
``save_interval``, and all of them at shutdown.

Reaching an entity from any node::

    await cluster.call(cluster.rolecity_node(userid), "rolerouter", "call", userid,
                       "add_resources", {"gold": 5})
    await lru_call(cluster, cluster.rolecity_node(userid), "rolerouter", userid, "get")  # same

Errors come back as ``RemoteError`` kinds: ``UnknownAction`` (no such business method),
``EntityNotFound`` (an action on an id that does not exist and may not be created here,
e.g. a guild), ``LoadFailed`` (storage could not load it; the next message retries).

Saves are fenced: a group takes a fresh generation from the counter
``lru_generation:<collection>`` when it starts, so a stale process of an earlier start (a
paused or partitioned one) can never overwrite what the current one saved; its refused
entities are dropped and reloaded. Data fixes run on load through ``fixer`` (a
:class:`~rltwist.ecs.datafix.DataFixer` of the entity kind, or anything with
``apply_fixes(entity)`` and ``latest_version``); new entities start at its latest version.

Hot code reload: a group reaches its actor's business methods through the import registry
(``rltwist.ecs.registry``). It tracks the module of its ``Actor`` class there, and each
message looks its method up when it runs, on the class the registry's current module
defines — so a fix list naming that module changes what the next message does, in every
running group, and a rollback changes it back. The group keeps one actor state: the new
class's instance shares the original instance's attributes (``__init__`` is not run
again), so a fix must not rely on attributes a new ``__init__`` would set.

One job per module: :mod:`.actor` (the API a game programmer writes against: ``Actor``,
``action``, the errors), :mod:`.worker` (mailboxes, loads, eviction), :mod:`.group`
(router, routing to workers, hot-reload binding, fencing generation), :mod:`.metrics`,
:mod:`.settings` (``[lru.<worker>]``) and :mod:`.install` (node wiring, ``lru_call``).
"""

from rltwist.nodes.common.lru.actor import (
    Actor,
    EntityNotFound,
    Fixer,
    LoadFailed,
    SaveFailed,
    UnknownAction,
    WrongWorker,
    action,
)
from rltwist.nodes.common.lru.group import LRUGroup, LRURouter
from rltwist.nodes.common.lru.install import install_lru, lru_call
from rltwist.nodes.common.lru.metrics import LRUMetrics, lru_metrics
from rltwist.nodes.common.lru.settings import DEFAULTS, lru_settings
from rltwist.nodes.common.lru.worker import FAILED, NEW, READY, LRUWorker, Slot

__all__ = [
    "DEFAULTS",
    "FAILED",
    "NEW",
    "READY",
    "Actor",
    "EntityNotFound",
    "Fixer",
    "LRUGroup",
    "LRUMetrics",
    "LRURouter",
    "LRUWorker",
    "LoadFailed",
    "SaveFailed",
    "Slot",
    "UnknownAction",
    "WrongWorker",
    "action",
    "install_lru",
    "lru_call",
    "lru_metrics",
    "lru_settings",
]
