"""Every listener rltwist opens has a backlog a burst does not overflow, and the login
node keeps its SDK connections (issue 11 item 12d).

With Twisted's default backlog of 50, 200 logins at once overflowed the dev SDK's accept
queue: the kernel dropped SYNs and those logins waited the 1 s retransmit (login p99 1.1 s
in ``rl-cluster demo``). ``rl-cluster demo`` prints the kernel's overflow count;
tests/test_rl_cluster.py checks that it does.
"""

from __future__ import annotations

import tomllib
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from rltwist.config import config_from_dict
from rltwist.launcher import local_config, render_config
from rltwist.net import LISTEN_BACKLOG
from rltwist.nodes.common.node import Node


def node_on(name: str, memory: MemoryReactorClock, names: tuple[str, ...] = ()) -> Node:
    config = config_from_dict(tomllib.loads(render_config(local_config([name, *names]))))
    return Node(config, config.node(name), reactor=memory)


class Backlogs(unittest.TestCase):
    def backlogs(self, memory: MemoryReactorClock) -> dict[int, int]:
        return {port: backlog for port, _, backlog, _ in memory.tcpServers}

    def test_master_listens_with_a_full_backlog_everywhere(self) -> None:
        from rltwist.nodes.master.service import build

        memory = MemoryReactorClock()
        node = node_on("master", memory)
        build(node)
        node.privilegedStartService()
        me, gm = node.me, node.config.master
        self.assertEqual(self.backlogs(memory), {me.port: LISTEN_BACKLOG,
                                                 me.metrics_port: LISTEN_BACKLOG,
                                                 gm.gm_port: LISTEN_BACKLOG})

    def test_the_dev_sdk_too(self) -> None:
        from rltwist.sdk import listen

        memory = MemoryReactorClock()
        listen(memory, 8090, "a-secret")
        self.assertEqual(self.backlogs(memory), {8090: LISTEN_BACKLOG})


class CountingSDK(Resource):
    """Answers every check with yes after *delay* seconds, so that checks overlap."""

    isLeaf = True

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def render_POST(self, request: Any) -> Any:
        from twisted.web.server import NOT_DONE_YET

        def answer() -> None:
            request.write(b'{"ok": true}')
            request.finish()

        reactor.callLater(self.delay, answer)  # type: ignore[attr-defined]
        return NOT_DONE_YET


class SdkConnectionsKept(unittest.TestCase):
    timeout = 60

    async def test_a_second_burst_of_checks_opens_no_new_connection(self) -> None:
        from rltwist.config import LoginSettings
        from rltwist.nodes.login.loginhandler import sdk_pool
        from tests.login_util import FakeLoginNode, login_handler

        site = Site(CountingSDK(0.05))
        connections = []
        build = site.buildProtocol
        site.buildProtocol = lambda addr: connections.append(addr) or build(addr)  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, backlog=LISTEN_BACKLOG,  # type: ignore[attr-defined]
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        settings = LoginSettings(sdk_url=f"http://127.0.0.1:{port.getHost().port}/verify")
        pool = sdk_pool(reactor, settings.sdk_connections)
        self.addCleanup(pool.closeCachedConnections)
        handler = login_handler(FakeLoginNode(settings), pool)
        burst = 100
        for wave in (1, 2):
            answers = await defer.gatherResults([
                defer.Deferred.fromCoroutine(handler._verify(f"p{i}", "t"))
                for i in range(burst)])
            self.assertEqual(answers, [True] * burst)
            self.assertEqual(len(connections), burst, f"after wave {wave}")
