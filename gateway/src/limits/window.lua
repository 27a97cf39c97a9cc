-- The rate-limit check: counters per sub-window in one Redis hash, see window.rs.
--
-- KEYS[1]: the hash. ARGV: limit, window in µs, slots wanted (1, or a block for a lease),
-- sub-window width in µs. Fields: for each sub-window present, by its index i (floor(time /
-- width)), `i` = the slots admitted in it and `i:t` = the time of its last admission, in µs;
-- `n` = the slots of all sub-windows present, `o` = the oldest index not yet dropped, `t` =
-- the time of the newest admission, `w` = the width the indices were made with. A check
-- reads a handful of fields, not all of them.
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
local current = math.floor(now / width)
local span = math.ceil(window / width)
local function int(n)
  return string.format('%d', n)
end

local here = int(current)
local head = redis.call('HMGET', key, 'n', 'o', 'w', here)
local count, oldest = tonumber(head[1]) or 0, tonumber(head[2])
local mine = tonumber(head[4]) or 0
if oldest ~= nil and (tonumber(head[3]) ~= width or oldest < current - 2 * span - 2) then
  -- Written under another window (its indices mean other times), or older than a key that
  -- has not expired can be: start afresh.
  redis.call('DEL', key)
  count, oldest, mine = 0, nil, 0
end

-- A sub-window counts, all of it, until its last admission leaves the window: none of its
-- requests counts for less than the window. Only the sub-windows that began before the
-- window can have left it: drop those, from the oldest, stopping at one still counting.
local start, dropped = oldest, {}
while oldest ~= nil and oldest * width <= now - window do
  local field = int(oldest)
  local sub = redis.call('HMGET', key, field, field .. ':t')
  local n, last = tonumber(sub[1]), tonumber(sub[2])
  if n ~= nil and last ~= nil and last > now - window then
    break
  end
  if n ~= nil then
    count = count - n
    dropped[#dropped + 1] = field
    dropped[#dropped + 1] = field .. ':t'
  end
  oldest = oldest + 1
end
if #dropped > 0 then
  redis.call('HDEL', key, unpack(dropped))
end

local granted = 0
if limit > 0 and count < limit then
  granted = math.min(wanted, limit - count)
  count = count + granted
  redis.call('HSET', key, here, int(mine + granted), here .. ':t', int(now), 't', int(now),
    'n', int(count), 'o', int(oldest or current), 'w', ARGV[4])
  -- Gone when this admission leaves the window: an idle key costs nothing.
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  return {1, count, window, -1, granted}
end
if oldest ~= start then
  redis.call('HSET', key, 'n', int(count), 'o', int(oldest))
end
if limit <= 0 then
  return {0, count, window, window, 0}
end
-- Refused: the oldest sub-windows leave first, and the request fits once fewer than `limit`
-- remain (more than one must leave when the limit was lowered since they filled).
local retry, left, index = -1, count, oldest
while index ~= nil and index <= current do
  local field = int(index)
  local sub = redis.call('HMGET', key, field, field .. ':t')
  if sub[1] then
    left = left - tonumber(sub[1])
    if left < limit then
      retry = tonumber(sub[2]) + window - now
      break
    end
  end
  index = index + 1
end
local newest = tonumber(redis.call('HGET', key, 't'))
return {0, count, newest + window - now, retry, 0}
