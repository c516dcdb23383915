"""Twisted services that put a private redis-server and a Redis client in a service tree.

A node adds ``RedisClientService`` as a child so connecting and closing follow its
start/stop order; a local launcher adds ``RedisServerService`` before the nodes and waits
on ``ready`` before starting anything that needs Redis.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.redis.client import RedisClient
from rltwist.redis.server import RedisServer

log = Logger()


class RedisServerService(Service):
    """Starts ``server`` with the service and stops it (by PID) with the service.

    ``ready`` fires once the server answers, or fails with RedisServerError.
    """

    name = "redis-server"  # type: ignore[assignment]

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.ready: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        ready = self.ready
        if ready.called:
            ready = self.ready = defer.Deferred()

        def failed(failure: Failure) -> Failure:
            log.error("cannot start redis-server: {why}", why=failure.getErrorMessage())
            return failure

        started = defer.ensureDeferred(self.server.start())
        started.addErrback(failed)
        started.chainDeferred(ready)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self.server.stop())


class RedisClientService(Service):
    """Connects ``client`` in the background on start and closes it on stop.

    Nothing waits for the connection at start: commands wait for it (bounded) and
    fail with RedisUnavailable meanwhile, which is what login does while Redis is down.
    """

    name = "redis-client"  # type: ignore[assignment]

    def __init__(self, client: RedisClient) -> None:
        self.client = client

    def startService(self) -> None:
        super().startService()
        self.client.start()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self.client.disconnect())
