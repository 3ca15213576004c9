-- KEYS: user key. ARGV: old token hash, new token hash, ttl ms, max tokens.
-- Deleting the old field is the gate: of concurrent rotations only one sees it.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
local expires = expires_of(old)
if not expires or expires <= now_ms() then
  return false
end
local device = string.match(old, '^%d+|%d+|(.*)$') or ''
local added = add_token(KEYS[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), device)
return { added[1], added[2], device }
