-- KEYS: user key. Returns how many tokens were live.
local live = #live_tokens(KEYS[1], now_ms())
redis.call('DEL', KEYS[1])
return live
