-- One failure of a routing target (routing/cooldown.rs), in one round trip.
-- KEYS[1]: its failures in a row; KEYS[2]: its rest, which expires on its own.
-- ARGV: failures that start a rest, seconds of rest, the cooldown channel, the target's id.
-- Returns {started, rest_ms, now_ms}: started 1 when this failure started a rest, rest_ms the
-- rest left (0: none), now_ms Redis's clock, the one every instance orders failures by. Every
-- change is published for the other instances.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rest = redis.call('PTTL', KEYS[2])
if rest > 0 then
  return {0, rest, now}
end
local seconds = tonumber(ARGV[2])
local n = redis.call('INCR', KEYS[1])
-- Failures far apart are not "in a row": the count lapses after a quiet spell.
redis.call('PEXPIRE', KEYS[1], math.max(60000, seconds * 2000))
if n >= tonumber(ARGV[1]) then
  local ms = seconds * 1000
  redis.call('SET', KEYS[2], '1', 'PX', ms)
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({target = ARGV[4], rest_ms = ms, failed_ms = now}))
  return {1, ms, now}
end
redis.call('PUBLISH', ARGV[3], cjson.encode({target = ARGV[4], rest_ms = 0, failed_ms = now}))
return {0, 0, now}
