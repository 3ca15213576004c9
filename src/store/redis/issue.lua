-- KEYS: user key. ARGV: token hash, now ms, expires ms, max tokens, device, grace ms.
-- Returns the hashes of the tokens the device limit evicted, or false if the field is
-- taken: the issue was undone before its script arrived (or the token is not new).
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return false
end
local now = tonumber(ARGV[2])
return add_token(KEYS[1], ARGV[1], now, tonumber(ARGV[3]), now, tonumber(ARGV[4]), ARGV[5],
  tonumber(ARGV[6]))
