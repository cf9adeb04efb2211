-- Settle one admission: free its concurrency lease, reconcile its token reservation, and delete its
-- undo marker, so a settled admission can never be undone as well.
-- The token delta (used - reserved) is applied only to the windows the reservation was taken in:
-- if a window has since expired and restarted, its new count is not touched.
--
-- KEYS[1]      concurrency lease set
-- KEYS[2]      undo marker of the admission
-- KEYS[3..]    token window hashes
-- ARGV[1]      lease id ('' = no lease)
-- ARGV[2]      token delta, may be negative (a refund)
-- ARGV[3..]    window start recorded at admission, one per token window
if ARGV[1] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('DEL', KEYS[2])
local delta = tonumber(ARGV[2])
if delta ~= 0 then
  for i = 3, #KEYS do
    local s = tonumber(redis.call('HGET', KEYS[i], 's'))
    if s ~= nil and s == tonumber(ARGV[i]) then
      if redis.call('HINCRBY', KEYS[i], 'n', delta) < 0 then
        redis.call('HSET', KEYS[i], 'n', 0)
      end
    end
  end
end
return 1
