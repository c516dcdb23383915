"""Lua scripts of the login/online state; each runs atomically inside Redis.

Scripts marked ``wants_prefix`` receive the key prefix as ARGV[1] and build per-user and
per-node key names from the constants of ``rltwist.redis.keys``. That needs a single
(non-cluster) Redis, which is what docs/architecture.md uses.

A player's state is one hash (``keys.user``): ``state``, ``node``, ``host``, ``port``, and

* ``secret`` — LOGIN_STEP_FINISH issued, the one-time secret not yet shown at Auth;
* ``ticket`` — LOGIN_STEP_FINISH whose secret Auth consumed (``AUTH_BEGIN``): the
  generation that Auth took from the player's counter (``keys.user_generation``);
* ``gen`` — GAME_STEP_FINISH / LOGOUT: the generation of the instance that owns the player.

Every write that could give the player a second owner is a compare-and-set: the login
assigns only with its lock token still in place, ``is_available`` set and the state it read
(``LOGIN_ASSIGN``); Auth finishes only with its own ticket (``AUTH_FINISH``); a gateway
marks LOGOUT or clears only its own generation (``SET_LOGOUT``, ``CLEAR_USER``).

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

# Outcomes of LOGIN_ASSIGN (the first element of its answer)
ASSIGNED = "assigned"  # a new LOGIN_STEP_FINISH: {ASSIGNED, node, "host:port", secret}
PENDING = "pending"  # the login read found waits for Auth: {PENDING, node, addr, its secret}
NO_ROLE = "no_role"  # no role node is registered
LOST_LOCK = "lost_lock"  # the lock expired or Redis lost it: another login may be running
UNAVAILABLE = "unavailable"  # is_available unset: Redis restarted, role nodes re-registering
MOVED = "moved"  # the state is no longer the one the login read
HELD = "held"  # still GAME_STEP_FINISH/LOGOUT on a registered node after the kick

# Lua helpers shared by the scripts that touch a node's player sets
_HELPERS = """
local prefix = ARGV[1]
local function users_key(node) return prefix .. '$ROLE_USERS' .. node end
local function online_key(node) return prefix .. '$ROLE_ONLINE' .. node end
local function user_key(uid) return prefix .. '$USER' .. uid end
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
        USER_GENERATION=keys.USER_GENERATION,
        LOGIN_STEP_FINISH=LOGIN_STEP_FINISH,
        GAME_STEP_FINISH=GAME_STEP_FINISH,
        LOGOUT=LOGOUT,
        ASSIGNED=ASSIGNED,
        PENDING=PENDING,
        NO_ROLE=NO_ROLE,
        LOST_LOCK=LOST_LOCK,
        UNAVAILABLE=UNAVAILABLE,
        MOVED=MOVED,
        HELD=HELD,
    )
    return Script(name, source, wants_prefix=wants_prefix)


