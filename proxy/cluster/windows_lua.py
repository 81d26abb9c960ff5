"""The Lua scripts of the shared minute and day windows: every admission decision is one of these,
atomic on the server, and it reserves before the call is forwarded (``proxy.cluster.windows``).

Contract (the keys of one app and division share the hash tag ``{app|division}``)
- ``KEYS``: ``w`` (HASH: ``ms``/``mu`` minute start ms and calls used, ``ds``/``du`` the UTC day,
  ``lm``/``ld`` the limits Exact's headers reported, ``pu`` paused until, ``st`` 429 streak, ``kn`` the
  division was probed, ``pr``/``pn`` the probe lease's end (server time) and holder, ``ps``/``pl``/``pt``
  the pace of the minute's tail), ``q`` (ZSET of tickets scored ``-rank * 1e12 + seq``), ``qx`` (ZSET of
  ticket deadlines, server time) and ``seq`` (the ticket counter).
- ``ARGV[1]`` is the time that rules Exact's windows (the link's ``now_ms()``); then the policy:
  ``[2]`` minute limit, ``[3]`` day limit, ``[4]`` the division's minute cap ('' none), ``[5]`` pace share,
  ``[6]`` probe (1/0), ``[7]`` ticket life ms, ``[8]`` probe lease ms, ``[9]`` this node; the
  script's own arguments follow from ``[10]``. Effective limits are computed here from them, so a
  reloaded policy applies at once: the minute is Exact's learned limit (else the policy's) under the
  division's cap, the day the policy's or Exact's, whichever is lower.
- Liveness (ticket deadlines, the probe lease) is the server's real ``TIME``, not ``now_ms()``: a node
  is dead when it stops calling in real time, whatever clock rules the windows.
- Every script answers ``state``: reason ('' when granted), until (ms, ``now_ms`` time; -1 unknown),
  now, ms, mu, ds, du, ml, dl, lm, ld, pu, st, kn, queue length, priority queue length, the probe
  flag of the grant, then its own fields.
"""

from __future__ import annotations

COMMON = """
local W, Q, QX, SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local NOW = math.floor(now_ms())
local PM, PD, CAP = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local PACE, PROBE, TTL, LEASE, NODE = tonumber(ARGV[5]), ARGV[6] == '1', tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local FIELDS = {'ms','mu','ds','du','lm','ld','pu','st','kn','pr','pn','ps','pl','pt'}
local real_cache = nil
local function real_ms()
  if real_cache == nil then
    local t = redis.call('TIME')
    real_cache = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return real_cache
end
local function limits(s)
  local ml = s.lm or PM
  if CAP then ml = math.min(ml, CAP) end
  s.ml = ml
  s.dl = s.ld and math.min(PD, s.ld) or PD
  s.tail = math.floor(ml * PACE)
end
local function load()
  local h = redis.call('HMGET', W, unpack(FIELDS))
  local s = {}
  for i, f in ipairs(FIELDS) do s[f] = h[i] end
  for _, f in ipairs({'ms','mu','ds','du','pu','st','kn','pr','ps','pl','pt'}) do s[f] = tonumber(s[f]) or 0 end
  s.lm, s.ld = tonumber(s.lm), tonumber(s.ld)
  s.pn = s.pn or ''
  local minute = NOW - NOW % 60000
  if s.ms ~= minute then s.ms, s.mu = minute, 0 end
  local day = NOW - NOW % 86400000
  if s.ds ~= day then s.ds, s.du = day, 0 end
  if not PROBE then s.kn = 1 end
  limits(s)
  return s
end
local function save(s)
  redis.call('HSET', W, 'ms', s.ms, 'mu', s.mu, 'ds', s.ds, 'du', s.du, 'pu', s.pu, 'st', s.st, 'kn', s.kn,
             'pr', s.pr, 'pn', s.pn, 'ps', s.ps, 'pl', s.pl, 'pt', s.pt)
  if s.lm then redis.call('HSET', W, 'lm', s.lm) end
  if s.ld then redis.call('HSET', W, 'ld', s.ld) end
  redis.call('PEXPIRE', W, 259200000)
end
local function paced_at(s, left)
  if s.ps < s.ms or left > s.pl then
    s.ps, s.pl = NOW, left
    s.pt = (s.ms + 60000 - NOW) / left
  end
  return s.ps + (s.pl - left) * s.pt
end
local function probing(s)
  return s.kn == 0 and s.pr > real_ms()
end
-- why nothing can go now with mu calls used, and until when; nil: it can go
local function blocked(s, mu, first)
  if s.du + (mu - s.mu) >= s.dl then return 'daily', s.ds + 86400000 end
  if s.pu > NOW then return 'paused', s.pu end
  if probing(s) then return 'probe', -1 end
  if mu >= s.ml then return 'minute', s.ms + 60000 end
  local left = s.ml - mu
  if left <= s.tail then
    if not first then  -- a call behind the head: when its turn comes (every node wakes for it then)
      if s.ps >= s.ms and left <= s.pl then return 'pace', math.ceil(s.ps + (s.pl - left) * s.pt) end
      return 'pace', -1
    end
    local paced = paced_at(s, left)
    if paced > NOW then return 'pace', math.ceil(paced) end
  end
  return nil, NOW
end
local function take(s)
  s.mu, s.du = s.mu + 1, s.du + 1
  if s.kn == 0 then s.pr, s.pn = real_ms() + LEASE, NODE; return 1 end
  return 0
end
local function prune()
  local dead = redis.call('ZRANGEBYSCORE', QX, '-inf', real_ms(), 'LIMIT', 0, 256)
  for _, t in ipairs(dead) do redis.call('ZREM', Q, t); redis.call('ZREM', QX, t) end
end
local function state(s, reason, untl, probe)
  return {reason or '', untl, NOW, s.ms, s.mu, s.ds, s.du, s.ml, s.dl, s.lm or -1, s.ld or -1, s.pu, s.st,
          s.kn, redis.call('ZCARD', Q), redis.call('ZCOUNT', Q, '-inf', '(0'), probe}
end
local function int(v) if v == nil or v == '' then return nil end return tonumber(v) end
"""

