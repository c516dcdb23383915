"""Typed errors of the Redis layer, so callers branch on classes, not on message text."""

from __future__ import annotations


class RedisError(Exception):
    """Base class of every error raised by ``rltwist.redis``."""


class RedisUnavailable(RedisError):
    """Redis cannot be reached: not connected, connection lost, or the client is closed.

    Login refuses players on this error (docs/architecture.md, Faults: Redis restart).
    """


class RedisTimeout(RedisUnavailable):
    """No connection or no answer within the bound given to the client."""


class RedisCommandError(RedisError):
    """Redis answered a command with an error reply (wrong type, script error, ...)."""


class ScriptMissing(RedisCommandError):
    """EVALSHA answered NOSCRIPT: the script cache was flushed or Redis restarted."""


class RoleNotRegistered(RedisError):
    """A role node that is not (or no longer) registered for the least-loaded pick."""


class RedisServerError(RuntimeError):
    """A private redis-server could not be started or stopped."""
