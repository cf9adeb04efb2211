-- Undo one admission whose reply the limiter never got (a timeout or a lost connection after the
-- call was sent), or make sure it can never charge.
--
-- The undo key holds either the marker admit.lua wrote ("<tokens> <start> <start> ...", window starts
-- in KEYS order) or a tombstone ("x") written here. Both expire after the undo ttl, so none pile up.
--
-- Ordering cases (lease ids are unique per admission, so one key names one admission):
-- 1. admit ran and admitted, then cancel: the marker is found; each window whose start still equals
--    the recorded one gives back its charge (1 request, or the reserved tokens); a window left at 0
--    is deleted, as if the admission had never happened; the lease and the marker are removed.
-- 2. cancel runs first (it overtook the admission on another pooled connection, or the admission is
--    still on its way): no marker, so a tombstone is written; admit.lua's SET NX then fails and it
--    returns without charging anything.
-- 3. admit ran and refused, or never reached Redis: no marker; the tombstone charges nothing and
--    expires.
-- 4. the admission was settled (settle.lua deleted the marker): as 3, nothing is given back twice.
-- 5. cancel retried after its own reply was lost: the first call undid and deleted the marker, or
--    wrote the tombstone; the second finds no marker, or the tombstone, and changes no count.
-- 6. a window expired and restarted since the admission: its new count belongs to later requests and
--    is not touched (as in settle.lua).
-- Not covered: an admission delayed longer than the undo ttl arrives after its tombstone expired and
-- charges; its lease, never heartbeated, still expires after the lease ttl.
--
-- KEYS[1]      concurrency lease set
-- KEYS[2]      undo key of the admission
-- KEYS[3..]    window hashes, request windows first, as admit.lua got them
-- ARGV[1]      number of request windows
-- ARGV[2]      lease id
-- ARGV[3]      tombstone ttl ms
--
-- Returns 1 when an applied admission was undone, 0 when there was none to undo.
local marker = redis.call('GET', KEYS[2])
if not marker then
  redis.call('SET', KEYS[2], 'x', 'PX', ARGV[3])
  return 0
end
if marker == 'x' then
  return 0
end
local nreq = tonumber(ARGV[1])
local tokens, i = 0, 0
for field in string.gmatch(marker, '%S+') do
  if i == 0 then
    tokens = tonumber(field)
  elseif KEYS[i + 2] then
    local key = KEYS[i + 2]
    local cost = tokens
    if i <= nreq then cost = 1 end
    if tonumber(redis.call('HGET', key, 's')) == tonumber(field) then
      if redis.call('HINCRBY', key, 'n', -cost) <= 0 then
        redis.call('DEL', key)
      end
    end
  end
  i = i + 1
end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
