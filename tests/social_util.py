"""Helpers for end-to-end tests of the social features: two regions, two role nodes.

    class Chat(SocialCase):
        async def test_...(self):
            a, b = await self.players_apart(1, 2)   # regions 1 and 2, on different role nodes
            await a.request(pb.SomeRequest(...))
            note = await self.wait_push(b, pb.SomeNotify)

``a.userid`` and ``a.role`` (the role node serving it) are set on each player.
``self.probe`` (a :class:`~tests.login_util.ClusterProbe`) calls node services directly,
as a cluster member.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rltwist.config import parse_node_name
from rltwist.protocols import pb
from tests.login_util import ClusterProbe, GameClient, LoginCase, offline
from tests.util import wait_for

#: Two regions (map, guild, mail, rolecity each), two role nodes, one login node.
SOCIAL_NODES = ["master", "logiccenter",
                "map1", "guild1", "mail1", "rolecity1",
                "map2", "guild2", "mail2", "rolecity2",
                "role1", "role2", "login1"]


class SocialCase(LoginCase):
    names = SOCIAL_NODES
    timeout = 240

    async def setUp(self) -> None:
        await super().setUp()
        self.probe = ClusterProbe(self)
        self._serial = 0
        self._role_ports = {self.lc.node_config(n)["client_port"]: n
                            for n in self.names if parse_node_name(n)[0] == "role"}

    async def player(self, region: int = 1, openid: str | None = None) -> GameClient:
        """A new player born in *region*, logged in and authenticated."""
        self._serial += 1
        c = self.client(openid or f"{self.id().rsplit('.', 1)[-1][:20]}-{self._serial}",
                        server_id=region)
        await c.play(*self.login_address())
        c.userid = c.login_response.userid
        c.role = self._role_ports[c.login_response.port]
        return c

    async def relogin(self, c: GameClient) -> GameClient:
        """Log *c* in again (a new connection, a new instance), once the old instance
        has logged out (a login during its logout is answered RETRY_LATER)."""
        c.close()
        await wait_for(lambda: offline(self, c.userid), 20,
                       f"{c.openid}'s old instance to log out")
        await c.play(*self.login_address())
        c.role = self._role_ports[c.login_response.port]
        return c

    async def players_apart(self, region_a: int = 1,
                            region_b: int = 2) -> tuple[GameClient, GameClient]:
        """A player of *region_a* and one of *region_b*, online on different role nodes."""
        a = await self.player(region_a)
        for _ in range(8):
            b = await self.player(region_b)
            if b.role != a.role:
                return a, b
            b.close()
        raise AssertionError("the least-loaded pick kept both players on one role node")

    async def wait_push(self, client: GameClient, cls: type[Any],
                        match: Callable[[Any], bool] = lambda m: True,
                        timeout: float = 10.0) -> Any:
        """The first push of type *cls* that *client* received and *match* accepts
        (waits up to *timeout* s for it); consumed from ``client.pushes``."""
        found: list[Any] = []

        def seen() -> bool:
            for m in client.pushes:
                if isinstance(m, cls) and match(m):
                    found.append(m)
                    client.pushes.remove(m)
                    return True
            return False

        await wait_for(seen, timeout, f"a {cls.__name__} push to {client.openid}")
        return found[0]

    async def request_ok(self, client: GameClient, message: Any) -> Any:
        """Send *message*; fail unless the answer's code is OK; return the answer."""
        r = await client.request(message)
        if r.code != pb.ErrorCode.OK:
            raise AssertionError(f"{type(message).__name__} of {client.openid} answered "
                                 f"{pb.ErrorCode.Name(r.code)}")
        return r
