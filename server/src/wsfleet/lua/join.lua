-- Read what a joining connection needs, atomically: the room's epoch, its latest
-- offset and, when the client can resume, the messages after its last offset.
--
-- KEYS[1] the room's history stream     KEYS[2] the room's epoch key
-- ARGV[1] history ttl in ms             ARGV[2] a fresh epoch, used when there is none
-- ARGV[3] the client's `since` or ''    ARGV[4] the client's `epoch` or ''
-- ARGV[5] history size
--
-- Returns {epoch, latest offset or false, recovered 0/1, entries or nothing}.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function at_or_before(a, b)
  local a_ms, a_seq = parse(a)
  local b_ms, b_seq = parse(b)
  return a_ms < b_ms or (a_ms == b_ms and a_seq <= b_seq)
end

-- Joining starts the room's life when it has none, so the epoch a client sees on
-- an empty room is still the one in force when its first messages arrive.
redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[1])
local epoch = redis.call('GET', KEYS[2])
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local latest = false
if last[1] then
  latest = last[1][1]
end

local since = ARGV[3]
if since == '' or ARGV[4] ~= epoch then
  return {epoch, latest, 0}
end
if not latest then
  return {epoch, latest, 0}
end
if not at_or_before(since, latest) then
  return {epoch, latest, 0}
end
if since == latest then
  return {epoch, latest, 1}
end
-- Trimming removes the oldest entries first: while `since` itself is stored, every
-- entry after it is stored too (publish.lua keeps one extra entry for this).
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if not first[1] or not at_or_before(first[1][1], since) then
  return {epoch, latest, 0}
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. since, '+', 'COUNT', ARGV[5])
return {epoch, latest, 1, entries}
