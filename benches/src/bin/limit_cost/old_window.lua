-- The rate-limit script before issue 15 (a sorted set of every admitted request), kept as the
-- baseline of `wrapx-limit-cost`. Copied from gateway/src/limits/window.rs at 57789a7.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
local count = redis.call('ZCARD', key)
if limit <= 0 then
  return {0, count, window, window, 0}
end
local allowed = 0
local granted = 0
if count < limit then
  granted = math.min(tonumber(ARGV[4]), limit - count)
  local score = string.format('%d', now)
  local members = {}
  for i = 1, granted do
    members[#members + 1] = score
    members[#members + 1] = ARGV[3] .. ':' .. i
  end
  redis.call('ZADD', key, unpack(members))
  count = count + granted
  allowed = 1
end
local retry = -1
if allowed == 0 then
  -- The member whose expiry brings the count below the limit (the oldest one, unless the
  -- limit was lowered since the set filled).
  local entry = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  retry = tonumber(entry[2]) + window - now
end
local reset = 0
if count > 0 then
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  reset = tonumber(newest[2]) + window - now
  redis.call('PEXPIRE', key, math.max(1, math.ceil(reset / 1000)))
end
return {allowed, count, reset, retry, granted}