# KEYS: lock; ARGV: token -> 1 when the token still held the lock and it was released
RELEASE_LOCK = _lua(
    "release_lock",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

# The login flow in two round trips (docs/architecture.md "Login" steps 4 and 7), three for an
# existing account (its state is read in between):
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

# KEYS: is_available, lock, user, role_load, role_addr; ARGV: prefix, uid, secret, ttl_ms,
# lock token, then what the login read: state ('' = none), node, gen, ticket; then evict
# ('1': the kick could not reach that node) -> {outcome, node, "host:port", secret}.
# A compare-and-set: nothing is written unless the token still holds the lock (released
# here in every outcome), is_available is set, and the state is the one the login read or
# has gone (expired, cleared by the kick's logout, or by master for a dead node), since a
# player with no state has no owner. A pending LOGIN_STEP_FINISH (secret not yet used) is
# answered again as it is: same node, same secret (seed §8 step 6), so two Auths cannot
# land on two gateways. A GAME_STEP_FINISH the login could not kick is replaced only when
# master has marked its node down (not in role_load/role_addr any more). Otherwise: the
# least-loaded role node (ties: the name that sorts first) gets LOGIN_STEP_FINISH with the
# one-time secret, both expiring after ttl_ms unless Auth finishes first.
LOGIN_ASSIGN = _lua(
    "login_assign",
    """
local uid, secret, ttl, token = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local exp_state, exp_node, exp_gen, exp_ticket = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local evict = ARGV[10] == '1'
local ukey = KEYS[3]
if redis.call('GET', KEYS[2]) ~= token then return {'$LOST_LOCK'} end
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[1]) ~= '1' then return {'$UNAVAILABLE'} end
local function registered(node)
  return redis.call('ZSCORE', KEYS[4], node) and redis.call('HGET', KEYS[5], node)
end
local function drop(node)
  redis.call('SREM', users_key(node), uid)
  if redis.call('SREM', online_key(node), uid) == 1 then sync_load(KEYS[4], node) end
  redis.call('DEL', ukey)
end
local st = redis.call('HMGET', ukey, 'state', 'node', 'gen', 'ticket', 'secret')
if st[1] then
  if st[1] ~= exp_state or st[2] ~= exp_node or (st[3] or '') ~= exp_gen
     or (st[4] or '') ~= exp_ticket then
    return {'$MOVED'}
  end
  local addr = registered(st[2])
  if st[1] == '$LOGIN_STEP_FINISH' then
    if not st[5] then return {'$MOVED'} end
    if addr then return {'$PENDING', st[2], addr, st[5]} end
    drop(st[2])  -- its node is down: no Auth can finish there
  else
    if not evict or addr then return {'$HELD', st[2]} end
    drop(st[2])
  end
end
local all = redis.call('ZRANGE', KEYS[4], 0, -1, 'WITHSCORES')
local node, addr
for i = 1, #all, 2 do
  addr = redis.call('HGET', KEYS[5], all[i])
  if addr then node = all[i]; break end
end
if not node then return {'$NO_ROLE'} end
local host, port = string.match(addr, '^(.*):(%d+)$$')
redis.call('HSET', ukey, 'state', '$LOGIN_STEP_FINISH', 'node', node, 'host', host,
           'port', port, 'secret', secret)
redis.call('PEXPIRE', ukey, ttl)
redis.call('SADD', users_key(node), uid)
return {'$ASSIGNED', node, addr, secret}
""",
    wants_prefix=True,
)

# Auth in two round trips. KEYS: user, generation; ARGV: secret, node -> the login's
# ticket: a new generation (INCR of the player's counter), when the secret is the
# pending one of a LOGIN_STEP_FINISH on node (so unexpired and unused); else 0. The secret
# is gone afterwards: a second Auth with it (the loser of a race) is refused.
AUTH_BEGIN = _lua(
    "auth_begin",
    """
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'secret')
if st[1] ~= '$LOGIN_STEP_FINISH' or st[2] ~= ARGV[2] or not st[3] or st[3] ~= ARGV[1] then
  return 0
end
redis.call('HDEL', KEYS[1], 'secret')
local ticket = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'ticket', ticket)
return ticket
""",
)

# KEYS: user, role_load, generation; ARGV: prefix, node, ticket, generation, uid -> the
# node's online count; 0 when the state moved on (expired, cleared, another login); -1
# when the node is not registered. Only the Auth that holds the ticket finishes:
# GAME_STEP_FINISH with the instance's final generation, the counter raised to it, and the
# online count, all in one step so they can never disagree.
AUTH_FINISH = _lua(
    "auth_finish",
    """
local node, ticket, gen, uid = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not redis.call('ZSCORE', KEYS[2], node) then return -1 end
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'ticket')
if st[1] ~= '$LOGIN_STEP_FINISH' or st[2] ~= node or st[3] ~= ticket then return 0 end
redis.call('HDEL', KEYS[1], 'ticket')
redis.call('HSET', KEYS[1], 'state', '$GAME_STEP_FINISH', 'gen', gen)
redis.call('PERSIST', KEYS[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(gen) then
  redis.call('SET', KEYS[3], gen)
end
redis.call('SADD', online_key(node), uid)
redis.call('SADD', users_key(node), uid)
sync_load(KEYS[2], node)
return redis.call('SCARD', online_key(node))
""",
    wants_prefix=True,
)

# KEYS: user; ARGV: node, generation ('' = any) -> 1 when the player was GAME_STEP_FINISH
# on node under that generation (now LOGOUT)
SET_LOGOUT = _lua(
    "set_logout",
    """
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'gen')
if st[1] ~= '$GAME_STEP_FINISH' or st[2] ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and st[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', '$LOGOUT')
return 1
""",
)

# KEYS: user, role_load; ARGV: prefix, uid, only_if_node ('' = whatever node), generation
# ('' = any) -> 1 when the state was deleted. It is left alone when it names another node
# than only_if_node, or (given a generation) belongs to another login: its gen, or its
# ticket while Auth runs, differs. The named node's own sets then keep the player only as
# far as the state left standing justifies (its users set if the state names it, its online
# set if that state is GAME_STEP_FINISH/LOGOUT there).
CLEAR_USER = _lua(
    "clear_user",
    """
local uid, only, gen = ARGV[2], ARGV[3], ARGV[4]
local st = redis.call('HMGET', KEYS[1], 'state', 'node', 'gen', 'ticket')
local state, node = st[1], st[2]
local refused = node and ((only ~= '' and node ~= only) or (gen ~= '' and (st[3] or st[4]) ~= gen))
if only ~= '' then
  local keep_user = refused and node == only
  local keep_online = keep_user and state ~= '$LOGIN_STEP_FINISH'
  if not keep_user then redis.call('SREM', users_key(only), uid) end
  if not keep_online and redis.call('SREM', online_key(only), uid) == 1 then
    sync_load(KEYS[2], only)
  end
end
if not node or refused then return 0 end
if only == '' then
  redis.call('SREM', users_key(node), uid)
  if redis.call('SREM', online_key(node), uid) == 1 then sync_load(KEYS[2], node) end
end
redis.call('DEL', KEYS[1])
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
      redis.call('DEL', user_key(uid))
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

# KEYS: role_load, role_addr; ARGV: prefix, node, "host:port" ('' = as registered),
# then uid, state, generation triples -> players written, -1 if node address unknown.
# A player whose state already names another node is left alone; a pending login of a
# player this node still has online is replaced (that login would have to kick it).
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
  local uid, state, gen = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ukey = user_key(uid)
  local cur = redis.call('HGET', ukey, 'node')
  if not cur or cur == node then
    -- the state keeps the instance's own generation (its later SET_LOGOUT/CLEAR_USER
    -- carry it); the counter only ever goes up, so the next Auth's ticket is above it
    local gkey = prefix .. '$USER_GENERATION' .. uid
    if tonumber(gen) > tonumber(redis.call('GET', gkey) or '0') then
      redis.call('SET', gkey, gen)
    end
    redis.call('HDEL', ukey, 'secret', 'ticket')
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

#: every script, for ``RedisClient.load_scripts``
ALL = (
    RELEASE_LOCK,
    LOGIN_BEGIN,
    LOGIN_ASSIGN,
    AUTH_BEGIN,
    AUTH_FINISH,
    SET_LOGOUT,
    CLEAR_USER,
    REGISTER_ROLE,
    UNREGISTER_ROLE,
    REREGISTER_ONLINE,
)
