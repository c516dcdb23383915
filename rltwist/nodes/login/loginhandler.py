"""loginhandler: one login, start to end (seed §8 steps 4-8, docs/architecture.md "Login").

verify token with the SDK (only a JSON ``true`` is OK; the body is bounded) -> Redis
available? and the per-openid lock (one script) -> logiccenter.account gives the userid ->
an existing account's Redis state: LOGIN_STEP_FINISH waiting for Auth: the same role node
and secret again; LOGIN_STEP_FINISH whose Auth runs, or LOGOUT: RETRY_LATER;
GAME_STEP_FINISH: kick the online instance first -> ``login_assign``, a compare-and-set
against the state read: the pending login again, or a fresh one-time secret on the
least-loaded role node, and the lock released (one script) -> reply.

Anything that moved meanwhile (the lock expired, Redis restarted, an Auth finished, a kick
that did not clear the state, a kick that could not reach a node master still has
registered) makes the assign write nothing; the login answers RETRY_LATER and the client
logs in again. Retrying here instead would hold the lock longer for a rare case.
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
from rltwist.net import BodyTooLarge, loggable, read_body
from rltwist.protocols import pb
from rltwist.redis import GAME_STEP_FINISH, LOGIN_STEP_FINISH, LOGOUT, RedisError
from rltwist.redis.state import HELD, NO_ROLE, Assignment, UserState
from rltwist.sdk import check_dev_token

if TYPE_CHECKING:
    from rltwist.nodes.common.node import Node

log = Logger()
E = pb.ErrorCode
#: the most of an SDK answer a login reads ({"ok": true} is 12 bytes); past it the check
#: answers RETRY_LATER instead of buffering whatever a broken SDK sends
SDK_MAX_BODY = 64 * 1024


def version_allowed(version: str, minimum: str) -> bool:
    """May a client of *version* log in when ``login.min_version`` is *minimum*? Versions
    are dotted numbers compared number by number ("1.10" is newer than "1.9", "1.2" equals
    "1.2.0"); with a minimum set, a version that is not dotted numbers is too old."""
    if not minimum:
        return True
    try:
        have = [int(part) for part in version.split(".")]
    except ValueError:
        return False
    need = [int(part) for part in minimum.split(".")]
    width = max(len(have), len(need))
    return have + [0] * (width - len(have)) >= need + [0] * (width - len(need))


def sdk_pool(reactor: Any, connections: int) -> HTTPConnectionPool:
    """The HTTP connection pool a login node's handlers share to ask the SDK.

    It keeps up to *connections* (``login.sdk_connections``) idle connections to the SDK:
    a login burst asks the SDK as many times at once as there are logins in flight, and
    every connection not kept is opened again by the next burst (a new TCP handshake each,
    and a full accept queue at the SDK turns into a 1 s SYN retransmit). Requests are not
    retried automatically: a check that failed is answered RETRY_LATER instead."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections
    pool.retryAutomatically = False
    return pool


class LoginFailed(Exception):
    def __init__(self, code: pb.ErrorCode, why: str) -> None:
        super().__init__(why)
        self.code = code


