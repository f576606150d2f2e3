-- release.lua - gives back a slot nobody will use (its client left while
-- queued), when that is still possible: only if it is the last one handed
-- out on its timeline, so no later reservation moves.
--
-- KEYS as reserve.lua's.
-- ARGV[1] key index   ARGV[2] the slot us   ARGV[3] interval us
-- ARGV[4] "1" for key scope   ARGV[5] gap us of the global timeline
-- (the interval, or the floor in key scope)
-- Returns 1 if released, 0 otherwise.
local at = tonumber(ARGV[2])
local iv = tonumber(ARGV[3])
local gap = tonumber(ARGV[5])
local done = 0
if ARGV[4] == '1' and iv > 0 then
  local f = 's' .. ARGV[1]
  if tonumber(redis.call('HGET', KEYS[3], f) or '0') == at + iv then
    redis.call('HSET', KEYS[3], f, string.format('%d', at))
    done = 1
  end
end
if gap > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') == at + gap then
  redis.call('SET', KEYS[2], string.format('%d', at), 'KEEPTTL')
  done = 1
end
return done
