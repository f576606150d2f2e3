-- settle.lua - what a reserved request's answer (or its absence) teaches
-- the budgets of its organisation and model.
--
-- The budget hash (reserve.lua's KEYS[5 + org]) holds, for each limit l
-- in budget order (0 requests-minute, 1 tokens-minute, 2 requests-hour,
-- 3 tokens-hour, 4 requests-day, 5 tokens-day):
--   k<l>  the capacity Cerebras announced (absent: never announced)
--   e<l>  when the bucket was (or will be) empty, us: its level at time t
--         is min(k, (t - e) * k / window), the bucket refilling
--         continuously at k per window (60 s, 1 h, 1 day)
-- and seen = "1" once an answer was read, p = until when a probe holds
-- it, x = until when it rests after a 429 that named no limit, ot =
-- tokens charged to requests not settled yet, cq and ct = requests and
-- tokens charged so far, rt = tokens given back (by
-- usage) so far, r0..r15 a ring of "time:rt" after recent give-backs
-- (ri counts them).
--
-- KEYS[1] the budget hash   KEYS[2] the global timeline
-- KEYS[3] the per-key timelines
-- KEYS[4] the per-key hash (reserve.lua's KEYS[3]): besides c<i> and d<i>
--         (rest.lua), s<i> the last upstream status on key i, r<i> until
--         when the budget its last answer (a 429) ran out of is short
--         of a request (0: that answer was not a 429)
-- KEYS[5] the day's counters: d the UTC day (Redis time, days since
--         1970), q<i> the requests sent on key i that day (an answer, or
--         none, settled), t<i> the tokens their answers used (usage);
--         emptied when a new day begins
-- KEYS[6] the budgets in use: a sorted set, member a budget hash's name
--         (KEYS[1]), score its last settlement (us); those older than a
--         day dropped
-- (KEYS[4..6] are read by sched_inspect: the status command, /readyz,
-- /metrics; only a release leaves KEYS[4] and KEYS[5] alone.)
-- ARGV[1] key index    ARGV[2] the slot us
-- ARGV[3] what happened:
--   "release"  the request was never sent: its slot is unbooked and its
--              charge given back;
--   "answer"   an answer ended;
--   "headers"  a probe's headers came: as "answer", but its usage (and
--              the end of its charge's being out) comes with "usage";
--   "usage"    a probe's answer ended, its headers already settled:
--              only the usage (ARGV[11]) counts
-- ARGV[4] the request's token estimate (its charge)
-- ARGV[5] declared limits, six numbers ("0" none)
-- ARGV[6..8] the reservation's cq, ct, rt
-- ARGV[9] the upstream's status, "0" if no answer came
-- ARGV[10] the limits on the answer: twelve numbers, limit and remaining
--          of each in budget order ("-1" where not announced), or "-"
--          when the answer carried none (or none came). The remaining
--          is taken as of the slot (the upstream computes it when it
--          admits the request); a budget's level is set from it after a
--          429, a first answer or a new capacity; otherwise lowered when
--          above what it can mean, raised only when this request was
--          the only one out (see the correction below)
-- ARGV[11] the tokens the answer really used, "-1" if unknown
-- ARGV[12] how long ago the answer's headers came, us: the refill of
--          the level they announce counts from then (never before the
--          slot)
-- ARGV[13] "1" if this request was the probe
-- ARGV[14] after a 429 whose limits show nothing spent: rest this long, us
-- ARGV[15] "1" if no other request of the budget was out when this one
--          was reserved (reserve.lua's first)
-- Returns the limit a 429 ran out of (0..5), 8 if it rested the whole
-- budget, -1 otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = KEYS[1]
local mode = ARGV[3]
local tokens = tonumber(ARGV[4])
local status = tonumber(ARGV[9])
local W = {60e6, 60e6, 3600e6, 3600e6, 86400e6, 86400e6}
local declared = {}
for d in string.gmatch(ARGV[5], '%d+') do declared[#declared + 1] = tonumber(d) end
local FIELDS = {'k0', 'k1', 'k2', 'k3', 'k4', 'k5', 'e0', 'e1', 'e2', 'e3',
                'e4', 'e5', 'cq', 'ct', 'rt', 'seen', 'ot', 'ri'}
local v = redis.call('HMGET', h, unpack(FIELDS))
local cap, e = {}, {}
for l = 1, 6 do
  cap[l] = tonumber(v[l] or '0')
  if cap[l] <= 0 then cap[l] = declared[l] or 0 end
  e[l] = tonumber(v[6 + l] or '0')
end
local cq, ct, rt = tonumber(v[13] or '0'), tonumber(v[14] or '0'),
                   tonumber(v[15] or '0')
local seen = v[16] == '1'
-- Every field written goes in one HSET at the end (a script's cost is
-- its calls).
local set = {}
local function put(f, x) set[#set + 1] = f; set[#set + 1] = x end
-- This request was the only one out all its life: none was out when it
-- was reserved (ARGV[15]), none is now but this one (ot counts the tokens
-- of requests not settled yet, this one's included), and none was
-- reserved after it. A request reserved before it and settled since may
-- have been admitted after it (the upstream's order is not the slots'),
-- so that remaining may not count it.
local alone = ARGV[15] == '1' and tonumber(v[17] or '0') == tokens and
              cq == tonumber(ARGV[6])
local RING = {}
for i = 0, 15 do RING[#RING + 1] = 'r' .. i end
local function cost(l, c)
  if c > cap[l] then return cap[l] end
  return c
end
-- Moves bucket l's level by d (negative: a charge).
local function give(l, d)
  if cap[l] > 0 then e[l] = e[l] - d * W[l] / cap[l] end
end
local function give_all(d)
  for l = 1, 6 do
    if l % 2 == 1 then give(l, cost(l, 1) * d)
    else give(l, cost(l, tokens) * d) end
  end
end
local ret = -1

-- A charge given back (never sent, or refused) leaves cq and ct as they
-- are: the corrections of requests reserved after it then allow for it
-- still, erring low, never high.
local corrected = {}
if mode == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZREM', KEYS[3], ARGV[1] .. ':' .. ARGV[2])
  give_all(1)
elseif mode == 'answer' or mode == 'headers' then
  local admitted = status >= 200 and status < 300
  if ARGV[10] ~= '-' then
    -- From Cerebras' remaining when it admitted this request (it
    -- computes it at admission), refilled since its headers came, plus
    -- what came back after the slot, less what was charged after this
    -- request: the budget's level is moved only when the proxy's own is
    -- outside what that can mean (below), and set outright after a 429,
    -- a first answer or a new capacity.
    local a = {}
    for x in string.gmatch(ARGV[10], '-?%d+') do a[#a + 1] = tonumber(x) end
    local sent = tonumber(ARGV[2])
    if sent > now then sent = now end
    -- Refilled since the headers came (no earlier: the upstream admitted
    -- the request some time after its slot, and a level that assumed the
    -- slot sent the next request a little early); given back since the
    -- slot.
    local came = now - tonumber(ARGV[12])
    if came < sent then came = sent end
    -- rt at a time: from the ring of recent give-backs (r<i> =
    -- "time:rt"); when it does not reach back that far, the oldest it
    -- has (errs low).
    local function rt_at(when)
      local ring = redis.call('HMGET', h, unpack(RING))
      local best_t, best_v, old_t, old_v = nil, nil, nil, nil
      for i = 1, #RING do
        if ring[i] then
          local tt, vv = string.match(ring[i], '^(%d+):(-?%d+)$')
          tt, vv = tonumber(tt), tonumber(vv)
          if tt <= when and (best_t == nil or tt > best_t) then
            best_t, best_v = tt, vv
          end
          if old_t == nil or tt < old_t then old_t, old_v = tt, vv end
        end
      end
      local got = best_v
      if got == nil then
        -- Before the oldest: nothing yet if the ring never wrapped.
        if tonumber(v[18] or '0') <= #RING then got = 0
        else got = old_v or rt end
      end
      if got < tonumber(ARGV[8]) then got = tonumber(ARGV[8]) end
      return got
    end
    local given_since = nil -- rt - rt_at(sent), read once for all limits
    for l = 1, 6 do
      local k, rem = a[2 * l - 1], a[2 * l]
      if k and k > 0 and rem and rem >= 0 then
        local old_k = cap[l]
        cap[l] = k
        put('k' .. (l - 1), k)
        local c = 1
        if l % 2 == 0 then c = tokens end
        -- Cerebras' level now, had it admitted every request reserved
        -- after this one before it computed remaining (base), or none
        -- of them (base - after): which it had is known only roughly
        -- for requests sent at about the same time.
        local after, back = cq - tonumber(ARGV[6]), 0
        if l % 2 == 0 then
          after = ct - tonumber(ARGV[7])
          if given_since == nil then given_since = rt - rt_at(sent) end
          back = given_since
        end
        local base = rem + (now - came) * k / W[l] + back
        if base > k then base = k end
        local mine = (now - e[l]) * k / W[l]
        if mine > k then mine = k end
        local slack = cost(l, c)
        if slack < k / 50 then slack = k / 50 end
        local level = nil
        if status == 429 or not seen or old_k ~= k then
          level = base - after -- the proxy was wrong, or knew nothing
        elseif mine > base + slack then
          -- More than the answer can mean: its lower end, as the
          -- requests reserved after this one may not have been sent yet
          -- (booked for later) and then surely are not in remaining.
          level = base - after
        elseif alone and mine < base - slack then
          -- Less, and this request was the only one out all its life:
          -- nothing else can explain it (a request out beside it could:
          -- charged here, admitted upstream after this one's remaining).
          level = base
        end
        if level then
          e[l] = now - level * W[l] / k
          corrected[l] = true
        end
        if status == 429 and rem < c and ret < 0 then ret = l - 1 end
      end
    end
    put('seen', '1')
  elseif admitted then
    -- An answer without limits: there are none to keep.
    put('seen', '1')
  end
  if not admitted then
    -- Never charged upstream: a level from the headers already leaves
    -- it out; the other budgets get the charge back.
    for l = 1, 6 do
      if not corrected[l] then
        if l % 2 == 1 then give(l, cost(l, 1)) else give(l, cost(l, tokens)) end
      end
    end
  end
  if status == 429 and ret < 0 and tonumber(ARGV[14]) > 0 then
    local x = now + tonumber(ARGV[14])
    if x > tonumber(redis.call('HGET', h, 'x') or '0') then
      put('x', string.format('%d', x))
    end
    ret = 8
  end
end
if (mode == 'answer' or mode == 'usage') and status >= 200 and status < 300 then
  local used = tonumber(ARGV[11])
  if used >= 0 then
    for l = 2, 6, 2 do give(l, cost(l, tokens) - used) end
    rt = rt + tokens - used
    local i = redis.call('HINCRBY', h, 'ri', 1) % #RING
    put(RING[i + 1], string.format('%d:%d', now, rt))
  end
end
if ARGV[13] == '1' and mode ~= 'usage' then redis.call('HDEL', h, 'p') end
if mode ~= 'headers' then
  put('ot', string.format('%d', tonumber(v[17] or '0') - tokens))
end
for l = 1, 6 do
  if cap[l] > 0 then put('e' .. (l - 1), string.format('%d', math.ceil(e[l]))) end
end
put('cq', cq)
put('ct', ct)
put('rt', rt)
redis.call('HSET', h, unpack(set))
if redis.call('PTTL', h) < 86400000 then redis.call('PEXPIRE', h, 86400000) end

-- What the key's answers say (KEYS[4..6]).
redis.call('ZADD', KEYS[6], now, h)
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - 86400e6)
redis.call('PEXPIRE', KEYS[6], 86400000)
if mode ~= 'release' then
  local i = ARGV[1]
  local day = math.floor(now / 86400e6)
  local D = KEYS[5]
  if tonumber(redis.call('HGET', D, 'd') or '-1') ~= day then
    redis.call('DEL', D)
    redis.call('HSET', D, 'd', string.format('%d', day))
  end
  if mode ~= 'usage' then redis.call('HINCRBY', D, 'q' .. i, 1) end
  local used = tonumber(ARGV[11])
  if mode ~= 'headers' and status >= 200 and status < 300 and used > 0 then
    redis.call('HINCRBY', D, 't' .. i, used)
  end
  redis.call('PEXPIRE', D, 2 * 86400000)
  if mode ~= 'usage' and status > 0 then
    -- After a 429: when its budget admits a request again (the levels
    -- as just corrected, and a rest).
    local till = 0
    if status == 429 then
      till = tonumber(redis.call('HGET', h, 'x') or '0')
      for l = 1, 6 do
        if cap[l] > 0 then
          local c = tokens
          if l % 2 == 1 then c = 1 end
          local at = e[l] + cost(l, c) * W[l] / cap[l]
          if at > till then till = at end
        end
      end
      till = math.ceil(till)
      if till < now then till = 0 end
    end
    redis.call('HSET', KEYS[4], 's' .. i, string.format('%d', status),
               'r' .. i, string.format('%d', till))
    local keep = 86400000
    if till > now then keep = keep + math.floor((till - now) / 1000) end
    if redis.call('PTTL', KEYS[4]) < keep then
      redis.call('PEXPIRE', KEYS[4], keep)
    end
  end
end
return ret