# the fast path: one call, granted only when nobody waits (a caller without a ticket never passes one)
RESERVE = COMMON + """
local s = load()
if redis.call('ZCARD', Q) > 0 then prune() end
local reason, untl = blocked(s, s.mu, true)
if reason == nil and redis.call('ZCARD', Q) > 0 then reason, untl = 'queued', -1 end
local probe = 0
if reason == nil then probe = take(s) end
save(s)
return state(s, reason, untl, probe)
"""

# ARGV[10] a new ticket's rank ('' none), [11] n tickets leaving, then them, then (ticket, score) pairs of
# this node's waiting tickets (their heartbeat: re-added if pruned, deadline extended). Grants every one
# of this node's tickets among the first ranks that can go now; others' tickets keep their places.
ADMIT = COMMON + """
local real = real_ms()
local own = {}
local n = tonumber(ARGV[11])
local i = 12
for _ = 1, n do redis.call('ZREM', Q, ARGV[i]); redis.call('ZREM', QX, ARGV[i]); i = i + 1 end
while i < #ARGV do
  redis.call('ZADD', Q, ARGV[i + 1], ARGV[i]); redis.call('ZADD', QX, real + TTL, ARGV[i])
  own[ARGV[i]] = true
  i = i + 2
end
local newt, news = '', 0
if ARGV[10] ~= '' then
  local seq = redis.call('INCR', SEQ)
  redis.call('PEXPIRE', SEQ, 86400000)
  newt, news = NODE .. '|' .. seq, -tonumber(ARGV[10]) * 1000000000000 + seq
  redis.call('ZADD', Q, news, newt); redis.call('ZADD', QX, real + TTL, newt)
  own[newt] = true
end
prune()
local s = load()
local granted, probe = {}, 0
local reason, untl = blocked(s, s.mu, true)
if reason == nil then
  local room = math.max(1, math.min(s.ml - s.mu, s.dl - s.du, 1000))
  local mu = s.mu
  for k, t in ipairs(redis.call('ZRANGE', Q, 0, room - 1)) do
    reason, untl = blocked(s, mu, k == 1)
    if reason ~= nil then break end
    if own[t] then
      probe = take(s)
      redis.call('ZREM', Q, t); redis.call('ZREM', QX, t)
      granted[#granted + 1] = t
    end
    mu = mu + 1
    if s.kn == 0 then reason, untl = 'probe', -1; break end
  end
  if reason == nil and redis.call('ZCARD', Q) > 0 then reason, untl = 'queued', -1 end
end
redis.call('PEXPIRE', Q, 600000); redis.call('PEXPIRE', QX, 600000)
save(s)
local out = state(s, reason, untl, probe)
out[#out + 1] = newt
out[#out + 1] = news
for _, t in ipairs(granted) do out[#out + 1] = t end
return out
"""

