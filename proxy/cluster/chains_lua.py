"""The Lua scripts of the shared token chains: every operation of ``proxy.cluster.chains`` that
decides something is one of these, atomic on the server, one round trip each.

Contract (the keys are the ones ``proxy.cluster.chains`` describes; those of one app share the hash tag
``{tok|<app>}``)
- ``ARGV[1]`` is the link's time argument (``now_ms()``: the server's ``TIME`` or the node's injected
  clock); the store's own arguments follow from ``ARGV[2]``. The comment above each script names its
  ``KEYS`` and those arguments, in order.
- ``LEASE`` is no script of its own: the helpers ``ACQUIRE`` and ``CLAIM`` share (a lease free unless
  another owner's is still live, one token call reserved under a limit, the lease taken with a new fence).
- Replies: ``READ`` and ``FIND`` 0 (no such record), 1 (``READ``: still the version read) or 2 with
  ``ver, rev, rec, moved`` (``FIND`` also the chain id); ``ACQUIRE`` its state (``got``, ``moved``,
  ``held``, ``spent``), ``ver, rev`` and the state's fields; ``COMMIT`` and ``ANNOTATE`` ``ok, ver, rev,
  rec``; ``CLAIM`` its state and one detail; ``CREATE`` the user's earlier chain id; ``SEED`` 1 when it
  wrote the record; ``RELEASE`` and ``REFUSE`` 1.
"""

from __future__ import annotations

READ = """
local h = redis.call('HMGET', KEYS[1], 'ver', 'rev', 'rec', 'moved')
if not h[1] then return {0} end
if tonumber(h[1]) == tonumber(ARGV[2]) and tonumber(h[2] or '0') == tonumber(ARGV[3]) and not h[4] then
  return {1}
end
return {2, tonumber(h[1]), tonumber(h[2] or '0'), h[3] or '', h[4] or ''}
"""

FIND = """
local id = redis.call('GET', KEYS[1])
if not id then return {0} end
local h = redis.call('HMGET', ARGV[2] .. id, 'ver', 'rev', 'rec', 'moved')
if not h[1] then return {0} end
return {2, tonumber(h[1]), tonumber(h[2] or '0'), h[3] or '', h[4] or '', id}
"""

LEASE = """
local function lease_free(key, owner, now)
  local l = redis.call('HMGET', key, 'owner', 'until')
  if l[1] and l[1] ~= owner and tonumber(l[2]) > now then return false, l[1], tonumber(l[2]) - now end
  return true
end
local function reserve(key, limit, ttl)
  local used = tonumber(redis.call('GET', key) or '0')
  if used >= limit then return false, used end
  redis.call('INCR', key)
  redis.call('PEXPIRE', key, ttl)
  return true, used + 1
end
local function take(key, fence_key, owner, now, ms)
  local fence = redis.call('INCR', fence_key)
  redis.call('DEL', key)
  redis.call('HSET', key, 'owner', owner, 'until', now + ms, 'fence', fence)
  redis.call('PEXPIRE', key, ms)
  return fence
end
"""

# KEYS: ch, lease, fence, intent, calls. ARGV: owner, ver, rev, lease_ms, limit, calls_ttl, intent_ms, node
ACQUIRE = LEASE + """
local now = now_ms()
local h = redis.call('HMGET', KEYS[1], 'ver', 'rev', 'rec')
local ver, rev = tonumber(h[1] or '0'), tonumber(h[2] or '0')
if ver ~= tonumber(ARGV[3]) or rev ~= tonumber(ARGV[4]) then return {'moved', ver, rev, h[3] or ''} end
local free, holder, left = lease_free(KEYS[2], ARGV[2], now)
if not free then return {'held', ver, rev, holder, left} end
local ok, used = reserve(KEYS[5], tonumber(ARGV[6]), ARGV[7])
if not ok then return {'spent', ver, rev, used} end
local prior = redis.call('HGETALL', KEYS[4])
local fence = take(KEYS[2], KEYS[3], ARGV[2], now, tonumber(ARGV[5]))
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'node', ARGV[9], 'owner', ARGV[2], 'fence', fence, 'ver', ver, 'at', now)
redis.call('PEXPIRE', KEYS[4], ARGV[8])
local out = {'got', ver, rev, fence}
for i = 1, #prior do out[#out + 1] = prior[i] end
return out
"""

