"""A Redis client by URL over txredisapi: one key prefix, bounded waits, typed errors.

Every key passed to this client is relative and gets the client's prefix (``rl:`` by
default), so two clusters, or two tests, can share one Redis without seeing each other.
Commands are never queued while disconnected: a command waits at most ``command_timeout``
for a connection and then fails with ``RedisUnavailable``, so a command can never run
long after its caller gave up. Scripts run with EVALSHA and fall back to EVAL on
NOSCRIPT, which is what a Redis restart or ``SCRIPT FLUSH`` leads to.
"""

from __future__ import annotations

import builtins
import hashlib
import random
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import attrs
import txredisapi
from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.redis.errors import (
    RedisCommandError,
    RedisError,
    RedisTimeout,
    RedisUnavailable,
    ScriptMissing,
)
from rltwist.redis.metrics import RedisMetrics

log = Logger()

T = TypeVar("T")

DEFAULT_PREFIX = "rl:"

# Deferred.addTimeout raised one or the other depending on the Twisted version
_TIMEOUTS = (defer.TimeoutError, error.TimeoutError)


@attrs.frozen
class RedisURL:
    """The parts of ``redis://[[user]:password@]host[:port][/db]``."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> RedisURL:
        """Parse a redis:// URL; raise ValueError naming the URL when it is not one."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL: {url!r}")
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
            port = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"bad port or database in redis URL {url!r}") from e
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        # never print the password into logs or error messages
        auth = "***@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"


@attrs.frozen
class Script:
    """A Lua script known by name and SHA1; run it with ``RedisClient.run_script``.

    With ``wants_prefix`` the client passes its key prefix as ARGV[1], for scripts that
    build key names at run time (per-node and per-user keys found in a set).
    """

    name: str
    source: str
    wants_prefix: bool = False
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


