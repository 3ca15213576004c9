-- Takes one forced refresh from an app's budget: ARGV = day (China Standard Time),
-- now_ms, per_day, min_interval_ms. Returns 1 if taken, 0 if the day's budget is spent
-- or the last one was less than min_interval_ms ago (a clock that went back counts as
-- too soon). The hash lives two days past its last use.
local day, now = ARGV[1], tonumber(ARGV[2])
local per_day, gap = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'day', 'count', 'last')
local count = 0
if state[1] == day then
  count = tonumber(state[2]) or 0
end
local last = tonumber(state[3])
if last and now - last < gap then
  return 0
end
if count >= per_day then
  return 0
end
redis.call('HSET', KEYS[1], 'day', day, 'count', count + 1, 'last', ARGV[2])
redis.call('PEXPIRE', KEYS[1], 172800000)
return 1
