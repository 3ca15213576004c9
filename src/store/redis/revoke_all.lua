-- KEYS: user key. ARGV: now ms. Returns how many tokens were live.
local live = #live_tokens(KEYS[1], tonumber(ARGV[1]))
redis.call('DEL', KEYS[1])
return live
