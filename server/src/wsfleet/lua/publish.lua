-- Store one message in a room's history and publish it in one atomic step, so that
-- history and live delivery agree on offsets and order.
--
-- KEYS[1] the room's history stream     KEYS[2] the room's epoch key
-- ARGV[1] pub/sub channel               ARGV[2] room name (no JSON escaping needed)
-- ARGV[3] sender, encoded as JSON       ARGV[4] content, encoded as JSON
-- ARGV[5] history size (0: no history)  ARGV[6] history ttl in ms (0: no history)
-- ARGV[7] a fresh epoch, used only when the room has none yet
--
-- Returns the new offset. The published payload is "<offset> <message frame>" so
-- that instances relay the frame bytes as they are and read the offset without
-- parsing JSON.
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
  redis.call('SET', KEYS[2], ARGV[7], 'NX', 'PX', ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  -- Without history an empty stream still hands out ordered offsets.
  offset = redis.call('XADD', KEYS[1], 'MAXLEN', 0, '*', 'f', '', 'c', '')
  redis.call('PEXPIRE', KEYS[1], 86400000)
end
local ts = string.match(offset, '^(%d+)')
redis.call('PUBLISH', ARGV[1], offset .. ' {"type":"message","room":"' .. ARGV[2]
  .. '","offset":"' .. offset .. '","from":' .. ARGV[3] .. ',"content":' .. ARGV[4]
  .. ',"ts":' .. ts .. '}')
return offset
