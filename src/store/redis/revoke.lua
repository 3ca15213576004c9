-- KEYS: user key. ARGV: token hash, now ms. Returns 1 if the token was live.
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
local expires = expires_of(value)
if expires and expires > tonumber(ARGV[2]) then
  return 1
end
return 0
