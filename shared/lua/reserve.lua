-- reserve.lua - the reservation: one atomic step on Redis' own clock.
--
-- KEYS[1] round-robin position
-- KEYS[2] the global timeline: a sorted set of booked slots (member and
--         score: the slot, us)
-- KEYS[3] hash of per-key state: c<i> = key i rests (disabled) until
-- KEYS[4] the per-key timelines (key scope): a sorted set, member
--         "<i>:<slot>", score the slot
-- KEYS[5..] the budgets of this request's model, one hash per
--         organisation (budget.lua describes the fields)
-- ARGV[1] number of keys      ARGV[2] interval us (per key in key scope)
-- ARGV[3] "1" for key scope   ARGV[4] global floor us (key scope)
-- ARGV[5] longest acceptable wait us
-- ARGV[6] each key's organisation, "0,0,1" (KEYS[5 + org])
-- ARGV[7] the request's token estimate
-- ARGV[8] declared limits, six numbers in budget order ("0" none)
-- ARGV[9] how long a probe may hold an organisation, us
-- ARGV[10] how long to wait before asking again while a probe runs, us
-- With a client's limits (ARGV[11..16] given), the last two KEYS are the
-- client's:
-- KEYS[#KEYS - 1] its rate bucket: a hash, field e its empty time (us)
-- KEYS[#KEYS] its seats: a sorted set, member a request's seat, score
--         the end of the seat's lease (us)
-- ARGV[11] the client's requests per window (0: none)
-- ARGV[12] that window, us
-- ARGV[13] the client's requests in flight at once (0: none)
-- ARGV[14] the request's seat (unique per request, not per attempt)
-- ARGV[15] the attempt, 0 the first   ARGV[16] a seat's lease, us
--
-- Times are integer microseconds of Redis time (~1.8e15, exact in Lua's
-- doubles). For each key not disabled, the request is ready when its
-- organisation's budgets for the model admit it (every bucket holds its
-- charge: 1 request, the token estimate), then placed at the first moment
-- of the timelines at least one interval from every booked slot: a
-- request that waits for a budget books the moment it will really be sent
-- and holds nobody back. The key whose slot comes first wins (ties:
-- round-robin order). An organisation whose limits are unknown (no answer
-- seen, none declared) takes one request, the probe, and the others wait
-- for its answer. Returns
--   {key, wait, slot, why, probe, cq, ct, rt, first}  reserved: budgets
--        charged, slot booked, the position moved past key; why says what
--        set the slot (below); cq, ct, rt: the organisation's counters
--        after this charge, which the settlement uses to allow for
--        requests in flight; first: 1 if no other request of the budget
--        was out (field ot 0);
--   {-1, wait, until, why}  no key can take it within the longest wait:
--        every one is disabled or out of budget until until (why: the
--        first one's reason);
--   {-2, wait, slot, 6}     the timelines are full that far ahead;
--   {-3, wait, 0, why}      ask again after wait: a probe is out (why
--        9), or the budget why is short of tokens that requests still
--        out (field ot) may give back early: such a wait is not booked
--        but asked again a quarter of the way there (4 to 40 polls);
--   {-4, wait, until, why}  over the client's limit, nothing booked or
--        charged: why 10, its bucket lacks a request until until; why 11,
--        it has that many requests in flight (asked again in 1 s).
-- The client's limits are checked before anything else is read or
-- written. Its bucket (capacity ARGV[11], refilling that much per
-- ARGV[12], the budgets' representation) is charged 1 only by a first
-- attempt that books a slot (not by a poll, a refusal or a retry). A
-- request holds a seat from its first reservation (a poll included) to
-- its end (sched_client_done's ZREM), or until its lease ends (a crashed
-- worker's), renewed by each call; one that is refused (-1, -2) before
-- it had a seat takes none. A seat already held counts once.
-- why: -1 nothing (sent at once); 0..5 the budget (budget order:
-- requests-minute, tokens-minute, requests-hour, tokens-hour,
-- requests-day, tokens-day); 6 the spacing; 7 a disabled key; 8 a rest
-- after a 429 that named no limit; 9 a probe; 10, 11 the client's limits.
-- Every key written expires. TIME before writes is fine on Redis >= 5.
-- shared/sched_local.c runs the same algorithm on one host's clock.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local iv = tonumber(ARGV[2])
local perkey = ARGV[3] == '1'
local gap = iv
if perkey then gap = tonumber(ARGV[4]) end
local maxw = tonumber(ARGV[5])
local tokens = tonumber(ARGV[7])
local probe_ttl = tonumber(ARGV[9])
local poll = tonumber(ARGV[10])
local W = {60e6, 60e6, 3600e6, 3600e6, 86400e6, 86400e6}
local orgof = {}
for o in string.gmatch(ARGV[6], '%d+') do orgof[#orgof + 1] = tonumber(o) end
local declared = {}
for d in string.gmatch(ARGV[8], '%d+') do declared[#declared + 1] = tonumber(d) end
local FIELDS = {'seen', 'p', 'x', 'k0', 'k1', 'k2', 'k3', 'k4', 'k5',
                'e0', 'e1', 'e2', 'e3', 'e4', 'e5', 'ot', 'cq', 'ct', 'rt'}
local soft_poll = 4 * poll

-- The client's limits, first: over one, nothing is written but the
-- seats' expired leases dropped.
local client = #ARGV >= 16
local ck, cf, crate, cwin, cconc, seat, attempt, lease, ce
if client then
  ck, cf = KEYS[#KEYS - 1], KEYS[#KEYS]
  crate, cwin = tonumber(ARGV[11]), tonumber(ARGV[12])
  cconc, seat = tonumber(ARGV[13]), ARGV[14]
  attempt, lease = tonumber(ARGV[15]), tonumber(ARGV[16])
  if cwin <= 0 then crate = 0 end
  if crate > 0 and attempt == 0 then
    ce = tonumber(redis.call('HGET', ck, 'e') or '0')
    if ce < now - cwin then ce = now - cwin end
    local at = math.ceil(ce + cwin / crate)
    if at > now then return {-4, at - now, at, 10} end
  end
  if cconc > 0 then
    redis.call('ZREMRANGEBYSCORE', cf, '-inf', now)
    if not redis.call('ZSCORE', cf, seat) and
        redis.call('ZCARD', cf) >= cconc then
      return {-4, 1000000, now + 1000000, 11}
    end
  end
end

-- The reply, after the client's share of it: a reservation or a poll
-- (re)takes the request's seat for a lease; a first attempt's
-- reservation is charged to the client's bucket.
local function seated(r)
  if not client then return r end
  if cconc > 0 then
    redis.call('ZADD', cf, now + lease, seat)
    redis.call('PEXPIRE', cf, math.floor(lease / 1000) + 1000)
  end
  if r[1] >= 0 and crate > 0 and attempt == 0 then
    redis.call('HSET', ck, 'e', string.format('%d', math.ceil(ce + cwin / crate)))
    redis.call('PEXPIRE', ck, math.floor(cwin / 1000) + 1000)
  end
  return r
end

-- One organisation's budgets for this request: when they admit it.
local org = {}
local function budget(o)
  if org[o] then return org[o] end
  local v = redis.call('HMGET', KEYS[5 + o], unpack(FIELDS))
  local b = {seen = v[1] == '1', p = tonumber(v[2] or '0'),
             x = tonumber(v[3] or '0'), cap = {}, e = {}, cost = {}}
  local known = b.seen
  for l = 1, 6 do
    local cap = tonumber(v[3 + l] or '0')
    if cap <= 0 then cap = declared[l] or 0 end
    if cap > 0 then
      known = true
      b.cap[l] = cap
      b.e[l] = tonumber(v[9 + l] or '0')
      local c = 1
      if l % 2 == 0 then c = tokens end
      if c > cap then c = cap end
      b.cost[l] = c
    end
  end
  b.ready, b.why = now, -1
  if b.x > now then b.ready, b.why = b.x, 8 end
  if not known then
    b.probe = true
    if b.p > now then b.busy = true end
  end
  -- Charged tokens still out may come back early (usage): a wait for
  -- tokens they could cover is not booked but asked again (b.soft).
  local out_tokens = tonumber(v[16] or '0')
  b.ot, b.cq = out_tokens, tonumber(v[17] or '0')
  b.ct, b.rt = tonumber(v[18] or '0'), tonumber(v[19] or '0')
  b.soft = true
  for l = 1, 6 do
    if b.cap[l] then
      local at = b.e[l] + b.cost[l] * W[l] / b.cap[l]
      if at > b.ready then b.ready, b.why = math.ceil(at), l - 1 end
      if at > now + soft_poll then
        local level = (now - b.e[l]) * b.cap[l] / W[l]
        if level > b.cap[l] then level = b.cap[l] end
        if l % 2 == 1 or level + out_tokens < b.cost[l] then b.soft = false end
      end
    end
  end
  if b.ready <= now + soft_poll or b.why < 0 or b.why > 5 then b.soft = false end
  org[o] = b
  return b
end

-- The first moment from at that is gap away from every slot booked in z
-- (only members starting with who, if given).
local function fit(z, at, g, who)
  if g <= 0 then return at end
  local r = redis.call('ZRANGEBYSCORE', z, at - g + 1,
                       now + maxw + 2 * g, 'WITHSCORES')
  for j = 1, #r, 2 do
    if who == nil or string.sub(r[j], 1, #who) == who then
      local s = tonumber(r[j + 1])
      if s >= at + g then break end
      if s > at - g then at = s + g end
    end
  end
  return at
end

local placed = {} -- global scope: the slot for a ready time
local function place(i, at)
  if not (perkey and iv > 0) then
    if placed[at] == nil then placed[at] = fit(KEYS[2], at, gap) end
    return placed[at]
  end
  for _ = 1, 64 do
    local a = fit(KEYS[2], at, gap)
    local b = fit(KEYS[4], a, iv, i .. ':')
    if b == a then return a end
    at = b
  end
  return at
end

if gap > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - gap) end
if perkey and iv > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - iv)
end
local rr = tonumber(redis.call('GET', KEYS[1]) or '0') % n
local cs = {}
for i = 0, n - 1 do cs[#cs + 1] = 'c' .. i end
local dis = redis.call('HMGET', KEYS[3], unpack(cs))
local best, bat, bready, bwhy = -1, 0, 0, -1
local out, outwhy = -1, 7 -- the earliest ready beyond the longest wait
local busy = false
local soft, softwhy = -1, -1 -- the earliest wait for tokens that may come back
for j = 0, n - 1 do
  local i = (rr + j) % n
  local b = budget(orgof[i + 1])
  local ready, why = b.ready, b.why
  local c = tonumber(dis[i + 1] or '0')
  if c > ready then ready, why = c, 7 end
  if b.soft and why == b.why then
    if soft < 0 or ready < soft then soft, softwhy = ready, why end
  elseif ready - now > maxw then
    if out < 0 or ready < out then out, outwhy = ready, why end
  elseif b.busy then
    busy = true
  else
    local at = place(i, ready)
    if best < 0 or at < bat then
      best, bat, bready, bwhy = i, at, ready, why
    end
    -- Now is the earliest there is (ties go in round-robin order): the
    -- other keys' budgets need not be read.
    if bat <= now then break end
  end
end
if busy and (best < 0 or bat - now > poll) then
  return seated({-3, poll, 0, 9})
end
if soft >= 0 and (best < 0 or bat > soft) then
  -- Asked again a quarter of the way there: soon enough to use tokens
  -- that come back, few enough round trips on a long wait.
  local w = math.floor((soft - now) / 4)
  if w < soft_poll then w = soft_poll end
  if w > 10 * soft_poll then w = 10 * soft_poll end
  return seated({-3, w, 0, softwhy})
end
if best < 0 then return {-1, out - now, out, outwhy} end
if bat - now > maxw then return {-2, bat - now, bat, 6} end

-- Book the slot and charge the budgets.
redis.call('SET', KEYS[1], best + 1, 'PX', 86400000)
-- Outlive the slot just booked; never shorten (later slots are there).
local function keep(k, ms)
  if redis.call('PTTL', k) < ms then redis.call('PEXPIRE', k, ms) end
end
if gap > 0 then
  redis.call('ZADD', KEYS[2], bat, string.format('%d', bat))
  keep(KEYS[2], math.floor((bat + gap - now) / 1000) + 1000)
end
if perkey and iv > 0 then
  redis.call('ZADD', KEYS[4], bat, best .. ':' .. string.format('%d', bat))
  keep(KEYS[4], math.floor((bat + iv - now) / 1000) + 1000)
end
local o = orgof[best + 1]
local b = org[o]
local h = KEYS[5 + o]
-- One HSET for all the budget's fields (a script's calls are its cost).
local cq, ct, rt = b.cq + 1, b.ct + tokens, b.rt
local set = {'cq', string.format('%d', cq), 'ct', string.format('%d', ct),
             'ot', string.format('%d', b.ot + tokens)}
for l = 1, 6 do
  if b.cap[l] then
    local e = b.e[l]
    if e < bat - W[l] then e = bat - W[l] end
    e = e + b.cost[l] * W[l] / b.cap[l]
    set[#set + 1] = 'e' .. (l - 1)
    set[#set + 1] = string.format('%d', math.ceil(e))
  end
end
local probe = 0
if b.probe then
  probe = 1
  set[#set + 1] = 'p'
  set[#set + 1] = string.format('%d', now + probe_ttl)
end
redis.call('HSET', h, unpack(set))
keep(h, math.floor((bat - now) / 1000) + 86400000)
local why = bwhy
if bat > bready then why = 6 end
if bat <= now then why = -1 end
local first = 0
if b.ot == 0 then first = 1 end
return seated({best, bat - now, bat, why, probe, cq, ct, rt, first})
