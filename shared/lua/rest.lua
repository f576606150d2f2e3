-- rest.lua - rests a key: every worker on every host skips it until then.
--
-- KEYS[1] the per-key hash (reserve.lua's KEYS[3])
-- ARGV[1] key index   ARGV[2] duration us
-- Only ever lengthens a rest. Returns its end, in Redis time (us).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local f = 'c' .. ARGV[1]
local till = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], f) or '0')
if cur > till then till = cur end
redis.call('HSET', KEYS[1], f, string.format('%d', till))
local keep = math.floor((till - now) / 1000) + 86400000
if redis.call('PTTL', KEYS[1]) < keep then
  redis.call('PEXPIRE', KEYS[1], keep)
end
return till
