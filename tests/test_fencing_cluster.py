"""Losing master, and master + Redis restarting together, with real processes (issue 10
items 5 and 6): twistd nodes, a real redis-server, game clients over TCP, SIGKILL/SIGSTOP.

The timing rules themselves are tested with a fake clock in tests/test_fencing.py.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from rltwist.protocols import pb
from rltwist.storage import EmbeddedBackend
from tests.login_util import ClusterProbe, GameClient, LoginCase
from tests.util import equals, metrics_text, wait_for

log = Logger()
E = pb.ErrorCode
K = pb.KickReason

INTERVAL, MISSES = 0.5, 3  # launcher.local_config's heartbeat settings


async def probe_rename(client: GameClient, name: str) -> int:
    """Rename to the name the player already has: no effect when it is allowed, so it
    shows whether the gateway accepts writes without changing anything."""
    return int((await client.request(pb.Rename(name=name))).code)


class MasterLost(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    overrides = {"cluster": {"fence_after": 3.0, "reconnect_max": 0.5}}

    async def test_writes_stop_after_the_misses_and_players_are_saved_and_kicked_at_fence_after(
            self) -> None:
        c = self.client("fencer")
        await c.play(*self.login_address())
        userid = c.login_response.userid
        self.assertEqual(await probe_rename(c, "Fencer"), E.OK)  # a real rename
        probe = ClusterProbe(self)
        self.assertEqual(await probe.online("role1"), [userid])

        await self.lc.nodes["master"].kill()
        killed = time.monotonic()
        # every probe is answered until the node stops writes: RETRY_LATER, still online
        await wait_for(lambda: equals(probe_rename(c, "Fencer"), E.RETRY_LATER), 10,
                       "role1 to refuse a Rename with RETRY_LATER after losing master")
        refused = time.monotonic() - killed
        log.info("fencing: writes refused {t:.2f}s after master's SIGKILL", t=refused)
        self.assertLess(refused, 3.0, "writes were refused only at or after fence_after")
        self.assertFalse(c.closed.called)
        self.assertEqual((await c.request(pb.Heartbeat())).code, E.OK)

        await _bounded(c.closed, 15, "role1 to kick the player at fence_after")
        kicked = time.monotonic() - killed
        log.info("fencing: player kicked {t:.2f}s after master's SIGKILL", t=kicked)
        # fence_after counts from the last answered heartbeat, sent at most one interval
        # (plus its call) before the kill
        self.assertGreaterEqual(kicked, 3.0 - 2 * INTERVAL)
        self.assertEqual([(type(p).__name__, p.code) for p in c.pushes],
                         [("KickNotify", K.KICK_SERVER_SHUTDOWN)])
        # the kick comes first; the save and the rest of the logout follow
        await wait_for(lambda: equals(probe.online("role1"), []), 10,
                       "role1 to finish logging the fenced player out")
        # the fence's logout ended with a final save storage took at once (a client
        # cannot leave unsaved changes today: Rename saves before it answers)
        metrics = await metrics_text(self.lc, "role1")
        self.assertIn('rl_role_logouts_total{reason="fenced: lost master"} 1.0', metrics)
        self.assertIn("rl_role_final_save_retries_total 0.0", metrics)
        self.assertEqual(await self._stored_name(userid), "Fencer")
        self.assertIn("FENCING", self.lc.nodes["role1"].log_path.read_text())

    async def _stored_name(self, userid: int) -> str | None:
        db = EmbeddedBackend(str(self.lc.run_dir / "data" / "roledb.sqlite3"))
        try:
            entity = await db.get_entity("player", userid)
        finally:
            await db.close()
        return entity.doc["attrs"].get("name") if entity is not None else None


class MasterRestart(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "login1"]
    # the restart (kill, new process, re-registration) is well within fence_after
    overrides = {"cluster": {"fence_after": 30.0, "reconnect_max": 0.5}}

    async def test_a_master_restarted_within_fence_after_kicks_nobody(self) -> None:
        c = self.client("stayer")
        await c.play(*self.login_address())
        self.assertEqual(await probe_rename(c, "Stayer"), E.OK)
        await self.lc.nodes["master"].kill()
        await wait_for(lambda: equals(probe_rename(c, "Stayer"), E.RETRY_LATER), 10,
                       "role1 to refuse writes after losing master")
        await self.lc.start("master")
        await wait_for(lambda: equals(probe_rename(c, "Stayer"), E.OK), 20,
                       "role1 to accept writes again once the restarted master answers")
        await self.lc.wait_up(self.names)
        self.assertEqual((await c.request(pb.Heartbeat())).code, E.OK)
        self.assertEqual(await probe_rename(c, "Stayer2"), E.OK)
        self.assertEqual(c.pushes, [])
        self.assertFalse(c.closed.called)
        user = await self.state.get_user(c.login_response.userid)
        self.assertEqual((user.state, user.node), ("GAME_STEP_FINISH", "role1"))
        self.assertNotIn("FENCING", self.lc.nodes["role1"].log_path.read_text())


class MasterAndRedisRestart(LoginCase):
    names = ["master", "logiccenter", "rolecity1", "role1", "role2", "login1"]
    overrides = {"cluster": {"reregister_wait": 2.0, "reconnect_max": 0.5}}

    async def restart_master_and_redis(self) -> float:
        """SIGKILL master and Redis together; start a fresh, empty Redis on the same port
        and a new master. Returns when master was started (monotonic)."""
        await self.lc.nodes["master"].kill()
        await self.redis.restart(crash=True)
        self.assertFalse(await self.state.get_available())
        started = time.monotonic()
        await self.lc.start("master")
        return started

    async def holders(self, probe: ClusterProbe, userid: int) -> list[str]:
        """The role nodes that have *userid* online."""
        return [r for r in ("role1", "role2") if userid in await probe.online(r)]

    async def test_online_players_are_written_back_and_a_second_login_kicks(self) -> None:
        host, port = self.login_address()
        first = self.client("kate")
        await first.play(host, port)
        userid = first.login_response.userid
        probe = ClusterProbe(self)
        [role] = await self.holders(probe, userid)

        await self.restart_master_and_redis()
        await self.wait_logins_available()
        user = await self.state.get_user(userid)
        self.assertIsNotNone(user, "kate's online state was not written back")
        self.assertEqual((user.state, user.node), ("GAME_STEP_FINISH", role))

        second = self.client("kate")
        await second.play(host, port)
        await _bounded(first.closed, 15, "the first instance to be kicked")
        self.assertEqual([p.code for p in first.pushes], [K.KICK_LOGIN_ELSEWHERE])
        self.assertEqual((await second.request(pb.Heartbeat())).code, E.OK)
        user = await self.state.get_user(userid)
        self.assertEqual(await self.holders(probe, userid), [user.node])

    async def test_a_hung_role_node_does_not_block_logins_and_drops_its_players_later(
            self) -> None:
        host, port = self.login_address()
        a, b = self.client("lena"), self.client("mark")
        await a.play(host, port)
        await b.play(host, port)
        probe = ClusterProbe(self)
        ua, ub = a.login_response.userid, b.login_response.userid
        self.assertEqual((await self.holders(probe, ua), await self.holders(probe, ub)),
                         (["role1"], ["role2"]))

        hung = self.lc.nodes["role2"]
        hung.pause()  # SIGSTOP
        self.addCleanup(hung.resume)
        started = await self.restart_master_and_redis()
        await wait_for(self.state.get_available, 30,
                       "master to set is_available although role2 is hung")
        took = time.monotonic() - started
        log.info("fencing: is_available set {t:.2f}s after master's start, role2 hung", t=took)
        # reregister_wait + one ask (max(reregister_wait, misses x interval)) + start-up
        self.assertLess(took, 2.0 + 2.0 + 15.0)
        self.assertEqual((await self.state.get_user(ua)).node, "role1")
        self.assertIsNone(await self.state.get_user(ub))
        self.assertEqual((await self.lc.node_states())["role2"], "down")

        # mark logs in again while role2 is still frozen: one live instance, on role1
        again = self.client("mark")
        await again.play(host, port)
        self.assertEqual(again.login_response.port, self.lc.node_config("role1")["client_port"])

        hung.resume()  # SIGCONT: role2 learns it was marked down and drops mark
        await _bounded(b.closed, 20, "role2 to drop the player it held while frozen")
        self.assertEqual([p.code for p in b.pushes], [K.KICK_LOGIN_ELSEWHERE])
        await wait_for(lambda: equals(probe.online("role2"), []), 10,
                       "role2 to hold no players")
        self.assertEqual(await self.holders(probe, ub), ["role1"])
        self.assertEqual((await self.state.get_user(ub)).node, "role1")
        self.assertEqual((await again.request(pb.Heartbeat())).code, E.OK)
        self.assertEqual((await a.request(pb.Heartbeat())).code, E.OK)
        await self.lc.wait_up(self.names, timeout=20)


async def _bounded(d: Any, timeout: float, what: str) -> Any:
    from twisted.internet import defer, reactor

    try:
        return await defer.Deferred.fromCoroutine(_wait(d)).addTimeout(timeout, reactor)
    except defer.TimeoutError:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}") from None


async def _wait(d: Any) -> Any:
    return await d
