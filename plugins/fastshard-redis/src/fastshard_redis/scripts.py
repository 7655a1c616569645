"""Lua scripts run inside Redis: each is one atomic step of the backend contract.

Conventions shared by the scripts:

* ``KEYS`` always share one hash tag (see :mod:`fastshard_redis.keys`), so each script is
  valid on Redis Cluster.
* Writes that are not naturally idempotent (XADD with an automatic id, HINCRBY, INCRBY, DEL)
  take a request id and a de-duplication key: the first run stores its result there (with a
  TTL) and a retried run returns the stored result instead of applying the write twice.
  That is what lets the Python side retry them after a connection dropped mid-call.
  A single publish is the exception: its first attempt is a plain ``XADD`` carrying the
  request id in field ``r`` (see :mod:`fastshard_redis.single`), and only a retry runs
  :data:`PUBLISH_RETRY`, which looks for that id before adding the entry.
* A missing queue is reported as an error starting with ``NOQUEUE``.
* Numbers that may exceed 2**53 are returned as strings (Lua numbers are doubles).
"""

from __future__ import annotations

# KEYS: stream, dedup. ARGV: dedup_ttl_s, epoch, headers_json ('' = none), k1, v1, k2, v2, ...
# Returns the new stream ids joined by ','.
PUBLISH = """
local done = redis.call('GET', KEYS[2])
if done then return done end
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
local ids = {}
local epoch, hdr = ARGV[2], ARGV[3]
for i = 4, #ARGV, 2 do
  if hdr == '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'v', ARGV[i + 1], 'e', epoch)
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'v', ARGV[i + 1], 'e', epoch,
                               'h', hdr)
  end
end
local joined = table.concat(ids, ',')
redis.call('SET', KEYS[2], joined, 'EX', ARGV[1])
return joined
"""

# PUBLISH for Router.publish_many's per-queue groups, each message with its own headers
# (its fs-seq/fs-hash stamp). KEYS: stream, dedup. ARGV: dedup_ttl_s, epoch, then
# k1, v1, headers_json1, k2, v2, headers_json2, ... Returns the new stream ids joined by ','.
PUBLISH_STAMPED = """
local done = redis.call('GET', KEYS[2])
if done then return done end
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
local ids = {}
local epoch = ARGV[2]
for i = 3, #ARGV, 3 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'k', ARGV[i], 'v', ARGV[i + 1], 'e', epoch,
                             'h', ARGV[i + 2])
end
local joined = table.concat(ids, ',')
redis.call('SET', KEYS[2], joined, 'EX', ARGV[1])
return joined
"""

