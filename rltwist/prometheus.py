"""A real Prometheus next to a local cluster: ``rl-cluster up --prometheus`` and the tests.

The binary is the ``prometheus`` of the Debian/Ubuntu package (``apt-get install
prometheus``; the package starts nothing by itself), any other Prometheus 2.x given by
path, or ``$RLTWIST_PROMETHEUS``. Its config is the shipped
``etc/prometheus/prometheus.yml`` with master's GM URL and token and the chosen intervals
written in, next to a copy of ``etc/prometheus/alerts.yml``, so what runs is what an
operator deploys. It listens on loopback; everything it writes stays in its directory
(``prometheus.yml``, ``alerts.yml``, ``data/``, ``prometheus.log``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, protocol, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from rltwist.launcher import LaunchError, find_root, free_ports

log = Logger()

ENV = "RLTWIST_PROMETHEUS"
#: the values of the shipped prometheus.yml that a run replaces (each must occur once)
SHIPPED_SD_URL = "http://127.0.0.1:8080/sd"
SHIPPED_TOKEN = "dev-only-gm-token-change-me"
INSTALL_HINT = ("install it with `apt-get install prometheus` (Debian/Ubuntu; the package "
                "starts no service by itself) or give the path of a Prometheus 2.x binary")


def find_prometheus(explicit: str | None = None) -> str | None:
    """The Prometheus binary to run: *explicit*, ``$RLTWIST_PROMETHEUS``, then
    ``prometheus`` on PATH; None when there is none (an explicit path that is not an
    executable file is None too)."""
    if explicit:
        return explicit if _executable(explicit) else None
    for candidate in (os.environ.get(ENV), shutil.which("prometheus")):
        if candidate and _executable(candidate):
            return candidate
    return None


def find_promtool() -> str | None:
    """``promtool`` on PATH, or beside the Prometheus binary found by find_prometheus."""
    found = shutil.which("promtool")
    if found:
        return found
    prometheus = find_prometheus()
    if prometheus:
        beside = Path(prometheus).with_name("promtool")
        if _executable(str(beside)):
            return str(beside)
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def etc_dir(start: str | os.PathLike[str] | None = None) -> Path:
    """``etc/prometheus`` of the checkout (see ``launcher.find_root``), else the copy
    shipped inside the installed package."""
    from rltwist.config import packaged_root

    for root in (find_root(start), packaged_root()):
        if root is not None and (root / "etc" / "prometheus" / "prometheus.yml").is_file():
            return root / "etc" / "prometheus"
    raise LaunchError("etc/prometheus/prometheus.yml not found in the checkout or the "
                      "installed package")


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def render_config(shipped: str, *, sd_url: str, token: str, interval: float) -> str:
    """The shipped prometheus.yml with *sd_url*, *token* and every interval (scrape,
    evaluation, SD refresh) set to *interval* seconds (the scrape timeout to at most it).
    Raises ValueError when the shipped text no longer has a value this replaces."""
    replacements = {
        f"url: {SHIPPED_SD_URL}": f"url: {sd_url}",
        f"credentials: {SHIPPED_TOKEN}": f"credentials: {json.dumps(token)}",
        "scrape_interval: 15s": f"scrape_interval: {_duration(interval)}",
        "evaluation_interval: 15s": f"evaluation_interval: {_duration(interval)}",
        "refresh_interval: 15s": f"refresh_interval: {_duration(interval)}",
        "scrape_timeout: 10s": f"scrape_timeout: {_duration(min(10.0, interval))}",
    }
    text = shipped
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise ValueError(f"etc/prometheus/prometheus.yml: expected {old!r} once, found "
                             f"it {text.count(old)} times")
        text = text.replace(old, new)
    return text


class _Output(protocol.ProcessProtocol):
    def __init__(self, server: PrometheusServer) -> None:
        self.server = server

    def outReceived(self, data: bytes) -> None:
        self.server._output(data)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.server._ended(reason)


class PrometheusServer:
    """One Prometheus process scraping a cluster through master's ``/sd``; ``client``
    talks to its HTTP API."""

    def __init__(self, directory: str | os.PathLike[str], *, sd_url: str, token: str,
                 binary: str, interval: float = 15.0, port: int | None = None,
                 host: str = "127.0.0.1", etc: Path | None = None, reactor: Any = None,
                 env: Mapping[str, str] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.directory = Path(directory).absolute()
        self.sd_url = sd_url
        self.token = token
        self.binary = binary
        self.interval = interval
        self.host = host
        self.port = port or free_ports(1, host)[0]
        self.etc = etc or etc_dir()
        self.env = dict(env) if env is not None else dict(os.environ)
        self.transport: Any = None
        self.pid: int | None = None
        self.exit_code: int | None = None
        self._log: Any = None
        self._tail = b""
        self._ended_waiters: list[defer.Deferred[int | None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def client(self) -> PrometheusAPI:
        return PrometheusAPI(self.url, self.reactor)

    @property
    def config_path(self) -> Path:
        return self.directory / "prometheus.yml"

    @property
    def running(self) -> bool:
        return self.transport is not None and self.exit_code is None

    def write_config(self) -> None:
        """Write the run's prometheus.yml and a copy of the shipped alerts.yml."""
        self.directory.mkdir(parents=True, exist_ok=True)
        text = render_config((self.etc / "prometheus.yml").read_text(), sd_url=self.sd_url,
                             token=self.token, interval=self.interval)
        self.config_path.write_text(text)
        shutil.copyfile(self.etc / "alerts.yml", self.directory / "alerts.yml")

    def argv(self) -> list[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address={self.host}:{self.port}", "--log.level=info"]

    async def start(self, timeout: float = 60.0) -> None:
        """Start Prometheus and wait until it answers ``/-/ready``; LaunchError (with the
        end of its log) when it exits or is not ready within *timeout*."""
        self.write_config()
        self._log = open(self.directory / "prometheus.log", "ab")
        self.exit_code = None
        self.transport = self.reactor.spawnProcess(_Output(self), self.binary, self.argv(),
                                                   env=self.env, path=str(self.directory))
        self.pid = self.transport.pid
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self.exit_code is not None:
                raise LaunchError(f"prometheus exited with status {self.exit_code} before it "
                                  f"was ready; last output:\n{self.tail()}")
            try:
                status, _ = await self.client.get("/-/ready", timeout=2.0)
                if status == 200:
                    return
                last = f"/-/ready answered {status}"
            except Exception as e:
                last = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise LaunchError(f"prometheus (pid {self.pid}) not ready at {self.url} within "
                                  f"{timeout:g}s ({last}); last output:\n{self.tail()}")
            await task.deferLater(self.reactor, 0.2)

    def _output(self, data: bytes) -> None:
        if self._log is not None:
            self._log.write(data)
            self._log.flush()
        self._tail = (self._tail + data)[-8192:]

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self._tail.decode(errors="replace").splitlines()[-lines:])

    def _ended(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.exit_code = code if code is not None else (-sig if sig else -1)
        if self._log is not None:
            self._log.close()
            self._log = None
        waiters, self._ended_waiters = self._ended_waiters, []
        for d in waiters:
            d.callback(self.exit_code)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (Prometheus flushes its head block), SIGKILL after *timeout*."""
        if not self.running:
            return self.exit_code
        for sig, bound in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            d: defer.Deferred[int | None] = defer.Deferred()
            self._ended_waiters.append(d)
            try:
                self.transport.signalProcess(sig)
            except error.ProcessExitedAlready:
                pass
            try:
                return await d.addTimeout(bound, self.reactor)
            except defer.TimeoutError:
                log.warn("prometheus (pid {pid}) still running {t}s after {sig}",
                         pid=self.pid, t=bound, sig=sig.name)
        raise LaunchError(f"prometheus (pid {self.pid}) did not exit after SIGKILL")


class PrometheusAPI:
    """The parts of Prometheus's HTTP API that rl-cluster and the tests use."""

    def __init__(self, url: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.reactor = reactor
        self.url = url.rstrip("/")

    async def get(self, path: str, params: Mapping[str, str] | None = None,
                  timeout: float = 10.0) -> tuple[int, bytes]:
        """One bounded GET of *path*: (HTTP status, body)."""
        import treq

        response = await treq.get(self.url + path, params=dict(params or {}),
                                  persistent=False).addTimeout(timeout, self.reactor)
        body = await treq.content(response).addTimeout(timeout, self.reactor)
        return response.code, body

    async def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data``; LaunchError naming the call when it fails."""
        status, body = await self.get(f"/api/v1/{path}", params)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        if status != 200 or answer.get("status") != "success":
            raise LaunchError(f"prometheus /api/v1/{path} {params}: HTTP {status}: "
                              f"{body[:300]!r}")
        return answer["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of *expr* now (a scalar answer becomes one unlabeled entry)."""
        data = await self.api("query", query=expr)
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])
