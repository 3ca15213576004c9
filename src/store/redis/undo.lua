-- KEYS: user key. ARGV: token hash, now ms. Removes a token whose issue may never have
-- reached its client, and restores the devices it evicted within the grace. Returns the
-- restored hashes.
redis.call('HDEL', KEYS[1], ARGV[1])
local now = tonumber(ARGV[2])
local evictor = hex(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local restored = {}
for i = 1, #all, 2 do
  local grace_until, by, value = string.match(all[i + 1], '^x(%d+)|(%x+)|(.*)$')
  if grace_until and by == evictor and tonumber(grace_until) > now then
    redis.call('HSET', KEYS[1], all[i], value)
    restored[#restored + 1] = all[i]
  end
end
return restored
