"""loginhandler: one login, start to end (seed §8 steps 4-8, DESIGN.md "Login").

verify token with the SDK -> per-openid Redis lock -> logiccenter.account gives the
userid -> Redis user state (LOGIN_STEP_FINISH: answer with that role node;
GAME_STEP_FINISH: kick the online instance first, or RETRY_LATER if it is logging out) ->
least-loaded role node (one Lua script) -> fresh one-time secret, state LOGIN_STEP_FINISH
-> lock released -> reply.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import treq
from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from rltwist.cluster import CallTimeout, ClusterError, NodeUnreachable, RemoteError, UnknownNode
from rltwist.protocols import pb
from rltwist.redis import GAME_STEP_FINISH, LOGOUT, RedisError
from rltwist.sdk import check_dev_token

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode


class LoginFailed(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


class LoginHandler:
    """Runs logins for the openids that hash to it."""

    def __init__(self, node: Node, index: int, pool: HTTPConnectionPool | None,
                 outcomes: Counter, latency: Histogram) -> None:
        self.node = node
        self.index = index
        self.settings = node.config.login
        self.state = node.redis_state()
        self.pool = pool
        self.outcomes = outcomes
        self.latency = latency

    def _count(self, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()

    async def login(self, msg: Any) -> Any:
        """Answer one ``Login``; never raises (errors become codes and log lines)."""
        started = time.monotonic()
        try:
            response = await self._login(msg)
            self._count("ok")
            return response
        except LoginFailed as e:
            self._count(E.Name(e.code))
            log.info("login of {openid} refused: {code} ({why})", openid=msg.openid,
                     code=E.Name(e.code), why=e)
            return pb.Login.Response(code=e.code)
        except (RedisError, ClusterError) as e:
            self._count("RETRY_LATER")
            log.warn("login of {openid} failed for now: {error}", openid=msg.openid, error=e)
            return pb.Login.Response(code=E.RETRY_LATER)
        except Exception:
            self._count("INTERNAL")
            log.failure("login of {openid} failed", openid=msg.openid)
            return pb.Login.Response(code=E.INTERNAL)
        finally:
            self.latency.observe(time.monotonic() - started)

    async def _login(self, msg: Any) -> Any:
        openid = msg.openid
        if not self.node.login_open:
            raise LoginFailed(E.NOT_AVAILABLE, "logins are closed")
        if not openid or len(openid) > 128:
            raise LoginFailed(E.BAD_REQUEST, "openid must be 1-128 characters")
        if not 0 < msg.server_id <= 0xFFFF:
            raise LoginFailed(E.BAD_SERVER_ID, f"server_id {msg.server_id} out of range")
        if not await self._verify(openid, msg.token):
            raise LoginFailed(E.BAD_TOKEN, "SDK refused the token")
        lock = await self.state.login_begin(openid, int(self.settings.lock_ttl * 1000))
        if lock is False:
            raise LoginFailed(E.NOT_AVAILABLE, "Redis is being rebuilt (is_available unset)")
        if lock is None:
            raise LoginFailed(E.LOGIN_IN_PROGRESS, "another login of this openid is running")
        assigned = False
        try:
            account = await self.node.cluster.call("logiccenter", "account", "get_or_create",
                                                   openid, msg.server_id, timeout=5.0)
            userid = account["userid"]
            if not account["created"]:
                user = await self.state.get_user(userid)
                if user is not None:
                    if user.state == LOGOUT:
                        raise LoginFailed(E.RETRY_LATER, f"{userid} is logging out")
                    if user.state == GAME_STEP_FINISH:
                        await self._kick(userid, user.node)
                    # LOGIN_STEP_FINISH: a fresh secret below; the old one dies with it
            secret = secrets.token_hex(16)
            ttl_ms = max(1, int(self.settings.secret_ttl * 1000))
            picked = await self.state.login_assign(openid, lock, userid, secret, ttl_ms)
            assigned = True  # the script released the lock
            if picked is None:
                raise LoginFailed(E.NOT_AVAILABLE, "no role node is up")
            role, _generation = picked
            return pb.Login.Response(code=E.OK, userid=userid, host=role.host, port=role.port,
                                     secret=secret)
        finally:
            if not assigned:
                try:
                    await self.state.release_login_lock(openid, lock)
                except RedisError as e:
                    log.warn("could not release the login lock of {openid}: {e} (it "
                             "expires)", openid=openid, e=e)

    async def _kick(self, userid: int, node: str) -> None:
        """Log the online instance out first; give up (RETRY_LATER) if that is slow."""
        bound = max(1.0, self.settings.lock_ttl / 2)
        try:
            outcome = await self.node.cluster.call(node, "gateway", "kick", userid,
                                                   "login elsewhere", timeout=bound)
        except (UnknownNode, NodeUnreachable) as e:
            # the node is gone: its state is stale (master clears it too); take over
            log.warn("kick of {userid} on {node} impossible ({e}); clearing its state",
                     userid=userid, node=node, e=e)
            await self.state.clear_user(userid, only_if_node=node)
            return
        except (CallTimeout, RemoteError) as e:
            raise LoginFailed(E.RETRY_LATER, f"kick of {userid} on {node}: {e}") from None
        if outcome == "logging_out":
            raise LoginFailed(E.RETRY_LATER, f"{userid} is logging out on {node}")

    async def _verify(self, openid: str, token: str) -> bool:
        if not self.settings.sdk_url:
            return check_dev_token(self.settings.dev_sdk_secret, openid, token)
        d = treq.post(self.settings.sdk_url, data=json.dumps({"openid": openid,
                                                             "token": token}).encode(),
                      headers={"Content-Type": ["application/json"]}, pool=self.pool)
        try:
            response = await d.addTimeout(self.settings.sdk_timeout, self.node.reactor)
            body = await treq.content(response).addTimeout(self.settings.sdk_timeout,
                                                           self.node.reactor)
        except defer.TimeoutError:
            raise LoginFailed(E.RETRY_LATER, f"SDK at {self.settings.sdk_url} did not "
                              f"answer within {self.settings.sdk_timeout:g}s") from None
        except Exception as e:
            raise LoginFailed(E.RETRY_LATER, f"SDK at {self.settings.sdk_url}: {e}") from None
        if response.code != 200:
            raise LoginFailed(E.RETRY_LATER, f"SDK answered HTTP {response.code}")
        try:
            return bool(json.loads(body).get("ok"))
        except (ValueError, AttributeError):
            raise LoginFailed(E.RETRY_LATER, "SDK answer is not JSON") from None
