-- KEYS: token key, user index. ARGV: token key prefix, token id, ttl ms, max tokens, device.
return add_token(KEYS[1], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
