"""The client requests a role node answers, and what runs after a player's Auth.

A feature registers its requests by message class, in its own module, and never edits the
gateway or the agent::

    from rltwist.nodes.role.requests import after_auth, request

    @request(pb.ChatSend)
    async def chat_send(gw: Gateway, player: Player, msg: pb.ChatSend) -> pb.ChatSend.Response:
        ...

    @after_auth
    async def deliver_backlog(gw: Gateway, player: Player) -> None:
        ...   # runs after Auth answered OK (stored pushes, offline items)

A handler runs for an authenticated player whose instance is online and whose node may
write (the gateway answers RETRY_LATER otherwise). It returns the request's ``Response``;
an exception is logged and answered INTERNAL. A handler should keep business rules in a
game system reached through :func:`rltwist.ecs.import_system` so ``POST /hotfix`` changes
them; the handler is the wiring (which node to call, what to answer).

``after_auth`` hooks run one after another once the Auth answer is written; one that fails
is logged and does not stop the others or the player. The player's requests wait until
they are done (heartbeats do not), so a hook and a request never race on the same state
(a guild create resumed by a hook and the client's next GuildCreate); a hook must
therefore bound every wait.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message
from twisted.logger import Logger

if TYPE_CHECKING:
    from rltwist.nodes.role.agent import Player
    from rltwist.nodes.role.gateway import Gateway

__all__ = ["AFTER_AUTH", "REQUESTS", "SHOWN_CHANGED", "Handler", "after_auth",
           "on_shown_change", "request", "run_after_auth", "shown_changed"]

log = Logger()

Handler = Callable[["Gateway", "Player", Any], Awaitable[Message]]
AfterAuth = Callable[["Gateway", "Player"], Awaitable[Any]]

REQUESTS: dict[type[Message], Handler] = {}
"""Request class -> its handler."""
AFTER_AUTH: list[AfterAuth] = []
ShownHook = Callable[["Gateway", "Player"], Any]
SHOWN_CHANGED: list[ShownHook] = []
"""Hooks run when what other players see of a player (its name, its guild) changed."""


T = TypeVar("T")


async def as_request(player: Player, work: Awaitable[T]) -> T:
    """Run *work* counted as one of the player's requests in flight, so a logout waits for
    it before the final save (what it changed is saved with the player). For work a
    feature starts outside a client request (after-Auth steps, sweepers, pulls)."""
    player.inflight += 1
    try:
        return await work
    finally:
        player.request_done()


def request(cls: type[Message]) -> Callable[[Handler], Handler]:
    """Register the decorated coroutine function as the handler of requests *cls*."""
    if not hasattr(cls, "Response"):
        raise TypeError(f"{cls.__qualname__} is not a request (it has no Response)")

    def register(fn: Handler) -> Handler:
        old = REQUESTS.get(cls)
        if old is not None and old.__qualname__ != fn.__qualname__:
            raise ValueError(f"request {cls.__qualname__} already handled by "
                             f"{old.__module__}.{old.__qualname__}")
        REQUESTS[cls] = fn
        return fn

    return register


def _add_once(hooks: list[Any], fn: Any) -> None:
    """Append *fn* unless a function of that name is there (a reload registers again)."""
    if all(f.__qualname__ != fn.__qualname__ or f.__module__ != fn.__module__
           for f in hooks):
        hooks.append(fn)


def after_auth(fn: AfterAuth) -> AfterAuth:
    """Run *fn(gateway, player)* after every successful Auth (registration order)."""
    _add_once(AFTER_AUTH, fn)
    return fn


async def run_after_auth(gw: Gateway, player: Player) -> None:
    for fn in list(AFTER_AUTH):
        try:
            await fn(gw, player)
        except Exception:
            log.failure("after-Auth step {step} of {userid} failed",
                        step=f"{fn.__module__}.{fn.__qualname__}", userid=player.userid)


def on_shown_change(fn: ShownHook) -> ShownHook:
    """Run *fn(gateway, player)* (synchronous; start slow work in the background) when
    the player's name or guild changed and was saved: a map shows both on the city."""
    _add_once(SHOWN_CHANGED, fn)
    return fn


def shown_changed(gw: Gateway, player: Player) -> None:
    """Tell the hooks that *player*'s name or guild changed (one failing is logged)."""
    for fn in list(SHOWN_CHANGED):
        try:
            fn(gw, player)
        except Exception:
            log.failure("shown-change hook {hook} of {userid} failed",
                        hook=f"{fn.__module__}.{fn.__qualname__}", userid=player.userid)
