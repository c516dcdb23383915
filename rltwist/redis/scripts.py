"""Lua scripts of the login/online state; each runs atomically inside Redis.

Scripts marked ``wants_prefix`` receive the key prefix as ARGV[1] and build per-user and
per-node key names from the constants of ``rltwist.redis.keys``. That needs a single
(non-cluster) Redis, which is what DESIGN.md uses.

The online count of a role node is the size of its ``role_online`` set, copied into the
``role_load`` sorted set, so counting the same player twice (a retried call, a
re-registration after a Redis restart) cannot skew the pick.
"""

from __future__ import annotations

from string import Template

from rltwist.redis import keys
from rltwist.redis.client import Script

LOGIN_STEP_FINISH = "LOGIN_STEP_FINISH"
GAME_STEP_FINISH = "GAME_STEP_FINISH"
LOGOUT = "LOGOUT"

# Lua helpers shared by the scripts that touch a node's player sets
_HELPERS = """
local prefix = ARGV[1]
local function users_key(node) return prefix .. '$ROLE_USERS' .. node end
local function online_key(node) return prefix .. '$ROLE_ONLINE' .. node end
local function user_key(uid) return prefix .. '$USER' .. uid end
local function secret_key(uid) return prefix .. '$USER_SECRET' .. uid end
local function sync_load(load, node)
  if redis.call('ZSCORE', load, node) then
    redis.call('ZADD', load, 'XX', redis.call('SCARD', online_key(node)), node)
  end
end
"""


def _lua(name: str, body: str, *, wants_prefix: bool = False) -> Script:
    source = Template((_HELPERS if wants_prefix else "") + body).substitute(
        ROLE_USERS=keys.ROLE_USERS,
        ROLE_ONLINE=keys.ROLE_ONLINE,
        USER=keys.USER,
        USER_SECRET=keys.USER_SECRET,
        USER_GENERATION=keys.USER_GENERATION,
        LOGIN_STEP_FINISH=LOGIN_STEP_FINISH,
        GAME_STEP_FINISH=GAME_STEP_FINISH,
        LOGOUT=LOGOUT,
    )
    return Script(name, source, wants_prefix=wants_prefix)


