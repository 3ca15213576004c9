-- KEYS: user key. ARGV: token hash, ttl ms, max tokens, device.
return add_token(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