# ARGV[10] learn (1/0), [11..15] minute limit, minute remaining, minute reset, day limit, day remaining
LEARN = COMMON + """
local s = load()
s.kn = 1
if s.pn == NODE or s.pr <= real_ms() then s.pr, s.pn = 0, '' end
if ARGV[10] == '1' then
  local m_limit, m_left, m_reset = int(ARGV[11]), int(ARGV[12]), int(ARGV[13])
  local d_limit, d_left = int(ARGV[14]), int(ARGV[15])
  if m_limit and m_limit > 0 and m_limit < 1000000 then s.lm = m_limit; limits(s) end
  if m_left and m_left >= 0 then
    local reset = m_reset or (s.ms + 60000)
    if math.abs(reset - (s.ms + 60000)) <= 1500 then s.mu = math.max(s.mu, s.ml - m_left)
    elseif reset > NOW and m_left == 0 then s.pu = math.max(s.pu, reset) end
  end
  if d_limit and d_limit > 0 then s.ld = d_limit; limits(s) end
  if d_left and d_left >= 0 then s.du = math.max(s.du, s.dl - math.min(d_left, s.dl)) end
  if m_left or d_left then s.st = 0 end
end
save(s)
return state(s, nil, -1, 0)
"""

# ARGV[10..12] minutely reset, daily reset (when Remaining said 0, else ''), Retry-After seconds,
# [13] pause base s, [14] pause cap s
PAUSE = COMMON + """
local s = load()
s.kn = 1
if s.pn == NODE then s.pr, s.pn = 0, '' end
s.st = s.st + 1
local backoff = math.min(tonumber(ARGV[14]), tonumber(ARGV[13]) * 2 ^ (s.st - 1)) * 1000
local m_reset, d_reset, ra = int(ARGV[10]), int(ARGV[11]), int(ARGV[12])
local untl = nil
if m_reset and m_reset > NOW then untl = m_reset; s.mu = math.max(s.mu, s.ml)
elseif d_reset and d_reset > NOW then untl = d_reset; s.du = math.max(s.du, s.dl) end
if untl == nil then untl = NOW + (ra and ra * 1000 or backoff) end
if s.st > 1 then untl = math.max(untl, NOW + backoff) end
s.pu = math.ceil(math.max(s.pu, untl))
save(s)
return state(s, 'paused', s.pu, 0)
"""

# ARGV[10] the minute (ms) the calls were reserved in, [11] how many were never sent, [12] end the probe
RELEASE = COMMON + """
local s = load()
local n = tonumber(ARGV[11])
if n > 0 and s.ms == tonumber(ARGV[10]) then
  s.mu = math.max(0, s.mu - n)
  s.du = math.max(0, s.du - n)
end
if ARGV[12] == '1' and s.pn == NODE then s.pr, s.pn = 0, '' end
save(s)
return state(s, nil, -1, 0)
"""

# after the server lost its data: what this node knew, merged by maximum. ARGV[10..19] ms, mu, ds, du,
# lm, ld, pu, st, kn, the highest ticket seq it holds. The minute on file counts as spent; the day at
# its count plus two minutes' allowance.
SEED = COMMON + """
local s = load()
local ms, ds, du = tonumber(ARGV[10]), tonumber(ARGV[12]), tonumber(ARGV[13])
if s.lm == nil then s.lm = int(ARGV[14]) end
if s.ld == nil then s.ld = int(ARGV[15]) end
limits(s)
if ms == s.ms then s.mu = math.max(s.mu, s.ml) end
if ds == s.ds then s.du = math.max(s.du, math.min(PD, du + 2 * s.ml)) end
s.pu = math.max(s.pu, tonumber(ARGV[16]))
s.st = math.max(s.st, tonumber(ARGV[17]))
s.kn = math.max(s.kn, tonumber(ARGV[18]))
local seq = tonumber(ARGV[19])
if seq > (tonumber(redis.call('GET', SEQ)) or 0) then redis.call('SET', SEQ, seq, 'PX', 86400000) end
save(s)
return state(s, nil, -1, 0)
"""

# the status page: the state as it is now, written nowhere
PEEK = COMMON + """
local s = load()
return state(s, nil, -1, 0)
"""
