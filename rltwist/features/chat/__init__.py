"""Chat (issue 12): world, region, guild and private channels across regions.

``install(node)`` puts chat's part on each node kind:

- logiccenter: ``chat``, the world channel (LRU group over ``globaldb``);
- map<sid>: ``chat``, the region channel of that map;
- rolecity<sid>: ``privatechat`` (pair histories, offline backlog, GM mute), and the chat
  business methods on the rolecity entity (``chat_blocks``, ``chat_state``,
  ``chat_set_mute``, ``chat_flag_backlog``, ``chat_unflag_backlog``);
- role: ``ChatSend`` / ``ChatHistory`` handlers, the after-Auth step, ``chatgate``;
- master: ``POST /players/<userid>/mute``.

Rules live in :mod:`rltwist.game.chatsystem`; docs/social.md ("Chat") is the reference.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService

from rltwist.features.chat import gm as _gm  # noqa: F401  (registers the GM route)
from rltwist.features.chat import role
from rltwist.features.chat.services import (
    ChannelActor,
    ChannelRouter,
    PrivateActor,
    PrivateRouter,
    rolecity_blocks,
    rolecity_flag_backlog,
    rolecity_set_mute,
    rolecity_state,
    rolecity_unflag_backlog,
)
from rltwist.nodes.common.dbproxy import GLOBALDB, region_db
from rltwist.nodes.common.lru import LRUGroup, install_lru

__all__ = ["install"]

PRUNE_INTERVAL = 60.0


def install(node: Any) -> None:
    """Register chat's services and hooks for *node*'s kind."""
    kind = node.me.kind
    if kind == "logiccenter":
        install_lru(node, ChannelActor(), router="chat", worker="chatworld", db=GLOBALDB,
                    router_cls=ChannelRouter)
    elif kind == "map":
        install_lru(node, ChannelActor(), router="chat", worker="chatregion",
                    db=region_db(node.me.number or 0), router_cls=ChannelRouter)
    elif kind == "rolecity":
        roles: LRUGroup = node.cluster.services["rolerouter"].group
        roles.add_action("chat_blocks", rolecity_blocks)
        roles.add_action("chat_state", rolecity_state)
        roles.add_action("chat_set_mute", rolecity_set_mute, creates=True, save=True)
        roles.add_action("chat_flag_backlog", rolecity_flag_backlog, creates=True, save=True)
        # unflagging need not be durable: a flag left set costs one read at an Auth
        roles.add_action("chat_unflag_backlog", rolecity_unflag_backlog)
        install_lru(node, PrivateActor(), router="privatechat", worker="chatprivate",
                    db=region_db(node.me.number or 0),
                    router_cls=lambda group: PrivateRouter(group, node))
    elif kind == "role":
        node.cluster.register(role.ChatGate(node.cluster.services["gateway"]))
        pruner = TimerService(PRUNE_INTERVAL, role.prune)
        pruner.clock = node.reactor
        pruner.setServiceParent(node)
