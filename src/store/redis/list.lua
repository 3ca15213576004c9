-- KEYS: user index. ARGV: token key prefix.
-- Returns id, expiry, value triples of the live tokens, soonest to expire first.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #entries, 2 do
  local value = redis.call('GET', ARGV[1] .. entries[i])
  if value then
    out[#out + 1] = entries[i]
    out[#out + 1] = entries[i + 1]
    out[#out + 1] = value
  end
end
return out
