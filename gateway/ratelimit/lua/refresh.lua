-- Heartbeat the leases a live replica holds; purge leases whose holder stopped refreshing.
-- A lease that already expired is not brought back (ZADD XX).
--
-- KEYS[1]      concurrency lease set
-- ARGV[1]      lease ttl ms
-- ARGV[2..]    lease ids held by this replica
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
