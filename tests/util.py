"""Shared helpers of the test suite: bounded waits, in-process clusters."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol

from rltwist.cluster import Cluster
from rltwist.config import ClusterSettings

SECRET = b"test-cluster-secret"


def settings(**kw: Any) -> ClusterSettings:
    kw.setdefault("secret", SECRET)
    kw.setdefault("unreachable_after", 5.0)
    kw.setdefault("call_timeout", 10.0)
    return ClusterSettings(**kw)


async def wait_for(check: Callable[[], Any], timeout: float, what: str,
                   interval: float = 0.02) -> Any:
    """Poll *check* (sync or async) until it returns a truthy value; fail saying *what*."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if isinstance(value, (defer.Deferred, Awaitable)):
                value = await value
            if value:
                return value
        except Exception as e:
            last_error = e
        if time.monotonic() > deadline:
            extra = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        await task.deferLater(reactor, interval)


async def equals(awaitable: Any, expected: Any) -> bool:
    """For wait_for: does *awaitable* give *expected*?"""
    return (await awaitable) == expected


class RawClient(Protocol):
    """A TCP client that speaks raw bytes: collects what the server sends until it closes
    (``lost`` fires once)."""

    def __init__(self) -> None:
        self.received = b""
        self.lost: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


async def metrics_text(lc: Any, name: str, timeout: float = 5.0) -> str:
    """The Prometheus text a node of LocalCluster *lc* serves right now (bounded)."""
    import treq

    port = lc.node_config(name)["metrics_port"]
    response = await treq.get(f"http://127.0.0.1:{port}/metrics", persistent=False,
                              timeout=timeout)
    return str((await treq.content(response)).decode())


async def node_is(lc: Any, name: str, state: str) -> bool:
    """For wait_for: does master report node *name* in *state*?"""
    return (await lc.node_states()).get(name) == state


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds)


def make_cluster(name: str, port: int, addresses: dict[str, tuple[str, int]] | None = None,
                 **kw: Any) -> Cluster:
    return Cluster(name, settings(**kw), addresses or {}, listen=("127.0.0.1", port))
