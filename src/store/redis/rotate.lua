-- KEYS: old token key, user index, new token key.
-- ARGV: token key prefix, old token id, new token id, ttl ms, max tokens.
-- Deleting the old key is the gate: of concurrent rotations only one sees it.
local old = redis.call('GET', KEYS[1])
if not old then
  return false
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
local device = string.match(old, '^[^|]*|(.*)$') or ''
local added = add_token(KEYS[3], KEYS[2], ARGV[1], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), device)
return { added[1], added[2], device }
