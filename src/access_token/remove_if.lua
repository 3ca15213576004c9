-- Drops the cached access token (`<refresh_at_ms>:<expires_at_ms>:<token>`) only if it
-- is still ARGV[1]: a server whose call failed with an old token never drops the new
-- one another server just fetched.
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
local first = string.find(value, ':', 1, true)
local second = first and string.find(value, ':', first + 1, true)
if second and string.sub(value, second + 1) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