# KEYS: ch, lease, intent, index... ARGV: owner, ver_read, rec, chain id, ch_ttl, index ttls...
COMMIT = """
local now = now_ms()
local h = redis.call('HMGET', KEYS[1], 'ver', 'by')
local ver = tonumber(h[1] or '0')
local ok = 0
if ver == tonumber(ARGV[3]) then
  ver = ver + 1
  redis.call('HSET', KEYS[1], 'ver', ver, 'rev', 0, 'rec', ARGV[4], 'by', ARGV[2], 'at', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[5], 'PX', ARGV[i + 3]) end
  ok = 1
elseif h[2] == ARGV[2] and ver == tonumber(ARGV[3]) + 1 then
  ok = 1
end
if redis.call('HGET', KEYS[2], 'owner') == ARGV[2] then redis.call('DEL', KEYS[2]) end
if redis.call('HGET', KEYS[3], 'owner') == ARGV[2] then redis.call('DEL', KEYS[3]) end
local s = redis.call('HMGET', KEYS[1], 'ver', 'rev', 'rec')
return {ok, tonumber(s[1]), tonumber(s[2] or '0'), s[3] or ''}
"""

# KEYS: ch. ARGV: ver, rec, ttl
ANNOTATE = """
local h = redis.call('HMGET', KEYS[1], 'ver', 'rev', 'rec')
if not h[1] or tonumber(h[1]) ~= tonumber(ARGV[2]) then
  return {0, tonumber(h[1] or '0'), tonumber(h[2] or '0'), h[3] or ''}
end
local rev = redis.call('HINCRBY', KEYS[1], 'rev', 1)
redis.call('HSET', KEYS[1], 'rec', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, tonumber(h[1]), rev, ''}
"""

# KEYS: lease, intent, calls. ARGV: owner, keep_intent, give_back
RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[2] then redis.call('DEL', KEYS[1]) end
if ARGV[3] ~= '1' and redis.call('HGET', KEYS[2], 'owner') == ARGV[2] then redis.call('DEL', KEYS[2]) end
if ARGV[4] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
return 1
"""

# KEYS: lease, fence, calls, index (c: or r:), refusal. ARGV: owner, lease_ms, limit, calls_ttl
CLAIM = LEASE + """
local now = now_ms()
local id = redis.call('GET', KEYS[4])
if id then return {'done', id} end
local x = redis.call('GET', KEYS[5])
if x then return {'refused', x} end
local free, holder, left = lease_free(KEYS[1], ARGV[2], now)
if not free then return {'held', holder, left} end
local ok, used = reserve(KEYS[3], tonumber(ARGV[4]), ARGV[5])
if not ok then return {'spent', used} end
return {'got', take(KEYS[1], KEYS[2], ARGV[2], now, tonumber(ARGV[3]))}
"""

# KEYS: ch, user, lease, calls_new, calls_user, presented, index... ARGV: owner, rec, chain id, ch_ttl,
# calls_ttl, presented_ttl, has_user, chain key prefix, index ttls...
CREATE = """
local now = now_ms()
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'ver', 1, 'rev', 0, 'rec', ARGV[3], 'by', ARGV[2], 'at', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local old = ''
if ARGV[8] == '1' then
  old = redis.call('GET', KEYS[2]) or ''
  if old ~= '' and old ~= ARGV[4] then redis.call('HSET', ARGV[9] .. old, 'moved', ARGV[4]) end
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
end
if KEYS[4] ~= KEYS[5] then
  if tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then redis.call('DECR', KEYS[4]) end
  redis.call('INCR', KEYS[5])
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
redis.call('SET', KEYS[6], ARGV[4], 'PX', ARGV[7])
for i = 7, #KEYS do redis.call('SET', KEYS[i], ARGV[4], 'PX', ARGV[i + 3]) end
if redis.call('HGET', KEYS[3], 'owner') == ARGV[2] then redis.call('DEL', KEYS[3]) end
return old
"""

# KEYS: lease, refusal, calls. ARGV: owner, refusal json, ttl, give_back
REFUSE = """
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
if ARGV[5] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
if redis.call('HGET', KEYS[1], 'owner') == ARGV[2] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: ch, index... ARGV: rec, chain id, ch_ttl, index ttls...
SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'ver', 1, 'rev', 0, 'rec', ARGV[2], 'by', 'seed', 'at', now_ms())
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[i + 3], 'NX') end
return 1
"""
