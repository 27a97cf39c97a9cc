-- One failure of a routing target (routing/cooldown.rs), in one round trip.
-- KEYS[1]: its failures in a row; KEYS[2]: its rest, which expires on its own.
-- ARGV: failures that start a rest, seconds of rest, the cooldown channel, the target's id.
-- Returns {1, rest_ms} when this failure started a rest, {0, rest_ms} when the target already
-- rests, {0, 0} otherwise; every change is published for the other instances.
local rest = redis.call('PTTL', KEYS[2])
if rest > 0 then
  return {0, rest}
end
local seconds = tonumber(ARGV[2])
local n = redis.call('INCR', KEYS[1])
-- Failures far apart are not "in a row": the count lapses after a quiet spell.
redis.call('PEXPIRE', KEYS[1], math.max(60000, seconds * 2000))
if n >= tonumber(ARGV[1]) then
  local ms = seconds * 1000
  redis.call('SET', KEYS[2], '1', 'PX', ms)
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], cjson.encode({target = ARGV[4], rest_ms = ms}))
  return {1, ms}
end
redis.call('PUBLISH', ARGV[3], cjson.encode({target = ARGV[4], rest_ms = 0}))
return {0, 0}