class LoginHandler:
    """Runs logins for the openids that hash to it."""

    def __init__(self, node: Node, index: int, pool: HTTPConnectionPool | None,
                 outcomes: Counter, latency: Histogram,
                 steps: Histogram | None = None) -> None:
        self.node = node
        self.index = index
        self.settings = node.config.login
        self.state = node.redis_state()
        self.pool = pool
        self.outcomes = outcomes
        self.latency = latency
        self.steps = steps

    def _count(self, outcome: str) -> None:
        self.outcomes.labels(outcome).inc()

    def _step(self, step: str, started: float) -> float:
        """Record that *step* took since *started*; return now (the next step's start)."""
        now = time.monotonic()
        if self.steps is not None:
            self.steps.labels(step).observe(now - started)
        return now

    async def login(self, msg: Any) -> Any:
        """Answer one ``Login``; never raises (errors become codes and log lines)."""
        started = time.monotonic()
        try:
            response = await self._login(msg)
            self._count("OK")
            return response
        except LoginFailed as e:
            self._count(E.Name(e.code))
            log.info("login of {openid} refused: {code} ({why})", openid=loggable(msg.openid),
                     code=E.Name(e.code), why=e)
            return pb.Login.Response(code=e.code)
        except (RedisError, ClusterError) as e:
            self._count("RETRY_LATER")
            log.warn("login of {openid} failed for now: {error}", openid=loggable(msg.openid),
                     error=e)
            return pb.Login.Response(code=E.RETRY_LATER)
        except Exception:
            self._count("INTERNAL")
            log.failure("login of {openid} failed", openid=loggable(msg.openid))
            return pb.Login.Response(code=E.INTERNAL)
        finally:
            self.latency.observe(time.monotonic() - started)

    async def _login(self, msg: Any) -> Any:
        openid = msg.openid
        if not self.node.login_open:
            raise LoginFailed(E.NOT_AVAILABLE, "logins are closed")
        if not openid or len(openid) > 128:
            raise LoginFailed(E.BAD_REQUEST, "openid must be 1-128 characters")
        if not version_allowed(msg.version, self.settings.min_version):
            raise LoginFailed(E.VERSION_TOO_OLD, f"client version {msg.version!r} is older "
                              f"than login.min_version {self.settings.min_version}")
        t = time.monotonic()
        verified = await self._verify(openid, msg.token)
        t = self._step("sdk", t)
        if not verified:
            raise LoginFailed(E.BAD_TOKEN, "SDK refused the token")
        lock = await self.state.login_begin(openid, int(self.settings.lock_ttl * 1000))
        t = self._step("lock", t)
        if lock is False:
            raise LoginFailed(E.NOT_AVAILABLE, "Redis is being rebuilt (is_available unset)")
        if lock is None:
            raise LoginFailed(E.LOGIN_IN_PROGRESS, "another login of this openid is running")
        assigned = False
        try:
            account = await self.node.cluster.call("logiccenter", "account", "get_or_create",
                                                   openid, msg.server_id, timeout=5.0)
            t = self._step("account", t)
            if account.get("refused") == "BadServerId":  # logiccenter decides the regions
                raise LoginFailed(E.BAD_SERVER_ID, str(account.get("why")))
            userid = account["userid"]
            user: UserState | None = None
            evict = False
            if not account["created"]:
                user = await self.state.get_user(userid)
                t = self._step("state", t)
                if user is not None:
                    if user.state == LOGOUT:
                        raise LoginFailed(E.RETRY_LATER, f"{userid} is logging out")
                    if user.state == LOGIN_STEP_FINISH and not user.pending:
                        raise LoginFailed(E.RETRY_LATER, f"Auth of {userid} on {user.node} "
                                          "is running")
                    if user.state == GAME_STEP_FINISH:
                        evict = not await self._kick(userid, user.node)
                        t = self._step("kick", t)
                    # LOGIN_STEP_FINISH waiting for Auth: login_assign answers it again
            secret = secrets.token_hex(16)
            ttl_ms = max(1, int(self.settings.secret_ttl * 1000))
            done = await self.state.login_assign(openid, lock, userid, secret, ttl_ms,
                                                 expect=user, evict=evict)
            self._step("assign", t)
            assigned = True  # the script released the lock (or it was no longer ours)
            return self._answer(userid, user, done, evict)
        finally:
            if not assigned:
                try:
                    await self.state.release_login_lock(openid, lock)
                except RedisError as e:
                    log.warn("could not release the login lock of {openid}: {e} (it "
                             "expires)", openid=loggable(openid), e=e)

    def _answer(self, userid: int, user: UserState | None, done: Assignment,
                evict: bool) -> Any:
        """The Login answer for what ``login_assign`` did; raises LoginFailed if nothing."""
        if done.ok:
            assert done.role is not None
            return pb.Login.Response(code=E.OK, userid=userid, host=done.role.host,
                                     port=done.role.port, secret=done.secret)
        if done.outcome == NO_ROLE:
            raise LoginFailed(E.NOT_AVAILABLE, "no role node is up")
        if done.outcome == HELD and evict:
            assert user is not None
            why = (f"{user.node} is unreachable but still registered (master has not "
                   "marked it down)")
        else:
            read = "no state" if user is None else f"{user.state} on {user.node}"
            why = (f"the login state of {userid} changed since it was read ({read}): "
                   f"{done.outcome}")
        raise LoginFailed(E.RETRY_LATER, why)

    async def _kick(self, userid: int, node: str) -> bool:
        """Log the online instance out first. True when ``node`` answered (its logout
        cleared the state); False when it could not be reached: the state is then
        replaced only if master marked the node down (``login_assign`` ``evict``). Raises
        RETRY_LATER when the kick is slow, failed, or the player is logging out."""
        bound = max(1.0, self.settings.lock_ttl / 2)
        try:
            outcome = await self.node.cluster.call(node, "gateway", "kick", userid,
                                                   "login elsewhere", timeout=bound)
        except (UnknownNode, NodeUnreachable) as e:
            # a link blip (LinkLost) looks the same as a dead node from here: only master,
            # which unregisters a node it marked down, may say the player is free
            log.warn("kick of {userid} on {node} impossible ({e}); taking over only if "
                     "master marked {node} down", userid=userid, node=node, e=e)
            return False
        except (CallTimeout, RemoteError) as e:
            raise LoginFailed(E.RETRY_LATER, f"kick of {userid} on {node}: {e}") from None
        if outcome == "logging_out":
            raise LoginFailed(E.RETRY_LATER, f"{userid} is logging out on {node}")
        return True

    async def _verify(self, openid: str, token: str) -> bool:
        """Ask the SDK whether ``token`` is ``openid``'s: True only for a JSON object whose
        ``ok`` is ``true``. No answer in time, not HTTP 200, not a JSON object, or more
        than SDK_MAX_BODY bytes: LoginFailed(RETRY_LATER)."""
        if not self.settings.sdk_url:
            return check_dev_token(self.settings.dev_sdk_secret, openid, token)
        url = self.settings.sdk_url
        d = treq.post(url, json={"openid": openid, "token": token}, pool=self.pool)
        try:
            response = await d.addTimeout(self.settings.sdk_timeout, self.node.reactor)
            body = await read_body(response, SDK_MAX_BODY).addTimeout(
                self.settings.sdk_timeout, self.node.reactor)
        except defer.TimeoutError:
            raise LoginFailed(E.RETRY_LATER, f"SDK at {url} did not answer within "
                              f"{self.settings.sdk_timeout:g}s") from None
        except BodyTooLarge:
            log.warn("SDK at {url} answered more than {limit} bytes; hung up and answered "
                     "RETRY_LATER", url=url, limit=SDK_MAX_BODY)
            raise LoginFailed(E.RETRY_LATER, f"SDK at {url} answered more than "
                              f"{SDK_MAX_BODY} bytes") from None
        except Exception as e:
            raise LoginFailed(E.RETRY_LATER, f"SDK at {url}: {e}") from None
        if response.code != 200:
            raise LoginFailed(E.RETRY_LATER, f"SDK answered HTTP {response.code}")
        try:
            # parsed here rather than by treq.json_content, which would read any size
            answer = json.loads(body)
        except ValueError:
            raise LoginFailed(E.RETRY_LATER, "SDK answer is not JSON") from None
        if not isinstance(answer, dict):
            raise LoginFailed(E.RETRY_LATER, "SDK answer is not a JSON object")
        # only a JSON true: a string "false" (or "true", or 1) from a sloppy SDK is a no
        return answer.get("ok") is True
