"""The Redis layer: a private redis-server for tests and local runs, a prefixed client,
and the login/online state of docs/architecture.md (Login, Lifecycle, Faults)."""

from rltwist.redis.client import RedisClient, RedisURL, Script
from rltwist.redis.errors import (
    RedisCommandError,
    RedisError,
    RedisServerError,
    RedisTimeout,
    RedisUnavailable,
    RoleNotRegistered,
    ScriptMissing,
)
from rltwist.redis.server import RedisServer
from rltwist.redis.state import (
    GAME_STEP_FINISH,
    LOGIN_STEP_FINISH,
    LOGOUT,
    Assignment,
    OnlineState,
    RoleEndpoint,
    RoleLoad,
    UserState,
)

__all__ = [
    "GAME_STEP_FINISH",
    "LOGIN_STEP_FINISH",
    "LOGOUT",
    "Assignment",
    "OnlineState",
    "RedisClient",
    "RedisCommandError",
    "RedisError",
    "RedisServer",
    "RedisServerError",
    "RedisTimeout",
    "RedisURL",
    "RedisUnavailable",
    "RoleEndpoint",
    "RoleLoad",
    "RoleNotRegistered",
    "Script",
    "ScriptMissing",
    "UserState",
]
