"""Every Redis key name rltwist uses, relative to the client's prefix.

This is the one place that knows them: Python code calls the functions below, and the Lua
scripts in ``rltwist.redis.scripts`` are built from the same constants for the keys they
find at run time (the players of a role node).
"""

from __future__ import annotations

#: string, random token, PX expiry: one login at a time per openid
LOGIN_LOCK = "login_lock:"
#: hash per player: state, node, host, port, and the pending one-time secret, the ticket
#: of an Auth in progress or the owner's gen (see rltwist.redis.scripts)
USER = "user:"
#: counter per player, never cleared with the state: each Auth's ticket is the next value;
#: raised to the owner's final generation (which also tops the stored one)
USER_GENERATION = "user_gen:"
#: sorted set: role node -> online count, for the least-loaded pick
ROLE_LOAD = "role_load"
#: hash: role node -> "host:port" of its client gateway
ROLE_ADDR = "role_addr"
#: set per role node: players whose state names that node (any state), so a dead node's
#: players can all be cleared
ROLE_USERS = "role_users:"
#: set per role node: players counted online there (GAME_STEP_FINISH or LOGOUT)
ROLE_ONLINE = "role_online:"
#: string "1" once every role node has re-registered its players after a Redis restart
IS_AVAILABLE = "is_available"


def login_lock(openid: str) -> str:
    return LOGIN_LOCK + openid


def user(userid: int) -> str:
    return f"{USER}{userid}"


def user_generation(userid: int) -> str:
    return f"{USER_GENERATION}{userid}"


def role_users(node: str) -> str:
    return ROLE_USERS + node


def role_online(node: str) -> str:
    return ROLE_ONLINE + node
