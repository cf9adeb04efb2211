-- Atomic admission: request windows, token windows and a concurrency lease, all or nothing.
-- Nothing is written unless every check passes, so a refused request leaves no partial charge.
-- Time is Redis TIME, never a replica's clock.
-- An admission also leaves an undo marker (window starts and tokens reserved), so cancel.lua can undo
-- it exactly if its reply is lost; settle.lua deletes it. See cancel.lua for the ordering cases.
--
-- KEYS[1]        concurrency lease set (sorted set: lease id -> expiry, ms)
-- KEYS[2]        undo key of this admission: its marker, or a tombstone written by cancel.lua
-- KEYS[3..]      window hashes (n = count in the window, s = window start ms); request windows first
-- ARGV[1]        number of request windows
-- ARGV[2]        tokens reserved in each token window
-- ARGV[3]        concurrency limit (0 = none)
-- ARGV[4]        lease id (one per admission, also with no concurrency limit)
-- ARGV[5]        lease ttl ms
-- ARGV[6]        undo marker ttl ms
-- ARGV[7], ARGV[8], ...  limit, length ms of each window, in KEYS order
--
-- Returns {admitted, failed (0 none, 1 requests, 2 tokens, 3 concurrency), retry ms, in flight,
--          then remaining, reset ms, window start for each window},
--      or {0, 4} when cancel.lua tombstoned this admission first (nothing charged).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nreq = tonumber(ARGV[1])
local tokens = tonumber(ARGV[2])
local conc_limit = tonumber(ARGV[3])
local nwin = #KEYS - 2

local counts, starts, fresh, costs = {}, {}, {}, {}
local failed, retry = 0, 0
for i = 1, nwin do
  local limit = tonumber(ARGV[5 + 2 * i])
  local length = tonumber(ARGV[6 + 2 * i])
  local cost = tokens
  if i <= nreq then cost = 1 end
  local h = redis.call('HMGET', KEYS[i + 2], 'n', 's')
  local n, s = tonumber(h[1]) or 0, tonumber(h[2])
  fresh[i] = false
  if s == nil or now >= s + length then
    n, s, fresh[i] = 0, now, true
  end
  counts[i], starts[i], costs[i] = n, s, cost
  if n + cost > limit or n >= limit then
    local kind = 2
    if i <= nreq then kind = 1 end
    if failed == 0 or kind < failed then failed = kind end
    -- every failing window must reset before a retry can pass
    retry = math.max(retry, s + length - now)
  end
end

local in_flight = 0
if conc_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  in_flight = redis.call('ZCARD', KEYS[1])
  if in_flight >= conc_limit and failed == 0 then failed = 3 end
end

local out = {0, failed, retry, in_flight}
if failed == 0 then
  -- one command both writes the marker and checks for a tombstone (NX): a cancel that overtook this
  -- admission makes it charge nothing
  if not redis.call('SET', KEYS[2], tokens .. ' ' .. table.concat(starts, ' '), 'NX', 'PX', ARGV[6]) then
    return {0, 4}
  end
  out[1] = 1
  for i = 1, nwin do
    local key = KEYS[i + 2]
    if fresh[i] then
      redis.call('HSET', key, 'n', costs[i], 's', starts[i])
      redis.call('PEXPIRE', key, tonumber(ARGV[6 + 2 * i]))
    else
      redis.call('HINCRBY', key, 'n', costs[i])
    end
    counts[i] = counts[i] + costs[i]
  end
  if conc_limit > 0 then
    local ttl = tonumber(ARGV[5])
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[4])
    if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
    out[4] = in_flight + 1
  end
end
for i = 1, nwin do
  local limit = tonumber(ARGV[5 + 2 * i])
  local length = tonumber(ARGV[6 + 2 * i])
  out[#out + 1] = math.max(limit - counts[i], 0)
  out[#out + 1] = starts[i] + length - now
  out[#out + 1] = starts[i]
end
return out
