"""What a bot run does: ``BotOptions``, built by the CLI, the benchmarks or ``rl-cluster``."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

import rltwist
from rltwist.bot.actions import ACTIONS, parse_script
from rltwist.config import Config

#: Largest first + count: keeps ``b<index>x<hex>`` names within the name length limit.
MAX_INDEX = 10**9


def parse_hostport(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``":port"`` -> ``(host, port)``; ValueError if bad."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number")
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host, port


def parse_logins(text: str) -> tuple[tuple[str, int], ...]:
    """``"h1:p1,h2:p2"`` -> addresses of login nodes' client ports."""
    logins = tuple(parse_hostport(part) for part in text.split(",") if part.strip())
    if not logins:
        raise ValueError("no login address given")
    return logins


def random_prefix() -> str:
    return secrets.token_hex(3)


def _script(value: str | Iterable[str]) -> tuple[str, ...]:
    return parse_script(value) if isinstance(value, str) else tuple(value)


def _logins(value: Iterable[tuple[str, int]] | str) -> tuple[tuple[str, int], ...]:
    return parse_logins(value) if isinstance(value, str) else tuple(
        (str(h), int(p)) for h, p in value)


@attrs.frozen
class BotOptions:
    """Everything a run of bots needs; ``ValueError`` on construction if inconsistent.

    ``hold`` is how long each bot keeps its session after its script, heartbeating:
    0 logs out right away, ``None`` holds until ``BotSwarm.release()`` (or Ctrl-C).
    ``concurrency`` bounds bots in their login phase (connect .. end of script); held
    sessions do not count against it. ``rate`` bounds bot starts per second.
    """

    logins: tuple[tuple[str, int], ...] = attrs.field(converter=_logins)
    count: int
    dev_sdk_secret: str
    concurrency: int = 200
    rate: float | None = None
    server_id: int = 1
    #: regions to spread new bots over (bot i logs in to ``server_ids[i % n]``); empty:
    #: every bot uses ``server_id``
    server_ids: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    #: ask the login node for ``RegionList`` first and be born in the region it
    #: recommends (``server_id``/``server_ids`` then only when it recommends none)
    recommended_region: bool = False
    openid_prefix: str = attrs.field(factory=random_prefix)
    first: int = 0
    script: tuple[str, ...] = attrs.field(default=(), converter=_script)
    hold: float | None = 0.0
    heartbeat: float = 10.0
    timeout: float = 10.0
    retries: int = 5
    retry_delay: float = 0.1
    retry_max_delay: float = 2.0
    expect_kicks: bool = False
    client_version: str = rltwist.__version__
    os: str = "bot"

    def __attrs_post_init__(self) -> None:
        problems = []
        if not self.logins:
            problems.append("at least one login address is needed")
        if self.count < 1:
            problems.append("count must be >= 1")
        if self.first < 0 or self.first + self.count > MAX_INDEX:
            problems.append(f"first + count must stay within 0..{MAX_INDEX}")
        if not self.dev_sdk_secret:
            problems.append("a dev SDK secret is needed (the login nodes' login.dev_sdk_secret)")
        if self.concurrency < 1:
            problems.append("concurrency must be >= 1")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            problems.append("rate must be > 0")
        if not all(0 <= sid < 2**32 for sid in (self.server_id, *self.server_ids)):
            problems.append("server_id must be 0..4294967295")
        if self.hold is not None and not self.hold >= 0:
            problems.append("hold must be >= 0 seconds (None: until released)")
        for name in ("heartbeat", "timeout", "retry_delay", "retry_max_delay"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{name} must be > 0 seconds")
        if self.retries < 0:
            problems.append("retries must be >= 0")
        unknown = sorted(set(self.script) - set(ACTIONS))
        if unknown:
            problems.append(f"unknown script actions {unknown} (known: {sorted(ACTIONS)})")
        if not self.openid_prefix or "-" in self.openid_prefix:
            problems.append("openid_prefix must be non-empty and contain no '-'")
        if problems:
            raise ValueError("; ".join(problems))

    def server_of(self, index: int) -> int:
        """The region bot *index* asks for at login."""
        if self.server_ids:
            return self.server_ids[index % len(self.server_ids)]
        return self.server_id

    def openid(self, index: int) -> str:
        return f"bot-{self.openid_prefix}-{index}"

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> BotOptions:
        """Options aimed at the login nodes of ``config``, with its dev SDK secret.

        Login addresses are every ``login<n>`` node's ``host:client_port``; the secret is
        ``[login] dev_sdk_secret``. Keyword arguments override or complete the rest.
        """
        kwargs: dict[str, Any] = {}
        logins = config_logins(config)
        if logins:
            kwargs["logins"] = logins
        secret = config_dev_sdk_secret(config)
        if secret:
            kwargs["dev_sdk_secret"] = secret
        kwargs.update(overrides)
        return cls(**kwargs)


def config_logins(config: Config) -> tuple[tuple[str, int], ...]:
    """``host:client_port`` of every login node in ``config``, in node-number order."""
    nodes = sorted((n for n in config.nodes.values() if n.kind == "login"),
                   key=lambda n: n.number or 0)
    return tuple((n.host, n.client_port) for n in nodes if n.client_port)


def config_dev_sdk_secret(config: Config) -> str | None:
    login: Any = config.raw.get("login")
    if isinstance(login, dict):
        secret = login.get("dev_sdk_secret")
        if isinstance(secret, str) and secret:
            return secret
    return None


def describe(options: BotOptions) -> Sequence[str]:
    """Short lines saying what a run will do, for logs."""
    logins = ",".join(f"{h}:{p}" for h, p in options.logins)
    hold = "until released" if options.hold is None else f"{options.hold:g}s"
    rate = "unlimited" if options.rate is None else f"{options.rate:g}/s"
    return [f"{options.count} bots bot-{options.openid_prefix}-{options.first}.. -> {logins} "
            f"(server {options.server_id}), concurrency {options.concurrency}, rate {rate}, "
            f"script {','.join(options.script) or '-'}, hold {hold}, "
            f"heartbeat {options.heartbeat:g}s, timeout {options.timeout:g}s"]
