-- KEYS: user key. ARGV: old token hash, new token hash, now ms, expires ms, max tokens.
-- Returns the device label the successor keeps, or false if the old token was not live.
-- Deleting the old field is the gate: of concurrent rotations only one sees it.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
local now = tonumber(ARGV[3])
local expires = expires_of(old)
if not expires or expires <= now then
  return false
end
local device = string.match(old, '^%d+|%d+|(.*)$') or ''
add_token(KEYS[1], ARGV[2], now, tonumber(ARGV[4]), tonumber(ARGV[5]), device)
return device