class _Factory(txredisapi.RedisFactory):
    """txredisapi's pool factory plus hooks for our waiters and our backoff."""

    def __init__(self, client: RedisClient, url: RedisURL, poolsize: int, reply_timeout: float):
        super().__init__(
            str(url),
            url.db or None,
            poolsize,
            isLazy=True,
            charset="utf-8",
            password=url.password,
            username=url.username,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
        self.reconnect = True
        self._client = client

    def retryDelay(self, attempt: int) -> float:
        return self._client._retry_delay(attempt)

    def addConnection(self, conn: Any) -> None:
        super().addConnection(conn)
        if conn in self.pool:
            self._client._connection_ready()

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self._client._connection_lost()

    def connectionError(self, why: str) -> None:
        # auth or SELECT refused: txredisapi stops trying, so waiting would be pointless
        super().connectionError(why)
        self._client._connection_failed(why)


class RedisClient:
    """A connection pool to one Redis, with every key under ``prefix``.

    ``connect_timeout`` bounds one TCP connect and the initial ``connect()``;
    ``command_timeout`` bounds each command, including the wait for a connection while
    reconnecting. Lost connections are reopened with exponential backoff from
    ``retry_initial`` to ``retry_max`` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        name: str = "redis",
        poolsize: int = 1,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        retry_initial: float = 0.1,
        retry_max: float = 5.0,
        reactor: Any = None,
        metrics: RedisMetrics | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.url = RedisURL.parse(url)
        self.prefix = prefix
        self.name = name
        self.poolsize = poolsize
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._reactor = reactor
        self.metrics = metrics
        self._factory: _Factory | None = None
        self._waiters: list[defer.Deferred[None]] = []
        self._fatal: str | None = None
        self._closed = False
        self._was_connected = False

    def __repr__(self) -> str:
        return f"<RedisClient {self.name} {self.url} prefix={self.prefix!r}>"

    # -- connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True when at least one pooled connection is usable right now."""
        return self._factory is not None and self._factory.size > 0

    def start(self) -> None:
        """Start connecting (and reconnecting) in the background; returns at once.

        Also reopens a client closed by ``disconnect()``.
        """
        if self._factory is not None:
            return
        self._closed = False
        self._fatal = None
        self._factory = _Factory(self, self.url, self.poolsize, self.command_timeout)
        # the factory's own "pool complete" Deferred is unused: we wait on ours, and an
        # unobserved failure there would be reported as an unhandled error
        self._factory.deferred.addBoth(lambda _: None)
        endpoint = HostnameEndpoint(
            self._reactor, self.url.host, self.url.port, timeout=self.connect_timeout
        )
        self._factory.startConnecting(endpoint)

    async def connect(self, timeout: float | None = None) -> RedisClient:
        """Start connecting and wait until connected; RedisTimeout after ``timeout``."""
        self.start()
        await self.wait_connected(self.connect_timeout if timeout is None else timeout)
        return self

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait for a usable connection, at most ``timeout`` (command_timeout if None)."""
        if self._fatal is not None:
            raise RedisUnavailable(f"{self!r}: {self._fatal}")
        if self._closed or self._factory is None:
            raise RedisUnavailable(f"{self!r} is {'closed' if self._closed else 'not started'}")
        if self.connected:
            return
        bound = self.command_timeout if timeout is None else timeout
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        d.addTimeout(bound, self._reactor)
        try:
            await d
        except _TIMEOUTS as e:
            raise RedisTimeout(f"{self!r}: no connection within {bound}s") from e

    async def disconnect(self) -> None:
        """Close every connection and stop reconnecting; pending waits fail."""
        self._closed = True
        factory, self._factory = self._factory, None
        self._fail_waiters(RedisUnavailable(f"{self!r} is closed"))
        if factory is not None:
            try:
                await _bounded(factory.disconnect(), self.connect_timeout, self._reactor)
            except _TIMEOUTS:
                log.warn(
                    "redis {name}: disconnect took over {t}s",
                    name=self.name,
                    t=self.connect_timeout,
                )

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self.retry_initial * 2 ** min(attempt - 1, 30), self.retry_max)
        return delay * random.uniform(0.9, 1.1)

    def _connection_ready(self) -> None:
        if not self._was_connected:
            log.info("redis {name} connected to {url}", name=self.name, url=str(self.url))
        self._was_connected = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _connection_lost(self) -> None:
        if self._factory is not None and self._factory.size == 0 and not self._closed:
            if self._was_connected:
                log.warn(
                    "redis {name} lost its connection to {url}; reconnecting",
                    name=self.name,
                    url=str(self.url),
                )
            self._was_connected = False

    def _connection_failed(self, why: str) -> None:
        self._fatal = why
        log.error("redis {name}: {why}", name=self.name, why=why)
        self._fail_waiters(RedisUnavailable(f"{self!r}: {why}"))

    def _fail_waiters(self, error: Exception) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error)

    # -- commands ---------------------------------------------------------------------

    def key(self, name: str) -> str:
        """The full key name of relative key ``name``."""
        return self.prefix + name

    async def execute(self, *args: Any) -> Any:
        """Run one raw command; keys in ``args`` must already be full (see ``key()``)."""
        if self.metrics is None:
            return await self._execute(args)
        return await self._timed(str(args[0]).upper(), self._execute(args))

    async def _timed(self, label: str, work: Awaitable[T]) -> T:
        """*work*, timed and its failure counted under *label* (the client has metrics)."""
        metrics = self.metrics
        assert metrics is not None
        started = self._reactor.seconds()
        try:
            return await work
        except RedisError as e:
            metrics.error(type(e).__name__)
            raise
        finally:
            metrics.observe(label, self._reactor.seconds() - started)

    async def _execute(self, args: tuple[Any, ...]) -> Any:
        command = str(args[0]).upper()
        if not self.connected:
            try:
                await self.wait_connected(self.command_timeout)
            except RedisTimeout as e:
                raise RedisUnavailable(f"{self!r}: {command}: not connected") from e
        assert self._factory is not None
        d = self._factory.handler.execute_command(*args)
        try:
            return await _bounded(d, self.command_timeout, self._reactor)
        except _TIMEOUTS as e:
            raise RedisTimeout(
                f"{self!r}: {command}: no reply within {self.command_timeout}s"
            ) from e
        except Exception as e:
            raise self._translate(command, e) from e

    def _translate(self, command: str, e: Exception) -> Exception:
        where = f"{self!r}: {command}"
        if isinstance(e, txredisapi.ResponseError):
            message = str(e)
            if message.startswith("NOSCRIPT"):
                return ScriptMissing(f"{where}: {message}")
            return RedisCommandError(f"{where}: {message}")
        if isinstance(e, txredisapi.TimeoutError):
            return RedisTimeout(f"{where}: {e}")
        if isinstance(e, txredisapi.ConnectionError):
            return RedisUnavailable(f"{where}: {e}")
        if isinstance(e, RedisError):
            return e
        return RedisError(f"{where}: {e!r}")

    async def run_script(
        self, script: Script, keys: Sequence[str] = (), args: Iterable[Any] = ()
    ) -> Any:
        """Run ``script`` with relative ``keys``: EVALSHA, and EVAL if Redis lost it
        (timed as one round trip under the script's name, the EVAL retry included)."""
        if self.metrics is None:
            return await self._run_script(script, keys, args)
        return await self._timed(script.name, self._run_script(script, keys, args))

    async def _run_script(self, script: Script, keys: Sequence[str],
                          args: Iterable[Any]) -> Any:
        full_keys = [self.key(k) for k in keys]
        argv = ([self.prefix] if script.wants_prefix else []) + list(args)
        try:
            return await self._execute(("EVALSHA", script.sha, len(full_keys), *full_keys,
                                        *argv))
        except ScriptMissing:
            log.debug(
                "redis {name}: script {script} not cached; sending it with EVAL",
                name=self.name,
                script=script.name,
            )
        except RedisCommandError as e:
            raise RedisCommandError(f"script {script.name}: {e}") from e
        try:
            # EVAL caches the script too, so the next call's EVALSHA finds it
            return await self._execute(("EVAL", script.source, len(full_keys), *full_keys,
                                        *argv))
        except RedisCommandError as e:
            raise RedisCommandError(f"script {script.name}: {e}") from e

    async def load_scripts(self, scripts: Iterable[Script]) -> None:
        """SCRIPT LOAD each script (optional: ``run_script`` loads on demand)."""
        for script in scripts:
            sha = await self.execute("SCRIPT", "LOAD", script.source)
            if sha != script.sha:
                raise RedisCommandError(f"script {script.name}: Redis says sha {sha}")

    # thin wrappers for the commands the state layer and tests use; keys are relative

    async def ping(self) -> bool:
        return bool(await self.execute("PING") == "PONG")

    async def get(self, key: str) -> str | None:
        result: str | None = await self.execute("GET", self.key(key))
        return result

    async def set(
        self, key: str, value: str | int, *, px: int | None = None, nx: bool = False
    ) -> bool:
        """SET; with ``nx`` returns False when the key already exists."""
        args: list[Any] = ["SET", self.key(key), value]
        if px is not None:
            args += ["PX", int(px)]
        if nx:
            args.append("NX")
        return await self.execute(*args) is not None

    async def delete(self, *keys: str) -> int:
        return int(await self.execute("DEL", *(self.key(k) for k in keys)))

    async def exists(self, key: str) -> bool:
        return bool(await self.execute("EXISTS", self.key(key)))

    async def incr(self, key: str) -> int:
        return int(await self.execute("INCR", self.key(key)))

    async def pttl(self, key: str) -> int:
        """Milliseconds to live; -1 without expiry, -2 when the key does not exist."""
        return int(await self.execute("PTTL", self.key(key)))

    async def hgetall(self, key: str) -> dict[str, str]:
        flat = await self.execute("HGETALL", self.key(key))
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def smembers(self, key: str) -> builtins.set[str]:
        return set(await self.execute("SMEMBERS", self.key(key)))

    async def zrange_withscores(self, key: str) -> list[tuple[str, int]]:
        flat = await self.execute("ZRANGE", self.key(key), 0, -1, "WITHSCORES")
        return [(m, int(float(s))) for m, s in zip(flat[::2], flat[1::2], strict=True)]

    async def script_flush(self) -> None:
        await self.execute("SCRIPT", "FLUSH")


def _bounded(d: defer.Deferred[T], timeout: float, clock: Any) -> defer.Deferred[T]:
    """``d``'s result, or TimeoutError after ``timeout``, without cancelling ``d``.

    txredisapi's internal Deferreds are not safe to cancel (a cancelled pool wait blows up
    when a connection arrives later), so we stop waiting for them instead.
    """
    out: defer.Deferred[T] = defer.Deferred()

    def relay(result: T | Failure) -> None:
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)
        elif isinstance(result, Failure):
            log.debug("redis reply after the caller gave up: {f}", f=result.getErrorMessage())

    def expire() -> None:
        if not out.called:
            out.errback(defer.TimeoutError(f"no result within {timeout}s"))

    call = clock.callLater(timeout, expire)

    def cancel_timer(result: Any) -> Any:
        if call.active():
            call.cancel()
        return result

    out.addBoth(cancel_timer)
    d.addBoth(relay)
    return out