# KEYS: lock; ARGV: token
RELEASE_LOCK = _lua(
    "release_lock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

# KEYS: user, secret, generation, role_load; ARGV: prefix, uid, node, host, port, secret,
# ttl_ms -> the new generation, -1 if the node is not registered (marked down since the
# pick). The state lives as long as its secret unless the role node
# turns it into GAME_STEP_FINISH, so an abandoned login does not pin a player to a node.
SET_LOGIN_FINISH = _lua(
    "set_login_finish",
    """
local uid, node, ttl = ARGV[2], ARGV[3], ARGV[7]
if not redis.call('ZSCORE', KEYS[4], node) then return -1 end
local old = redis.call('HGET', KEYS[1], 'node')
if old and old ~= node then redis.call('SREM', users_key(old), uid) end
local gen = redis.call('INCR', KEYS[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'state', '$LOGIN_STEP_FINISH', 'node', node,
           'host', ARGV[4], 'port', ARGV[5], 'gen', gen)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], ARGV[6], 'PX', ttl)
redis.call('SADD', users_key(node), uid)
return gen
""",
    wants_prefix=True,
)

# The login flow in two round trips (DESIGN.md "Login" steps 4 and 7):
# KEYS: is_available, lock; ARGV: token, ttl_ms -> 1 locked for us, 0 Redis not available
# (after a restart), -1 another login of this openid holds the lock.
LOGIN_BEGIN = _lua(
    "login_begin",
    """
if redis.call('GET', KEYS[1]) ~= '1' then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return -1
""",
)

# KEYS: role_load, role_addr, user, secret, generation, lock; ARGV: prefix, uid, secret,
# ttl_ms, lock token -> {node, "host:port", generation}, or nil when no role node is up.
# Picks the least-loaded role node (ties: the name that sorts first), stores
# LOGIN_STEP_FINISH with the one-time secret and a new generation, releases the lock.
LOGIN_ASSIGN = _lua(
    "login_assign",
    """
local uid, secret, ttl, token = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local function release()
  if redis.call('GET', KEYS[6]) == token then redis.call('DEL', KEYS[6]) end
end
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local node, addr
for i = 1, #all, 2 do
  addr = redis.call('HGET', KEYS[2], all[i])
  if addr then node = all[i]; break end
end
if not node then release(); return nil end
local host, port = string.match(addr, '^(.*):(%d+)$$')
local old = redis.call('HGET', KEYS[3], 'node')
if old and old ~= node then redis.call('SREM', users_key(old), uid) end
local gen = redis.call('INCR', KEYS[5])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'state', '$LOGIN_STEP_FINISH', 'node', node,
           'host', host, 'port', port, 'gen', gen)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('SET', KEYS[4], secret, 'PX', ttl)
redis.call('SADD', users_key(node), uid)
release()
return {node, addr, gen}
""",
    wants_prefix=True,
)

# KEYS: secret, user; ARGV: secret, node ('' = any node) -> 1 when accepted, once
CONSUME_SECRET = _lua(
    "consume_secret",
    """
local s = redis.call('GET', KEYS[1])
if not s or s ~= ARGV[1] then return 0 end
local st = redis.call('HMGET', KEYS[2], 'state', 'node')
if st[1] ~= '$LOGIN_STEP_FINISH' then return 0 end
if ARGV[2] ~= '' and st[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
""",
)

# Auth in two round trips. KEYS: secret, user; ARGV: secret, node -> the login's fencing
# generation when the secret is right, unexpired, unused and issued for node; else 0.
AUTH_BEGIN = _lua(
    "auth_begin",
    """
local s = redis.call('GET', KEYS[1])
if not s or s ~= ARGV[1] then return 0 end
local st = redis.call('HMGET', KEYS[2], 'state', 'node', 'gen')
if st[1] ~= '$LOGIN_STEP_FINISH' or st[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return tonumber(st[3]) or 0
""",
)

# KEYS: user, role_load; ARGV: prefix, node, generation, uid -> the node's online count;
# 0 when the state moved on (another login, logging out); -1 when the node is not up.
# GAME_STEP_FINISH and the online count in one step, so they can never disagree.
AUTH_FINISH = _lua(
    "auth_finish",
    """
local node, gen, uid = ARGV[2], ARGV[3], ARGV[4]
if not redis.call('ZSCORE', KEYS[2], node) then return -1 end
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'gen')
if not st[1] or st[2] ~= node or st[1] == '$LOGOUT' or st[3] ~= gen then return 0 end
redis.call('HSET', KEYS[1], 'state', '$GAME_STEP_FINISH')
redis.call('PERSIST', KEYS[1])
redis.call('SADD', online_key(node), uid)
redis.call('SADD', users_key(node), uid)
sync_load(KEYS[2], node)
return redis.call('SCARD', online_key(node))
""",
    wants_prefix=True,
)

# KEYS: user; ARGV: node, generation ('' = any) -> 1 when set
SET_GAME_FINISH = _lua(
    "set_game_finish",
    """
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'gen')
if not st[1] or st[2] ~= ARGV[1] or st[1] == '$LOGOUT' then return 0 end
if ARGV[2] ~= '' and st[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', '$GAME_STEP_FINISH')
redis.call('PERSIST', KEYS[1])
return 1
""",
)

# KEYS: user; ARGV: node -> 1 when the player was GAME_STEP_FINISH on node
SET_LOGOUT = _lua(
    "set_logout",
    """
local st = redis.call('HMGET', KEYS[1], 'state', 'node')
if st[1] ~= '$GAME_STEP_FINISH' or st[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', '$LOGOUT')
return 1
""",
)

# KEYS: user, secret, role_load; ARGV: prefix, uid, only_if_node ('' = whatever node)
# -> 1 when the state was deleted. The named node always forgets the player (its own
# bookkeeping), even when the state has moved on to another node.
CLEAR_USER = _lua(
    "clear_user",
    """
local uid, only = ARGV[2], ARGV[3]
local function forget(node)
  redis.call('SREM', users_key(node), uid)
  if redis.call('SREM', online_key(node), uid) == 1 then sync_load(KEYS[3], node) end
end
if only ~= '' then forget(only) end
local node = redis.call('HGET', KEYS[1], 'node')
if not node then
  redis.call('DEL', KEYS[2])
  return 0
end
if only ~= '' and node ~= only then return 0 end
if only == '' then forget(node) end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
""",
    wants_prefix=True,
)

# KEYS: role_load, role_addr; ARGV: prefix, node, "host:port" -> online count
REGISTER_ROLE = _lua(
    "register_role",
    """
local node = ARGV[2]
redis.call('HSET', KEYS[2], node, ARGV[3])
local n = redis.call('SCARD', online_key(node))
redis.call('ZADD', KEYS[1], n, node)
return n
""",
    wants_prefix=True,
)

# KEYS: role_load, role_addr; ARGV: prefix, node -> players whose state was cleared
UNREGISTER_ROLE = _lua(
    "unregister_role",
    """
local node = ARGV[2]
local cleared = 0
for _, set in ipairs({users_key(node), online_key(node)}) do
  for _, uid in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('HGET', user_key(uid), 'node') == node then
      redis.call('DEL', user_key(uid), secret_key(uid))
      cleared = cleared + 1
    end
  end
end
redis.call('DEL', users_key(node), online_key(node))
redis.call('ZREM', KEYS[1], node)
redis.call('HDEL', KEYS[2], node)
return cleared
""",
    wants_prefix=True,
)

# KEYS: role_load; ARGV: prefix, node, uid -> online count, -1 if node not registered
INCR_ONLINE = _lua(
    "incr_online",
    """
local node, uid = ARGV[2], ARGV[3]
if not redis.call('ZSCORE', KEYS[1], node) then return -1 end
redis.call('SADD', online_key(node), uid)
redis.call('SADD', users_key(node), uid)
sync_load(KEYS[1], node)
return redis.call('SCARD', online_key(node))
""",
    wants_prefix=True,
)

# KEYS: role_load; ARGV: prefix, node, uid -> online count
DECR_ONLINE = _lua(
    "decr_online",
    """
local node, uid = ARGV[2], ARGV[3]
if redis.call('SREM', online_key(node), uid) == 1 then sync_load(KEYS[1], node) end
return redis.call('SCARD', online_key(node))
""",
    wants_prefix=True,
)

# KEYS: role_load, role_addr -> {node, "host:port", count} or nil. The sorted set orders
# equal counts by node name, so ties always go to the same (smallest-named) node.
PICK_LEAST_LOADED = _lua(
    "pick_least_loaded",
    """
local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #all, 2 do
  local addr = redis.call('HGET', KEYS[2], all[i])
  if addr then return {all[i], addr, all[i + 1]} end
end
return nil
""",
)

# KEYS: role_load, role_addr; ARGV: prefix, node, "host:port" ('' = as registered),
# then uid, state, generation triples -> players written, -1 if node address unknown.
# A player whose state already names another node is left alone.
REREGISTER_ONLINE = _lua(
    "reregister_online",
    """
local node, addr = ARGV[2], ARGV[3]
if addr == '' then addr = redis.call('HGET', KEYS[2], node) end
if not addr then return -1 end
redis.call('HSET', KEYS[2], node, addr)
local host, port = string.match(addr, '^(.*):(%d+)$$')
local written = 0
for i = 4, #ARGV, 3 do
  local uid, state, gen = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local ukey = user_key(uid)
  local cur = redis.call('HGET', ukey, 'node')
  if not cur or cur == node then
    local gkey = prefix .. '$USER_GENERATION' .. uid
    local known = tonumber(redis.call('GET', gkey) or '0')
    if gen > known then redis.call('SET', gkey, gen) else gen = known end
    redis.call('HSET', ukey, 'state', state, 'node', node, 'host', host, 'port', port,
               'gen', gen)
    redis.call('PERSIST', ukey)
    redis.call('SADD', users_key(node), uid)
    if state == '$GAME_STEP_FINISH' or state == '$LOGOUT' then
      redis.call('SADD', online_key(node), uid)
    end
    written = written + 1
  end
end
redis.call('ZADD', KEYS[1], redis.call('SCARD', online_key(node)), node)
return written
""",
    wants_prefix=True,
)

ALL = (
    RELEASE_LOCK,
    LOGIN_BEGIN,
    LOGIN_ASSIGN,
    SET_LOGIN_FINISH,
    CONSUME_SECRET,
    AUTH_BEGIN,
    AUTH_FINISH,
    SET_GAME_FINISH,
    SET_LOGOUT,
    CLEAR_USER,
    REGISTER_ROLE,
    UNREGISTER_ROLE,
    INCR_ONLINE,
    DECR_ONLINE,
    PICK_LEAST_LOADED,
    REREGISTER_ONLINE,
)
