"""Redis round-trip metrics of one node: latency per command (scripts by their name) and
failures by kind. Command names are a closed set: the commands this package sends and the
names of its scripts; anything else is counted as ``other``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from rltwist.metrics import OTHER, ROUNDTRIP_BUCKETS, precreate

#: the commands the client's wrappers and the state layer send (scripts have their names)
COMMANDS = frozenset({"PING", "GET", "SET", "DEL", "EXISTS", "INCR", "PTTL", "HGETALL",
                      "SMEMBERS", "ZRANGE", "SCARD", "SCRIPT"})
#: failure kinds (rltwist.redis.errors)
ERROR_KINDS = ("RedisTimeout", "RedisUnavailable", "RedisCommandError", "ScriptMissing")


class RedisMetrics:
    """``rl_redis_command_seconds{command}`` and ``rl_redis_errors_total{kind}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram("rl_redis_command_seconds",
                                 "Redis round trip per command (a script counts under its "
                                 "name, a retry with EVAL included)", ["command"],
                                 buckets=ROUNDTRIP_BUCKETS, registry=registry)
        self.errors = Counter("rl_redis_errors", "Redis commands that failed, by kind",
                              ["kind"], registry=registry)
        precreate(self.errors, ERROR_KINDS)
        self._children: dict[str, Histogram] = {}

    def observe(self, command: str, seconds: float) -> None:
        child = self._children.get(command)
        if child is None:
            label = command if command in COMMANDS or command.islower() else OTHER
            child = self._children[command] = self.seconds.labels(label)
        child.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors.labels(kind if kind in ERROR_KINDS else OTHER).inc()
