-- KEYS: user key. ARGV: token hash, now ms, expires ms, max tokens, device.
add_token(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5])
return 1
