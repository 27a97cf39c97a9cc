-- The rate-limit check: counters per sub-window in one Redis hash, see window.rs.
--
-- KEYS[1]: the hash. ARGV: limit, window in µs, slots wanted (1, or a block for a lease),
-- sub-window width in µs. One field per sub-window (its index, floor(time / width)), valued
-- `count:last`: the slots admitted in it and the time of its last admission, in µs.
-- Returns {allowed (0/1), count in the window after this check, reset in µs, retry in µs or
-- -1, slots granted}.
--
-- Numbers go to Redis through string.format('%d'): Lua's default number formatting keeps 14
-- significant digits, which would round microsecond timestamps.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local width = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = string.format('%d', math.floor(now / width))

-- A sub-window counts, all of it, until its last admission leaves the window: none of its
-- requests ever counts for less than the window.
local fields = redis.call('HGETALL', key)
local live, stale = {}, {}
local count, mine = 0, 0
for i = 1, #fields, 2 do
  local n, last = string.match(fields[i + 1], '^(%d+):(%d+)$')
  n, last = tonumber(n), tonumber(last)
  if last == nil or last <= now - window then
    stale[#stale + 1] = fields[i]
  else
    live[#live + 1] = {last, n}
    count = count + n
    if fields[i] == current then
      mine = n
    end
  end
end
if #stale > 0 then
  redis.call('HDEL', key, unpack(stale))
end

if limit <= 0 then
  return {0, count, window, window, 0}
end
if count < limit then
  local granted = math.min(wanted, limit - count)
  redis.call('HSET', key, current, string.format('%d:%d', mine + granted, now))
  -- Gone when this admission leaves the window: an idle key costs nothing.
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  return {1, count + granted, window, -1, granted}
end
-- Refused: the oldest sub-windows leave first, and the request fits once fewer than `limit`
-- remain (more than one sub-window must leave when the limit was lowered since they filled).
table.sort(live, function(a, b) return a[1] < b[1] end)
local retry = -1
local left = count
for _, sub in ipairs(live) do
  left = left - sub[2]
  if left < limit then
    retry = sub[1] + window - now
    break
  end
end
return {0, count, live[#live][1] + window - now, retry, 0}
