-- KEYS: user key. ARGV: token hash, now ms, marker ms. Takes back a token whose issue
-- may never have reached its client: if it is live, removes it and restores the devices
-- it evicted within the grace. If its issue has not run yet, it leaves a `u` marker for
-- `marker ms`, so that the issue, arriving late, writes nothing. Returns the restored
-- hashes.
local key = KEYS[1]
local now = tonumber(ARGV[2])
local value = redis.call('HGET', key, ARGV[1])
local restored = {}
-- Only a live token gives its devices back: one evicted in turn has had its slot
-- taken by a newer login, which keeps it.
if value and expires_of(value) then
  local evictor = hex(ARGV[1])
  local all = redis.call('HGETALL', key)
  local longest = 0
  for i = 1, #all, 2 do
    local grace_until, by, kept = string.match(all[i + 1], '^x(%d+)|(%x+)|(.*)$')
    if grace_until and by == evictor and tonumber(grace_until) > now then
      redis.call('HSET', key, all[i], kept)
      restored[#restored + 1] = all[i]
      longest = math.max(longest, expires_of(kept) or 0)
    end
  end
  -- A restored device keeps its own lifetime, which the hash's may not have covered.
  if longest > now and redis.call('PTTL', key) < longest - now then
    redis.call('PEXPIRE', key, longest - now)
  end
end
if value then
  -- The issue ran: it cannot run again. The token, or its eviction by a newer login
  -- (which must never bring it back), goes.
  redis.call('HDEL', key, ARGV[1])
else
  -- The undo may have overtaken its issue: a marker makes the issue write nothing.
  redis.call('HSET', key, ARGV[1], string.format('u%d|', now + tonumber(ARGV[3])))
  if redis.call('PTTL', key) < tonumber(ARGV[3]) then
    redis.call('PEXPIRE', key, tonumber(ARGV[3]))
  end
end
return restored
