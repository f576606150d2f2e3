-- reserve.lua - the reservation: one atomic step on Redis' own clock.
--
-- KEYS[1] round-robin position
-- KEYS[2] next free slot of the global timeline
-- KEYS[3] hash of per-key state: c<i> = key i rests until,
--         s<i> = key i's next free slot (key scope)
-- ARGV[1] number of keys      ARGV[2] interval us
-- ARGV[3] "1" for key scope   ARGV[4] global floor us (key scope)
-- ARGV[5] longest acceptable wait us
-- Times are integer microseconds of Redis time (~1.8e15, exact in Lua's
-- doubles). Walks the keys from the round-robin position, skipping those
-- resting; global scope takes the first usable key, key scope the one
-- whose next slot is earliest (ties: round-robin order). Returns
--   {key, wait, slot}   reserved (and the position moves past key);
--   {-1, wait, until}   every key rests; the first is back at until;
--   {-2, wait, slot}    the slot is further away than allowed: nothing
--                       reserved.
-- Every key written expires: the position a day after its last use, the
-- timeline after its slot, the hash a day after its latest slot or rest.
-- TIME before writes is fine on Redis >= 5 (effects replication).
-- shared/sched_local.c runs the same algorithm on one host's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local iv = tonumber(ARGV[2])
local perkey = ARGV[3] == '1'
local gap = iv
if perkey then gap = tonumber(ARGV[4]) end
local maxw = tonumber(ARGV[5])
local rr = tonumber(redis.call('GET', KEYS[1]) or '0') % n
local f = {}
for i = 0, n - 1 do f[#f + 1] = 'c' .. i; f[#f + 1] = 's' .. i end
local v = redis.call('HMGET', KEYS[3], unpack(f))
local g = 0
if gap > 0 then g = tonumber(redis.call('GET', KEYS[2]) or '0') end
local best, bat, free = -1, 0, -1
for j = 0, n - 1 do
  local i = (rr + j) % n
  local c = tonumber(v[2 * i + 1] or '0')
  if c > now then
    if free < 0 or c < free then free = c end
  else
    local at = now
    if g > at then at = g end
    if perkey then
      local ks = tonumber(v[2 * i + 2] or '0')
      if ks > at then at = ks end
    end
    if best < 0 or at < bat then best, bat = i, at end
    if not perkey then break end
  end
end
if best < 0 then return {-1, free - now, free} end
if bat - now > maxw then return {-2, bat - now, bat} end
redis.call('SET', KEYS[1], best + 1, 'PX', 86400000)
if gap > 0 then
  redis.call('SET', KEYS[2], string.format('%d', bat + gap), 'PX',
             math.floor((bat + gap - now) / 1000) + 1000)
end
if perkey and iv > 0 then
  redis.call('HSET', KEYS[3], 's' .. best, string.format('%d', bat + iv))
  -- Outlive the slot just written by a day; never shorten (rests).
  local keep = math.floor((bat + iv - now) / 1000) + 86400000
  if redis.call('PTTL', KEYS[3]) < keep then
    redis.call('PEXPIRE', KEYS[3], keep)
  end
end
return {best, bat - now, bat}
