-- rest.lua - rests a key: every worker on every host skips it until then.
--
-- KEYS[1] the per-key hash (reserve.lua's KEYS[3])
-- ARGV[1] key index   ARGV[2] duration us
-- ARGV[3] "1" if the key is disabled (a 401/403), else it rests
-- c<i> is when the key can be used again (reserve.lua reads it);
-- d<i>, when a disablement ends (the inspection tells disabled from
-- resting by it). Only ever lengthens either. Returns c<i>'s end, in
-- Redis time (us).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = 'c' .. ARGV[1]
local till = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], f) or '0')
if cur > till then till = cur end
local set = {f, string.format('%d', till)}
if ARGV[3] == '1' then
  local dtill = now + tonumber(ARGV[2])
  local dcur = tonumber(redis.call('HGET', KEYS[1], 'd' .. ARGV[1]) or '0')
  if dcur > dtill then dtill = dcur end
  set[3] = 'd' .. ARGV[1]
  set[4] = string.format('%d', dtill)
end
redis.call('HSET', KEYS[1], unpack(set))
local keep = math.floor((till - now) / 1000) + 86400000
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return till