# KEYS: stream. ARGV: group, consumer, min_idle_ms, count.
# Returns a flat list id, fields, delivery_count, id, fields, delivery_count, ...: first the
# messages whose delivery was not acked within min_idle_ms (claimed for this consumer,
# oldest id first), then never-delivered ones. Creates the group at the queue's start.
CONSUME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
local group, consumer, idle, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
local taken = 0
local cursor = '0-0'
-- A bounded number of XAUTOCLAIM rounds: each scans at most 10*COUNT pending entries.
for _ = 1, 20 do
  local r = redis.pcall('XAUTOCLAIM', KEYS[1], group, consumer, idle, cursor,
                        'COUNT', count - taken)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then
      redis.call('XGROUP', 'CREATE', KEYS[1], group, '0')
      break
    end
    return r
  end
  for _, entry in ipairs(r[2]) do
    if entry and entry[2] then  -- Redis 6.2 lists deleted entries with nil fields
      local p = redis.call('XPENDING', KEYS[1], group, entry[1], entry[1], 1)
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      out[#out + 1] = p[1] and p[1][4] or 1
      taken = taken + 1
    end
  end
  cursor = r[1]
  if cursor == '0-0' or taken >= count then break end
end
if taken < count then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - taken,
                       'STREAMS', KEYS[1], '>')
  if r then
    for _, entry in ipairs(r[1][2]) do
      out[#out + 1] = entry[1]
      out[#out + 1] = entry[2]
      out[#out + 1] = 1
    end
  end
end
return out
"""

# Stream id helpers shared by ACK (trimming) and PUBLISH_RETRY below.
_ID_HELPERS = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local function after(id)
  local ms, seq = parse(id)
  return string.format('%.0f-%.0f', ms, seq + 1)
end
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- the request id of an entry written by a single publish: its last field is 'r'
local function rid_of(flat)
  if flat[#flat - 1] == 'r' then return flat[#flat] end
  return nil
end
"""

# A single publish stores its request id in the entry (field ``r``, last). Once an entry is
# trimmed (acked by every group) a retry could no longer find it there, so ACK first copies
# ``rid -> id`` of the entries it trims that are younger than the de-duplication window into
# hashes ``<KEYS[2]>:<bucket>``, one per window-long bucket of the entry's id time, each
# expiring a window after its bucket ends. KEYS[2] carries the stream's hash tag.
_REMEMBER_TRIMMED = """
local function remember_trimmed(stream, prefix, below, window)
  local from = string.format('%.0f', now_ms() - window)
  while true do
    local batch = redis.call('XRANGE', stream, from, '(' .. below, 'COUNT', 500)
    local by_bucket = {}
    for _, e in ipairs(batch) do
      local rid = rid_of(e[2])
      if rid then
        local b = math.floor(parse(e[1]) / window)
        local t = by_bucket[b]
        if not t then t = {}; by_bucket[b] = t end
        t[#t + 1] = rid
        t[#t + 1] = e[1]
      end
    end
    for b, flat in pairs(by_bucket) do
      local key = prefix .. ':' .. string.format('%.0f', b)
      redis.call('HSET', key, unpack(flat))
      redis.call('PEXPIREAT', key, string.format('%.0f', (b + 2) * window))
    end
    if #batch < 500 then return end
    from = '(' .. batch[#batch][1]
  end
end
"""

# KEYS: stream, trimmed-requests prefix. ARGV: group, window_ms, id1, id2, ... Returns how
# many ids were pending and now acked. Then trims the stream below the oldest message some
# group still needs (its oldest pending id, or the one after its last delivered id), like the
# memory backend's log, remembering the request ids of young single publishes it trims.
ACK = (
    _ID_HELPERS
    + _REMEMBER_TRIMMED
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
local acked = 0
local chunk = {}
for i = 3, #ARGV do
  chunk[#chunk + 1] = ARGV[i]
  if #chunk == 500 or i == #ARGV then
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
    chunk = {}
  end
end
local low = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = fields(g)
  local need
  if tonumber(info['pending']) > 0 then
    need = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    need = after(info['last-delivered-id'])
  end
  if low == nil or less(need, low) then low = need end
end
if low then
  remember_trimmed(KEYS[1], KEYS[2], low, tonumber(ARGV[2]))
  redis.call('XTRIM', KEYS[1], 'MINID', low)
end
return acked
"""
)

# KEYS: stream, trimmed-requests prefix. ARGV: rid, lookback_ms, window_ms, then the entry's
# field/value pairs as the first attempt sent them (k, v, e, [h,] r).
# The retry of a single publish whose first attempt may or may not have run (its reply was
# lost; the caller made sure that attempt can no longer run later). Its entry, if any, has an
# id no older than the server's clock minus lookback_ms (the time since the first attempt was
# sent, plus a margin), so it is found either in that tail of the stream or, if acked and
# trimmed since, among the remembered request ids. Returns its id, or adds the entry now.
PUBLISH_RETRY = (
    _ID_HELPERS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
local rid, window = ARGV[1], tonumber(ARGV[3])
local now = now_ms()
local low = now - tonumber(ARGV[2])
for b = math.floor(low / window), math.floor(now / window) do
  local id = redis.call('HGET', KEYS[2] .. ':' .. string.format('%.0f', b), rid)
  if id then return id end
end
local high = '+'
while true do
  local batch = redis.call('XREVRANGE', KEYS[1], high, string.format('%.0f', low), 'COUNT', 200)
  for _, e in ipairs(batch) do
    if rid_of(e[2]) == rid then return e[1] end
  end
  if #batch < 200 then break end
  high = '(' .. batch[#batch][1]
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
"""
)

# KEYS: stream. ARGV: group. Returns pending + lag of the group, or the queue length when
# the group has not read yet.
BACKLOG = (
    _ID_HELPERS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('NOQUEUE') end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = fields(g)
  if info['name'] == ARGV[1] then
    local lag = info['lag']
    if not lag then  -- unknown after deletions (or Redis < 7): count the unread tail
      lag = #redis.call('XRANGE', KEYS[1], '(' .. info['last-delivered-id'], '+')
    end
    return tonumber(info['pending']) + lag
  end
end
return redis.call('XLEN', KEYS[1])
"""
)

# KEYS: kv hash, dedup. ARGV: value, dedup_ttl_s. Returns the new version.
KV_SET = """
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'value', ARGV[1])
redis.call('SET', KEYS[2], v, 'EX', ARGV[2])
return v
"""

# KEYS: kv hash, dedup. ARGV: value, expected_version, dedup_ttl_s.
# Returns the new version, or nil when the current version is not the expected one.
KV_CAS = """
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local cur = redis.call('HGET', KEYS[1], 'version') or '0'
if cur ~= ARGV[2] then return false end
local v = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', v)
redis.call('SET', KEYS[2], v, 'EX', ARGV[3])
return v
"""

# KEYS: kv hash, dedup. ARGV: dedup_ttl_s. Returns 1 if the key existed.
KV_DELETE = """
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local n = redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], n, 'EX', ARGV[1])
return n
"""

# KEYS: counter, dedup. ARGV: delta, dedup_ttl_s. Returns the new value as a string.
COUNTER_ADD = """
local done = redis.call('GET', KEYS[2])
if done then return done end
redis.call('INCRBY', KEYS[1], ARGV[1])
local v = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[2], v, 'EX', ARGV[2])
return v
"""

# Leases keep {owner, token, exp} in a hash, exp in microseconds of the server's clock
# (TIME), so expiry does not depend on the clients' clocks. owner '' means released.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%.0f', x) end
"""

# KEYS: lease, seq. ARGV: owner, ttl_us. Returns the token (string) or nil if held by another.
# Idempotent: a retry by the same owner finds it holding and gets the same token.
LEASE_ACQUIRE = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp')
if h[1] and h[1] ~= '' and tonumber(h[3]) > now then
  if h[1] ~= ARGV[1] then return false end
  redis.call('HSET', KEYS[1], 'exp', us(now + tonumber(ARGV[2])))
  return h[2]
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'exp', us(now + tonumber(ARGV[2])))
return tostring(token)
"""
)

# KEYS: lease. ARGV: owner, token, ttl_us. Returns 1 if renewed. A matching owner and token
# means nobody took the lease over (a takeover changes the token), even if it lapsed.
LEASE_RENEW = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
if h[1] ~= ARGV[1] or h[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'exp', us(now + tonumber(ARGV[3])))
return 1
"""
)

# KEYS: lease, dedup. ARGV: owner, token, dedup_ttl_s. Returns 1 if released.
LEASE_RELEASE = """
local done = redis.call('GET', KEYS[2])
if done then return tonumber(done) end
local h = redis.call('HMGET', KEYS[1], 'owner', 'token')
local n = 0
if h[1] == ARGV[1] and h[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'owner', '', 'exp', '0')
  n = 1
end
redis.call('SET', KEYS[2], n, 'EX', ARGV[3])
return n
"""

# KEYS: lease. Returns {owner, token, remaining_us} of an unexpired holder, or nil.
LEASE_INFO = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp')
if not h[1] or h[1] == '' or tonumber(h[3]) <= now then return false end
return {h[1], h[2], us(tonumber(h[3]) - now)}
"""
)
