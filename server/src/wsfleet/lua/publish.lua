-- Store one message in a room's history and publish it in one atomic step, so that
-- history and live delivery agree on offsets and order.
--
-- Idempotent: KEYS[3] is unique to one publish call; it records the offset, and a
-- second run of the same call (a retry after a lost reply) returns that offset
-- without storing or publishing anything again.
--
-- KEYS[1] the room's history stream     KEYS[2] the room's epoch key
-- KEYS[3] this call's token key
-- ARGV[1] pub/sub channel               ARGV[2] room name (no JSON escaping needed)
-- ARGV[3] sender, encoded as JSON       ARGV[4] content, encoded as JSON
-- ARGV[5] history size (0: no history)  ARGV[6] history ttl in ms (0: no history)
-- ARGV[7] a fresh epoch, used only when the room has none yet
-- ARGV[8] how long the token key lives, in ms
-- ARGV[9] PUBLISH (default) or SPUBLISH (Redis Cluster: sharded pub/sub, the channel
--         shares the room's hash slot)
--
-- Returns the new offset. The published payload is "<offset> <message frame>" so
-- that instances relay the frame bytes as they are and read the offset without
-- parsing JSON.
local done = redis.call('GET', KEYS[3])
if done then
  -- A write, so that a WAIT after this retry covers the replication of the first run.
  redis.call('PEXPIRE', KEYS[3], ARGV[8])
  return done
end
local size = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local offset
if size > 0 and ttl > 0 then
  -- One entry more than the history size is kept: while the entry a client last saw
  -- is still stored, everything after it is too, which makes `recovered` exact.
  offset = redis.call('XADD', KEYS[1], 'MAXLEN', size + 1, '*', 'f', ARGV[3], 'c', ARGV[4])
  local oldest_ms = tonumber(string.match(offset, '^(%d+)')) - ttl
  if oldest_ms > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-0', oldest_ms))
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
  -- A lost history (restart, flush, expiry) loses this key too: a new life, a new epoch.
  -- (One command when the epoch exists, as it does for every publish but a life's first.)
  if redis.call('PEXPIRE', KEYS[2], ttl) == 0 then
    redis.call('SET', KEYS[2], ARGV[7], 'PX', ttl)
  end
else
  -- Without history an empty stream still hands out ordered offsets.
  offset = redis.call('XADD', KEYS[1], 'MAXLEN', 0, '*', 'f', '', 'c', '')
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
local ts = string.match(offset, '^(%d+)')
redis.call(ARGV[9] or 'PUBLISH', ARGV[1], offset .. ' {"type":"message","room":"' .. ARGV[2]
  .. '","offset":"' .. offset .. '","from":' .. ARGV[3] .. ',"content":' .. ARGV[4]
  .. ',"ts":' .. ts .. '}')
redis.call('SET', KEYS[3], offset, 'PX', ARGV[8])
return offset
