-- KEYS: user key. ARGV: token hash, now ms, expires ms, max tokens, device, grace ms.
-- Returns the hashes of the tokens the device limit evicted.
local now = tonumber(ARGV[2])
return add_token(KEYS[1], ARGV[1], now, tonumber(ARGV[3]), now, tonumber(ARGV[4]), ARGV[5],
  tonumber(ARGV[6]))
